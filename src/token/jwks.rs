//! One issuer's signing keys: discovered, cached, refreshed, never waited on without need.
//!
//! Stage: the bearer-token source. Uses only `crate::error`.
//!
//! - Readers take the current [`KeySet`] from an `ArcSwap`: no lock, no await, no network. Only a
//!   request whose `kid` is not in the set (or that finds no usable set) waits, and then for the
//!   one refresh in flight, which every such request shares.
//! - A refresh starts at most once per `min_refresh_interval` (the cool-down), whatever the
//!   traffic: a flood of random `kid`s costs one fetch per cool-down.
//! - The refresh runs in its own task, so a client that disconnects does not cancel it for the
//!   others.
//! - Keys older than `refresh_interval` are refreshed in the background while still being used;
//!   a failed refresh (network error, 5xx, HTML, an empty or oversized set) keeps the keys held.
//!   Keys older than `max_staleness` are no longer trusted: the layer fails closed with 503 until a
//!   refresh succeeds.
//! - The first fetch is OIDC discovery (`openidconnect` compares the document's `issuer` with the
//!   configured one exactly) followed by the `jwks_uri`; later refreshes fetch the `jwks_uri`
//!   again, and rediscover after a failure in case it moved.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use futures_util::future::Shared;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    DiscoveryError, IssuerUrl, JsonWebKey, JsonWebKeySet, JsonWebKeySetUrl, JsonWebKeyUse,
    ProviderMetadata,
};

use super::fetch::{FetchError, Fetcher};
use super::jwk::Jwk;
use crate::error::ErrorChain;

/// What a discovery document says beyond OpenID Connect Discovery: RFC 8414's
/// `introspection_endpoint` (RFC 7662).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub(crate) struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    introspection_endpoint: Option<String>,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    Jwk,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Derive<V> = Box<dyn Fn(&JsonWebKeySet<Jwk>) -> V + Send + Sync>;

type SharedRefresh = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// When keys are fetched and for how long they are trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyTiming {
    /// The cool-down: no two fetches start closer together than this.
    pub(crate) min_refresh_interval: Duration,
    /// Keys older than this are refreshed in the background while still in use.
    pub(crate) refresh_interval: Duration,
    /// Keys older than this are no longer used; requests get 503 until a refresh succeeds.
    pub(crate) max_staleness: Duration,
}

/// A key set as fetched, with whatever the issuer derives from it (its verifiers).
pub(crate) struct KeySet<V> {
    pub(crate) keys: JsonWebKeySet<Jwk>,
    pub(crate) derived: V,
    fetched_at: Instant,
}

impl<V> KeySet<V> {
    /// Whether a key with this `kid` is held (any key, for a token without `kid`).
    fn has_key(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self
                .keys
                .keys()
                .iter()
                .any(|key| key.key_id().is_some_and(|id| id.as_str() == kid)),
            None => !self.keys.keys().is_empty(),
        }
    }
}

/// No usable keys are held for the issuer; retry after the cool-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeysUnavailable {
    pub(crate) retry_after: Duration,
}

/// Why a refresh failed. Logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("discovery failed")]
    Discovery(#[source] DiscoveryError<FetchError>),
    #[error("key set fetch failed")]
    KeySet(#[source] DiscoveryError<FetchError>),
    #[error("key set holds no usable signing key")]
    NoUsableKey,
    #[error("discovery document fetch failed")]
    DiscoveryFetch(#[source] FetchError),
    #[error("discovery document answered HTTP {0}")]
    DiscoveryStatus(u16),
    #[error("discovery document unreadable")]
    DiscoveryDocument(#[source] serde_json::Error),
    #[error("discovery document names another issuer")]
    IssuerMismatch,
}

/// The keys of one issuer.
pub(crate) struct KeyManager<V> {
    issuer: IssuerUrl,
    /// Where the discovery document is, when not at the issuer's own well-known URL.
    discovery: Option<url::Url>,
    fetcher: Fetcher,
    timing: KeyTiming,
    derive: Derive<V>,
    current: ArcSwapOption<KeySet<V>>,
    /// The endpoints the last discovery document named, for browser sign-in.
    endpoints: ArcSwapOption<Endpoints>,
    state: Mutex<RefreshState>,
}

/// What browser sign-in needs of a discovery document.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "login"), allow(dead_code))]
pub(crate) struct Endpoints {
    pub(crate) authorization: openidconnect::AuthUrl,
    pub(crate) token: Option<openidconnect::TokenUrl>,
    /// `token_endpoint_auth_methods_supported`; absent means `client_secret_basic` (OpenID
    /// Connect Discovery §3).
    pub(crate) token_auth_methods: Vec<CoreClientAuthMethod>,
    /// `introspection_endpoint`, when the document names one.
    pub(crate) introspection: Option<url::Url>,
}

impl Endpoints {
    fn of(metadata: &Metadata) -> Self {
        Self {
            authorization: metadata.authorization_endpoint().clone(),
            token: metadata.token_endpoint().cloned(),
            token_auth_methods: metadata
                .token_endpoint_auth_methods_supported()
                .cloned()
                .unwrap_or_default(),
            introspection: metadata
                .additional_metadata()
                .introspection_endpoint
                .as_deref()
                .and_then(|url| url::Url::parse(url).ok()),
        }
    }
}

#[derive(Default)]
struct RefreshState {
    inflight: Option<SharedRefresh>,
    last_attempt: Option<Instant>,
    jwks_uri: Option<JsonWebKeySetUrl>,
}

impl<V: Send + Sync + 'static> KeyManager<V> {
    pub(crate) fn new(
        issuer: IssuerUrl,
        discovery: Option<url::Url>,
        fetcher: Fetcher,
        timing: KeyTiming,
        derive: impl Fn(&JsonWebKeySet<Jwk>) -> V + Send + Sync + 'static,
    ) -> Self {
        Self {
            issuer,
            discovery,
            fetcher,
            timing,
            derive: Box::new(derive),
            current: ArcSwapOption::empty(),
            endpoints: ArcSwapOption::empty(),
            state: Mutex::new(RefreshState::default()),
        }
    }

    /// The key set to verify a token with `kid` against.
    ///
    /// Returns at once when the key is held. Otherwise waits for the shared refresh (if the
    /// cool-down allows one) and returns whatever set is then held, which may still lack the key:
    /// the verifier then refuses the token as signed by an unknown key.
    pub(crate) async fn key_set(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet<V>>, KeysUnavailable> {
        let now = Instant::now();
        if let Some(set) = self.usable(now)
            && set.has_key(kid)
        {
            if now.saturating_duration_since(set.fetched_at) >= self.timing.refresh_interval {
                // Stale-while-revalidate: the refresh runs on its own; this request does not
                // wait for it.
                drop(self.refresh(now));
            }
            return Ok(set);
        }
        if let Some(refresh) = self.refresh(now) {
            refresh.await;
        }
        let now = Instant::now();
        self.usable(now).ok_or_else(|| self.unavailable(now))
    }

    /// Whether a key with `kid` is held and still trusted, without waiting for anything: what a
    /// token verified earlier needs to stay accepted.
    pub(crate) fn holds(&self, kid: Option<&str>, now: Instant) -> bool {
        let current = self.current.load();
        current.as_ref().is_some_and(|set| {
            now.saturating_duration_since(set.fetched_at) <= self.timing.max_staleness
                && set.has_key(kid)
        })
    }

    /// Fetches the keys now unless the cool-down forbids it, and waits for the result.
    pub(crate) async fn prefetch(self: &Arc<Self>) -> bool {
        if let Some(refresh) = self.refresh(Instant::now()) {
            refresh.await;
        }
        self.usable(Instant::now()).is_some()
    }

    /// The held set, unless it is older than the maximum staleness.
    fn usable(&self, now: Instant) -> Option<Arc<KeySet<V>>> {
        self.current.load_full().filter(|set| {
            now.saturating_duration_since(set.fetched_at) <= self.timing.max_staleness
        })
    }

    fn unavailable(&self, now: Instant) -> KeysUnavailable {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = state
            .last_attempt
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        KeysUnavailable {
            retry_after: self
                .timing
                .min_refresh_interval
                .saturating_sub(since)
                .max(Duration::from_secs(1)),
        }
    }

    /// Joins the refresh in flight, or starts one if the cool-down has passed.
    fn refresh(self: &Arc<Self>, now: Instant) -> Option<SharedRefresh> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inflight) = &state.inflight {
            // A finished refresh clears itself; one that panicked would not, so never join a
            // future that already completed.
            if inflight.peek().is_none() {
                return Some(inflight.clone());
            }
        }
        if let Some(last) = state.last_attempt
            && now.saturating_duration_since(last) < self.timing.min_refresh_interval
        {
            return None;
        }
        state.last_attempt = Some(now);
        let jwks_uri = state.jwks_uri.clone();
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.run_refresh(jwks_uri).await });
        let refresh: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            // A panic in the refresh task is a bug, not an outage; the keys held stay in use.
            let _ = task.await;
        });
        let refresh = refresh.shared();
        state.inflight = Some(refresh.clone());
        Some(refresh)
    }

    async fn run_refresh(self: Arc<Self>, jwks_uri: Option<JsonWebKeySetUrl>) {
        let result = self.fetch(jwks_uri).await;
        crate::metrics::key_set_refresh(result.is_ok());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.inflight = None;
        match result {
            Ok((uri, keys)) => {
                let count = keys.keys().len();
                let derived = (self.derive)(&keys);
                self.current.store(Some(Arc::new(KeySet {
                    keys,
                    derived,
                    fetched_at: Instant::now(),
                })));
                state.jwks_uri = Some(uri);
                tracing::debug!(
                    target: "tower_jit_provisioning::keys",
                    issuer = %self.issuer.as_str(),
                    keys = count,
                    "signing keys refreshed"
                );
            }
            Err(error) => {
                // Rediscover next time: the key set may have moved.
                state.jwks_uri = None;
                tracing::warn!(
                    target: "tower_jit_provisioning::keys",
                    issuer = %self.issuer.as_str(),
                    error = %ErrorChain(&error),
                    held = self.current.load().is_some(),
                    "signing key refresh failed; keeping the keys held"
                );
            }
        }
    }

    /// The key set's URL from a discovery document that is not at the issuer's well-known URL
    /// (Entra ID's v1.0 issuer, say), with the same exact issuer comparison as discovery.
    async fn discover_at(&self, url: &url::Url) -> Result<Metadata, RefreshError> {
        use openidconnect::AsyncHttpClient;
        let request = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|err| RefreshError::DiscoveryFetch(FetchError::Request(err)))?;
        let response = self
            .fetcher
            .call(request)
            .await
            .map_err(RefreshError::DiscoveryFetch)?;
        if !response.status().is_success() {
            return Err(RefreshError::DiscoveryStatus(response.status().as_u16()));
        }
        let metadata: Metadata =
            serde_json::from_slice(response.body()).map_err(RefreshError::DiscoveryDocument)?;
        if metadata.issuer() != &self.issuer {
            return Err(RefreshError::IssuerMismatch);
        }
        Ok(metadata)
    }

    /// The HTTP client this issuer is reached with.
    pub(crate) fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The endpoints of the issuer's discovery document, discovering it first if it never was.
    pub(crate) async fn endpoints(self: &Arc<Self>) -> Option<Arc<Endpoints>> {
        if let Some(endpoints) = self.endpoints.load_full() {
            return Some(endpoints);
        }
        self.prefetch().await;
        self.endpoints.load_full()
    }

    async fn fetch(
        &self,
        jwks_uri: Option<JsonWebKeySetUrl>,
    ) -> Result<(JsonWebKeySetUrl, JsonWebKeySet<Jwk>), RefreshError> {
        let (uri, keys) = match jwks_uri {
            Some(uri) => {
                let keys = JsonWebKeySet::fetch_async(&uri, &self.fetcher)
                    .await
                    .map_err(RefreshError::KeySet)?;
                (uri, keys)
            }
            None => match &self.discovery {
                None => {
                    let metadata = Metadata::discover_async(self.issuer.clone(), &self.fetcher)
                        .await
                        .map_err(RefreshError::Discovery)?;
                    self.endpoints
                        .store(Some(Arc::new(Endpoints::of(&metadata))));
                    (metadata.jwks_uri().clone(), metadata.jwks().clone())
                }
                Some(url) => {
                    let metadata = self.discover_at(url).await?;
                    self.endpoints
                        .store(Some(Arc::new(Endpoints::of(&metadata))));
                    let uri = metadata.jwks_uri().clone();
                    let keys = JsonWebKeySet::fetch_async(&uri, &self.fetcher)
                        .await
                        .map_err(RefreshError::KeySet)?;
                    (uri, keys)
                }
            },
        };
        let usable = keys
            .keys()
            .iter()
            .any(|key| key.key_use().is_none_or(JsonWebKeyUse::allows_signature));
        if !usable {
            return Err(RefreshError::NoUsableKey);
        }
        Ok((uri, keys))
    }
}
