//! The sign-in routes, as an axum router: `GET /login`, `GET /callback`, `POST /logout`,
//! `POST /backchannel-logout`. Every failure is a plain page (or, for the issuer's
//! back-channel, a JSON error) with a 4xx or 5xx status and fixed text: nothing the issuer or
//! the browser sent is echoed, and no code, state or token reaches a log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ORIGIN, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::Login;
use super::complete;
use super::flow::{self, FlowRefused};
use super::oidc::{self, CallbackError, FlowData};
use super::pages::{
    again_page, elsewhere_page, home, page, redirect, refused, store_page, unreachable_page,
};
use super::provider_flow::{Provider, ProviderFlowData};
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::error::Error;
use crate::layer::{ProvisioningLayer, Shared};
use crate::session::{SessionHash, SessionSelector};
use crate::sign_in::{SignIn, SignInSource};
use crate::token::verify::{DomainRoute, IssuerVerifier, RuntimeIssuer};

impl<H> ProvisioningLayer<H> {
    /// The browser sign-in routes (feature `login`), for the application to mount at the root
    /// of its public URL's path:
    ///
    /// - `GET /login[?issuer=URL][&return_to=PATH][&login_hint=…]`: 303 to the issuer (the first
    ///   with a browser client unless `issuer` names one exactly; an unknown one is 400).
    ///   With organisations: `?email=ADDRESS` goes to the connection of the organisation that
    ///   owns the address's domain (else as without it, or a 404 page when that organisation
    ///   has no browser sign-in), and `?connection=ID` to that connection.
    /// - `GET /callback`: finishes the sign-in, provisions the account, starts a session, 303
    ///   to `return_to` (a path on this site) or the public URL's path.
    /// - `POST /logout`: from this site's own pages only (403 otherwise), ends the session, 303
    ///   to the public URL's path.
    /// - `POST /backchannel-logout`: OpenID Connect Back-Channel Logout.
    ///
    /// The routes need no credential, and read the session cookie themselves: mount them beside
    /// the layer rather than under it (under a layer that is not
    /// [`optional`](crate::ProvisioningLayerBuilder::optional), a signed-out browser would get
    /// 401 at `/login`):
    ///
    /// ```
    /// # use axum::{Router, routing::get};
    /// # use tower_jit_provisioning::ProvisioningLayer;
    /// fn app(layer: ProvisioningLayer) -> Router {
    ///     let routes = layer.login_router();
    ///     Router::new()
    ///         .route("/", get(|| async { "home" }))
    ///         .layer(layer)
    ///         .merge(routes)
    /// }
    /// ```
    ///
    /// A layer built without [`browser_login`](crate::ProvisioningLayerBuilder::browser_login)
    /// gives a router with no routes.
    pub fn login_router(&self) -> Router {
        if self.shared().login.is_none() {
            return Router::new();
        }
        let router = Router::new()
            .route("/login", get(login))
            .route("/callback", get(callback))
            .route("/logout", post(logout))
            .route("/backchannel-logout", post(backchannel_logout));
        #[cfg(feature = "saml")]
        let router = if self
            .shared()
            .login
            .as_ref()
            .is_some_and(|l| l.saml.is_some())
        {
            super::saml::routes(router)
        } else {
            router
        };
        router.with_state(Arc::clone(self.shared()))
    }
}

type Params = Query<HashMap<String, String>>;

fn login_of(shared: &Shared) -> &Login {
    shared
        .login
        .as_ref()
        .expect("the router exists only with browser login")
}

/// The issuers people can sign in at, in configuration order.
fn browser_issuers(shared: &Shared) -> impl Iterator<Item = &IssuerVerifier> {
    shared
        .tokens
        .issuers()
        .iter()
        .filter(|issuer| issuer.rules.browser.is_some())
}

/// Where `/login` sends the browser: an issuer by its exact URL, a provider by its id, an
/// organisation's connection (by its id, or by the domain of an e-mail address), or by default
/// the first issuer with a browser client, else the first provider.
enum Destination<'a> {
    Issuer(&'a IssuerVerifier),
    /// An organisation's connection, by its id.
    Connection(uuid::Uuid, Arc<RuntimeIssuer>),
    /// An organisation's SAML connection, by its id: its sign-in starts at `/saml/login`.
    #[cfg(feature = "saml")]
    Saml(uuid::Uuid),
    Provider(&'a Provider),
}

impl Destination<'_> {
    /// The issuer of an OpenID Connect destination, and the connection it is, if it is one.
    fn issuer(&self) -> Option<(&IssuerVerifier, Option<uuid::Uuid>)> {
        match self {
            Self::Issuer(issuer) => Some((issuer, None)),
            Self::Connection(id, issuer) => Some((&issuer.verifier, Some(*id))),
            #[cfg(feature = "saml")]
            Self::Saml(_) => None,
            Self::Provider(_) => None,
        }
    }

    /// The provider of an OAuth2 destination.
    fn provider(&self) -> Option<&Provider> {
        match self {
            Self::Provider(provider) => Some(provider),
            Self::Issuer(_) | Self::Connection(..) => None,
            #[cfg(feature = "saml")]
            Self::Saml(_) => None,
        }
    }
}

/// The destination `params` ask for, or the page that says there is none.
async fn destination<'a>(
    shared: &'a Shared,
    login: &'a Login,
    params: &HashMap<String, String>,
) -> Result<Destination<'a>, Response> {
    let unknown = || {
        page(
            StatusCode::BAD_REQUEST,
            "Unknown identity provider",
            "There is no sign-in at that identity provider here.",
        )
    };
    let open_to_everyone = || {
        browser_issuers(shared)
            .next()
            .map(Destination::Issuer)
            .or_else(|| login.providers.first().map(|p| Destination::Provider(p)))
    };
    let runtime = shared.tokens.runtime_issuers();
    match (
        params.get("issuer"),
        params.get("provider"),
        params.get("connection"),
        params.get("email"),
    ) {
        (Some(wanted), None, None, None) => browser_issuers(shared)
            .find(|i| *i.rules.issuer == **wanted)
            .map(Destination::Issuer)
            .ok_or_else(unknown),
        (None, Some(wanted), None, None) => login
            .providers
            .iter()
            .find(|p| p.settings.id == *wanted)
            .map(|p| Destination::Provider(p))
            .ok_or_else(unknown),
        (None, None, Some(wanted), None) => {
            let (Some(runtime), Ok(id)) = (runtime, uuid::Uuid::parse_str(wanted)) else {
                return Err(unknown());
            };
            match runtime.browser_connection(id).await {
                Ok(Some(issuer)) => Ok(Destination::Connection(id, issuer)),
                Ok(None) => Err(unknown()),
                Err(_) => Err(store_page()),
            }
        }
        // Home-realm discovery: by the address's domain alone, never by whether an account
        // holds the address, so the answer tells nothing about accounts.
        (None, None, None, Some(email)) => {
            let Some(address) = crate::provision::policy::EmailAddress::parse(email.trim()) else {
                return Err(page(
                    StatusCode::BAD_REQUEST,
                    "Not an e-mail address",
                    "Enter your work e-mail address to sign in.",
                ));
            };
            let route = match runtime {
                Some(runtime) => match runtime.for_domain(&address.domain).await {
                    Ok(route) => route,
                    Err(_) => return Err(store_page()),
                },
                None => DomainRoute::Unknown,
            };
            match route {
                DomainRoute::Connection(id, issuer) => Ok(Destination::Connection(id, issuer)),
                // Only where this layer is a SAML service provider.
                #[cfg(feature = "saml")]
                DomainRoute::Saml(id) if login.saml.is_some() => Ok(Destination::Saml(id)),
                #[cfg(feature = "saml")]
                DomainRoute::Saml(_) => Err(no_sign_in_for_domain()),
                DomainRoute::Unknown => open_to_everyone().ok_or_else(no_sign_in_for_domain),
                DomainRoute::Closed => Err(no_sign_in_for_domain()),
            }
        }
        (None, None, None, None) => open_to_everyone().ok_or_else(unknown),
        _ => Err(unknown()),
    }
}

/// The page for an address whose domain has no sign-in here.
fn no_sign_in_for_domain() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "No sign-in for this domain",
        "There is no sign-in here for addresses of this domain. Ask your administrator.",
    )
}

async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let login = login_of(&shared);
    let destination = match destination(&shared, login, &params).await {
        Ok(destination) => destination,
        Err(page) => return page,
    };
    let Some(return_to) = flow::return_to(&params, home(login)) else {
        return elsewhere_page();
    };
    // A SAML connection's sign-in is the SAML service provider's to start.
    #[cfg(feature = "saml")]
    if let Destination::Saml(id) = destination {
        let base = url::Url::parse(login.base())
            .map(|url| url.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let return_to: String =
            url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        return redirect(
            &format!("{base}/saml/login?connection={id}&return_to={return_to}"),
            &[],
        );
    }
    // The address home-realm discovery was given is the hint, unless another is.
    let login_hint = params
        .get("login_hint")
        .or_else(|| params.get("email"))
        .filter(|hint| hint.len() <= 256 && !hint.chars().any(char::is_control))
        .map(String::as_str);
    let key = flow::new_key();
    let started = match destination.issuer() {
        Some((issuer, connection)) => {
            let Some(endpoints) = issuer.keys.endpoints().await else {
                return unreachable_page();
            };
            oidc::authorization_request(
                issuer,
                &endpoints,
                &login.redirect_uri,
                &key,
                return_to,
                login_hint,
            )
            .map(|(url, data)| {
                let data = FlowData { connection, ..data };
                (url, OIDC_FLOW, serde_json::to_value(data))
            })
        }
        None => destination.provider().and_then(|provider| {
            provider
                .authorization_request(&login.redirect_uri, &key, return_to, login_hint)
                .map(|(url, data)| (url, OAUTH2_FLOW, serde_json::to_value(data)))
        }),
    };
    let Some((url, kind, Ok(data))) = started else {
        return unreachable_page();
    };
    match flow::start(
        &*login.store,
        &headers,
        login.secure,
        &key,
        kind,
        data,
        Utc::now(),
    )
    .await
    {
        Ok(binding) => redirect(url.as_str(), &[binding]),
        Err(_) => store_page(),
    }
}

/// The flow kinds `/login` starts and `/callback` finishes.
const OIDC_FLOW: &str = "oidc";
const OAUTH2_FLOW: &str = "oauth2";

/// A callback's sign-in: who, the issuer's session id if it gave one, and where to go next.
struct Finish {
    sign_in: SignIn,
    sid: Option<String>,
    return_to: String,
}

/// A callback's sign-in, or the page that says why there is none.
type Finished = Result<Finish, Response>;

async fn callback(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let login = login_of(&shared);
    let state = params.get("state");
    if let Some(error) = params.get("error") {
        // The flow is spent either way: taken, so no one finishes it later.
        if let Some(state) = state {
            let _ = flow::finish(&*login.store, &headers, login.secure, state).await;
        }
        let code =
            if error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                error.as_str()
            } else {
                "other"
            };
        refused("issuer_error", code);
        let status = if code == "access_denied" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        return page(
            status,
            "Sign-in cancelled",
            "The identity provider did not sign you in.",
        );
    }
    let (Some(state), Some(code)) = (state, params.get("code")) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This is not a sign-in response.",
        );
    };
    // The state is checked, and the flow spent, before the code goes anywhere.
    let flow = match flow::finish(&*login.store, &headers, login.secure, state).await {
        Ok(Ok(flow)) => flow,
        Ok(Err(refusal)) => {
            refused(
                "flow",
                match refusal {
                    FlowRefused::Unknown => "unknown_or_used",
                    FlowRefused::WrongBrowser => "other_browser",
                },
            );
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in expired, was already used, or was started in another browser. Please sign in again.",
            );
        }
        Err(_) => return store_page(),
    };
    let finished = match flow.kind.as_str() {
        OIDC_FLOW => finish_oidc(&shared, login, code.clone(), flow.data).await,
        OAUTH2_FLOW => finish_provider(login, code.clone(), flow.data).await,
        _ => Err(again_page()),
    };
    let Finish {
        sign_in,
        sid,
        return_to,
    } = match finished {
        Ok(finished) => finished,
        Err(page) => return page,
    };
    complete::sign_in(&shared, login, &headers, &sign_in, sid, &return_to).await
}

/// The ID token of an OpenID Connect flow, verified.
async fn finish_oidc(shared: &Shared, login: &Login, code: String, data: Value) -> Finished {
    let Ok(data) = serde_json::from_value::<FlowData>(data) else {
        return Err(again_page());
    };
    // An organisation's connection is found by its id (it must still exist), a configured
    // issuer by its URL.
    let runtime;
    let issuer = match (data.connection, shared.tokens.runtime_issuers()) {
        (Some(id), Some(issuers)) => match issuers.browser_connection(id).await {
            Ok(Some(found)) if *found.verifier.rules.issuer == data.issuer => {
                runtime = found;
                &runtime.verifier
            }
            Ok(_) => return Err(again_page()),
            Err(_) => return Err(store_page()),
        },
        (Some(_), None) => return Err(again_page()),
        (None, _) => match browser_issuers(shared).find(|i| *i.rules.issuer == data.issuer) {
            Some(issuer) => issuer,
            None => return Err(again_page()),
        },
    };
    let Some(endpoints) = issuer.keys.endpoints().await else {
        return Err(unreachable_page());
    };
    let claims = oidc::finish(
        issuer,
        &endpoints,
        issuer.keys.fetcher(),
        &login.redirect_uri,
        code,
        &data,
    )
    .await
    .map_err(|error| callback_page(&error))?;
    let sid = claims
        .claim("sid")
        .and_then(|sid| sid.as_str())
        .filter(|sid| !sid.is_empty() && sid.len() <= 255)
        .map(str::to_owned);
    Ok(Finish {
        sign_in: claims.sign_in().clone(),
        sid,
        return_to: data.return_to,
    })
}

/// The profile behind an OAuth2 provider's access token.
async fn finish_provider(login: &Login, code: String, data: Value) -> Finished {
    let Ok(data) = serde_json::from_value::<ProviderFlowData>(data) else {
        return Err(again_page());
    };
    let Some(provider) = login
        .providers
        .iter()
        .find(|p| p.settings.id == data.provider)
    else {
        return Err(again_page());
    };
    let sign_in = provider
        .finish(&login.redirect_uri, code, &data)
        .await
        .map_err(|error| callback_page(&error))?;
    Ok(Finish {
        sign_in,
        sid: None,
        return_to: data.return_to,
    })
}

/// The page for a callback that failed after its flow was taken.
fn callback_page(error: &CallbackError) -> Response {
    refused("callback", error.code());
    match error {
        CallbackError::IssuerUnreachable => unreachable_page(),
        CallbackError::CodeRefused => page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider did not accept this sign-in. Please sign in again.",
        ),
        CallbackError::NoIdToken
        | CallbackError::InvalidIdToken(_)
        | CallbackError::ProfileUnusable => page(
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            "The identity provider's answer could not be verified.",
        ),
    }
}

/// Whether a request comes from this site's own pages: its `Origin` is exactly the public
/// URL's, or, when a browser sends no `Origin`, `Sec-Fetch-Site` says `same-origin`.
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    match headers.get(ORIGIN) {
        Some(value) => value.as_bytes() == origin.as_bytes(),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"same-origin"),
    }
}

async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let login = login_of(&shared);
    if !same_origin(&headers, &login.origin) {
        refused("logout", "cross_origin");
        return page(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "Sign out from this site's own page.",
        );
    }
    match login.sessions.end(&headers).await {
        Ok(clear) => redirect(&home(login), &[clear]),
        Err(_) => store_page(),
    }
}

async fn backchannel_logout(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let login = login_of(&shared);
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned());
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        return backchannel_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let Some(issuer) = shared
        .tokens
        .issuer_of(&token)
        .filter(|issuer| issuer.rules.browser.is_some())
    else {
        refused("backchannel", "untrusted_issuer");
        return backchannel_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let claims = match issuer.verify_logout_token(&token).await {
        Ok(claims) => claims,
        Err(Error::IssuerUnavailable { .. }) => {
            return backchannel_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
        Err(error) => {
            refused("backchannel", error.code());
            return backchannel_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
    };
    let issuer_name = issuer.rules.issuer.to_string();
    let once = SessionHash::of(format!("{issuer_name}\n{}", claims.jti).as_bytes());
    match login
        .store
        .consume_once("oidc_logout", once, claims.expires_at)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            refused("backchannel", "replayed");
            return backchannel_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
        Err(_) => {
            return backchannel_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
    }
    // OpenID Connect Back-Channel Logout §2.7: a `sid` names one session at the issuer; a
    // `sub` alone, every session of that person there.
    let which = match (&claims.sid, &claims.subject) {
        (Some(sid), _) => SessionSelector::IssuerSession {
            issuer: issuer_name.clone(),
            sid: sid.clone(),
        },
        (None, Some(subject)) => SessionSelector::Subject {
            issuer: issuer_name.clone(),
            subject: subject.clone(),
        },
        (None, None) => return backchannel_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let ended = match login.store.end_sessions(which).await {
        Ok(ended) => ended,
        Err(_) => {
            return backchannel_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
    };
    let mut event = AuditEvent::new(AuditKind::LoggedOut, Actor::Login)
        .source(SignInSource::BrowserOidc.as_str())
        .reason("backchannel_logout");
    event.issuer = Some(issuer_name);
    event.subject = claims.subject;
    event.fields = vec![format!("sessions:{ended}")];
    login.store.record_audit(event).await;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn backchannel_error(status: StatusCode, error: &'static str) -> Response {
    let mut response = (status, json!({ "error": error }).to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}
