//! The tokens of browser sign-in: the ID token a sign-in's code is exchanged for, and the
//! back-channel logout tokens an issuer sends when the person signs out there. Both are checked
//! with the issuer's own key set, algorithm allow-list and leeway, as bearer tokens are.
//!
//! Stage: the bearer-token source's verifier, lent to the browser sign-in stage.

use chrono::{DateTime, TimeDelta, Utc};
use openidconnect::{AccessToken, AccessTokenHash, Nonce};
use serde_json::Value;

use super::claims::{RawToken, VerifiedClaims, audiences};
use super::verify::{IssuerVerifier, SignInClient, check_times, claims_error};
use super::{Algorithm, TokenError, TokenKind};
use crate::error::Error;
use crate::sign_in::SignInSource;

impl IssuerVerifier {
    /// A token for this issuer's sign-in client, parsed strictly: the client, the token, and
    /// its algorithm, once the token names this issuer and an algorithm it allows.
    fn client_token(&self, token: &str) -> Result<(&SignInClient, RawToken, Algorithm), Error> {
        let invalid = Error::InvalidToken;
        let client = self
            .rules
            .browser
            .as_ref()
            .ok_or(invalid(TokenError::UntrustedIssuer))?;
        let raw = RawToken::parse(token).map_err(invalid)?;
        if raw.issuer() != Some(&*self.rules.issuer) {
            return Err(invalid(TokenError::UntrustedIssuer));
        }
        let algorithm = self.allowed_algorithm(&raw)?;
        Ok((client, raw, algorithm))
    }

    /// Verifies the ID token a browser sign-in's code was exchanged for, by the rules bearer
    /// tokens meet (strict parsing, the algorithm allow-list, the issuer's key set, the same
    /// leeway) with the client's own audience, the flow's `nonce` (compared in constant time),
    /// `azp`, and `at_hash` when the token carries one.
    pub(crate) async fn verify_sign_in(
        &self,
        id_token: &str,
        access_token: Option<&str>,
        nonce: &str,
    ) -> Result<VerifiedClaims, Error> {
        let rules = &self.rules;
        let invalid = Error::InvalidToken;
        let (client, raw, _) = self.client_token(id_token)?;
        if raw.header.declared_kind() != Some(TokenKind::Id) {
            return Err(invalid(TokenError::ExpectedIdToken));
        }
        let keys = self.key_set_for(&raw).await?;
        let verifier = keys
            .derived
            .browser
            .as_ref()
            .ok_or(invalid(TokenError::UntrustedIssuer))?;
        let parsed = super::jwk::parse_signed(id_token).ok_or(invalid(TokenError::Malformed))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = parsed
            .claims(verifier, &nonce)
            .map_err(|err| invalid(claims_error(err)))?;
        if let Some(expected) = claims.access_token_hash() {
            let access = access_token.ok_or(invalid(TokenError::BadAccessTokenHash))?;
            let alg = parsed
                .signing_alg()
                .map_err(|_| invalid(TokenError::UnsupportedAlgorithm))?;
            let key = parsed
                .signing_key(verifier)
                .map_err(|_| invalid(TokenError::UnknownKey))?;
            let actual =
                AccessTokenHash::from_token(&AccessToken::new(access.to_owned()), alg, key)
                    .map_err(|_| invalid(TokenError::BadAccessTokenHash))?;
            if actual != *expected {
                return Err(invalid(TokenError::BadAccessTokenHash));
            }
        }
        check_times(rules, &raw.payload, Utc::now()).map_err(invalid)?;
        // OpenID Connect Core §3.1.3.7: `azp`, when present, is this client; several
        // audiences need one.
        let azp = raw.payload.get("azp");
        let several = audiences(&raw.payload).len() > 1;
        match azp {
            Some(Value::String(azp)) if *azp == client.id => {}
            None if !several => {}
            _ => return Err(invalid(TokenError::UnauthorizedParty)),
        }
        VerifiedClaims::from_verified(
            SignInSource::BrowserOidc,
            rules.issuer.clone(),
            TokenKind::Id,
            "sub",
            &raw.payload,
            raw.payload_json,
            &rules.claims,
        )
        .map_err(invalid)
    }
}

/// What a verified back-channel logout token says.
#[derive(Debug)]
pub(crate) struct LogoutClaims {
    pub(crate) subject: Option<String>,
    pub(crate) sid: Option<String>,
    pub(crate) jti: String,
    /// Until when its `jti` must be remembered.
    pub(crate) expires_at: DateTime<Utc>,
}

/// The event a back-channel logout token carries (OpenID Connect Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl IssuerVerifier {
    /// Verifies an OpenID Connect Back-Channel Logout token sent by this issuer to the
    /// sign-in client: strict parsing, the algorithm allow-list, a signature by a key of the
    /// issuer's key set (and no other), `iss`, `aud` the client, `iat`/`exp` with the usual
    /// leeway, the logout event, a `jti`, a `sid` or `sub`, and no `nonce` (§2.6). Replays are
    /// the caller's to stop, by `jti`.
    pub(crate) async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, Error> {
        let rules = &self.rules;
        let invalid = Error::InvalidToken;
        let (client, raw, algorithm) = self.client_token(token)?;
        // §2.4 recommends `logout+jwt`; issuers that predate it send `JWT` or nothing.
        let typ_ok = raw.header.typ.as_deref().is_none_or(|typ| {
            let short = typ.strip_prefix("application/").unwrap_or(typ);
            short.eq_ignore_ascii_case("logout+jwt") || short.eq_ignore_ascii_case("jwt")
        });
        if !typ_ok {
            return Err(invalid(TokenError::WrongTokenType));
        }
        let keys = self.key_set_for(&raw).await?;
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(invalid(TokenError::Malformed))?;
        use base64::Engine;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| invalid(TokenError::Malformed))?;
        let core_alg = algorithm.to_core();
        let verified = keys.keys.keys().iter().any(|key| {
            use openidconnect::JsonWebKey;
            let kid_matches = match raw.header.kid.as_deref() {
                Some(kid) => key.key_id().is_some_and(|id| id.as_str() == kid),
                None => true,
            };
            kid_matches
                && key
                    .verify_signature(&core_alg, signing_input.as_bytes(), &signature)
                    .is_ok()
        });
        if !verified {
            return Err(invalid(TokenError::BadSignature));
        }
        let claims = &raw.payload;
        if !audiences(claims).contains(&client.id) {
            return Err(invalid(TokenError::WrongAudience));
        }
        check_times(rules, claims, Utc::now()).map_err(invalid)?;
        let leeway = rules.leeway.as_secs_f64();
        let now = Utc::now().timestamp() as f64;
        let expires_at = match claims.get("exp") {
            None => Utc::now() + TimeDelta::minutes(5),
            Some(exp) => {
                let exp = exp.as_f64().ok_or(invalid(TokenError::Malformed))?;
                if exp + leeway <= now {
                    return Err(invalid(TokenError::Expired));
                }
                DateTime::from_timestamp(exp as i64, 0).ok_or(invalid(TokenError::Malformed))?
            }
        };
        let event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT));
        if !event.is_some_and(Value::is_object) || claims.contains_key("nonce") {
            return Err(invalid(TokenError::WrongTokenType));
        }
        let text = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::String(value)) if !value.is_empty() && value.len() <= 255 => {
                Ok(Some(value.clone()))
            }
            Some(_) => Err(invalid(TokenError::Malformed)),
        };
        let jti = text("jti")?.ok_or(invalid(TokenError::MissingClaim))?;
        let subject = text("sub")?;
        let sid = text("sid")?;
        if subject.is_none() && sid.is_none() {
            return Err(invalid(TokenError::MissingClaim));
        }
        Ok(LogoutClaims {
            subject,
            sid,
            jti,
            expires_at: expires_at + TimeDelta::from_std(rules.leeway).unwrap_or_default(),
        })
    }
}
