//! [`ProvisioningLayer`], [`ProvisioningService`] and their [`ResponseFuture`].
//!
//! Stage: composition. Reads a request's credential through the sources (the bearer-token
//! source in `token/`, then each [`Authenticator`](crate::Authenticator)), hands the
//! [`SignIn`] to provisioning, and puts what comes out into the request extensions. Uses the
//! sources, `provision`, `sign_in` and `error`; never `builder`, which assembles it.
//!
//! The service never fails with an error of its own: a refused request is an `Ok` response
//! built by the [`ErrorHandler`], so `Infallible` services stay infallible and clients always get
//! an answer (as tower-http's `Timeout` does, and unlike middleware that returns `Err` and drops
//! the connection).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::error::{DefaultErrorHandler, Error, ErrorHandler};
use crate::provision::{Explanation, ProvisionedUser, Provisioner, SignInMemo};
use crate::sign_in::{DynAuthenticator, SignIn, SignInSource};
use crate::token::extract::{self, TokenSource};
use crate::token::verify::{Miss, TokenVerifier};

/// What every clone of the layer and its services shares.
pub(crate) struct Shared {
    pub(crate) tokens: TokenVerifier<SignInMemo>,
    pub(crate) authenticators: Vec<Arc<dyn DynAuthenticator>>,
    pub(crate) provisioner: Option<Provisioner>,
    pub(crate) token_source: TokenSource,
    pub(crate) max_token_bytes: usize,
    pub(crate) optional: bool,
    /// Browser sign-in: sessions, flows, the public URL.
    #[cfg(feature = "login")]
    pub(crate) login: Option<crate::login::Login>,
}

/// Marks a request that an optional layer let through without credentials, so extractors can
/// tell "no token" (401) from "no layer" (500).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoCredentials;

/// Verifies the bearer token of every request and hands the verified claims to the service
/// behind it.
///
/// Built with [`ProvisioningLayer::builder`]. Cheap to clone: clones share one set of issuers,
/// key sets and caches.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_jit_provisioning::{Issuer, ProvisioningLayer, VerifiedClaims};
///
/// async fn me(claims: VerifiedClaims) -> String {
///     format!("{} at {}", claims.subject(), claims.issuer())
/// }
///
/// let layer = ProvisioningLayer::builder()
///     .issuer(Issuer::new("https://idp.example.com").audience("orders-api"))
///     .build()?;
/// let app: Router = Router::new().route("/me", get(me)).layer(layer);
/// # Ok::<(), tower_jit_provisioning::ConfigError>(())
/// ```
///
/// The layer needs a Tokio runtime when requests arrive: key-set refreshes run as tasks.
#[must_use]
pub struct ProvisioningLayer<H = DefaultErrorHandler> {
    shared: Arc<Shared>,
    handler: H,
}

impl<H> ProvisioningLayer<H> {
    pub(crate) fn from_parts(shared: Arc<Shared>, handler: H) -> Self {
        Self { shared, handler }
    }

    /// What the layer's clones share, for the routes that go with it.
    #[cfg(feature = "login")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Fetches every issuer's keys now instead of on the first request, and reports which
    /// issuers could not be reached. Optional: a layer whose issuers are down still starts and
    /// answers 503 until they can be reached.
    pub async fn fetch_keys(&self) -> Result<(), UnreachableIssuers> {
        let mut unreachable = Vec::new();
        for issuer in self.shared.tokens.issuers() {
            if !issuer.keys.prefetch().await {
                unreachable.push(issuer.rules.issuer.to_string());
            }
        }
        if unreachable.is_empty() {
            Ok(())
        } else {
            Err(UnreachableIssuers(unreachable))
        }
    }
}

impl<H> ProvisioningLayer<H> {
    /// How many entries the layer's caches hold now, for metrics and tests: verified tokens
    /// and provisioned accounts. Runs the caches' pending evictions first, so an expired or
    /// invalidated entry is not counted.
    pub async fn cache_sizes(&self) -> CacheSizes {
        let users = match &self.shared.provisioner {
            Some(provisioner) => provisioner.cached_count().await,
            None => 0,
        };
        CacheSizes {
            tokens: self.shared.tokens.cached_count(),
            users,
        }
    }
}

impl<H> ProvisioningLayer<H> {
    /// Provisions the account of a sign-in a source of the application's verified outside a
    /// request (a browser callback, a message from a queue): admission, resolution, linking or
    /// creation, sync and audit, exactly as for a request's credential.
    ///
    /// # Errors
    ///
    /// The [`Error`] a request with this sign-in would have been refused with:
    /// [`Error::Denied`] by policy or account state, [`Error::StoreUnavailable`] or
    /// [`Error::StoreFailure`] for the store, and [`Error::StoreFailure`] for a layer built
    /// without a store.
    pub async fn provision(&self, sign_in: &SignIn) -> Result<ProvisionedUser, Error> {
        let Some(provisioner) = &self.shared.provisioner else {
            tracing::warn!(
                target: "tower_jit_provisioning::provision",
                "provision called on a layer built without a store"
            );
            return Err(Error::StoreFailure);
        };
        provisioner.provision(sign_in, &SignInMemo::default()).await
    }
}

impl<H> ProvisioningLayer<H> {
    /// Explains what `sign_in` would do, without writing anything: which admission rule
    /// admitted or refused it and on which value, which claim filled which field, which rule
    /// granted or revoked which role, which linking candidates were considered, what each
    /// field's sync policy decided, and the account that would result. The store is only read;
    /// no audit event is emitted.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] or [`Error::StoreFailure`] when the store cannot be read,
    /// and [`Error::StoreFailure`] for a layer built without a store. A refusal is not an
    /// error: it is the explanation's [`reason`](Explanation::reason).
    pub async fn explain(&self, sign_in: &SignIn) -> Result<Explanation, Error> {
        let Some(provisioner) = &self.shared.provisioner else {
            return Err(Error::StoreFailure);
        };
        provisioner.explain(sign_in).await
    }

    /// Verifies `token` exactly as a request's bearer token (a JWT, or an opaque token at an
    /// issuer that introspects), then [explains](Self::explain) its sign-in.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] naming why the token was refused (expired, bad signature,
    /// untrusted issuer, …), [`Error::IssuerUnavailable`] when the issuer's keys cannot be
    /// fetched, and the errors of [`explain`](Self::explain).
    pub async fn explain_token(&self, token: &str) -> Result<Explanation, Error> {
        let verified = self.shared.tokens.verify(token).await?;
        self.explain(verified.claims.sign_in()).await
    }

    /// [Explains](Self::explain) the sign-in a bearer token of `issuer` carrying `claims`
    /// would make, built by that issuer's claim rules (its groups claim, its reading of
    /// `email_verified`) with nothing verified: for asking "what if" about a person who has
    /// not signed in yet. `sub` is required; `iat` and `exp` default to now and an hour on.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] with [`TokenError::UntrustedIssuer`](crate::TokenError) for an
    /// issuer that is not configured and [`TokenError::InvalidSubject`](crate::TokenError)
    /// for a missing or malformed `sub`, and the errors of [`explain`](Self::explain).
    pub async fn explain_claims(
        &self,
        issuer: &str,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Explanation, Error> {
        let sign_in = self.shared.tokens.sign_in_for_claims(issuer, claims)?;
        self.explain(&sign_in).await
    }
}

/// Entry counts of a layer's caches; see [`ProvisioningLayer::cache_sizes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheSizes {
    /// Verified tokens, keyed by their SHA-256.
    pub tokens: u64,
    /// Accounts, keyed by (issuer, subject).
    pub users: u64,
}

/// Issuers whose keys could not be fetched by [`ProvisioningLayer::fetch_keys`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no signing keys could be fetched from: {}", .0.join(", "))]
pub struct UnreachableIssuers(pub Vec<String>);

impl<H: Clone> Clone for ProvisioningLayer<H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            handler: self.handler.clone(),
        }
    }
}

impl<H> fmt::Debug for ProvisioningLayer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_shared(&self.shared, f.debug_struct("ProvisioningLayer"))
    }
}

fn debug_shared(shared: &Shared, mut f: fmt::DebugStruct<'_, '_>) -> fmt::Result {
    let issuers: Vec<&str> = shared
        .tokens
        .issuers()
        .iter()
        .map(|i| &*i.rules.issuer)
        .collect();
    f.field("issuers", &issuers)
        .field("provisioner", &shared.provisioner)
        .field("token_source", &shared.token_source)
        .field("optional", &shared.optional)
        .finish_non_exhaustive()
}

impl<S, H: Clone> Layer<S> for ProvisioningLayer<H> {
    type Service = ProvisioningService<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        ProvisioningService {
            inner,
            shared: Arc::clone(&self.shared),
            handler: self.handler.clone(),
        }
    }
}

/// The service [`ProvisioningLayer`] wraps around an inner service.
#[must_use]
pub struct ProvisioningService<S, H = DefaultErrorHandler> {
    inner: S,
    shared: Arc<Shared>,
    handler: H,
}

impl<S, H> ProvisioningService<S, H> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, H: Clone> Clone for ProvisioningService<S, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            handler: self.handler.clone(),
        }
    }
}

impl<S: fmt::Debug, H> fmt::Debug for ProvisioningService<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ProvisioningService");
        d.field("inner", &self.inner);
        debug_shared(&self.shared, d)
    }
}

impl<S, H, ReqBody, ResBody> Service<Request<ReqBody>> for ProvisioningService<S, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Send + 'static,
    H: ErrorHandler<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The instance `poll_ready` approved goes with this request; the clone stays for the
        // next one (tower-service: "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        // The common case — a token seen before, for a user cached — is decided here, with no
        // allocation and nothing awaited; everything else takes the asynchronous path.
        if self.shared.authenticate_cached(&mut request) {
            return ResponseFuture {
                state: State::Calling {
                    future: ready.call(request),
                },
            };
        }
        let authenticate = Box::pin(authenticate(Arc::clone(&self.shared), request));
        ResponseFuture {
            state: State::Authenticating {
                authenticate,
                inner: Some(ready),
                handler: self.handler.clone(),
            },
        }
    }
}

impl Shared {
    /// Lets the request through if its token is in the verified-token cache and (with a
    /// store) its user in the user cache, current and active. `false` leaves the request for
    /// [`authenticate`], which decides every other case (with, after a token-cache miss, the
    /// miss noted in its extensions).
    fn authenticate_cached<B>(&self, request: &mut Request<B>) -> bool {
        let Some(token) = extract::candidate(
            &self.token_source,
            request.headers(),
            request.uri(),
            self.max_token_bytes,
        ) else {
            #[cfg(feature = "login")]
            return self.session_cached(request);
            #[cfg(not(feature = "login"))]
            return false;
        };
        let now = std::time::Instant::now();
        let verified = match self.tokens.cached(token, now) {
            Ok(verified) => verified,
            Err(miss) => {
                // The verification that follows starts from this miss, not a second lookup.
                request.extensions_mut().insert(miss);
                return false;
            }
        };
        let sign_in = verified.claims.sign_in();
        let user = match &self.provisioner {
            Some(provisioner) => match provisioner.cached(sign_in, &verified.memo, now) {
                Some(user) => Some(user),
                None => return false,
            },
            None => None,
        };
        crate::metrics::token_cache(true);
        if user.is_some() {
            crate::metrics::user_cache(true);
        }
        crate::metrics::admitted(sign_in.source().as_str());
        let extensions = request.extensions_mut();
        if let Some(user) = user {
            extensions.insert(user);
        }
        extensions.insert(sign_in.clone());
        extensions.insert(verified.claims.clone());
        true
    }

    /// Lets the request through if it carries a session cookie the session cache answers for,
    /// of an account cached, current and active.
    #[cfg(feature = "login")]
    fn session_cached<B>(&self, request: &mut Request<B>) -> bool {
        use crate::login::session::Lookup;
        let (Some(login), Some(provisioner)) = (&self.login, &self.provisioner) else {
            return false;
        };
        // Only requests without any bearer credential get here; one with a malformed
        // `Authorization` header is left to the full path, which refuses it.
        if request.headers().contains_key(http::header::AUTHORIZATION) {
            return false;
        }
        let Lookup::Hit(cached) = login.sessions.lookup(request.headers(), chrono::Utc::now())
        else {
            return false;
        };
        let Some(account) = provisioner.cached_account(&cached.key, std::time::Instant::now())
        else {
            return false;
        };
        crate::metrics::user_cache(true);
        crate::metrics::admitted(cached.sign_in.source().as_str());
        let user = ProvisionedUser::new(account, cached.sign_in.clone());
        let extensions = request.extensions_mut();
        extensions.insert(user);
        extensions.insert(cached.sign_in.clone());
        true
    }

    /// The account of the request's session, if it carries a session cookie of a live session
    /// of an active account.
    #[cfg(feature = "login")]
    async fn session_user(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<ProvisionedUser>, Error> {
        use crate::login::session::Lookup;
        let (Some(login), Some(provisioner)) = (&self.login, &self.provisioner) else {
            return Ok(None);
        };
        let now = chrono::Utc::now();
        let cached = match login.sessions.lookup(headers, now) {
            Lookup::None => return Ok(None),
            Lookup::Hit(cached) => cached,
            Lookup::Miss(hash) => match login.sessions.load(hash, now).await {
                Ok(Some(cached)) => cached,
                Ok(None) => return Ok(None),
                Err(error) => {
                    tracing::warn!(
                        target: "tower_jit_provisioning::store",
                        error = %crate::error::ErrorChain(&error),
                        "session not read"
                    );
                    return Err(Error::StoreUnavailable {
                        retry_after: std::time::Duration::from_secs(5),
                    });
                }
            },
        };
        match provisioner.existing_account(&cached.key).await? {
            Some(account) if account.user.status == crate::user::UserStatus::Active => {
                Ok(Some(ProvisionedUser::new(account, cached.sign_in.clone())))
            }
            // No account, or one that may not sign in: the session counts for nothing (the
            // store ended it when the account was deactivated).
            _ => Ok(None),
        }
    }

    /// Provisions a verified sign-in (with a store) and hands it to the handlers.
    async fn admit(
        &self,
        sign_in: &SignIn,
        memo: &SignInMemo,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error> {
        if let Some(provisioner) = &self.provisioner {
            let user = provisioner
                .provision(sign_in, memo)
                .await
                .inspect_err(log_refusal)?;
            extensions.insert(user);
        }
        extensions.insert(sign_in.clone());
        Ok(())
    }

    /// A `token_rejected` audit event for a refused credential: the reason only, since nothing
    /// in a credential that failed verification can be trusted (or logged).
    async fn audit_rejection(&self, source: SignInSource, error: &Error) {
        if !matches!(error, Error::InvalidToken(_) | Error::InvalidCredentials(_)) {
            return;
        }
        let event = AuditEvent::new(AuditKind::TokenRejected, Actor::Login)
            .source(source.as_str())
            .reason(error.code());
        match &self.provisioner {
            Some(provisioner) => provisioner.record_audit(event).await,
            None => crate::audit::Audit::new().emit(&event),
        }
    }
}

async fn authenticate<B>(shared: Arc<Shared>, request: Request<B>) -> Result<Request<B>, Error> {
    let mut source = "none";
    let result = decide(&shared, request, &mut source).await;
    let outcome = match &result {
        Ok(request) if request.extensions().get::<NoCredentials>().is_some() => "anonymous",
        Ok(_) => "admitted",
        Err(error) => crate::metrics::outcome_of(error.status().as_u16()),
    };
    crate::metrics::request(outcome, source);
    result
}

/// Decides a request the cached path left undecided; `source` learns which sign-in source
/// the credential came through.
async fn decide<B>(
    shared: &Shared,
    mut request: Request<B>,
    source: &mut &'static str,
) -> Result<Request<B>, Error> {
    // The fast path's token-cache miss, if it had one; never left for the inner service.
    let miss = request
        .extensions_mut()
        .remove::<Miss>()
        .unwrap_or_default();
    let token = extract::extract(
        &shared.token_source,
        request.headers(),
        request.uri(),
        shared.max_token_bytes,
    )
    .inspect_err(log_refusal)?;
    if let Some(token) = token {
        *source = SignInSource::BearerToken.as_str();
        let token = token.to_owned();
        let verified = match shared.tokens.verify_after(&token, miss).await {
            Ok(verified) => verified,
            Err(error) => {
                log_refusal(&error);
                shared
                    .audit_rejection(SignInSource::BearerToken, &error)
                    .await;
                return Err(error);
            }
        };
        let sign_in = verified.claims.sign_in();
        *source = sign_in.source().as_str();
        let extensions = request.extensions_mut();
        // A refused account leaves no cache entry behind; its next request is verified and
        // decided afresh.
        shared
            .admit(sign_in, &verified.memo, extensions)
            .await
            .inspect_err(|_| shared.tokens.forget(&token))?;
        extensions.insert(verified.claims.clone());
        return Ok(request);
    }
    #[cfg(feature = "login")]
    if let Some(user) = shared
        .session_user(request.headers())
        .await
        .inspect_err(log_refusal)?
    {
        let sign_in = user.sign_in().clone();
        *source = sign_in.source().as_str();
        let extensions = request.extensions_mut();
        extensions.insert(user);
        extensions.insert(sign_in);
        return Ok(request);
    }
    if !shared.authenticators.is_empty() {
        let (mut parts, body) = request.into_parts();
        for authenticator in &shared.authenticators {
            match authenticator.authenticate(&parts).await {
                Ok(None) => {}
                Ok(Some(sign_in)) => {
                    *source = sign_in.source().as_str();
                    let memo = SignInMemo::default();
                    shared.admit(&sign_in, &memo, &mut parts.extensions).await?;
                    return Ok(Request::from_parts(parts, body));
                }
                Err(error) => {
                    *source = authenticator.source().as_str();
                    log_refusal(&error);
                    shared.audit_rejection(authenticator.source(), &error).await;
                    return Err(error);
                }
            }
        }
        request = Request::from_parts(parts, body);
    }
    if shared.optional {
        request.extensions_mut().insert(NoCredentials);
        return Ok(request);
    }
    let error = Error::MissingToken;
    log_refusal(&error);
    Err(error)
}

/// One debug line per refusal, with the reason code only: never the token, never text the
/// client chose.
fn log_refusal(error: &Error) {
    tracing::debug!(
        target: "tower_jit_provisioning::token",
        status = error.status().as_u16(),
        code = error.code(),
        "request refused"
    );
}

type Authenticate<B> = Pin<Box<dyn Future<Output = Result<Request<B>, Error>> + Send>>;

pin_project! {
    /// Response future of [`ProvisioningService`].
    pub struct ResponseFuture<S, ReqBody, H>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, H>
    where
        S: Service<Request<ReqBody>>,
    {
        Authenticating {
            authenticate: Authenticate<ReqBody>,
            inner: Option<S>,
            handler: H,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, ReqBody, H> fmt::Debug for ResponseFuture<S, ReqBody, H>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, H> Future for ResponseFuture<S, ReqBody, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    H: ErrorHandler<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Authenticating {
                    authenticate,
                    inner,
                    handler,
                } => match ready!(authenticate.as_mut().poll(cx)) {
                    Ok(request) => {
                        let mut inner = inner.take().expect("future polled after completion");
                        let future = inner.call(request);
                        this.state.set(State::Calling { future });
                    }
                    Err(error) => {
                        let mut response = handler.response(&error);
                        response.extensions_mut().insert(Arc::new(error));
                        return Poll::Ready(Ok(response));
                    }
                },
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}
