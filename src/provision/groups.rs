//! Groups a token could not carry: Microsoft Entra ID's group overage.
//!
//! Stage: admission. Uses `crate::sign_in`, and the HTTP client of `crate::token::fetch`.
//!
//! When a person is in more groups than fit in a token, Entra ID leaves `groups` out and says
//! so: `_claim_names` names `groups` (with `_claim_sources` pointing at an endpoint), or
//! `hasgroups` is `true`. Such a token says nothing about groups. Without a resolver the
//! person's groups stay as they were, and so do the roles they grant. With one
//! ([`Issuer::group_resolver`](crate::Issuer::group_resolver)), the groups are asked for;
//! until it answers they are unknown, never empty: a resolver that fails revokes nothing.
//!
//! The endpoint a token names in `_claim_sources` is never fetched: a token's claims choose no
//! URL. [`MicrosoftGraph`] calls only the Graph URL it was configured with.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::oauth2::basic::BasicClient;
use ::oauth2::{AsyncHttpClient, AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::error::ConfigError;
use crate::sign_in::SignIn;
use crate::token::fetch::{self, Fetcher, UrlPolicy};

/// What a [`GroupResolver`] answers: the person's groups, or `None` when they cannot be
/// known now.
pub type ResolvedGroups<'a> = Pin<Box<dyn Future<Output = Option<Vec<String>>> + Send + 'a>>;

/// Finds the groups of a person whose token could not carry them.
pub trait GroupResolver: fmt::Debug + Send + Sync + 'static {
    /// The groups of the person `sign_in` names, or `None` when they cannot be known now (the
    /// service is unreachable, refuses, or answers something unusable): their groups are then
    /// treated as unknown, and nothing they grant is revoked.
    fn groups<'a>(&'a self, sign_in: &'a SignIn) -> ResolvedGroups<'a>;
}

/// Whether the sign-in says its groups did not fit.
pub(crate) fn is_overage(sign_in: &SignIn) -> bool {
    sign_in
        .claim("_claim_names")
        .and_then(|names| names.get("groups"))
        .is_some()
        || matches!(sign_in.claim("hasgroups"), Some(Value::Bool(true)))
}

/// The Microsoft Graph endpoint of the public cloud.
const GRAPH_URL: &str = "https://graph.microsoft.com/";
/// The most pages of one person's groups read (999 a page).
const MAX_PAGES: usize = 20;
/// A Graph answer's size bound.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The built-in [`GroupResolver`]: a person's groups from Microsoft Graph
/// (`/users/{oid}/transitiveMemberOf/microsoft.graph.group`, every page), as object ids, with
/// the application's own client credentials (`GroupMember.Read.All`). The person is the
/// token's `oid`; answers are cached per person, bounded in number and age.
#[derive(Clone)]
pub struct MicrosoftGraph {
    inner: Arc<Graph>,
}

struct Graph {
    client_id: String,
    client_secret: String,
    token_url: Url,
    graph_url: Url,
    fetcher: Fetcher,
    /// The application's Graph access token and when to stop using it.
    token: Mutex<Option<(String, Instant)>>,
    cache: moka::future::Cache<Uuid, Arc<Vec<String>>>,
}

impl fmt::Debug for MicrosoftGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MicrosoftGraph")
            .field("client_id", &self.inner.client_id)
            .field("graph_url", &self.inner.graph_url.as_str())
            .field("token_url", &self.inner.token_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Builds a [`MicrosoftGraph`]; see [`MicrosoftGraph::builder`]. Its `Debug` leaves the
/// client secret out.
#[must_use]
pub struct MicrosoftGraphBuilder {
    tenant: String,
    client_id: String,
    client_secret: String,
    graph_url: Option<String>,
    token_url: Option<String>,
    capacity: u64,
    ttl: Duration,
    allow_http_loopback: bool,
}

impl fmt::Debug for MicrosoftGraphBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MicrosoftGraphBuilder")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("graph_url", &self.graph_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl MicrosoftGraph {
    /// A resolver for the tenant `tenant` (its id or primary domain), calling Graph as the
    /// application `client_id` with `client_secret`.
    pub fn builder(
        tenant: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> MicrosoftGraphBuilder {
        MicrosoftGraphBuilder {
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            graph_url: None,
            token_url: None,
            capacity: 10_000,
            ttl: Duration::from_secs(300),
            allow_http_loopback: false,
        }
    }
}

impl MicrosoftGraphBuilder {
    /// Graph's base URL (a national cloud, or a test double). Default
    /// `https://graph.microsoft.com/`.
    pub fn graph_url(mut self, url: impl Into<String>) -> Self {
        self.graph_url = Some(url.into());
        self
    }

    /// The token endpoint for the client credentials. Default
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// How many people's groups are cached, and for how long. Default 10,000 for 5 minutes.
    pub fn cache(mut self, capacity: u64, ttl: Duration) -> Self {
        self.capacity = capacity;
        self.ttl = ttl;
        self
    }

    /// Allows plain-`http` URLs on loopback addresses, for a local test double.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }

    /// The resolver.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a URL that does not parse or is not `https` (plain
    /// `http` on loopback with [`allow_http_loopback`](Self::allow_http_loopback)), an empty
    /// tenant or client id, or a zero cache time.
    pub fn build(self) -> Result<MicrosoftGraph, ConfigError> {
        let invalid = |setting: &str, reason: &'static str| ConfigError::InvalidSetting {
            setting: format!("MicrosoftGraph {setting}"),
            reason,
        };
        if self.tenant.trim().is_empty() || self.client_id.trim().is_empty() {
            return Err(invalid("tenant and client id", "must not be empty"));
        }
        if self.ttl.is_zero() {
            return Err(invalid("cache", "time-to-live must be positive"));
        }
        let policy = UrlPolicy {
            allow_http_loopback: self.allow_http_loopback,
        };
        let url = |setting: &str, text: String| {
            let mut url = Url::parse(&text).map_err(|_| invalid(setting, "not a URL"))?;
            policy.check(&url).map_err(|_| {
                invalid(setting, "must be https (http only on loopback, if allowed)")
            })?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            Ok::<Url, ConfigError>(url)
        };
        let graph_url = url(
            "graph_url",
            self.graph_url.unwrap_or_else(|| GRAPH_URL.to_owned()),
        )?;
        let mut token_url = url(
            "token_url",
            self.token_url.unwrap_or_else(|| {
                format!(
                    "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                    self.tenant.trim()
                )
            }),
        )?;
        // A token endpoint is a resource, not a folder.
        let trimmed = token_url.path().trim_end_matches('/').to_owned();
        token_url.set_path(&trimmed);
        let client =
            fetch::client(Duration::from_secs(10)).map_err(|_| ConfigError::InvalidSetting {
                setting: "MicrosoftGraph".to_owned(),
                reason: "the HTTP client could not be built",
            })?;
        Ok(MicrosoftGraph {
            inner: Arc::new(Graph {
                client_id: self.client_id,
                client_secret: self.client_secret,
                token_url,
                graph_url,
                fetcher: Fetcher::new(client, policy, MAX_BODY),
                token: Mutex::new(None),
                cache: moka::future::Cache::builder()
                    .max_capacity(self.capacity)
                    .time_to_live(self.ttl)
                    .build(),
            }),
        })
    }
}

/// Why Graph gave no usable answer. Logged at `warn`, never shown to a client.
#[derive(Debug, thiserror::Error)]
enum GraphError {
    #[error("the client credentials were not accepted or the token endpoint failed")]
    Token,
    #[error("Graph could not be reached")]
    Unreachable,
    #[error("Graph answered {0}")]
    Status(u16),
    #[error("Graph's answer was not a group list")]
    Unusable,
    #[error("more groups than {MAX_PAGES} pages, or a next page on another origin")]
    Unbounded,
}

impl Graph {
    /// The application's access token to Graph, fetched when missing or about to expire.
    async fn access_token(&self) -> Result<String, GraphError> {
        let held = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((token, until)) = held
            && Instant::now() < until
        {
            return Ok(token);
        }
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()))
            .set_auth_type(AuthType::RequestBody);
        let scope = format!(
            "{}.default",
            self.graph_url.origin().ascii_serialization() + "/"
        );
        let response = client
            .exchange_client_credentials()
            .add_scope(Scope::new(scope))
            .request_async(&self.fetcher)
            .await
            .map_err(|_| GraphError::Token)?;
        let token = response.access_token().secret().clone();
        let lifetime = response
            .expires_in()
            .unwrap_or(Duration::from_secs(300))
            .saturating_sub(Duration::from_secs(60));
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Every group `oid` is a member of, directly or not, as object ids.
    async fn resolve(&self, oid: Uuid) -> Result<Arc<Vec<String>>, GraphError> {
        let token = self.access_token().await?;
        let mut url = self
            .graph_url
            .join(&format!(
                "v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group"
            ))
            .map_err(|_| GraphError::Unusable)?;
        url.query_pairs_mut()
            .append_pair("$select", "id")
            .append_pair("$top", "999");
        let mut groups = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.get(&url, &token).await?;
            let items = page
                .get("value")
                .and_then(Value::as_array)
                .ok_or(GraphError::Unusable)?;
            groups.extend(
                items
                    .iter()
                    .filter_map(|item| item.get("id").and_then(Value::as_str))
                    .map(str::to_owned),
            );
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                None => {
                    groups.sort();
                    groups.dedup();
                    return Ok(Arc::new(groups));
                }
                Some(next) => {
                    let next = Url::parse(next).map_err(|_| GraphError::Unusable)?;
                    if next.origin() != self.graph_url.origin() {
                        return Err(GraphError::Unbounded);
                    }
                    url = next;
                }
            }
        }
        // A partial list must not be taken for the whole one.
        Err(GraphError::Unbounded)
    }

    async fn get(&self, url: &Url, token: &str) -> Result<Value, GraphError> {
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| GraphError::Unusable)?;
        let response = self
            .fetcher
            .call(request)
            .await
            .map_err(|_| GraphError::Unreachable)?;
        match response.status().as_u16() {
            200 => serde_json::from_slice(response.body()).map_err(|_| GraphError::Unusable),
            401 => {
                // The token may have been revoked early: fetch a new one next time.
                *self.token.lock().unwrap_or_else(PoisonError::into_inner) = None;
                Err(GraphError::Status(401))
            }
            status => Err(GraphError::Status(status)),
        }
    }
}

impl MicrosoftGraph {
    /// How many people's groups the cache holds now, after pending evictions ran: never more
    /// than the capacity it was built with.
    pub async fn cached_count(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }
}

impl GroupResolver for MicrosoftGraph {
    fn groups<'a>(&'a self, sign_in: &'a SignIn) -> ResolvedGroups<'a> {
        Box::pin(async move {
            // The oid goes into a URL path: only a well-formed object id does.
            let oid = sign_in
                .claim("oid")
                .and_then(Value::as_str)
                .and_then(|oid| Uuid::parse_str(oid).ok())?;
            let inner = &self.inner;
            match inner.cache.try_get_with(oid, inner.resolve(oid)).await {
                Ok(groups) => Some(groups.to_vec()),
                Err(error) => {
                    tracing::warn!(
                        target: "tower_jit_provisioning::groups",
                        error = %error,
                        "group overage not resolved; the groups stay as they were"
                    );
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_secret_is_never_in_a_debug_print() {
        let builder = MicrosoftGraph::builder("tenant", "client", "the-client-secret-value");
        assert!(!format!("{builder:?}").contains("the-client-secret-value"));
        let graph = builder.build().unwrap();
        assert!(!format!("{graph:?}").contains("the-client-secret-value"));
    }
}
