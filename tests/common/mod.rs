//! Shared by the integration tests: an axum app behind the layer, served on loopback, and a
//! log capture to prove tokens never reach the logs.

#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod reference;
pub mod saml;
pub mod stores;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use tower_jit_provisioning::{ProvisioningLayer, VerifiedClaims};
use tracing_subscriber::fmt::MakeWriter;

/// The claims a handler saw, as JSON.
pub fn claims_json(claims: &VerifiedClaims) -> Value {
    json!({
        "issuer": claims.issuer(),
        "subject": claims.subject(),
        "kind": claims.token_kind().as_str(),
        "email": claims.email(),
        "email_verified": claims.email_verified(),
        "groups": claims.groups(),
        "audiences": claims.audiences(),
    })
}

/// `/claims` needs a token; `/maybe` takes `Option<VerifiedClaims>`.
pub fn app(layer: ProvisioningLayer) -> Router {
    Router::new()
        .route(
            "/claims",
            get(|claims: VerifiedClaims| async move { Json(claims_json(&claims)) }),
        )
        .route(
            "/maybe",
            get(|claims: Option<VerifiedClaims>| async move {
                Json(claims.map_or(Value::Null, |c| claims_json(&c)))
            }),
        )
        .layer(layer)
}

/// A running server; its base URL is `http://127.0.0.1:<port>`.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the `tower_jit_provisioning` targets log, at every level, from every test of the
/// binary. One global subscriber: tracing caches per-callsite interest globally, so scoped
/// subscribers in parallel tests miss events.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install() -> Self {
        static GLOBAL: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let capture = Self::default();
                let subscriber = tracing_subscriber::fmt()
                    .with_env_filter("tower_jit_provisioning=trace")
                    .with_writer(capture.clone())
                    .with_ansi(false)
                    .finish();
                tracing::subscriber::set_global_default(subscriber).unwrap();
                capture
            })
            .clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error_description` of an RFC 6750 challenge.
    pub fn challenge(&self) -> Option<&str> {
        self.header("www-authenticate")
    }
}

pub async fn get_with(client: &reqwest::Client, url: &str, token: Option<&str>) -> Reply {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    reply(request.send().await.unwrap()).await
}

/// A SCIM request to `url` with the bearer `secret` and, if given, a SCIM JSON body.
pub async fn scim_request(
    client: &reqwest::Client,
    secret: &str,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Reply {
    let mut request = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(secret);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    reply(request.send().await.unwrap()).await
}

/// A response, read whole.
/// `POST url` with `body` as JSON and `bearer` as the credential.
pub async fn post_json(client: &reqwest::Client, url: &str, bearer: &str, body: &Value) -> Reply {
    reply(
        client
            .post(url)
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// The `WWW-Authenticate` value for an `invalid_token` refusal with this description.
pub fn invalid_token(description: &str) -> String {
    format!(r#"Bearer error="invalid_token", error_description="{description}""#)
}

/// A fresh, migrated SQLite file in a temporary directory (kept alive by the returned guard).
pub async fn sqlite_store() -> (tower_jit_provisioning::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let store = tower_jit_provisioning::SqliteStore::connect(&url)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// The URL of a store made by [`sqlite_store`].
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("jit.db").display())
}

/// The provisioned user a handler saw, as JSON.
pub fn user_json(user: &tower_jit_provisioning::ProvisionedUser) -> Value {
    let u = user.user();
    json!({
        "id": u.id,
        "email": u.email,
        "email_verified": u.email_verified,
        "user_name": u.user_name,
        "display_name": u.display_name,
        "given_name": u.given_name,
        "family_name": u.family_name,
        "roles": u.role_names(),
        "groups": u.groups,
        "attributes": u.attributes,
        "status": u.status,
        "issuer": user.identity().key.issuer(),
        "subject": user.identity().key.subject(),
        "source": user.source().as_str(),
        "organization_id": u.organization_id,
    })
}

/// `/me` needs a provisioned user; `/maybe` takes `Option<ProvisionedUser>`.
pub fn user_app(layer: ProvisioningLayer) -> Router {
    use tower_jit_provisioning::ProvisionedUser;
    Router::new()
        .route(
            "/me",
            get(|user: ProvisionedUser| async move { Json(user_json(&user)) }),
        )
        .route(
            "/maybe",
            get(|user: Option<ProvisionedUser>| async move {
                Json(user.map_or(Value::Null, |u| user_json(&u)))
            }),
        )
        .layer(layer)
}

/// A fresh PostgreSQL database for one test, dropped afterwards. Tests that use it carry
/// `#[cfg_attr(not(jit_test_postgres), ignore = …)]`, so without `JIT_TEST_POSTGRES_URL` they
/// show as ignored; run anyway, they fail here, saying why.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(test: &str) -> Self {
        let admin_url = std::env::var("JIT_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "{test} needs PostgreSQL: set JIT_TEST_POSTGRES_URL \
                 (`bash .ci/run` starts a server and sets it; see DEVELOPERS.md)"
            )
        });
        let name = format!("jit_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("JIT_TEST_POSTGRES_URL reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            admin_url,
            name,
        }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> tower_jit_provisioning::PostgresStore {
        let store = tower_jit_provisioning::PostgresStore::connect(&self.url)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}
