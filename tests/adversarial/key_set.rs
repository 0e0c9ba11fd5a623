//! Key-set lifecycle: rotation, refreshes under load, outages, staleness, transport rules.

use std::sync::Arc;
use std::time::Duration;

use tower_jit_provisioning::testing::{Fault, TestIssuer};
use tower_jit_provisioning::{Algorithm, Issuer, ProvisioningLayer};

use crate::harness::{Bait, Target, assert_invalid_token};

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refresh() {
    let target = Target::start(|b, i| b.issuer(i.min_key_refresh_interval(Duration::ZERO))).await;
    let idp = target.idp();
    target
        .sign_in(&idp.id_token().subject("before").sign())
        .await;
    assert_eq!(idp.jwks_fetches(), 1);
    idp.rotate_keys();
    target
        .sign_in(&idp.id_token().subject("after").sign())
        .await;
    assert_eq!(idp.jwks_fetches(), 2);
    target
        .sign_in(&idp.id_token().subject("after-2").sign())
        .await;
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_waiters_on_a_new_kid_share_one_refresh() {
    let target = Target::start(|b, i| b.issuer(i.min_key_refresh_interval(Duration::ZERO))).await;
    let idp = target.idp();
    target.sign_in(&idp.id_token().sign()).await;
    idp.set_fault(Some(Fault::Delay(Duration::from_millis(400))));
    idp.add_key(Algorithm::RS256);
    let target = Arc::new(target);
    let gate = Arc::new(tokio::sync::Barrier::new(40));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let token = target
            .idp()
            .id_token()
            .subject(format!("waiter-{i}"))
            .sign();
        let (target, gate) = (Arc::clone(&target), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            target.get(&token).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(target.idp().jwks_fetches(), 2);
}

#[tokio::test]
async fn a_random_kid_flood_costs_one_fetch_per_cool_down() {
    let cool_down = Duration::from_secs(30);
    let target = Target::start(|b, i| b.issuer(i.min_key_refresh_interval(cool_down))).await;
    let idp = target.idp();
    target.sign_in(&idp.id_token().sign()).await;
    for i in 0..300 {
        let token = idp.id_token().kid(format!("random-{i:04}")).sign();
        assert_invalid_token(&target.refused(&token, 401).await, "unknown signing key");
    }
    // The first fetch started the cool-down; no flood token earns another inside it.
    assert_eq!(idp.jwks_fetches(), 1);
}

/// Keys fetched, then the issuer fails in `fault`'s way: tokens signed with the keys held keep
/// working, a forced refresh changes nothing.
async fn last_good_keys_survive(fault: Fault) {
    let target = Target::start(|b, i| {
        b.issuer(i.min_key_refresh_interval(Duration::ZERO))
            .http_timeout(Duration::from_millis(500))
    })
    .await;
    let idp = target.idp();
    target
        .sign_in(&idp.id_token().subject("before").sign())
        .await;
    idp.set_fault(Some(fault.clone()));
    // An unknown kid forces a refresh into the fault.
    let unknown = idp.id_token().kid("not-published").sign();
    let reply = target.refused(&unknown, 401).await;
    assert_invalid_token(&reply, "unknown signing key");
    assert!(idp.jwks_fetches() >= 2, "{fault:?}: the refresh was tried");
    let reply = target.get(&idp.id_token().subject("during").sign()).await;
    assert_eq!(reply.status, 200, "{fault:?}: {}", reply.body);
}

#[tokio::test]
async fn an_outage_answering_500_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::Status(500)).await;
}

#[tokio::test]
async fn an_outage_that_times_out_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::Delay(Duration::from_secs(3))).await;
}

#[tokio::test]
async fn an_html_error_page_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::Html).await;
}

#[tokio::test]
async fn an_empty_key_set_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::EmptyKeySet).await;
}

#[tokio::test]
async fn an_oversized_key_set_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::Oversized(8 * 1024 * 1024)).await;
}

#[tokio::test]
async fn a_key_set_of_unusable_keys_keeps_the_last_good_keys() {
    last_good_keys_survive(Fault::KeySet(serde_json::json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "x"},
        {"kty": "EC", "crv": "secp256k1", "kid": "y", "x": "AA", "y": "AA"},
        "not a key",
    ]})))
    .await;
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let bait = Bait::start().await;
    last_good_keys_survive(Fault::Redirect(bait.url("/jwks"))).await;
    assert_eq!(bait.connections(), 0);
    // Not on first contact either: no keys, 503.
    let idp = TestIssuer::start().await;
    idp.set_fault(Some(Fault::Redirect(bait.url("/jwks"))));
    let target = Target::start(|b, _| b.issuer(idp.issuer())).await;
    let token = idp.id_token().sign();
    let reply = target.refused(&token, 503).await;
    assert!(reply.header("retry-after").is_some());
    assert_eq!(bait.connections(), 0);
}

#[tokio::test]
async fn past_the_maximum_staleness_the_layer_fails_closed() {
    let target = Target::start(|b, i| {
        b.issuer(
            i.max_key_staleness(Duration::from_secs(1))
                .key_refresh_interval(Duration::from_millis(200))
                .min_key_refresh_interval(Duration::from_millis(100)),
        )
    })
    .await;
    let idp = target.idp();
    let cached = idp.id_token().subject("cached").sign();
    target.sign_in(&cached).await;
    idp.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A new token and a cached one alike.
    let fresh = idp.id_token().subject("fresh").sign();
    let reply = target.refused(&fresh, 503).await;
    assert!(reply.header("retry-after").is_some());
    let reply = target.get(&cached).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    // Back once the issuer is.
    idp.restart().await;
    let started = std::time::Instant::now();
    loop {
        if target.get(&fresh).await.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn https_is_required_outside_explicit_loopback_testing() {
    let build = |issuer: Issuer| ProvisioningLayer::builder().issuer(issuer).build();
    for url in [
        "http://idp.example.com",
        "http://10.0.0.1",
        "http://127.0.0.1.nip.io",
        "ftp://idp.example.com",
        "idp.example.com",
    ] {
        assert!(build(Issuer::new(url).audience("app")).is_err(), "{url}");
        let loopback_allowed = Issuer::new(url).audience("app").allow_http_loopback(true);
        assert!(
            build(loopback_allowed).is_err(),
            "{url} with loopback allowed"
        );
    }
    for url in ["http://127.0.0.1:8080", "http://[::1]:8080"] {
        assert!(
            build(Issuer::new(url).audience("app")).is_err(),
            "{url} without opting in"
        );
        assert!(
            build(Issuer::new(url).audience("app").allow_http_loopback(true)).is_ok(),
            "{url}"
        );
    }
}
