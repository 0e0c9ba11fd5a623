//! `ProvisioningLayer` with hyper and tower alone, no axum: a plain `service_fn` reads the
//! provisioned user from the request extensions.
//!
//! Run with `cargo run --example hyper`. It starts a development issuer, keeps accounts in
//! memory, listens on `127.0.0.1:3001` and prints a `curl` command with a token.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{MemoryStore, ProvisionedUser, ProvisioningLayer};

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer only lets requests through with a provisioned user.
    let Some(user) = request.extensions().get::<ProvisionedUser>() else {
        let mut response = Response::new(Full::from("no user"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(response);
    };
    let body = format!(
        "hello {} (account {}, roles {:?})\n",
        user.user().email.as_deref().unwrap_or("stranger"),
        user.id(),
        user.user().role_names(),
    );
    Ok(Response::new(Full::from(body)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = TestIssuer::start().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(MemoryStore::new())
        .build()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    let token = idp
        .id_token()
        .subject("hyper-user")
        .email("hyper@example.com", true)
        .sign();
    println!("curl -s -H 'Authorization: Bearer {token}' http://127.0.0.1:3001/\n");

    loop {
        let (stream, _) = listener.accept().await?;
        let service = ServiceBuilder::new().layer(layer.clone()).service_fn(hello);
        tokio::spawn(async move {
            let service = TowerToHyperService::new(service);
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
