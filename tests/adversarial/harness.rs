//! The target of every attack: an app on a fresh SQLite file behind a layer, over real HTTP,
//! and the checks every refusal must pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    CacheSizes, Issuer, ProvisioningLayer, ProvisioningLayerBuilder, SqliteStore,
};

use crate::common::{
    LogCapture, Reply, Server, get_with, reply, scim_request, sqlite_store, user_app,
};

/// The bearer secret of the SCIM endpoint of [`Target::with_scim`].
pub const SCIM_SECRET: &str = "scim-secret-7c1e9a0b5d2f4e6a8b3c";

pub struct Target {
    pub idps: Vec<TestIssuer>,
    pub store: SqliteStore,
    pub layer: ProvisioningLayer,
    pub server: Server,
    pub client: reqwest::Client,
    pub logs: LogCapture,
    _dir: tempfile::TempDir,
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    pub users: i64,
    pub identities: i64,
    pub caches: CacheSizes,
}

impl Target {
    /// One issuer, configured by `configure` (which receives the issuer's default settings).
    pub async fn start(
        configure: impl FnOnce(ProvisioningLayerBuilder, Issuer) -> ProvisioningLayerBuilder,
    ) -> Self {
        Self::with_issuers(1, |builder, idps| configure(builder, idps[0].issuer())).await
    }

    /// The default layer for one issuer.
    pub async fn default() -> Self {
        Self::start(|builder, issuer| builder.issuer(issuer)).await
    }

    /// `count` issuers, each configured by `configure`.
    pub async fn with_issuers(
        count: usize,
        configure: impl FnOnce(ProvisioningLayerBuilder, &[TestIssuer]) -> ProvisioningLayerBuilder,
    ) -> Self {
        Self::build(count, configure, false).await
    }

    /// One issuer configured by `configure`, and SCIM under `/scim/v2` on the same store,
    /// guarded by [`SCIM_SECRET`].
    pub async fn with_scim(
        configure: impl FnOnce(ProvisioningLayerBuilder, Issuer) -> ProvisioningLayerBuilder,
    ) -> Self {
        Self::build(
            1,
            |builder, idps| configure(builder, idps[0].issuer()),
            true,
        )
        .await
    }

    async fn build(
        count: usize,
        configure: impl FnOnce(ProvisioningLayerBuilder, &[TestIssuer]) -> ProvisioningLayerBuilder,
        scim: bool,
    ) -> Self {
        let logs = LogCapture::install();
        let mut idps = Vec::new();
        for _ in 0..count {
            idps.push(TestIssuer::start().await);
        }
        let (store, dir) = sqlite_store().await;
        let builder = ProvisioningLayer::builder().store(store.clone());
        let layer = configure(builder, &idps).build().unwrap();
        let mut app = user_app(layer.clone());
        if scim {
            let scim = tower_jit_provisioning::scim::Scim::new(store.clone())
                .bearer_token("idp", SCIM_SECRET)
                .router()
                .unwrap();
            app = app.nest("/scim/v2", scim);
        }
        let server = Server::start(app).await;
        Self {
            idps,
            store,
            layer,
            server,
            client: reqwest::Client::new(),
            logs,
            _dir: dir,
        }
    }

    pub fn idp(&self) -> &TestIssuer {
        &self.idps[0]
    }

    pub fn url(&self) -> String {
        self.server.url("/me")
    }

    /// `GET /me` with this bearer token.
    pub async fn get(&self, token: &str) -> Reply {
        get_with(&self.client, &self.url(), Some(token)).await
    }

    /// Sends a request built on `GET /me`.
    pub async fn send(
        &self,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Reply {
        reply(build(self.client.get(self.url())).send().await.unwrap()).await
    }

    /// A SCIM request with `secret`.
    pub async fn scim(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let url = self.server.url(&format!("/scim/v2{path}"));
        scim_request(&self.client, secret, method, &url, body.as_ref()).await
    }

    /// Signs in with `token` and answers the account's id.
    pub async fn sign_in(&self, token: &str) -> String {
        let reply = self.get(token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    pub async fn written(&self) -> Written {
        Written {
            users: self.count("SELECT count(*) FROM jit_users").await,
            identities: self.count("SELECT count(*) FROM jit_identities").await,
            caches: self.layer.cache_sizes().await,
        }
    }

    async fn count(&self, query: &'static str) -> i64 {
        sqlx::query_scalar(query)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// Sends `token`; asserts the answer is `status`, that no user, identity or cache entry
    /// was written, and that neither the answer nor the logs contain the token.
    pub async fn refused(&self, token: &str, status: u16) -> Reply {
        self.refused_with(token, status, |request| request.bearer_auth(token))
            .await
    }

    /// As [`refused`](Self::refused), accepting any of `statuses`.
    pub async fn refused_with_one_of(&self, token: &str, statuses: &[u16]) -> Reply {
        let before = self.written().await;
        let reply = self.get(token).await;
        assert!(
            statuses.contains(&reply.status),
            "{}: {}",
            reply.status,
            reply.body
        );
        let after = self.written().await;
        assert_eq!(
            (after.users, after.identities),
            (before.users, before.identities)
        );
        assert!(after.caches.tokens <= before.caches.tokens);
        assert!(after.caches.users <= before.caches.users);
        self.assert_not_leaked(token, &reply);
        reply
    }

    /// As [`refused`](Self::refused), for a request framed by `build`.
    pub async fn refused_with(
        &self,
        token: &str,
        status: u16,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Reply {
        let before = self.written().await;
        let reply = self.send(build).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        let after = self.written().await;
        // Refusals may drop cache entries (a deactivated user's), never add any.
        assert!(
            after.users == before.users
                && after.identities == before.identities
                && after.caches.tokens <= before.caches.tokens
                && after.caches.users <= before.caches.users,
            "a refused request wrote something: {before:?} -> {after:?}"
        );
        self.assert_not_leaked(token, &reply);
        reply
    }

    /// Neither `reply` (body and headers) nor anything logged so far contains `token` or any
    /// of its longer segments.
    pub fn assert_not_leaked(&self, token: &str, reply: &Reply) {
        let logs = self.logs.text();
        let headers: Vec<String> = reply
            .headers
            .values()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        for piece in secrets(token) {
            assert!(!reply.body.contains(piece), "the body echoes the token");
            assert!(
                !headers.iter().any(|h| h.contains(piece)),
                "a header echoes the token"
            );
            assert!(!logs.contains(piece), "the logs contain the token");
        }
    }
}

/// The token and each of its segments long enough to identify it.
fn secrets(token: &str) -> impl Iterator<Item = &str> {
    std::iter::once(token).chain(token.split('.').filter(|s| s.len() >= 16))
}

/// Asserts a 401 `invalid_token` answer with this description.
pub fn assert_invalid_token(reply: &Reply, description: &str) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.challenge(),
        Some(crate::common::invalid_token(description).as_str()),
    );
}

/// Asserts a 403 problem document with this reason code.
pub fn assert_denied(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json()["code"], code, "{}", reply.body);
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(segment).unwrap()
}

/// The token's three segments.
pub fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

/// The token's header and payload as JSON.
pub fn decoded(token: &str) -> (serde_json::Value, serde_json::Value) {
    let [header, payload, _] = segments(token);
    (
        serde_json::from_slice(&unb64(&header)).unwrap(),
        serde_json::from_slice(&unb64(&payload)).unwrap(),
    )
}

/// A token of these raw segment texts, with this signature.
pub fn assemble(header: &str, payload: &str, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A listener that counts connections and never answers: the place token-supplied URLs point
/// to, to prove nothing is ever fetched from them.
pub struct Bait {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Bait {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        self.task.abort();
    }
}
