//! [`TestIssuer`]: a real OpenID Connect issuer on loopback, for tests and demos (feature
//! `test-util`).
//!
//! Stage: test support, above everything; may use any part of the crate.
//!
//! It serves discovery and a key set over HTTP on `127.0.0.1`, mints signed ID tokens and
//! RFC 9068 access tokens with any claims, algorithm and header, rotates keys, counts how often
//! its documents are fetched, can simulate outages, and can be stopped and restarted on the same
//! port. The layer talks to it exactly as it talks to a production identity provider.
//!
//! ```
//! use tower_jit_provisioning::testing::TestIssuer;
//! use tower_jit_provisioning::ProvisioningLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let idp = TestIssuer::start().await;
//! let layer = ProvisioningLayer::builder().issuer(idp.issuer()).build().unwrap();
//! let token = idp.id_token().subject("alice").email("alice@example.com", true).sign();
//! # drop((layer, token));
//! # }
//! ```
//!
//! Never use it outside tests: it signs whatever it is asked to.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

mod counting;
#[cfg(feature = "login")]
mod github;
mod graph;
mod introspection;
mod persist;
#[cfg(feature = "saml")]
mod saml;
mod signin;

pub use self::counting::CountingStore;
#[cfg(feature = "login")]
pub use self::github::{GitHubEmail, GitHubUser, TestGitHub};
pub use self::graph::TestGraph;
pub use self::persist::TestIssuerBuilder;
#[cfg(feature = "saml")]
pub use self::saml::{
    ReceivedRequest, SamlCipher, SamlLogout, SamlResponse, SamlUser, TestSamlIdp, Xsw,
};
pub use self::signin::{ClientAuth, SignInFault, TestUser};

use crate::builder::Issuer;
use crate::token::{Algorithm, TokenKind};

/// A running test issuer. Dropping it stops the server.
pub struct TestIssuer {
    state: Arc<State>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    url: String,
    keys: RwLock<KeyRing>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    fault: RwLock<Option<Fault>>,
    counter: AtomicUsize,
    logins: Mutex<signin::Logins>,
    opaque: introspection::Opaque,
}

/// How the issuer misbehaves when asked for its key set (and, for some faults, discovery).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answers with this status and an empty body.
    Status(u16),
    /// Answers 200 with an HTML page.
    Html,
    /// Answers 200 with `{"keys": []}`.
    EmptyKeySet,
    /// Answers 200 with a JSON body of this many bytes.
    Oversized(usize),
    /// Waits this long before answering normally.
    Delay(Duration),
    /// Answers `302 Found` pointing at this URL.
    Redirect(String),
    /// Answers 200 with this JSON document as the key set.
    KeySet(Value),
}

struct KeyRing {
    /// The key each algorithm family signs with now.
    signing: Vec<Arc<TestKey>>,
    /// The keys in the published key set.
    published: Vec<Arc<TestKey>>,
}

struct TestKey {
    kid: String,
    pair: Pair,
    jwk: Value,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(Algorithm, EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Pair {
    fn generate(family: Algorithm) -> Self {
        match family {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Self::Rsa(
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation"),
            ),
            Algorithm::ES256 => Self::ec(family, &signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            Algorithm::ES384 => Self::ec(family, &signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            Algorithm::ES512 => Self::ec(family, &signature::ECDSA_P521_SHA512_FIXED_SIGNING),
            Algorithm::EdDSA => Self::Ed(Ed25519KeyPair::generate().expect("Ed25519 generation")),
        }
    }

    fn ec(alg: Algorithm, signing: &'static signature::EcdsaSigningAlgorithm) -> Self {
        Self::Ec(
            alg,
            EcdsaKeyPair::generate(signing).expect("EC key generation"),
        )
    }

    fn fits(&self, alg: Algorithm) -> bool {
        match self {
            Self::Rsa(_) => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Self::Ec(family, _) => *family == alg,
            Self::Ed(_) => alg == Algorithm::EdDSA,
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            Self::Rsa(pair) => {
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({"kty": "RSA", "use": "sig", "kid": kid,
                       "n": b64(&components.n), "e": b64(&components.e)})
            }
            Self::Ec(alg, pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = match alg {
                    Algorithm::ES256 => "P-256",
                    Algorithm::ES384 => "P-384",
                    _ => "P-521",
                };
                json!({"kty": "EC", "use": "sig", "kid": kid, "alg": alg.as_str(), "crv": crv,
                       "x": b64(&point[1..=size]), "y": b64(&point[size + 1..])})
            }
            Self::Ed(pair) => json!({"kty": "OKP", "use": "sig", "kid": kid, "alg": "EdDSA",
                                     "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
        }
    }

    fn sign(&self, alg: Algorithm, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa(pair) => {
                let encoding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(encoding, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
            Self::Ec(_, pair) => pair
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            Self::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

const FAMILIES: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
];

impl TestKey {
    fn generate(family: Algorithm, n: usize) -> Arc<Self> {
        let kid = format!("{}-{n}-{}", family.as_str().to_lowercase(), random_hex(4));
        Self::with(kid, Pair::generate(family))
    }

    fn with(kid: String, pair: Pair) -> Arc<Self> {
        let jwk = pair.jwk(&kid);
        Arc::new(Self { kid, pair, jwk })
    }
}

impl State {
    fn new_key(&self, family: Algorithm) -> Arc<TestKey> {
        TestKey::generate(family, self.counter.fetch_add(1, Ordering::Relaxed))
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, KeyRing> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys()
            .published
            .iter()
            .map(|k| k.jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    fn discovery(&self) -> Value {
        let url = &self.url;
        json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "introspection_endpoint": format!("{url}/introspect"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported":
                self.logins.lock().unwrap_or_else(PoisonError::into_inner).client_auth.advertised(),
            "code_challenge_methods_supported": ["S256"],
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "id_token_signing_alg_values_supported":
                Algorithm::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        })
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TestIssuer {
    /// The audience tokens are minted for unless told otherwise, and that
    /// [`issuer`](Self::issuer) accepts.
    pub const AUDIENCE: &'static str = "test-client";
    /// The `client_id` of minted access tokens unless told otherwise.
    pub const CLIENT_ID: &'static str = "test-client";

    /// Starts an issuer on `127.0.0.1` with a fresh port and one key per algorithm family
    /// (RSA 2048, P-256, P-384, P-521, Ed25519).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or a key cannot be generated.
    pub async fn start() -> Self {
        Self::builder()
            .start()
            .await
            .expect("starting a TestIssuer on loopback")
    }

    /// Configures an issuer before starting it: a fixed port, keys kept across restarts.
    pub fn builder() -> TestIssuerBuilder {
        TestIssuerBuilder::default()
    }

    fn serve_on(listener: TcpListener, keys: Vec<Arc<TestKey>>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            url: format!("http://{addr}"),
            keys: RwLock::new(KeyRing {
                signing: keys.clone(),
                published: keys,
            }),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            fault: RwLock::new(None),
            counter: AtomicUsize::new(FAMILIES.len()),
            logins: Mutex::new(signin::Logins::default()),
            opaque: introspection::Opaque::default(),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(Self {
            state,
            addr,
            server: Mutex::new(Some(server)),
        })
    }

    /// The issuer identifier, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// An [`Issuer`] configuration for this issuer: [`AUDIENCE`](Self::AUDIENCE) accepted,
    /// plain http allowed on loopback, every other setting at its default.
    pub fn issuer(&self) -> Issuer {
        Issuer::new(self.url())
            .audience(Self::AUDIENCE)
            .allow_http_loopback(true)
    }

    /// A builder for an ID token: `typ: JWT`, RS256, `sub` `test-subject`, `aud`
    /// [`AUDIENCE`](Self::AUDIENCE), issued now, valid for an hour.
    pub fn id_token(&self) -> TokenBuilder {
        self.token(TokenKind::Id)
    }

    /// A builder for an RFC 9068 access token: `typ: at+jwt`, RS256, `sub` `test-subject`,
    /// `aud` [`AUDIENCE`](Self::AUDIENCE), `client_id` [`CLIENT_ID`](Self::CLIENT_ID), a fresh
    /// `jti`, issued now, valid for an hour.
    pub fn access_token(&self) -> TokenBuilder {
        self.token(TokenKind::Access)
    }

    fn token(&self, kind: TokenKind) -> TokenBuilder {
        Self::token_for(&self.state, kind)
    }

    fn token_for(state: &Arc<State>, kind: TokenKind) -> TokenBuilder {
        let now = now_secs();
        let mut header = Map::new();
        header.insert(
            "typ".into(),
            Value::from(match kind {
                TokenKind::Id => "JWT",
                TokenKind::Access => "at+jwt",
            }),
        );
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(state.url.as_str()));
        claims.insert("sub".into(), Value::from("test-subject"));
        claims.insert("aud".into(), Value::from(Self::AUDIENCE));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + 3600));
        if kind == TokenKind::Access {
            claims.insert("client_id".into(), Value::from(Self::CLIENT_ID));
            claims.insert("jti".into(), Value::from(random_hex(8)));
        }
        TokenBuilder {
            state: Arc::clone(state),
            algorithm: Algorithm::RS256,
            header,
            claims,
            kid: KidChoice::Key,
        }
    }

    /// Replaces every key: new keys sign from now on and the old ones leave the published set.
    pub fn rotate_keys(&self) {
        let fresh: Vec<Arc<TestKey>> = FAMILIES.iter().map(|f| self.state.new_key(*f)).collect();
        *self.state.keys_mut() = KeyRing {
            signing: fresh.clone(),
            published: fresh,
        };
    }

    /// Adds a key for `algorithm`'s family that signs from now on; the previous key stays
    /// published (as during a real rotation's overlap). Returns the new `kid`.
    pub fn add_key(&self, algorithm: Algorithm) -> String {
        let key = self.state.new_key(algorithm);
        let kid = key.kid.clone();
        let mut ring = self.state.keys_mut();
        ring.signing.retain(|k| !k.pair.fits(algorithm));
        ring.signing.push(Arc::clone(&key));
        ring.published.push(key);
        kid
    }

    /// Removes the key `kid` from the published set (it may still sign, to test withdrawal).
    pub fn unpublish_key(&self, kid: &str) {
        self.state.keys_mut().published.retain(|k| k.kid != kid);
    }

    /// The `kid` of the key that signs `algorithm` now.
    pub fn current_kid(&self, algorithm: Algorithm) -> String {
        self.state
            .keys()
            .signing
            .iter()
            .find(|k| k.pair.fits(algorithm))
            .map(|k| k.kid.clone())
            .expect("a key for every algorithm")
    }

    /// The published key set, as served.
    pub fn jwks(&self) -> Value {
        self.state.jwks()
    }

    /// How many times the key set was requested.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was requested.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Makes the key-set endpoint misbehave (`Some`) or behave again (`None`).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self
            .state
            .fault
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Stops serving: the port is closed and open connections are cut.
    pub async fn stop(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port, with the same keys.
    ///
    /// # Panics
    ///
    /// If the port was taken by something else meanwhile.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebinding the TestIssuer port");
        let server = tokio::spawn(serve(listener, Arc::clone(&self.state)));
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(server) = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            server.abort();
        }
    }
}

impl fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestIssuer")
            .field("url", &self.state.url)
            .finish_non_exhaustive()
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    serve_with(listener, state, respond).await;
}

/// Serves HTTP/1.1 on `listener`, each request answered by `handler` with the shared `state`.
pub(super) async fn serve_with<S, F, Fut>(listener: TcpListener, state: Arc<S>, handler: F)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, http::Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::Response<Full<Bytes>>, Infallible>>
        + Send
        + 'static,
{
    // Dropping this set, when the task is aborted, aborts every connection with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = service_fn(move |req| handler(Arc::clone(&state), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn respond(
    state: Arc<State>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let json = |value: Value| {
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::from(value.to_string()))
            .expect("static response")
    };
    let fault = state
        .fault
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let response = match request.uri().path() {
        "/.well-known/openid-configuration" => {
            state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            json(state.discovery())
        }
        "/mint" => mint(&state, request.uri().query().unwrap_or("")),
        "/authorize" => signin::authorize(&state, request.uri().query().unwrap_or("")),
        "/authorize/choose" => signin::choose(&state, request.uri().query().unwrap_or("")),
        "/token" if request.method() == http::Method::POST => match form_post(request).await {
            Ok((authorization, body)) => signin::token(&state, authorization.as_deref(), &body),
            Err(response) => response,
        },
        "/introspect" if request.method() == http::Method::POST => match form_post(request).await {
            Ok((authorization, body)) => {
                introspection::introspect(&state, authorization.as_deref(), &body).await
            }
            Err(response) => response,
        },
        "/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            match fault {
                None => json(state.jwks()),
                Some(fault) => faulty(&state, fault).await,
            }
        }
        _ => http::Response::builder()
            .status(404)
            .body(Full::default())
            .expect("static response"),
    };
    Ok(response)
}

/// A POST's `Authorization` header and body (at most 64 KiB; larger is 413).
/// The `Host` a request was sent to, for links back to a double (`127.0.0.1` without one).
pub(super) fn request_host(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

pub(super) async fn form_post(
    request: http::Request<Incoming>,
) -> Result<(Option<String>, Bytes), http::Response<Full<Bytes>>> {
    use http_body_util::BodyExt;
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limited = http_body_util::Limited::new(request.into_body(), 64 * 1024);
    match limited.collect().await {
        Ok(body) => Ok((authorization, body.to_bytes())),
        Err(_) => Err(http::Response::builder()
            .status(413)
            .body(Full::default())
            .expect("static response")),
    }
}

/// `GET /mint?sub=…&email=…&name=…&groups=a,b&kind=id|access|opaque&aud=…&valid=<seconds>`: a token for
/// anyone, as plain text, for development servers and manual tests. Every parameter is optional
/// (`sub` `dev-user`, an ID token for [`TestIssuer::AUDIENCE`], valid for an hour, at most a day).
fn mint(state: &Arc<State>, query: &str) -> http::Response<Full<Bytes>> {
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty());
    let (kind, opaque) = match param("kind").map(String::as_str) {
        None | Some("id") => (TokenKind::Id, false),
        Some("access") => (TokenKind::Access, false),
        Some("opaque") => (TokenKind::Access, true),
        Some(_) => {
            return http::Response::builder()
                .status(400)
                .body(Full::from("kind must be `id`, `access` or `opaque`\n"))
                .expect("static response");
        }
    };
    let issuer = TestIssuer::token_for(state, kind);
    let mut token = issuer.subject(param("sub").map_or("dev-user", String::as_str));
    if let Some(email) = param("email") {
        token = token.email(email.as_str(), true);
    }
    if let Some(name) = param("name") {
        token = token.claim("name", name.as_str());
    }
    if let Some(groups) = param("groups") {
        token = token.groups(groups.split(',').map(str::trim).filter(|g| !g.is_empty()));
    }
    if let Some(audience) = param("aud") {
        token = token.audience(audience.as_str());
    }
    let valid = param("valid")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(3600)
        .min(86_400);
    let token = token.valid_for(Duration::from_secs(valid));
    let token = if opaque { token.opaque() } else { token.sign() };
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::from(token))
        .expect("static response")
}

async fn faulty(state: &State, fault: Fault) -> http::Response<Full<Bytes>> {
    let builder = http::Response::builder();
    match fault {
        Fault::Status(status) => builder.status(status).body(Full::default()),
        Fault::Html => builder
            .header(http::header::CONTENT_TYPE, "text/html")
            .body(Full::from("<html><body>Service Unavailable</body></html>")),
        Fault::EmptyKeySet => builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::from(r#"{"keys":[]}"#)),
        Fault::Oversized(bytes) => {
            let padding = " ".repeat(bytes.saturating_sub(2));
            builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::from(format!("{{{padding}}}")))
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::from(state.jwks().to_string()))
        }
        Fault::Redirect(location) => builder
            .status(302)
            .header(http::header::LOCATION, location)
            .body(Full::default()),
        Fault::KeySet(keys) => builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::from(keys.to_string())),
    }
    .expect("fault response")
}

enum KidChoice {
    Key,
    Custom(String),
    Omit,
}

/// A token being minted by a [`TestIssuer`]. Finish with [`sign`](Self::sign).
#[must_use]
pub struct TokenBuilder {
    state: Arc<State>,
    algorithm: Algorithm,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    kid: KidChoice,
}

impl TokenBuilder {
    /// Sets `sub`.
    pub fn subject(self, subject: impl Into<String>) -> Self {
        self.claim("sub", subject.into())
    }

    /// Sets `aud` to one audience (a JSON string).
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.claim("aud", audience.into())
    }

    /// Sets `aud` to a JSON array of audiences.
    pub fn audiences<I, A>(self, audiences: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        let list: Vec<Value> = audiences
            .into_iter()
            .map(|a| Value::from(a.into()))
            .collect();
        self.claim("aud", list)
    }

    /// Sets `email` and `email_verified` (a JSON boolean).
    pub fn email(self, email: impl Into<String>, verified: bool) -> Self {
        self.claim("email", email.into())
            .claim("email_verified", verified)
    }

    /// Sets `groups` to a JSON array of strings.
    pub fn groups<I, G>(self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        let list: Vec<Value> = groups.into_iter().map(|g| Value::from(g.into())).collect();
        self.claim("groups", list)
    }

    /// Sets any claim to any JSON value.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets `exp` to now plus `valid_for`.
    pub fn valid_for(self, valid_for: Duration) -> Self {
        self.expires_at(now_secs() + valid_for.as_secs() as i64)
    }

    /// Sets `exp`, in seconds since the Unix epoch (past values mint expired tokens).
    pub fn expires_at(self, unix_seconds: i64) -> Self {
        self.claim("exp", unix_seconds)
    }

    /// Sets `iat`, in seconds since the Unix epoch.
    pub fn issued_at(self, unix_seconds: i64) -> Self {
        self.claim("iat", unix_seconds)
    }

    /// Sets `nbf`, in seconds since the Unix epoch.
    pub fn not_before(self, unix_seconds: i64) -> Self {
        self.claim("nbf", unix_seconds)
    }

    /// Signs with the current key for `algorithm` (and says so in `alg`).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Puts this `kid` in the header instead of the signing key's.
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = KidChoice::Custom(kid.into());
        self
    }

    /// Leaves `kid` out of the header.
    pub fn without_kid(mut self) -> Self {
        self.kid = KidChoice::Omit;
        self
    }

    /// Sets any header member (set `alg` here to lie about the algorithm).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a header member (such as `typ`).
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// The compact JWS, signed with the issuer's current key for the algorithm.
    pub fn sign(self) -> String {
        let key = self
            .state
            .keys()
            .signing
            .iter()
            .find(|k| k.pair.fits(self.algorithm))
            .cloned()
            .expect("a key for every algorithm");
        let mut header = Map::new();
        header.insert("alg".into(), Value::from(self.algorithm.as_str()));
        match self.kid {
            KidChoice::Key => {
                header.insert("kid".into(), Value::from(key.kid.clone()));
            }
            KidChoice::Custom(kid) => {
                header.insert("kid".into(), Value::from(kid));
            }
            KidChoice::Omit => {}
        }
        header.extend(self.header);
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims).to_string())
        );
        let signature = key.pair.sign(self.algorithm, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

impl fmt::Debug for TokenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("algorithm", &self.algorithm)
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}
