//! Shared by the integration tests: an axum app behind the layer, served on loopback, and a
//! log capture to prove tokens never reach the logs.

#![allow(dead_code, unreachable_pub)]

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

/// Everything the `tower_jit_provisioning` targets log, at every level, while the guard lives.
/// Install it on a current-thread runtime so every task's events are captured.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("tower_jit_provisioning=trace")
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
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
    let response = request.send().await.unwrap();
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
