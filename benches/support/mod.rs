//! Shared by the benchmarks: apps, requests, stores.

#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use tower_jit_provisioning::{ProvisionedUser, VerifiedClaims};

/// A bare "hello" app: the baseline every layered figure is compared with.
pub fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// The same app reading what the layer hands it, as a real handler would.
pub fn hello_user() -> Router {
    Router::new().route(
        "/",
        get(|user: ProvisionedUser| async move {
            if user.has_role("nobody") {
                "?"
            } else {
                "hello"
            }
        }),
    )
}

/// The same app reading verified claims only (a layer without a store).
pub fn hello_claims() -> Router {
    Router::new().route(
        "/",
        get(|claims: VerifiedClaims| async move {
            if claims.subject().is_empty() {
                "?"
            } else {
                "hello"
            }
        }),
    )
}

/// `GET /` with a bearer token.
pub fn request(token: &str) -> Request<Body> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// A fresh PostgreSQL database named after `name`, when `JIT_TEST_POSTGRES_URL` is set.
pub async fn postgres_database(name: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var("JIT_TEST_POSTGRES_URL") else {
        eprintln!("*** {name}: JIT_TEST_POSTGRES_URL is not set; PostgreSQL figures SKIPPED ***");
        return None;
    };
    let database = format!("jit_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&admin_url).await.ok()?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .ok()?;
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).ok()?;
    url.set_path(&database);
    Some(url.to_string())
}

/// Drops a database [`postgres_database`] made, so benchmark runs leave nothing behind.
pub async fn drop_postgres_database(url: &str) {
    let (Ok(admin_url), Ok(url)) = (std::env::var("JIT_TEST_POSTGRES_URL"), url::Url::parse(url))
    else {
        return;
    };
    let database = url.path().trim_start_matches('/');
    if !database.starts_with("jit_bench_") {
        return;
    }
    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
        let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await {
            eprintln!("*** could not drop {database}: {err} ***");
        }
        admin.close().await;
    }
}
