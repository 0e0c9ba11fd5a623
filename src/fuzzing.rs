//! Entry points for `cargo fuzz` (the `fuzz/` directory), behind the internal `__fuzzing`
//! feature. Not part of the API: each runs one of the crate's parsers of untrusted input the way
//! a request would, so the fuzzer searches the code that faces attackers.
//!
//! Stage: test support; may use any part of the crate.

use serde_json::Value;

use crate::provision::policy::EmailAddress;
use crate::token::TokenKind;
use crate::token::claims::{ClaimRules, RawToken, VerifiedClaims};

/// A bearer token as the layer reads it before any key is involved: syntax, the strict
/// parser, the header rules, then the claims a verified token would yield, and the e-mail
/// address rules on its `email` claim.
pub fn token(input: &str) {
    if !crate::token::extract::is_token_syntax(input) {
        return;
    }
    let Ok(raw) = RawToken::parse(input) else {
        return;
    };
    let _ = raw.issuer();
    let _ = raw.header.declared_kind();
    let rules = ClaimRules {
        groups_claims: vec!["realm_access.roles".to_owned()],
        accept_string_booleans: true,
    };
    if let Ok(claims) = VerifiedClaims::from_verified(
        crate::sign_in::SignInSource::BearerToken,
        "https://idp.example.com".into(),
        TokenKind::Id,
        "sub",
        &raw.payload,
        raw.payload_json.clone(),
        &rules,
    ) {
        // The lazily parsed claim set must read back as the object the strict parser saw.
        assert_eq!(claims.claims(), &raw.payload);
        if let Some(email) = claims.email()
            && let Some(address) = EmailAddress::parse(email)
        {
            let normalized = address.normalized();
            assert_eq!(
                EmailAddress::parse(&normalized).map(|a| a.normalized()),
                Some(normalized),
                "normalizing an address twice changes it"
            );
        }
    }
}

/// A SCIM filter (`GET /Users?filter=…`) and PATCH path, parsed and evaluated against a user
/// resource; and the same text as a PATCH request body.
#[cfg(feature = "scim")]
pub fn scim(input: &str) {
    use std::str::FromStr;

    use scim_v2::filter::{Filter, PatchPath};

    if let Ok(filter) = Filter::from_str(input) {
        let _ = crate::scim::filter::matches(&filter, &sample_user());
        let _ = crate::scim::filter::as_lookup(&filter);
    }
    let _ = PatchPath::from_str(input);
    if let Ok(body) = serde_json::from_str::<Value>(input) {
        let _ = crate::scim::patch::parse(&body);
    }
}

#[cfg(feature = "scim")]
fn sample_user() -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "0190b4a2-7d4e-7c3a-9a51-2f1d3c4b5a69",
        "externalId": "00u1a2b3c4",
        "userName": "Ann@Example.com",
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [
            {"value": "ann@example.com", "type": "work", "primary": true},
            {"value": "ann@home.example", "type": "home"}
        ],
        "active": true,
        "groups": [{"value": "g1", "display": "Engineering"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": "1001",
            "manager": {"value": "m1"}
        },
        "meta": {"created": "2026-01-01T00:00:00Z", "version": "W/\"3\""}
    })
}
