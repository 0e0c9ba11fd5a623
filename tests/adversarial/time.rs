//! Time: `exp`, `nbf` and `iat` under one leeway, a maximum token age, and a cache that never
//! outlives a token.

use std::time::Duration;

use crate::harness::{Target, assert_invalid_token, now};

async fn with_leeway(seconds: u64) -> Target {
    Target::start(|b, i| b.issuer(i.leeway(Duration::from_secs(seconds)))).await
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let target = with_leeway(0).await;
    let token = target
        .idp()
        .id_token()
        .issued_at(now() - 3600)
        .expires_at(now() - 5)
        .sign();
    assert_invalid_token(&target.refused(&token, 401).await, "token expired");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let target = with_leeway(0).await;
    let token = target.idp().id_token().not_before(now() + 30).sign();
    assert_invalid_token(&target.refused(&token, 401).await, "token not yet valid");
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let target = with_leeway(0).await;
    let token = target.idp().id_token().issued_at(now() + 30).sign();
    assert_invalid_token(
        &target.refused(&token, 401).await,
        "token issued in the future",
    );
}

#[tokio::test]
async fn the_leeway_applies_the_same_way_to_exp_nbf_and_iat() {
    let target = with_leeway(30).await;
    let idp = target.idp();
    // Inside the leeway: accepted, each of the three.
    let inside = [
        idp.id_token()
            .subject("exp-inside")
            .issued_at(now() - 600)
            .expires_at(now() - 20)
            .sign(),
        idp.id_token()
            .subject("nbf-inside")
            .not_before(now() + 20)
            .sign(),
        idp.id_token()
            .subject("iat-inside")
            .issued_at(now() + 20)
            .sign(),
    ];
    for token in &inside {
        let reply = target.get(token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Past it: refused, each of the three.
    let outside = [
        (
            idp.id_token()
                .subject("exp-outside")
                .issued_at(now() - 600)
                .expires_at(now() - 40)
                .sign(),
            "token expired",
        ),
        (
            idp.id_token()
                .subject("nbf-outside")
                .not_before(now() + 40)
                .sign(),
            "token not yet valid",
        ),
        (
            idp.id_token()
                .subject("iat-outside")
                .issued_at(now() + 40)
                .sign(),
            "token issued in the future",
        ),
    ];
    for (token, description) in &outside {
        assert_invalid_token(&target.refused(token, 401).await, description);
    }
}

#[tokio::test]
async fn a_token_older_than_the_maximum_age_is_refused() {
    let target = Target::start(|b, i| {
        b.issuer(
            i.max_token_age(Duration::from_secs(300))
                .leeway(Duration::from_secs(0)),
        )
    })
    .await;
    let old = target
        .idp()
        .id_token()
        .issued_at(now() - 3600)
        .expires_at(now() + 3600)
        .sign();
    assert_invalid_token(&target.refused(&old, 401).await, "token too old");
    let fresh = target.idp().id_token().sign();
    target.sign_in(&fresh).await;
}

#[tokio::test]
async fn tokens_without_exp_or_iat_are_refused() {
    let target = Target::default().await;
    for claim in ["exp", "iat"] {
        let token = target.idp().id_token().without_claim(claim).sign();
        target.refused(&token, 401).await;
    }
    for value in [
        serde_json::json!("2099-01-01"),
        serde_json::json!(null),
        serde_json::json!(1e300),
    ] {
        let token = target.idp().id_token().claim("exp", value).sign();
        target.refused(&token, 401).await;
    }
}

#[tokio::test]
async fn the_token_cache_never_serves_a_token_past_its_exp() {
    let target = with_leeway(0).await;
    let token = target
        .idp()
        .id_token()
        .issued_at(now() - 10)
        .expires_at(now() + 2)
        .sign();
    target.sign_in(&token).await;
    assert_eq!(
        target.get(&token).await.status,
        200,
        "served from the cache"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let reply = target.get(&token).await;
    assert_invalid_token(&reply, "token expired");
    target.assert_not_leaked(&token, &reply);
    assert_eq!(target.layer.cache_sizes().await.tokens, 0);
}

#[tokio::test]
async fn extreme_timestamps_neither_crash_nor_outlive_the_rules() {
    let target = Target::start(|b, i| b.issuer(i.max_token_age(Duration::from_secs(3600)))).await;
    let idp = target.idp();
    // Signed by the issuer, valid for millennia: accepted, and still bounded by the maximum age.
    let far = idp
        .id_token()
        .subject("far-future")
        .expires_at(253_402_300_799)
        .sign();
    target.sign_in(&far).await;
    // Beyond any calendar, negative, or not integers: refused, never a panic.
    for exp in [
        serde_json::json!(1e19),
        serde_json::json!(-1),
        serde_json::json!(i64::MAX),
        serde_json::json!(u64::MAX),
        serde_json::json!(-9.3e18),
    ] {
        let token = idp.id_token().subject("odd").claim("exp", exp).sign();
        target.refused(&token, 401).await;
    }
    for iat in [serde_json::json!(-1e19), serde_json::json!(i64::MIN)] {
        let token = idp.id_token().subject("odd").claim("iat", iat).sign();
        target.refused(&token, 401).await;
    }
    // The server is still answering.
    target.sign_in(&far).await;
}
