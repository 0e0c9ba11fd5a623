//! Opaque bearer tokens: what is trusted about them, and for how long. An opaque token means
//! nothing here; whoever issued it answers for it (RFC 7662 introspection at its issuer, or a
//! provider's own API), and the answers are kept as [`Remembered`] verdicts, accepted or
//! refused, each until its own deadline.
//!
//! Stage: the bearer-token source. Uses only `crate::error` and the verified claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::TokenError;
use super::claims::VerifiedClaims;

/// How long a refusal is remembered: long enough to absorb a client retrying a bad token in a
/// loop, short enough that a token the issuer just minted is not refused for long.
pub(crate) const REFUSAL_TTL: Duration = Duration::from_secs(5);

/// How long a client is told to wait while the introspection endpoint is down.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// An issuer's introspection settings, validated.
#[derive(Clone)]
pub(crate) struct IntrospectionRules {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    /// Configured; `None`: the discovery document's `introspection_endpoint`.
    pub(crate) endpoint: Option<Url>,
    pub(crate) cache_bound: Duration,
    pub(crate) opaque_only: bool,
    /// What this issuer's opaque tokens start with, when it says.
    pub(crate) token_prefix: Option<String>,
}

impl std::fmt::Debug for IntrospectionRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionRules")
            .field("client_id", &self.client_id)
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("cache_bound", &self.cache_bound)
            .field("opaque_only", &self.opaque_only)
            .finish_non_exhaustive()
    }
}

impl IntrospectionRules {
    /// Whether `token` may be sent to this issuer: its prefix matches, or it has none and no
    /// other issuer's matches.
    pub(crate) fn may_receive(&self, token: &str, another_claims_it: bool) -> bool {
        match &self.token_prefix {
            Some(prefix) => token.starts_with(prefix.as_str()),
            None => !another_claims_it,
        }
    }

    /// How long a refusal by this issuer is remembered.
    pub(crate) fn refusal_ttl(&self) -> Duration {
        REFUSAL_TTL.min(self.cache_bound)
    }
}

/// Why an issuer could not answer. Never cached: the next request asks again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unanswered {
    pub(crate) retry_after: Duration,
}

/// What an issuer said about a token.
pub(crate) enum Verdict {
    /// Active, and within this issuer's rules: its claims, trusted until `valid_until`.
    Accepted {
        claims: VerifiedClaims,
        valid_until: Instant,
    },
    /// Not active here (another issuer may know it).
    Inactive,
    /// Active, but refused by this issuer's rules.
    Refused(TokenError),
}

/// A source of answers for opaque bearer tokens beside RFC 7662 introspection: a provider whose
/// API says whose token it is (GitHub). Asked only about tokens it recognizes by their shape,
/// and those tokens are never sent anywhere else.
pub(crate) trait TokenAnswerer: Send + Sync + 'static {
    /// Whether `token` is one of this source's, by its shape alone.
    fn recognizes(&self, token: &str) -> bool;

    /// What the source says about `token`.
    fn ask<'a>(
        &'a self,
        token: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Verdict, Unanswered>>;
}

/// A token's shape decides how it is checked: a compact JWS (three segments, the first a
/// JSON header) locally, anything else by introspection.
pub(crate) fn is_jwt_shaped(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2 && token.starts_with("eyJ")
}

/// Cache entries of introspected tokens, accepted or refused, each until its own deadline.
pub(crate) struct Remembered<T> {
    pub(crate) answer: Result<Arc<T>, TokenError>,
    pub(crate) until: Instant,
}

impl<T> Clone for Remembered<T> {
    fn clone(&self) -> Self {
        Self {
            answer: self.answer.clone(),
            until: self.until,
        }
    }
}

/// Expires each remembered answer at its own deadline.
pub(crate) struct UntilDeadline;

impl<T> moka::Expiry<[u8; 32], Remembered<T>> for UntilDeadline {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Remembered<T>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(Instant::now()))
    }
}
