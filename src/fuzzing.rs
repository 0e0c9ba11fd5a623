//! Entry points for `cargo fuzz` (the `fuzz/` directory), behind the internal `__fuzzing`
//! feature. Not part of the API: each runs one of the crate's parsers of untrusted input the way
//! a request would, so the fuzzer searches the code that faces attackers.
//!
//! Stage: test support; may use any part of the crate.

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
        connection: None,
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
    if let Ok(body) = serde_json::from_str::<serde_json::Value>(input) {
        let _ = crate::scim::patch::parse(&body);
    }
}

#[cfg(feature = "scim")]
fn sample_user() -> serde_json::Value {
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

/// The IdP the `saml_response` target trusts: its certificate's key signed
/// `fuzz/seeds/saml_response/signed.xml`.
#[cfg(feature = "saml")]
const FUZZ_IDP_METADATA: &str = concat!(
    "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" ",
    "xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"https://idp.fuzz.test/saml\">",
    "<md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
    "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>",
    "MIIDEzCCAfugAwIBAgIUeq8/QJdqLih/6QCG6uJ8O/o5zIswDQYJKoZIhvcNAQELBQAwGDEWMBQGA1UEAwwNZnV6ei1pZHAudGVzdDAgFw0yNjEyMDcwOTU0MTBaGA8yMTI2MTExMzA5NTQxMFowGDEWMBQGA1UEAwwNZnV6ei1pZHAudGVzdDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAMSXtQFb/y/W1dN4ObX9OECKrHhJcsl0TIWR6UC3ZP7CBkdCk/aIwDruDBh7vFFw0wh/IKbnCgFzQ8CRtd0RwX1eePGTo0cDIsf2iaSTxXswguyCZzOyUZ09F5JeLToXiiXeDh+25ePTzCLZPE4IabJ2VmIs/U0QzqLLZKr3cteEZ7Tm9hMq5A/qAOOsFOrRfPbKbjyLdWEtmIOWsl5SpmIFV+eVSBrKDYGwBAiN+cfhE1GM+ON5hIvQ3G4VceIJ4Kr+CArK7JUAbboTDyVvn8RhBCZchWIT75aybbY/qIIOzYhJG0UwLDTSDi5JyTtdMYFGQqeS4fIReQkFIVp3JucCAwEAAaNTMFEwHQYDVR0OBBYEFN8bOMwFJF5cDM+RgfB/EyqJlATsMB8GA1UdIwQYMBaAFN8bOMwFJF5cDM+RgfB/EyqJlATsMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBAHNgBX6MIZCVCHD091FgFjoM+NQJvMf0Macox5SoDEv2PHn8hZ4vHDuAzI7G3pUDsCw4gLTEDRT/+NV4w4g9rWHkzr/NuC675yafstnPjtNFlMnU8gJbWoa3zqVJhQG/sJ/Wf3sVXnt8Pzov+oxQ74u1MadxYD2xjEAqchzvBZ5C/cN7Itc/P1sgV+XYRm6TMNDrhgGtx9M/nAZ6k9kpHRih0niQhMOIgRWtlaD9OcJCkqS/+rZviD2QyyuVbbgq5lU2epJsK4TproXWJSIRF2WTVm/PzlcuoR4Ulcdvlsd7+BIAgpdlTLjZeddnKElvlu7b7+Q+9935ZB2XlQGDy4E=",
    "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
    "<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" ",
    "Location=\"https://idp.fuzz.test/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
);

/// A posted `SAMLResponse` as the assertion consumer service reads it: decoded, verified
/// against a fixed IdP at a fixed time (markup refusals, shape, signature plan, cryptography,
/// signed bytes, conditions), and what verifies turned into a sign-in.
#[cfg(feature = "saml")]
pub fn saml_response(input: &str) {
    use std::sync::{Arc, OnceLock};

    use crate::login::saml::metadata::parse_idp_metadata;
    use crate::login::saml::verify::{Expectations, TrustedIdp, decode, verify_response};

    static IDPS: OnceLock<Vec<Arc<TrustedIdp>>> = OnceLock::new();
    let idps = IDPS.get_or_init(|| {
        parse_idp_metadata(FUZZ_IDP_METADATA, false, chrono::DateTime::UNIX_EPOCH)
            .expect("the fuzz IdP's metadata")
            .into_iter()
            .filter_map(TrustedIdp::new)
            .map(Arc::new)
            .collect()
    });
    let expected = Expectations {
        sp_entity_id: "https://sp.fuzz.test/saml/metadata",
        acs_url: "https://sp.fuzz.test/saml/acs",
        now: chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .expect("a fixed time")
            .to_utc(),
        leeway: chrono::TimeDelta::seconds(60),
        require_signed_assertion: false,
        allow_sha1: false,
        allow_unsolicited: true,
    };
    let _ = decode(input);
    if let Ok(verified) = verify_response(input, idps, &expected, None) {
        let _ = crate::login::saml::sign_in_of(&verified, None, false);
    }
}

#[cfg(all(test, feature = "saml"))]
mod tests {
    /// The seed passes every check, so the fuzzer starts from a response that goes all the way.
    #[test]
    fn the_saml_seed_verifies() {
        use std::sync::Arc;

        use crate::login::saml::metadata::parse_idp_metadata;
        use crate::login::saml::verify::{Expectations, TrustedIdp, verify_response};

        let seed = include_str!("../fuzz/seeds/saml_response/signed.xml");
        let idps: Vec<_> = parse_idp_metadata(
            super::FUZZ_IDP_METADATA,
            false,
            chrono::DateTime::UNIX_EPOCH,
        )
        .unwrap()
        .into_iter()
        .filter_map(TrustedIdp::new)
        .map(Arc::new)
        .collect();
        let expected = Expectations {
            sp_entity_id: "https://sp.fuzz.test/saml/metadata",
            acs_url: "https://sp.fuzz.test/saml/acs",
            now: chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
                .unwrap()
                .to_utc(),
            leeway: chrono::TimeDelta::seconds(60),
            require_signed_assertion: false,
            allow_sha1: false,
            allow_unsolicited: false,
        };
        let verified = verify_response(seed, &idps, &expected, None).unwrap();
        assert_eq!(verified.name_id.unwrap().value, "fuzz-alice");
        super::saml_response(seed);
    }
}
