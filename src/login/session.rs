//! Sessions: the cookie, the cache in front of the store, and the batched last-seen writes.
//!
//! The cookie carries 256 random bits and nothing else; the store keeps their SHA-256. A
//! request with a session cookie is answered from the cache when it can be: one SHA-256, one
//! lookup, an atomic store of the time, no await. The times are written to the store in
//! batches, every `last_seen_interval`, never per request. Every way a session ends reaches
//! each server's cache through the store's change feed (PostgreSQL's `NOTIFY` for the others):
//! a session ended, or its account changed, is read again before it is used again.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use http::HeaderMap;

use crate::error::ErrorChain;
use crate::session::{Session, SessionHash, SessionSelector};
use crate::sign_in::{SignIn, SignInSource};
use crate::store::{DynStore, StoreError, StoreEvent, Subscription};
use crate::user::IdentityKey;

/// Bytes of randomness in a session id.
const SESSION_ID_BYTES: usize = 32;

/// How long a session read from the store is served from the cache at most; ends reach the
/// cache through the change feed at once, this only bounds what a lost broadcast could cost.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// A session as the cache holds it.
pub(crate) struct CachedSession {
    pub(crate) session: Session,
    /// The identity the session signs in as.
    pub(crate) key: IdentityKey,
    /// What the handlers see: the session's source, issuer and subject (its attributes were
    /// the sign-in's, which the account keeps).
    pub(crate) sign_in: SignIn,
    /// When this server last saw the session used, in Unix seconds.
    last_seen: AtomicI64,
    /// The last time written (or queued) to the store.
    recorded: AtomicI64,
}

impl CachedSession {
    fn new(session: Session) -> Option<Self> {
        let source = SignInSource::from_name(&session.source).unwrap_or(SignInSource::BrowserOidc);
        let sign_in = SignIn::builder(source, session.issuer.as_str(), session.subject.as_str())
            .build()
            .ok()?;
        let seen = session.last_seen_at.timestamp();
        Some(Self {
            key: IdentityKey::new(session.issuer.as_str(), session.subject.as_str()),
            sign_in,
            last_seen: AtomicI64::new(seen),
            recorded: AtomicI64::new(seen),
            session,
        })
    }

    /// Whether the session may be used at `now`, by what this server knows.
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        let seen = self.last_seen.load(Ordering::Relaxed);
        now < self.session.expires_at && now.timestamp() - seen < self.session.idle_secs
    }
}

/// What a request's cookie says, from the cache alone.
pub(crate) enum Lookup {
    /// No session cookie (or an unusable one): no session.
    None,
    /// A live session, from the cache.
    Hit(Arc<CachedSession>),
    /// A session cookie the cache cannot answer for: read the store.
    Miss(SessionHash),
}

/// The sessions of one layer: settings, cache, change subscription, last-seen writer.
pub(crate) struct Sessions {
    store: Arc<dyn DynStore>,
    pub(crate) cookie: &'static str,
    pub(crate) secure: bool,
    idle: Duration,
    absolute: Duration,
    last_seen_interval: Duration,
    cache: moka::sync::Cache<SessionHash, Arc<CachedSession>>,
    _subscription: Subscription,
    /// Itself, for the writer task it starts on first use.
    me: Weak<Self>,
    writer: std::sync::Once,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cookie", &self.cookie)
            .field("idle", &self.idle)
            .field("absolute", &self.absolute)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub(crate) fn new(
        store: Arc<dyn DynStore>,
        secure: bool,
        idle: Duration,
        absolute: Duration,
        last_seen_interval: Duration,
    ) -> Arc<Self> {
        let cache: moka::sync::Cache<SessionHash, Arc<CachedSession>> =
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .support_invalidation_closures()
                .build();
        let subscription = {
            let cache = cache.clone();
            store.changes().subscribe(move |event| match *event {
                StoreEvent::SessionsEnded { user_id } | StoreEvent::Deleted { user_id } => {
                    // Registered before this returns: no later lookup sees those entries.
                    let _ = cache
                        .invalidate_entries_if(move |_, cached| cached.session.user_id == user_id);
                }
                StoreEvent::Reset => cache.invalidate_all(),
                _ => {}
            })
        };
        Arc::new_cyclic(|me| Self {
            store,
            cookie: if secure {
                "__Host-jit_session"
            } else {
                "jit_session"
            },
            secure,
            idle,
            absolute,
            last_seen_interval,
            cache,
            _subscription: subscription,
            me: me.clone(),
            writer: std::sync::Once::new(),
        })
    }

    /// Starts, once, the background writer of last-seen times and purger of expired records;
    /// it stops when the sessions are dropped. Called from the asynchronous paths, which run on
    /// a Tokio runtime; the cache holds nothing before one of them ran.
    fn ensure_writer(&self) {
        self.writer.call_once(|| {
            tokio::spawn(write_last_seen(self.me.clone(), self.last_seen_interval));
        });
    }

    /// The session the request's cookie names, if the cache can say.
    pub(crate) fn lookup(&self, headers: &HeaderMap, now: DateTime<Utc>) -> Lookup {
        let Some(hash) = self.cookie_hash(headers) else {
            return Lookup::None;
        };
        match self.cache.get(&hash) {
            Some(cached) if cached.is_live(now) => {
                cached
                    .last_seen
                    .fetch_max(now.timestamp(), Ordering::Relaxed);
                Lookup::Hit(cached)
            }
            // Expired by this server's clock of it, or never read: the store has the last
            // word (another server may have seen it used since).
            _ => Lookup::Miss(hash),
        }
    }

    /// The hash of the request's session cookie, if it carries one well-formed.
    pub(crate) fn cookie_hash(&self, headers: &HeaderMap) -> Option<SessionHash> {
        let value = crate::cookies::read(headers, self.cookie).ok()??;
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        (bytes.len() == SESSION_ID_BYTES).then(|| SessionHash::of(value.as_bytes()))
    }

    /// Reads a session the cache could not answer for; ends it in the store when it expired.
    pub(crate) async fn load(
        &self,
        hash: SessionHash,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<CachedSession>>, StoreError> {
        self.ensure_writer();
        self.cache.invalidate(&hash);
        let Some(session) = self.store.find_session(hash).await? else {
            return Ok(None);
        };
        if !session.is_live(now) {
            self.store.end_sessions(SessionSelector::Id(hash)).await?;
            return Ok(None);
        }
        let Some(cached) = CachedSession::new(session).map(Arc::new) else {
            return Ok(None);
        };
        cached
            .last_seen
            .fetch_max(now.timestamp(), Ordering::Relaxed);
        self.cache.insert(hash, Arc::clone(&cached));
        Ok(Some(cached))
    }

    /// Starts a session for an account that just signed in; returns the cookie to set.
    pub(crate) async fn start(
        &self,
        user_id: uuid::Uuid,
        sign_in: &SignIn,
        sid: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        self.ensure_writer();
        let id = random_token(SESSION_ID_BYTES);
        let hash = SessionHash::of(id.as_bytes());
        let absolute = TimeDelta::from_std(self.absolute).unwrap_or(TimeDelta::MAX);
        let session = Session::new(
            hash,
            user_id,
            sign_in.issuer(),
            sign_in.subject(),
            sid,
            sign_in.source().as_str(),
            now,
            now + absolute,
            i64::try_from(self.idle.as_secs()).unwrap_or(i64::MAX),
        );
        self.store.create_session(session).await?;
        Ok(crate::cookies::set(
            self.cookie,
            &id,
            i64::try_from(self.absolute.as_secs()).unwrap_or(i64::MAX),
            self.secure,
        ))
    }

    /// Ends the session the request's cookie names, if any; returns the cookie that clears it.
    pub(crate) async fn end(&self, headers: &HeaderMap) -> Result<String, StoreError> {
        if let Some(hash) = self.cookie_hash(headers) {
            self.store.end_sessions(SessionSelector::Id(hash)).await?;
            self.cache.invalidate(&hash);
        }
        Ok(crate::cookies::clear(self.cookie, self.secure))
    }

    /// The last-seen times this server holds that the store does not yet.
    fn unrecorded(&self) -> Vec<(SessionHash, DateTime<Utc>)> {
        self.cache
            .iter()
            .filter_map(|(hash, cached)| {
                let seen = cached.last_seen.load(Ordering::Relaxed);
                let recorded = cached.recorded.swap(seen, Ordering::Relaxed);
                (seen > recorded)
                    .then(|| DateTime::from_timestamp(seen, 0).map(|at| (*hash, at)))
                    .flatten()
            })
            .collect()
    }

    async fn write_batch(&self) {
        let seen = self.unrecorded();
        if seen.is_empty() {
            return;
        }
        if let Err(error) = self.store.touch_sessions(seen).await {
            tracing::debug!(
                target: "tower_jit_provisioning::sessions",
                error = %ErrorChain(&error),
                "last-seen times not written; the next batch carries them"
            );
        }
    }
}

/// How many last-seen batches pass between two purges of expired records.
const PURGE_EVERY: u32 = 10;

async fn write_last_seen(sessions: Weak<Sessions>, interval: Duration) {
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        sessions.write_batch().await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(PURGE_EVERY)
            && let Err(error) = sessions.store.purge_expired(Utc::now()).await
        {
            tracing::debug!(
                target: "tower_jit_provisioning::sessions",
                error = %ErrorChain(&error),
                "expired sessions not purged"
            );
        }
    }
}

/// `bytes` random bytes, base64url.
pub(crate) fn random_token(bytes: usize) -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    URL_SAFE_NO_PAD.encode(buf)
}
