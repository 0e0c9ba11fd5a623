//! What a store keeps for browser sign-in: [`Session`]s, the short-lived [`LoginFlow`]s that
//! lead to them, and the one-time keys ([`UserStore::consume_once`]) that stop replays.
//!
//! Stage: records shared by the store and the sign-in stages; uses only `crate::user`.
//!
//! A session's cookie carries a random id the store never sees: it keeps only the id's SHA-256
//! ([`SessionHash`]), so a copy of the database lets nobody in. A login flow is kept under the
//! hash of its `state` (or a SAML request id), bound to the browser that started it by the hash
//! of a second cookie, and taken once.
//!
//! [`UserStore::consume_once`]: crate::UserStore::consume_once

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// The SHA-256 of a secret the browser holds (a session id, a flow's `state`): what the store
/// keys it by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHash(pub [u8; 32]);

impl SessionHash {
    /// The hash of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Lower-case hex, as the SQL stores keep it.
    pub fn to_hex(self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0f)] as char);
        }
        out
    }

    /// The hash written by [`to_hex`](Self::to_hex).
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell sessions apart in a log; the hash is not the secret, but
        // there is no reason to print it whole.
        write!(f, "SessionHash({}…)", &self.to_hex()[..8])
    }
}

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Session {
    /// The hash of the id in the session cookie.
    pub id: SessionHash,
    /// The account.
    pub user_id: Uuid,
    /// The issuer the person signed in at.
    pub issuer: String,
    /// The subject they signed in as.
    pub subject: String,
    /// The issuer's own session id (`sid`), for its back-channel logout.
    pub sid: Option<String>,
    /// The sign-in source (`browser_oidc`, `saml`, …).
    pub source: String,
    /// When the session began.
    pub created_at: DateTime<Utc>,
    /// When the session ends, however active it is (the absolute timeout).
    pub expires_at: DateTime<Utc>,
    /// How long the session may go unused before it ends, in seconds.
    pub idle_secs: i64,
    /// When the session was last used, as last recorded (recorded in batches).
    pub last_seen_at: DateTime<Utc>,
}

impl Session {
    /// A new session, begun and seen `now`. Times are kept to the microsecond, as every store
    /// keeps them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionHash,
        user_id: Uuid,
        issuer: impl Into<String>,
        subject: impl Into<String>,
        sid: Option<String>,
        source: impl Into<String>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        idle_secs: i64,
    ) -> Self {
        use chrono::SubsecRound;
        let now = now.trunc_subsecs(6);
        Self {
            id,
            user_id,
            issuer: issuer.into(),
            subject: subject.into(),
            sid,
            source: source.into(),
            created_at: now,
            expires_at: expires_at.trunc_subsecs(6),
            idle_secs,
            last_seen_at: now,
        }
    }

    /// Whether the session is still valid at `now`: before its absolute end, and used within
    /// its idle timeout (as far as `last_seen_at` knows).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at && (now - self.last_seen_at).num_seconds() < self.idle_secs
    }
}

/// Which sessions to end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionSelector {
    /// One session.
    Id(SessionHash),
    /// The sessions an issuer knows by its own session id (OIDC `sid`, a SAML `SessionIndex`).
    IssuerSession {
        /// The issuer.
        issuer: String,
        /// Its session id.
        sid: String,
    },
    /// Every session of one identity.
    Subject {
        /// The issuer.
        issuer: String,
        /// The subject.
        subject: String,
    },
    /// Every session of one account.
    User(Uuid),
}

/// A sign-in in progress: what the browser's return must match, kept server-side for a short
/// time and taken once.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct LoginFlow {
    /// The hash of the flow's public key (OAuth `state`, a SAML request id).
    pub key: SessionHash,
    /// The hash of the binding cookie of the browser that started it.
    pub binding: SessionHash,
    /// What kind of flow (`oidc`, `oauth2`, `saml`).
    pub kind: String,
    /// The flow's secrets and destination (nonce, PKCE verifier, `return_to`, …), as its
    /// source keeps them.
    pub data: Value,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it can no longer be finished.
    pub expires_at: DateTime<Utc>,
}

impl LoginFlow {
    /// A flow of `kind` started `now`, valid until `expires_at`.
    pub fn new(
        key: SessionHash,
        binding: SessionHash,
        kind: impl Into<String>,
        data: Value,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        use chrono::SubsecRound;
        Self {
            key,
            binding,
            kind: kind.into(),
            data,
            created_at: now.trunc_subsecs(6),
            expires_at: expires_at.trunc_subsecs(6),
        }
    }
}

impl fmt::Debug for LoginFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginFlow")
            .field("kind", &self.kind)
            .field("data", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_as_hex_and_debug_shows_a_prefix() {
        let hash = SessionHash::of(b"a session id");
        assert_eq!(SessionHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(SessionHash::from_hex("zz"), None);
        assert_eq!(SessionHash::from_hex(&"g".repeat(64)), None);
        let debug = format!("{hash:?}");
        assert!(
            debug.len() < 30 && !debug.contains(&hash.to_hex()),
            "{debug}"
        );
    }

    #[test]
    fn sessions_end_at_their_absolute_and_idle_limits() {
        let now = Utc::now();
        let session = Session::new(
            SessionHash::of(b"x"),
            Uuid::now_v7(),
            "https://idp",
            "s",
            None,
            "browser_oidc",
            now,
            now + chrono::TimeDelta::seconds(100),
            30,
        );
        assert!(session.is_live(now));
        assert!(session.is_live(now + chrono::TimeDelta::seconds(29)));
        assert!(!session.is_live(now + chrono::TimeDelta::seconds(30)));
        let mut active = session.clone();
        active.last_seen_at = now + chrono::TimeDelta::seconds(90);
        assert!(active.is_live(now + chrono::TimeDelta::seconds(99)));
        assert!(!active.is_live(now + chrono::TimeDelta::seconds(100)));
    }
}
