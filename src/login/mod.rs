//! Browser sign-in (feature `login`): the OpenID Connect authorization code flow with PKCE,
//! server-side sessions in the store, and logout, as a router the application mounts.
//!
//! Stage: a sign-in source (browsers). Uses the bearer-token source's key sets and verifier for
//! the ID tokens and logout tokens issuers send, `crate::sign_in` to say who signed in, and
//! hands the sign-in to provisioning through the layer; sessions and flows live in the store.
//!
//! ```text
//! GET  /login ──► 303 to the issuer (state, nonce, PKCE S256; a flow kept server-side,
//!                 bound to this browser by a cookie, ten minutes, one use)
//! GET  /callback ─► flow taken ─► code exchanged ─► ID token verified (nonce, at_hash)
//!                 ─► admitted, provisioned, audited ─► new session ─► 303 to `return_to`
//! POST /logout ──► same origin only ─► session ended ─► 303 to /
//! POST /backchannel-logout ─► logout token verified (jti once) ─► sessions ended
//! ```
//!
//! Requests carrying the session cookie are then signed in by the layer itself, through the
//! same caches as bearer tokens: [`ProvisionedUser`](crate::ProvisionedUser) and its `Option`
//! work the same whichever way the person came.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_jit_provisioning::login::BrowserLogin;
//! use tower_jit_provisioning::{Issuer, ProvisionedUser, ProvisioningLayer, SqliteStore};
//!
//! async fn me(user: ProvisionedUser) -> String {
//!     format!("hello {}", user.user().email.as_deref().unwrap_or("stranger"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//! let layer = ProvisioningLayer::builder()
//!     .issuer(
//!         Issuer::keycloak("https://kc.example.com/realms/acme")
//!             .browser_client("orders-web", Some("the client secret".to_owned())),
//!     )
//!     .browser_login(BrowserLogin::new("https://orders.example.com").idle_timeout(Duration::from_secs(3600)))
//!     .store(store)
//!     .optional(true)
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .merge(layer.login_router())
//!     .layer(layer);
//! # drop(app);
//! # Ok(())
//! # }
//! ```

mod complete;
pub(crate) mod flow;
pub(crate) mod oidc;
mod pages;
mod provider;
pub(crate) mod provider_flow;
mod routes;
#[cfg(feature = "saml")]
pub(crate) mod saml;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::error::ConfigError;
use crate::store::DynStore;

pub use self::provider::{GITHUB_SCOPES, OAuth2Provider, ProfileClaims};
#[cfg(feature = "saml")]
pub use self::saml::SamlLogin;
pub(crate) use self::session::Sessions;

/// Browser sign-in settings: where the application is, and how long sessions last. Given to
/// [`ProvisioningLayerBuilder::browser_login`](crate::ProvisioningLayerBuilder::browser_login);
/// the issuers people sign in at are those with a
/// [`browser_client`](crate::Issuer::browser_client).
///
/// Defaults: sessions end after 8 hours unused and 24 hours in all; last-seen times are written
/// every minute.
#[derive(Clone, Debug)]
#[must_use]
pub struct BrowserLogin {
    public_url: String,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    last_seen_interval: Duration,
}

impl BrowserLogin {
    /// Sign-in for the application at `public_url`, its external base URL (`https://app.example`,
    /// or with a path when it is served under one). The redirect URI is exactly
    /// `public_url` + `/callback`, whatever a request's `Host` or `X-Forwarded-*` headers say;
    /// register it, and `public_url` + `/backchannel-logout`, with the issuer. Over https the
    /// cookies are `Secure` and carry the `__Host-` prefix.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            idle_timeout: Duration::from_secs(8 * 3600),
            absolute_timeout: Duration::from_secs(24 * 3600),
            last_seen_interval: Duration::from_secs(60),
        }
    }

    /// How long a session may go unused before it ends.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a session lasts however much it is used.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = timeout;
        self
    }

    /// How often the times sessions were last used are written to the store (in one batch per
    /// server). An idle timeout is only as precise as this.
    pub fn last_seen_interval(mut self, interval: Duration) -> Self {
        self.last_seen_interval = interval;
        self
    }

    /// The settings checked, with the store and the OAuth2 providers, as the layer runs them.
    pub(crate) fn validate(
        &self,
        store: Arc<dyn DynStore>,
        providers: Vec<Arc<provider_flow::Provider>>,
    ) -> Result<Login, ConfigError> {
        let bad = |reason: &'static str| ConfigError::InvalidSetting {
            setting: "browser_login".to_owned(),
            reason,
        };
        let url = Url::parse(&self.public_url)
            .map_err(|_| bad("the public URL is not an absolute URL"))?;
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the public URL must be http or https")),
        };
        if url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(bad(
                "the public URL must have a host, and no query, fragment or credentials",
            ));
        }
        let zero = Duration::from_secs(1);
        if self.idle_timeout < zero
            || self.absolute_timeout < zero
            || self.last_seen_interval < Duration::from_millis(100)
        {
            return Err(bad("timeouts must be at least a second"));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        let sessions = Sessions::new(
            Arc::clone(&store),
            secure,
            self.idle_timeout,
            self.absolute_timeout,
            self.last_seen_interval,
        );
        Ok(Login {
            redirect_uri: format!("{base}/callback"),
            #[cfg(feature = "saml")]
            saml: None,
            origin: url.origin().ascii_serialization(),
            secure,
            sessions,
            store,
            providers,
        })
    }
}

/// Browser sign-in as the layer runs it.
pub(crate) struct Login {
    pub(crate) redirect_uri: String,
    /// `scheme://host[:port]` of the public URL: the only origin allowed to sign out.
    pub(crate) origin: String,
    pub(crate) secure: bool,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) store: Arc<dyn DynStore>,
    /// OAuth2-only providers people sign in at, in configuration order.
    pub(crate) providers: Vec<Arc<provider_flow::Provider>>,
    /// SAML sign-in, when configured.
    #[cfg(feature = "saml")]
    pub(crate) saml: Option<saml::Saml>,
}

impl Login {
    /// The public URL without a trailing slash.
    #[cfg(feature = "saml")]
    pub(crate) fn base(&self) -> &str {
        self.redirect_uri
            .strip_suffix("/callback")
            .unwrap_or(&self.redirect_uri)
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("redirect_uri", &self.redirect_uri)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}
