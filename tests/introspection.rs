//! Opaque access tokens checked by RFC 7662 introspection, over real HTTP: the test issuer mints
//! them and answers its introspection endpoint (counted, revocable, breakable); the layer in
//! front of an app provisions their holders into SQLite.

mod common;

use std::time::{Duration, Instant};

use common::{LogCapture, Server, get_with, invalid_token, user_app};
use tower_jit_provisioning::testing::{Fault, TestIssuer};
use tower_jit_provisioning::{Issuer, ProvisioningLayer, SqliteStore, UserStore};

/// The app behind a layer trusting `issuer`, on SQLite.
async fn start(issuer: Issuer) -> (Server, SqliteStore, tempfile::TempDir) {
    let (store, dir) = common::sqlite_store().await;
    let layer = ProvisioningLayer::builder()
        .issuer(issuer)
        .store(store.clone())
        .build()
        .unwrap();
    (Server::start(user_app(layer)).await, store, dir)
}

fn introspecting(idp: &TestIssuer) -> Issuer {
    idp.issuer()
        .introspection(TestIssuer::CLIENT_ID, TestIssuer::CLIENT_SECRET)
}

#[tokio::test]
async fn an_opaque_token_provisions_its_holder_who_is_the_same_person_by_jwt() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let (server, store, _dir) = start(introspecting(&idp)).await;
    let client = reqwest::Client::new();
    let token = idp
        .opaque_token()
        .subject("opaque-alice")
        .email("alice@example.com", true)
        .claim("name", "Alice")
        .groups(["staff"])
        .opaque();
    assert!(!token.contains('.'));

    let me = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let user = me.json();
    assert_eq!(user["subject"], "opaque-alice");
    assert_eq!(user["issuer"], idp.url());
    assert_eq!(user["source"], "introspection");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["groups"], serde_json::json!(["staff"]));
    assert_eq!(idp.introspections(), 1);

    // Cached: the next requests make no call.
    for _ in 0..5 {
        let again = get_with(&client, &server.url("/me"), Some(&token)).await;
        assert_eq!(again.json()["id"], user["id"]);
    }
    assert_eq!(idp.introspections(), 1);

    // A JWT access token of the same person: verified locally, the same account.
    let jwt = idp.access_token().subject("opaque-alice").sign();
    let by_jwt = get_with(&client, &server.url("/me"), Some(&jwt)).await;
    assert_eq!(by_jwt.status, 200, "{}", by_jwt.body);
    assert_eq!(by_jwt.json()["id"], user["id"]);
    assert_eq!(idp.introspections(), 1, "a JWT is never introspected");
    assert_eq!(store.list_users(None, 10).await.unwrap().len(), 1);

    assert!(!logs.text().contains(&token), "the opaque token was logged");
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_the_cache_bound() {
    let idp = TestIssuer::start().await;
    let bound = Duration::from_secs(1);
    let (server, _store, _dir) = start(introspecting(&idp).introspection_cache(bound)).await;
    let client = reqwest::Client::new();
    let token = idp.opaque_token().subject("revoked-bob").opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&token))
            .await
            .status,
        200
    );
    idp.revoke(&token);
    let revoked_at = Instant::now();
    loop {
        let reply = get_with(&client, &server.url("/me"), Some(&token)).await;
        if reply.status == 401 {
            assert_eq!(
                reply.challenge(),
                Some(invalid_token("token not active").as_str())
            );
            break;
        }
        assert_eq!(reply.status, 200);
        assert!(
            revoked_at.elapsed() < bound + Duration::from_millis(500),
            "still accepted {:?} after revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn while_introspection_is_down_cached_tokens_hold_and_new_ones_get_503() {
    let idp = TestIssuer::start().await;
    let (server, store, _dir) = start(introspecting(&idp)).await;
    let client = reqwest::Client::new();
    let known = idp.opaque_token().subject("known").opaque();
    let fresh = idp.opaque_token().subject("fresh").opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&known))
            .await
            .status,
        200
    );

    for fault in [Fault::Status(503), Fault::Html, Fault::Status(401)] {
        idp.set_introspection_fault(Some(fault.clone()));
        let cached = get_with(&client, &server.url("/me"), Some(&known)).await;
        assert_eq!(cached.status, 200, "{fault:?}");
        let new = get_with(&client, &server.url("/me"), Some(&fresh)).await;
        assert_eq!(new.status, 503, "{fault:?}: {}", new.body);
        assert!(new.header("retry-after").is_some(), "{fault:?}");
        assert!(!new.body.contains(&fresh));
    }
    // Back up: the outage was not remembered as a refusal.
    idp.set_introspection_fault(None);
    let recovered = get_with(&client, &server.url("/me"), Some(&fresh)).await;
    assert_eq!(recovered.status, 200, "{}", recovered.body);
    assert_eq!(store.list_users(None, 10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_herd_with_one_new_token_makes_one_introspection_call() {
    let idp = TestIssuer::start().await;
    let (server, store, _dir) = start(introspecting(&idp)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(100)
        .build()
        .unwrap();
    let token = idp.opaque_token().subject("herd").opaque();
    // A slow endpoint, so the whole herd is waiting on the first call.
    idp.set_introspection_fault(Some(Fault::Delay(Duration::from_millis(300))));
    let mut requests = Vec::new();
    for _ in 0..100 {
        let client = client.clone();
        let url = server.url("/me");
        let token = token.clone();
        requests.push(tokio::spawn(async move {
            get_with(&client, &url, Some(&token)).await
        }));
    }
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(idp.introspections(), 1);
    assert_eq!(store.list_users(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn answers_outside_the_issuers_rules_are_refused_and_write_nothing() {
    let idp = TestIssuer::start().await;
    let (server, store, _dir) = start(introspecting(&idp)).await;
    let client = reqwest::Client::new();
    let cases = [
        (
            "unknown",
            "tjp_at_never-minted".to_owned(),
            "token not active",
        ),
        (
            "another issuer",
            idp.opaque_token()
                .claim("iss", "https://evil.example")
                .opaque(),
            "untrusted issuer",
        ),
        (
            "another audience",
            idp.opaque_token().audience("someone-else").opaque(),
            "wrong audience",
        ),
        (
            "a refresh token",
            idp.opaque_token()
                .claim("token_type", "refresh_token")
                .opaque(),
            "not a bearer access token",
        ),
        (
            "sender-constrained",
            idp.opaque_token()
                .claim("token_type", "DPoP")
                .claim("cnf", serde_json::json!({"jkt": "0ZcOCORZNYy"}))
                .opaque(),
            "not a bearer access token",
        ),
        (
            "not yet valid",
            idp.opaque_token()
                .not_before(chrono::Utc::now().timestamp() + 3600)
                .opaque(),
            "token not yet valid",
        ),
        (
            "no subject",
            idp.opaque_token().without_claim("sub").opaque(),
            "invalid subject",
        ),
    ];
    for (case, token, description) in &cases {
        let reply = get_with(&client, &server.url("/me"), Some(token)).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        assert_eq!(
            reply.challenge(),
            Some(invalid_token(description).as_str()),
            "{case}"
        );
    }
    assert!(store.list_users(None, 10).await.unwrap().is_empty());

    // A refusal is remembered briefly: a client retrying in a loop costs one call.
    let calls = idp.introspections();
    for _ in 0..5 {
        get_with(&client, &server.url("/me"), Some(&cases[0].1)).await;
    }
    assert_eq!(idp.introspections(), calls);
}

#[tokio::test]
async fn an_issuer_for_opaque_tokens_only_refuses_its_jwts() {
    let idp = TestIssuer::start().await;
    let (server, _store, _dir) = start(introspecting(&idp).opaque_tokens_only()).await;
    let client = reqwest::Client::new();
    let jwt = idp.access_token().subject("carol").sign();
    let refused = get_with(&client, &server.url("/me"), Some(&jwt)).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .challenge()
            .is_some_and(|c| c.contains("checked by introspection")),
        "{:?}",
        refused.challenge()
    );
    let opaque = idp.opaque_token().subject("carol").opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&opaque))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_configured_endpoint_and_a_wrong_client_secret() {
    let idp = TestIssuer::start().await;
    let client = reqwest::Client::new();
    let token = idp.opaque_token().subject("dave").opaque();

    // An endpoint given explicitly is used as given.
    let configured =
        introspecting(&idp).introspection_endpoint(format!("{}/introspect", idp.url()));
    let (server, _store, _dir) = start(configured).await;
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&token))
            .await
            .status,
        200
    );

    // A secret the issuer refuses is an outage to report, not a verdict on the token.
    let wrong = idp
        .issuer()
        .introspection(TestIssuer::CLIENT_ID, "not-the-secret");
    let (server, _store, _dir) = start(wrong).await;
    let reply = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(reply.status, 503);

    // Without introspection, an opaque token is simply malformed.
    let (server, _store, _dir) = start(idp.issuer()).await;
    let reply = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.challenge(),
        Some(invalid_token("malformed token").as_str())
    );
}

#[tokio::test]
async fn no_answer_is_kept_past_the_tokens_expiry() {
    let idp = TestIssuer::start().await;
    // A generous bound: the token's own `exp` must be what ends it.
    let (server, _store, _dir) =
        start(introspecting(&idp).introspection_cache(Duration::from_secs(600))).await;
    let client = reqwest::Client::new();
    let token = idp
        .opaque_token()
        .subject("short-lived")
        .valid_for(Duration::from_secs(2))
        .opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&token))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let calls = idp.introspections();
    let expired = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert_eq!(idp.introspections(), calls + 1, "asked again once expired");
}

#[tokio::test]
async fn with_token_prefixes_a_token_only_ever_reaches_its_own_issuer() {
    let ours = TestIssuer::start().await;
    let theirs = TestIssuer::start().await;
    let (store, _dir) = common::sqlite_store().await;
    let layer = ProvisioningLayer::builder()
        // The test issuer's opaque tokens start with `tjp_at_`.
        .issuer(introspecting(&ours).introspection_token_prefix("tjp_at_"))
        .issuer(introspecting(&theirs))
        .store(store)
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();

    let mine = ours.opaque_token().subject("mine").opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&mine))
            .await
            .status,
        200
    );
    // A token with our prefix that the other issuer minted is asked of us alone.
    let foreign = theirs.opaque_token().subject("foreign").opaque();
    assert_eq!(
        get_with(&client, &server.url("/me"), Some(&foreign))
            .await
            .status,
        401
    );
    assert_eq!(theirs.introspections(), 0, "never sent to the other issuer");
    // A token with no known prefix goes to the issuer without one, and only to it.
    let before = ours.introspections();
    let unprefixed = get_with(&client, &server.url("/me"), Some("zz_opaque_handle")).await;
    assert_eq!(unprefixed.status, 401);
    assert_eq!(theirs.introspections(), 1);
    assert_eq!(ours.introspections(), before);
}
