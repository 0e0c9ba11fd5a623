//! Opaque access tokens, checked by RFC 7662 token introspection at their issuer, through the
//! `oauth2` crate's introspection request (client authentication, form encoding, the response's
//! standard members) on the issuer's own fetcher (https only, bounded, no redirects).
//!
//! Stage: the bearer-token source. Uses only `crate::error`; its answers join the verified-token
//! cache as [`VerifiedToken`]s, so a cached opaque token costs what a cached JWT does.
//!
//! What is held against the answer, in order: `active` must be `true`; then, each when present,
//! `iss` is the issuer, `token_type` is a bearer access token (not a refresh token, not a
//! sender-constrained `DPoP` token whose proof this crate does not check), `aud` names an
//! accepted audience and nothing untrusted, `exp` and `nbf` hold with the issuer's leeway, and
//! `client_id` is an allowed client; the subject claim must be a valid subject.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenResponse, BasicTokenType,
};
use oauth2::{
    AccessToken, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields,
    IntrospectionUrl, RequestTokenError, StandardRevocableToken,
    StandardTokenIntrospectionResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::answer::{IntrospectionRules, RETRY_AFTER, Unanswered, Verdict};
use super::claims::{VerifiedClaims, audiences};
use super::verify::IssuerVerifier;
use super::{TokenError, TokenKind};
use crate::sign_in::SignInSource;

/// Every member of an introspection answer beyond RFC 7662's, kept for claims mapping
/// (`email`, `groups`, a preset's subject claim…).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct OtherMembers {
    #[serde(flatten)]
    members: Map<String, Value>,
}

impl ExtraTokenFields for OtherMembers {}

type Answer = StandardTokenIntrospectionResponse<OtherMembers, BasicTokenType>;

type IntrospectionClient = oauth2::Client<
    BasicErrorResponse,
    BasicTokenResponse,
    Answer,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
>;

impl IssuerVerifier {
    /// Asks this issuer about `token`.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Verdict, Unanswered> {
        let rules = self
            .rules
            .introspection
            .as_ref()
            .expect("only issuers with introspection are asked");
        let unanswered = Unanswered {
            retry_after: RETRY_AFTER,
        };
        let endpoint = match &rules.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let endpoints = self.keys.endpoints().await.ok_or(unanswered)?;
                match &endpoints.introspection {
                    Some(endpoint) => endpoint.clone(),
                    // Reachable, but with nowhere to ask: this issuer cannot vouch for
                    // opaque tokens (another may).
                    None => {
                        tracing::warn!(
                            target: "tower_jit_provisioning::introspection",
                            issuer = %self.rules.issuer,
                            "the issuer's discovery document names no introspection_endpoint; \
                             set Issuer::introspection_endpoint"
                        );
                        return Ok(Verdict::Inactive);
                    }
                }
            }
        };
        let client: IntrospectionClient =
            oauth2::Client::new(ClientId::new(rules.client_id.clone()))
                .set_client_secret(ClientSecret::new(rules.client_secret.clone()))
                .set_auth_type(AuthType::BasicAuth)
                .set_introspection_url(IntrospectionUrl::from_url(endpoint));
        let access_token = AccessToken::new(token.to_owned());
        let answer = client
            .introspect(&access_token)
            .set_token_type_hint("access_token")
            .request_async(self.keys.fetcher())
            .await
            .map_err(|error| {
                let reason = match &error {
                    RequestTokenError::ServerResponse(response) => {
                        response.error().as_ref().to_owned()
                    }
                    RequestTokenError::Request(_) => "unreachable".to_owned(),
                    RequestTokenError::Parse(..) => "unparsable answer".to_owned(),
                    RequestTokenError::Other(status) => status.clone(),
                };
                tracing::warn!(
                    target: "tower_jit_provisioning::introspection",
                    issuer = %self.rules.issuer,
                    reason = %reason,
                    "token introspection failed"
                );
                unanswered
            })?;
        Ok(self.judge(rules, &answer, Utc::now()))
    }

    /// Holds an answer to this issuer's rules.
    fn judge(&self, rules: &IntrospectionRules, answer: &Answer, now: DateTime<Utc>) -> Verdict {
        use oauth2::TokenIntrospectionResponse;
        if !answer.active() {
            return Verdict::Inactive;
        }
        let Ok(Value::Object(mut members)) = serde_json::to_value(answer) else {
            return Verdict::Refused(TokenError::Malformed);
        };
        match self.check(&members, now) {
            Ok(()) => {}
            Err(error) => return Verdict::Refused(error),
        }
        // Trusted until the earlier of `exp` and the cache bound.
        let bound = now + TimeDelta::from_std(rules.cache_bound).unwrap_or_default();
        let expires_at = answer.exp().map_or(bound, |exp| exp.min(bound));
        members
            .entry("exp")
            .or_insert_with(|| Value::from(bound.timestamp()));
        members
            .entry("iat")
            .or_insert_with(|| Value::from(now.timestamp()));
        let json = Value::Object(members.clone()).to_string();
        let subject_claim = self.rules.profile.subject_claim();
        match VerifiedClaims::from_verified(
            SignInSource::Introspection,
            self.rules.issuer.clone(),
            TokenKind::Access,
            subject_claim,
            &members,
            json,
            &self.rules.claims,
        ) {
            Ok(claims) => {
                let remaining = (expires_at - now).to_std().unwrap_or(Duration::ZERO);
                Verdict::Accepted {
                    claims,
                    valid_until: Instant::now() + remaining,
                }
            }
            Err(error) => Verdict::Refused(error),
        }
    }

    /// The issuer's rules, each where the answer has the member.
    fn check(&self, members: &Map<String, Value>, now: DateTime<Utc>) -> Result<(), TokenError> {
        let rules = &self.rules;
        if let Some(iss) = members.get("iss")
            && iss.as_str() != Some(&*rules.issuer)
        {
            return Err(TokenError::UntrustedIssuer);
        }
        if let Some(kind) = members.get("token_type") {
            let kind = kind.as_str().unwrap_or_default().to_ascii_lowercase();
            let bearer = matches!(
                kind.as_str(),
                "bearer" | "access_token" | "urn:ietf:params:oauth:token-type:access_token"
            );
            if !bearer {
                return Err(TokenError::NotAnAccessToken);
            }
        }
        // Keycloak names the kind of token in `typ`: `Refresh`, `ID`, `Logout`, `Offline`
        // are not access tokens.
        if let Some(Value::String(typ)) = members.get("typ")
            && ["refresh", "id", "logout", "offline"]
                .iter()
                .any(|other| typ.eq_ignore_ascii_case(other))
        {
            return Err(TokenError::NotAnAccessToken);
        }
        // Sender-constrained tokens (RFC 9449 `cnf.jkt`, RFC 8705 `cnf.x5t#S256`) are only
        // good with a proof of possession, which a bearer request does not carry.
        if members.get("cnf").is_some_and(|cnf| !cnf.is_null()) {
            return Err(TokenError::NotAnAccessToken);
        }
        if members.contains_key("aud") {
            let named = audiences(members);
            let accepted = named.iter().any(|a| rules.audiences.contains(a));
            let all_trusted = named
                .iter()
                .all(|a| rules.audiences.contains(a) || rules.tolerated_audiences.contains(a));
            if !accepted || !all_trusted {
                return Err(TokenError::WrongAudience);
            }
        }
        let leeway = rules.leeway.as_secs_f64();
        let now = now.timestamp_millis() as f64 / 1000.0;
        let number = |name: &str| match members.get(name) {
            None => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or(TokenError::Malformed),
        };
        if let Some(exp) = number("exp")?
            && exp + leeway <= now
        {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = number("nbf")?
            && nbf - leeway > now
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(parties) = &rules.authorized_parties {
            let client = members.get("client_id").and_then(Value::as_str);
            if !client.is_some_and(|client| parties.iter().any(|p| p == client)) {
                return Err(TokenError::UnauthorizedParty);
            }
        }
        Ok(())
    }
}
