//! The reference server: an axum app behind `ProvisioningLayer`, configured from the
//! environment.
//!
//! Run with `cargo run --example server`. With no settings it starts a built-in development
//! issuer on loopback and prints a `curl` command carrying a freshly minted token.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `JIT_ISSUERS` | comma-separated issuer URLs; when set, no development issuer | development issuer |
//! | `JIT_AUDIENCES` | comma-separated accepted audiences | `test-client` with the development issuer |
//! | `JIT_TOKEN_KINDS` | `id`, `access` or `id,access` | `id,access` |
//! | `JIT_LISTEN` | address to listen on | `127.0.0.1:3000` |
//! | `JIT_ALLOW_HTTP_ISSUERS` | `1` allows plain-http issuers on loopback addresses only | off |
//!
//! Routes: `GET /me` answers the verified claims as JSON; `GET /healthz` answers 200 without a
//! token.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{Issuer, ProvisioningLayer, TokenKind, VerifiedClaims};

/// A setting that cannot work, with the variable that holds it.
struct BadSetting {
    variable: &'static str,
    message: String,
}

struct Settings {
    issuers: Vec<String>,
    audiences: Vec<String>,
    kinds: Vec<TokenKind>,
    listen: SocketAddr,
    allow_http: bool,
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn settings() -> Result<Settings, BadSetting> {
    let bad = |variable, message: String| BadSetting { variable, message };
    let issuers = var("JIT_ISSUERS").map(|v| list(&v)).unwrap_or_default();
    let audiences = var("JIT_AUDIENCES").map(|v| list(&v)).unwrap_or_default();
    if !issuers.is_empty() && audiences.is_empty() {
        return Err(bad(
            "JIT_AUDIENCES",
            "required when JIT_ISSUERS is set".to_owned(),
        ));
    }
    let kinds = match var("JIT_TOKEN_KINDS") {
        None => vec![TokenKind::Id, TokenKind::Access],
        Some(value) => list(&value)
            .iter()
            .map(|kind| match kind.as_str() {
                "id" => Ok(TokenKind::Id),
                "access" => Ok(TokenKind::Access),
                other => Err(bad(
                    "JIT_TOKEN_KINDS",
                    format!("`{other}` is not `id` or `access`"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let listen = var("JIT_LISTEN")
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
        .parse()
        .map_err(|e| bad("JIT_LISTEN", format!("not a socket address: {e}")))?;
    let allow_http = match var("JIT_ALLOW_HTTP_ISSUERS").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(bad(
                "JIT_ALLOW_HTTP_ISSUERS",
                format!("`{other}` is not `0` or `1`"),
            ));
        }
    };
    Ok(Settings {
        issuers,
        audiences,
        kinds,
        listen,
        allow_http,
    })
}

async fn me(claims: VerifiedClaims) -> Json<serde_json::Value> {
    Json(json!({
        "issuer": claims.issuer(),
        "subject": claims.subject(),
        "token_kind": claims.token_kind().as_str(),
        "email": claims.email(),
        "email_verified": claims.email_verified(),
        "name": claims.name(),
        "groups": claims.groups(),
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_jit_provisioning=debug".into()),
        )
        .init();

    let settings = match settings() {
        Ok(settings) => settings,
        Err(BadSetting { variable, message }) => {
            eprintln!("error: {variable}: {message}");
            return ExitCode::FAILURE;
        }
    };

    // With no issuer configured, a development issuer on loopback stands in for one.
    let dev_issuer = if settings.issuers.is_empty() {
        Some(TestIssuer::start().await)
    } else {
        None
    };
    let mut builder = ProvisioningLayer::builder();
    match &dev_issuer {
        Some(idp) => builder = builder.issuer(idp.issuer().token_kinds(settings.kinds.clone())),
        None => {
            for url in &settings.issuers {
                builder = builder.issuer(
                    Issuer::new(url)
                        .audiences(settings.audiences.clone())
                        .token_kinds(settings.kinds.clone())
                        .allow_http_loopback(settings.allow_http),
                );
            }
        }
    }
    let layer = match builder.build() {
        Ok(layer) => layer,
        Err(error) => {
            let variable = match &error {
                tower_jit_provisioning::ConfigError::NoAudience { .. } => "JIT_AUDIENCES",
                _ => "JIT_ISSUERS",
            };
            eprintln!("error: {variable}: {error}");
            return ExitCode::FAILURE;
        }
    };

    let app = Router::new()
        .route("/me", get(me).layer(layer))
        .route("/healthz", get(|| async { "ok" }));
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "error: JIT_LISTEN: cannot listen on {}: {error}",
                settings.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("bound address");
    println!("listening on http://{addr}");
    if let Some(idp) = &dev_issuer {
        let token = idp
            .id_token()
            .subject("dev-user-1")
            .email("dev@example.com", true)
            .claim("name", "Dev User")
            .sign();
        println!("development issuer at {}; try:\n", idp.url());
        println!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/me\n");
    }
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("error: server failed: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
