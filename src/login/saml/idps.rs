//! The trusted identity providers: from metadata files and documents, read once when the layer
//! is built, and from metadata URLs, fetched on first use and again when their `cacheDuration`
//! runs out (or their `validUntil` passes), the last good document kept while a fetch fails.
//!
//! An IdP fetched from a URL is configured with its entity id, so the provisioning rules are
//! bound to it before anything is fetched, and a document that names another entity is never
//! trusted in its place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::Utc;
use openidconnect::AsyncHttpClient as _;
use url::Url;

use super::verify::TrustedIdp;
use crate::token::fetch::Fetcher;

/// Refreshed at least this often, whatever the metadata says.
const LONGEST_CACHE: Duration = Duration::from_secs(24 * 3600);
/// And at most this often.
const SHORTEST_CACHE: Duration = Duration::from_secs(60);
/// Without a `cacheDuration`.
const DEFAULT_CACHE: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next try waits this long.
const RETRY: Duration = Duration::from_secs(30);

/// The IdPs, in configuration order.
pub(crate) struct Idps {
    entries: Vec<IdpSource>,
}

/// One IdP: by metadata read once, or by a metadata URL kept fresh.
pub(crate) enum IdpSource {
    Fixed(Arc<TrustedIdp>),
    Remote(Remote),
}

impl IdpSource {
    /// An IdP by its metadata `url`; `fetched` is its metadata as just fetched, if it was.
    pub(crate) fn remote(
        entity_id: String,
        url: Url,
        fetcher: Fetcher,
        allow_http: bool,
        fetched: Option<TrustedIdp>,
    ) -> Self {
        let next_fetch = match &fetched {
            Some(idp) => Instant::now() + cache_time(idp),
            None => Instant::now(),
        };
        Self::Remote(Remote {
            entity_id,
            url,
            fetcher,
            allow_http,
            current: ArcSwapOption::new(fetched.map(Arc::new)),
            next_fetch: tokio::sync::Mutex::new(next_fetch),
        })
    }

    /// The IdP's entity id, fetched or not.
    pub(crate) fn entity_id(&self) -> &str {
        match self {
            Self::Fixed(idp) => idp.metadata.entity_id.as_str(),
            Self::Remote(remote) => remote.entity_id.as_str(),
        }
    }

    /// The IdP, its metadata refreshed when it is due; `None` when its metadata was never
    /// fetched, or expired and cannot be fetched again.
    pub(crate) async fn current(&self) -> Option<Arc<TrustedIdp>> {
        match self {
            Self::Fixed(idp) => Some(Arc::clone(idp)),
            Self::Remote(remote) => remote.current().await,
        }
    }
}

/// An IdP whose metadata lives at a URL.
pub(crate) struct Remote {
    entity_id: String,
    url: Url,
    fetcher: Fetcher,
    allow_http: bool,
    current: ArcSwapOption<TrustedIdp>,
    /// When to fetch next; the lock also makes one fetch serve every waiting request.
    next_fetch: tokio::sync::Mutex<Instant>,
}

impl Idps {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    pub(crate) fn add_fixed(&mut self, idp: TrustedIdp) {
        self.entries.push(IdpSource::Fixed(Arc::new(idp)));
    }

    /// An IdP by its metadata URL; `fetched` is its metadata as just fetched, if it was.
    pub(crate) fn add_remote(
        &mut self,
        entity_id: String,
        url: Url,
        fetcher: Fetcher,
        allow_http: bool,
        fetched: Option<TrustedIdp>,
    ) {
        self.entries.push(IdpSource::remote(
            entity_id, url, fetcher, allow_http, fetched,
        ));
    }

    /// Every configured entity id, fetched or not.
    pub(crate) fn entity_ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(IdpSource::entity_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The IdPs that can be used now, their metadata refreshed where it is due. One whose
    /// metadata was never fetched, or expired and cannot be fetched again, is left out.
    pub(crate) async fn current(&self) -> Vec<Arc<TrustedIdp>> {
        let mut idps = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            if let Some(idp) = entry.current().await {
                idps.push(idp);
            }
        }
        idps
    }
}

impl Remote {
    async fn current(&self) -> Option<Arc<TrustedIdp>> {
        let now = Instant::now();
        let usable = |idp: &Arc<TrustedIdp>| {
            idp.metadata
                .valid_until
                .is_none_or(|until| until > Utc::now())
        };
        let held = self.current.load_full().filter(usable);
        if held.is_some() && now < *self.next_fetch.lock().await {
            return held;
        }
        let mut next = self.next_fetch.lock().await;
        if now < *next {
            // Another request fetched while this one waited.
            return self.current.load_full().filter(usable);
        }
        match self.fetch().await {
            Ok(idp) => {
                *next = Instant::now() + cache_time(&idp);
                self.current.store(Some(Arc::new(idp)));
            }
            Err(reason) => {
                tracing::warn!(
                    target: "tower_jit_provisioning::saml",
                    idp = %self.entity_id,
                    url = %self.url,
                    reason,
                    "IdP metadata could not be fetched; the last good metadata is kept"
                );
                *next = Instant::now() + RETRY;
            }
        }
        self.current.load_full().filter(usable)
    }

    async fn fetch(&self) -> Result<TrustedIdp, &'static str> {
        let xml = fetch_text(&self.fetcher, &self.url).await?;
        TrustedIdp::from_metadata(&xml, &self.entity_id, self.allow_http)
    }
}

/// How long fetched metadata is used before it is fetched again.
fn cache_time(idp: &TrustedIdp) -> Duration {
    idp.metadata
        .cache_duration
        .unwrap_or(DEFAULT_CACHE)
        .clamp(SHORTEST_CACHE, LONGEST_CACHE)
}

/// The metadata document at `url`, or why not.
pub(crate) async fn fetch_text(fetcher: &Fetcher, url: &Url) -> Result<String, &'static str> {
    let request = http::Request::get(url.as_str())
        .header(
            http::header::ACCEPT,
            "application/samlmetadata+xml, application/xml",
        )
        .body(Vec::new())
        .map_err(|_| "bad URL")?;
    let response = fetcher.call(request).await.map_err(|_| "unreachable")?;
    if !response.status().is_success() {
        return Err("not 2xx");
    }
    String::from_utf8(response.into_body()).map_err(|_| "not UTF-8")
}

impl std::fmt::Debug for Idps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entity_ids()).finish()
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::testing::TestSamlIdp;
    use crate::token::fetch::{UrlPolicy, client};

    fn fetcher() -> Fetcher {
        Fetcher::new(
            client(Duration::from_secs(5)).unwrap(),
            UrlPolicy {
                allow_http_loopback: true,
            },
            1024 * 1024,
        )
    }

    #[tokio::test]
    async fn metadata_by_url_is_fetched_on_first_use_and_the_last_good_is_kept() {
        let idp = TestSamlIdp::start().await;
        let mut idps = Idps::new();
        let url = Url::parse(&idp.metadata_url()).unwrap();
        idps.add_remote(idp.entity_id(), url, fetcher(), true, None);
        let fetched = idps.current().await;
        assert_eq!(fetched.len(), 1);
        assert_eq!(fetched[0].metadata.entity_id, idp.entity_id());
        // The IdP goes away and the metadata is due: the last good metadata still answers.
        drop(idp);
        let IdpSource::Remote(remote) = &idps.entries[0] else {
            unreachable!()
        };
        *remote.next_fetch.lock().await = Instant::now();
        let kept = idps.current().await;
        assert_eq!(kept.len(), 1);
        assert!(Arc::ptr_eq(&kept[0], &fetched[0]));
        // And the next try waits instead of hammering the IdP.
        assert!(*remote.next_fetch.lock().await > Instant::now() + Duration::from_secs(20));
    }

    #[tokio::test]
    async fn metadata_naming_another_entity_is_never_used() {
        let idp = TestSamlIdp::start().await;
        let mut idps = Idps::new();
        let url = Url::parse(&idp.metadata_url()).unwrap();
        idps.add_remote(
            "https://expected.example/saml".to_owned(),
            url,
            fetcher(),
            true,
            None,
        );
        assert!(idps.current().await.is_empty());
        assert_eq!(
            idps.entity_ids().collect::<Vec<_>>(),
            ["https://expected.example/saml"]
        );
    }
}
