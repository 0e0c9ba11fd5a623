//! Per-request cost through the whole layer, in process (`tower::ServiceExt::oneshot`), against
//! a bare app in the same run; a session cookie against a bearer token through one layer with
//! browser sign-in; and raw signature verification, the floor of the cold path.
//!
//! Run with `cargo bench --bench layer`.

mod support;

use std::hint::black_box;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use serde_json::Value;
use tower::ServiceExt;
use tower_jit_provisioning::login::BrowserLogin;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{Algorithm, MemoryStore, ProvisioningLayer};

const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn per_request(c: &mut Criterion) {
    let rt = runtime();
    let idp = rt.block_on(TestIssuer::start());
    let store = MemoryStore::new();
    let layer = |token_cache: u64| {
        ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .store(store.clone())
            .token_cache(token_cache)
            .build()
            .unwrap()
    };
    let hot = layer(10_000);
    let cold = layer(0);
    rt.block_on(hot.fetch_keys()).unwrap();
    rt.block_on(cold.fetch_keys()).unwrap();
    let bare = support::hello();
    let hot_app = support::hello_user().layer(hot);
    let cold_app = support::hello_user().layer(cold);
    let token = idp.id_token().subject("bench-user").sign();
    // Warm: the user exists and is cached in both layers, the token in the hot one.
    for app in [&hot_app, &cold_app] {
        let response = rt
            .block_on(app.clone().oneshot(support::request(&token)))
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let mut group = c.benchmark_group("request");
    group.bench_function("no_layer", |b| {
        b.to_async(&rt)
            .iter(|| bare.clone().oneshot(support::request(&token)))
    });
    group.bench_function("hot_path", |b| {
        b.to_async(&rt)
            .iter(|| hot_app.clone().oneshot(support::request(&token)))
    });
    for alg in ALGORITHMS {
        let token = idp.id_token().subject("bench-user").algorithm(alg).sign();
        let response = rt
            .block_on(cold_app.clone().oneshot(support::request(&token)))
            .unwrap();
        assert_eq!(response.status(), 200);
        group.bench_function(format!("new_token_cached_user/{alg}"), |b| {
            b.to_async(&rt)
                .iter(|| cold_app.clone().oneshot(support::request(&token)))
        });
    }
    group.finish();

    session_against_bearer(c, &rt, &idp, &token);
    opaque_against_jwt(c, &rt, &idp);

    let mut group = c.benchmark_group("verify_raw");
    for alg in ALGORITHMS {
        let token = idp.id_token().subject("bench-user").algorithm(alg).sign();
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let key = public_key(&idp.jwks(), &idp.current_kid(alg), alg);
        assert!(key.verify_sig(signing_input.as_bytes(), &signature).is_ok());
        group.bench_function(alg.as_str(), |b| {
            b.iter(|| key.verify_sig(black_box(signing_input.as_bytes()), black_box(&signature)))
        });
    }
    group.finish();
}

/// One layer with browser sign-in, one person with a session and a token: the cost of each
/// credential on the hot path (the user and the session or token cached), in the same run.
fn session_against_bearer(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    idp: &TestIssuer,
    token: &str,
) {
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer().browser_client(
            TestIssuer::CLIENT_ID,
            Some(TestIssuer::CLIENT_SECRET.into()),
        ))
        .browser_login(BrowserLogin::new("http://app.example"))
        .store(MemoryStore::new())
        .build()
        .unwrap();
    rt.block_on(layer.fetch_keys()).unwrap();
    let routes = layer.login_router();
    let app = support::hello_user().layer(layer).merge(routes);
    let cookie = rt.block_on(sign_in(&app, "bench-user"));
    let with_cookie = || {
        Request::get("/")
            .header("cookie", cookie.as_str())
            .body(Body::empty())
            .unwrap()
    };
    for request in [with_cookie(), support::request(token)] {
        let response = rt.block_on(app.clone().oneshot(request)).unwrap();
        assert_eq!(response.status(), 200);
    }
    let mut group = c.benchmark_group("credential");
    group.bench_function("bearer_hot", |b| {
        b.to_async(rt)
            .iter(|| app.clone().oneshot(support::request(token)))
    });
    group.bench_function("session_cookie_hot", |b| {
        b.to_async(rt).iter(|| app.clone().oneshot(with_cookie()))
    });
    group.finish();
}

/// One layer whose issuer also introspects: a cached opaque token against a cached JWT access
/// token of the same person, in the same run.
fn opaque_against_jwt(c: &mut Criterion, rt: &tokio::runtime::Runtime, idp: &TestIssuer) {
    let layer = ProvisioningLayer::builder()
        .issuer(
            idp.issuer()
                .introspection(TestIssuer::CLIENT_ID, TestIssuer::CLIENT_SECRET),
        )
        .store(MemoryStore::new())
        .build()
        .unwrap();
    rt.block_on(layer.fetch_keys()).unwrap();
    let app = support::hello_user().layer(layer);
    let jwt = idp.access_token().subject("bench-opaque").sign();
    let opaque = idp.opaque_token().subject("bench-opaque").opaque();
    for token in [&jwt, &opaque] {
        let response = rt
            .block_on(app.clone().oneshot(support::request(token)))
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let calls = idp.introspections();
    let mut group = c.benchmark_group("credential");
    group.bench_function("jwt_access_hot", |b| {
        b.to_async(rt)
            .iter(|| app.clone().oneshot(support::request(&jwt)))
    });
    group.bench_function("opaque_introspected_hot", |b| {
        b.to_async(rt)
            .iter(|| app.clone().oneshot(support::request(&opaque)))
    });
    group.finish();
    assert_eq!(idp.introspections(), calls, "cached: no introspection call");
}

/// Signs `subject` in through the app's own routes and the test issuer; the session cookie.
async fn sign_in(app: &axum::Router, subject: &str) -> String {
    let cookies = |response: &http::Response<Body>| -> Vec<String> {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect()
    };
    let login = Request::get(format!("/login?login_hint={subject}"))
        .body(Body::empty())
        .unwrap();
    let started = app.clone().oneshot(login).await.unwrap();
    let flow = cookies(&started).join("; ");
    let authorize = started.headers()["location"].to_str().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let issued = client.get(authorize).send().await.unwrap();
    let callback = url::Url::parse(issued.headers()["location"].to_str().unwrap()).unwrap();
    let path = format!("/callback?{}", callback.query().unwrap());
    let request = Request::get(path)
        .header("cookie", flow)
        .body(Body::empty())
        .unwrap();
    let finished = app.clone().oneshot(request).await.unwrap();
    assert_eq!(finished.status(), 303);
    cookies(&finished)
        .into_iter()
        .find(|c| c.starts_with("jit_session="))
        .expect("a session cookie")
}

/// The issuer's key as aws-lc-rs parses it, once, outside the measurement.
fn public_key(jwks: &Value, kid: &str, alg: Algorithm) -> ParsedPublicKey {
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap();
    let member = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    match alg {
        Algorithm::RS256 => RsaPublicKeyComponents {
            n: member("n"),
            e: member("e"),
        }
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .unwrap(),
        Algorithm::ES256 => {
            let mut point = vec![4];
            point.extend(member("x"));
            point.extend(member("y"));
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        Algorithm::EdDSA => ParsedPublicKey::new(&signature::ED25519, member("x")).unwrap(),
        _ => unreachable!(),
    }
}

criterion_group!(benches, per_request);
criterion_main!(benches);
