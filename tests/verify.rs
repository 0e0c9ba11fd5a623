//! Token verification over real HTTP: an axum app behind the layer, tokens minted by a real
//! issuer on loopback, keys fetched by discovery.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{LogCapture, Reply, Server, app, get_with, invalid_token};
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    Algorithm, Issuer, ProvisioningLayer, TokenError, TokenKind, TokenSource,
};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn serve(issuers: Vec<Issuer>) -> Server {
    let mut builder = ProvisioningLayer::builder();
    for issuer in issuers {
        builder = builder.issuer(issuer);
    }
    Server::start(app(builder.build().unwrap())).await
}

/// Asserts a refusal: status, challenge, and that neither the body nor the logs hold the token.
async fn assert_refused(
    server: &Server,
    logs: &LogCapture,
    token: &str,
    status: u16,
    challenge: &str,
) -> Reply {
    let client = reqwest::Client::new();
    let reply = get_with(&client, &server.url("/claims"), Some(token)).await;
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.challenge(), Some(challenge));
    assert!(!reply.body.contains(token), "body echoes the token");
    assert!(
        !reply
            .headers
            .iter()
            .any(|(_, v)| v.as_bytes() == token.as_bytes()),
        "a header echoes the token"
    );
    let logged = logs.text();
    assert!(!logged.contains(token), "logs hold the token");
    // Not even the signature segment alone.
    let signature = token.rsplit('.').next().unwrap();
    if signature.len() > 16 {
        assert!(!logged.contains(signature), "logs hold the signature");
    }
    reply
}

#[tokio::test]
async fn valid_id_token_is_accepted_and_claims_reach_the_handler() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer()]).await;
    let token = idp
        .id_token()
        .subject("248289761001")
        .email("jane@example.com", true)
        .groups(["staff", "admins"])
        .sign();
    let reply = get_with(
        &reqwest::Client::new(),
        &server.url("/claims"),
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let claims = reply.json();
    assert_eq!(claims["issuer"], idp.url());
    assert_eq!(claims["subject"], "248289761001");
    assert_eq!(claims["kind"], "id");
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["staff", "admins"]));
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn valid_access_token_is_accepted() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer().token_kinds([TokenKind::Access])]).await;
    let token = idp.access_token().subject("svc-7").sign();
    let reply = get_with(
        &reqwest::Client::new(),
        &server.url("/claims"),
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["kind"], "access");
    assert_eq!(reply.json()["subject"], "svc-7");
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer()]).await;
    let client = reqwest::Client::new();
    for alg in Algorithm::ALL {
        let token = idp.id_token().algorithm(alg).sign();
        let reply = get_with(&client, &server.url("/claims"), Some(&token)).await;
        assert_eq!(reply.status, 200, "{alg}: {}", reply.body);
    }
    // One discovery and one key set served every algorithm.
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn missing_token_is_a_bare_bearer_challenge() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer()]).await;
    let reply = get_with(&reqwest::Client::new(), &server.url("/claims"), None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.challenge(), Some("Bearer"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.json()["code"], "missing_token");
    // Nothing to verify, nothing fetched.
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn each_bad_token_gets_401_invalid_token_with_its_reason() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let server = serve(vec![
        idp.issuer()
            .algorithms([Algorithm::RS256, Algorithm::ES256])
            .leeway(Duration::from_secs(5)),
    ])
    .await;

    let valid = idp.id_token().sign();
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    // Re-encode the payload with another subject but keep the signature.
    let payload = base64_decode(&parts[1]);
    let edited = String::from_utf8(payload)
        .unwrap()
        .replace("test-subject", "someone-else");
    parts[1] = base64_encode(edited.as_bytes());
    let tampered = parts.join(".");

    let cases = [
        ("malformed", "not-a-jwt".to_owned(), "malformed token"),
        ("garbage segments", "a.b.c".to_owned(), "malformed token"),
        (
            "expired",
            idp.id_token()
                .issued_at(now() - 600)
                .expires_at(now() - 60)
                .sign(),
            "token expired",
        ),
        (
            "not yet valid",
            idp.id_token().not_before(now() + 600).sign(),
            "token not yet valid",
        ),
        (
            "issued in the future",
            idp.id_token().issued_at(now() + 600).sign(),
            "token issued in the future",
        ),
        (
            "untrusted issuer",
            stranger.id_token().sign(),
            "untrusted issuer",
        ),
        (
            "wrong audience",
            idp.id_token().audience("someone-elses-app").sign(),
            "wrong audience",
        ),
        (
            "extra untrusted audience",
            idp.id_token()
                .audiences([TestIssuer::AUDIENCE, "other-app"])
                .claim("azp", TestIssuer::AUDIENCE)
                .sign(),
            "wrong audience",
        ),
        (
            "algorithm outside the allow-list",
            idp.id_token().algorithm(Algorithm::EdDSA).sign(),
            "unsupported signing algorithm",
        ),
        (
            "alg none",
            unsigned(&idp.id_token().header("alg", "none").sign()),
            "unsupported signing algorithm",
        ),
        ("bad signature", tampered, "invalid signature"),
        (
            "unknown kid",
            idp.id_token().kid("no-such-key").sign(),
            "unknown signing key",
        ),
    ];
    for (name, token, description) in cases {
        let reply = assert_refused(&server, &logs, &token, 401, &invalid_token(description)).await;
        assert_eq!(reply.json()["detail"], description, "{name}");
    }
    // The untrusted issuer was never contacted.
    assert_eq!(stranger.discovery_fetches(), 0);
    assert_eq!(stranger.jwks_fetches(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn oversized_token_is_refused_unparsed() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer()]).await;
    let huge = idp.id_token().claim("padding", "x".repeat(20_000)).sign();
    assert!(huge.len() > 16 * 1024);
    assert_refused(
        &server,
        &logs,
        &huge,
        401,
        &invalid_token("token too large"),
    )
    .await;
    // Refused before any key was needed.
    assert_eq!(idp.discovery_fetches(), 0);
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn token_kinds_are_not_interchangeable() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let id_only = serve(vec![idp.issuer().token_kinds([TokenKind::Id])]).await;
    let access_only = serve(vec![idp.issuer().token_kinds([TokenKind::Access])]).await;
    let expected_id = invalid_token("expected an ID token; this is an access token");
    let expected_access = invalid_token(&TokenError::ExpectedAccessToken.to_string());
    let unsupported = invalid_token("unsupported token type: typ must be JWT, at+jwt or absent");

    let access = idp.access_token().sign();
    assert_refused(&id_only, &logs, &access, 401, &expected_id).await;

    let id = idp.id_token().sign();
    assert_refused(&access_only, &logs, &id, 401, &expected_access).await;
    // A missing `typ` reads as an ID token, never as an access token.
    let untyped = idp.access_token().without_header("typ").sign();
    assert_refused(&access_only, &logs, &untyped, 401, &expected_access).await;
    let logout = idp.id_token().header("typ", "logout+jwt").sign();
    assert_refused(&id_only, &logs, &logout, 401, &unsupported).await;

    // RFC 9068 claims are required of access tokens.
    let missing = invalid_token("missing required claim");
    let no_client = idp.access_token().without_claim("client_id").sign();
    assert_refused(&access_only, &logs, &no_client, 401, &missing).await;
    let no_jti = idp.access_token().without_claim("jti").sign();
    assert_refused(&access_only, &logs, &no_jti, 401, &missing).await;
    // `application/at+jwt` in full is the same type.
    let long_typ = idp
        .access_token()
        .header("typ", "application/at+jwt")
        .sign();
    let reply = get_with(
        &reqwest::Client::new(),
        &access_only.url("/claims"),
        Some(&long_typ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "current_thread")]
async fn authorized_parties_are_checked() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer().authorized_parties(["web-app"])]).await;
    let client = reqwest::Client::new();
    let not_allowed = invalid_token("client not allowed");

    let ok = idp.id_token().claim("azp", "web-app").sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&ok))
            .await
            .status,
        200
    );
    let other = idp.id_token().claim("azp", "mallory").sign();
    assert_refused(&server, &logs, &other, 401, &not_allowed).await;

    let access_ok = idp.access_token().claim("client_id", "web-app").sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&access_ok))
            .await
            .status,
        200
    );
    let access_other = idp.access_token().claim("client_id", "mallory").sign();
    assert_refused(&server, &logs, &access_other, 401, &not_allowed).await;
}

#[tokio::test]
async fn string_email_verified_counts_only_where_configured() {
    let strict_idp = TestIssuer::start().await;
    let lenient_idp = TestIssuer::start().await;
    let server = serve(vec![
        strict_idp.issuer(),
        lenient_idp.issuer().accept_string_booleans(true),
    ])
    .await;
    let client = reqwest::Client::new();
    for (idp, expected) in [(&strict_idp, false), (&lenient_idp, true)] {
        let token = idp
            .id_token()
            .claim("email", "jane@example.com")
            .claim("email_verified", "true")
            .sign();
        let reply = get_with(&client, &server.url("/claims"), Some(&token)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["email_verified"], expected, "{}", idp.url());
    }
    let numeric = lenient_idp
        .id_token()
        .claim("email", "jane@example.com")
        .claim("email_verified", 1)
        .sign();
    let reply = get_with(&client, &server.url("/claims"), Some(&numeric)).await;
    // Never verified: either refused outright or accepted as unverified.
    assert!(
        reply.status == 401 || reply.json()["email_verified"] == false,
        "{reply:?}"
    );
}

#[tokio::test]
async fn rotated_key_is_accepted_after_one_refresh() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer().min_key_refresh_interval(Duration::ZERO)]).await;
    let client = reqwest::Client::new();
    let before = idp.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&before))
            .await
            .status,
        200
    );
    assert_eq!(idp.jwks_fetches(), 1);

    idp.rotate_keys();
    let after = idp.id_token().sign();
    let reply = get_with(&client, &server.url("/claims"), Some(&after)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(idp.jwks_fetches(), 2, "exactly one refresh");
    // And the new key is now held: no further fetch.
    let again = idp.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&again))
            .await
            .status,
        200
    );
    assert_eq!(idp.jwks_fetches(), 2);
    // Later refreshes read the key set directly, without rediscovery.
    assert_eq!(idp.discovery_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_flood_costs_one_fetch_per_cool_down() {
    let idp = TestIssuer::start().await;
    let cool_down = Duration::from_millis(800);
    let server = serve(vec![idp.issuer().min_key_refresh_interval(cool_down)]).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let good = idp.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&good))
            .await
            .status,
        200
    );
    assert_eq!(idp.jwks_fetches(), 1);

    // Let the cool-down pass so the flood may trigger exactly one refresh.
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
    let tokens: Vec<String> = (0..1000)
        .map(|i| idp.id_token().kid(format!("random-{i}")).sign())
        .collect();
    let url = Arc::new(server.url("/claims"));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for token in tokens {
        let (client, url, gate) = (client.clone(), Arc::clone(&url), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            get_with(&client, &url, Some(&token)).await.status
        }));
    }
    let started = std::time::Instant::now();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401);
    }
    let elapsed = started.elapsed();
    // One fetch per cool-down period elapsed during the flood, at most.
    let periods = 1 + (elapsed.as_millis() / cool_down.as_millis()) as usize;
    let refreshes = idp.jwks_fetches() - 1;
    assert!(refreshes >= 1, "the flood triggers a refresh");
    assert!(
        refreshes <= periods,
        "{refreshes} refreshes in {elapsed:?} with a {cool_down:?} cool-down"
    );
    // The valid token still works throughout.
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&good))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_kids_share_one_refresh() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer().min_key_refresh_interval(Duration::ZERO)]).await;
    let client = reqwest::Client::new();
    let good = idp.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&good))
            .await
            .status,
        200
    );

    // Slow the key set so every request arrives while the one refresh is in flight.
    idp.set_fault(Some(tower_jit_provisioning::testing::Fault::Delay(
        Duration::from_millis(500),
    )));
    let new_kid = idp.add_key(Algorithm::RS256);
    let url = Arc::new(server.url("/claims"));
    let gate = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let token = idp.id_token().sign();
        let (client, url, gate) = (client.clone(), Arc::clone(&url), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            get_with(&client, &url, Some(&token)).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "50 waiters, one refresh for {new_kid}"
    );
}

#[tokio::test]
async fn keys_keep_working_while_the_issuer_is_down() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer().min_key_refresh_interval(Duration::ZERO)]).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&token))
            .await
            .status,
        200
    );

    idp.stop().await;
    for _ in 0..3 {
        let fresh = idp.id_token().sign();
        let reply = get_with(&client, &server.url("/claims"), Some(&fresh)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // A token for a key never seen cannot be verified while the issuer is down: 401, not 503,
    // because keys are held.
    idp.rotate_keys();
    let unknown = idp.id_token().sign();
    let reply = get_with(&client, &server.url("/claims"), Some(&unknown)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.challenge(),
        Some(invalid_token("unknown signing key").as_str())
    );

    // Back up: the new key is fetched and accepted.
    idp.restart().await;
    let reply = get_with(&client, &server.url("/claims"), Some(&unknown)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "current_thread")]
async fn no_keys_ever_obtained_is_503_with_retry_after() {
    let logs = LogCapture::install();
    let idp = TestIssuer::start().await;
    let server = serve(vec![
        idp.issuer()
            .min_key_refresh_interval(Duration::from_secs(30)),
    ])
    .await;
    idp.stop().await;
    let token = idp.id_token().sign();
    let reply = get_with(
        &reqwest::Client::new(),
        &server.url("/claims"),
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 503);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert!(!reply.body.contains(&token));
    assert!(!logs.text().contains(&token));
    assert!(logs.text().contains("signing key refresh failed"));

    // While cooling down, the issuer is not hammered, and the answer stays 503.
    idp.restart().await;
    let reply = get_with(
        &reqwest::Client::new(),
        &server.url("/claims"),
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 503);
    assert_eq!(idp.discovery_fetches(), 0);
}

#[tokio::test]
async fn discovery_issuer_must_match_exactly() {
    let idp = TestIssuer::start().await;
    // The same issuer with a trailing slash: discovery is found, but names another issuer.
    let slashed = format!("{}/", idp.url());
    let server = serve(vec![
        Issuer::new(&slashed)
            .audience(TestIssuer::AUDIENCE)
            .allow_http_loopback(true),
    ])
    .await;
    let token = idp.id_token().claim("iss", slashed.as_str()).sign();
    let reply = get_with(
        &reqwest::Client::new(),
        &server.url("/claims"),
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "keys of a mismatched issuer are never read"
    );
}

#[tokio::test]
async fn two_issuers_at_once_are_chosen_by_iss() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    let server = serve(vec![
        a.issuer(),
        b.issuer().token_kinds([TokenKind::Access]),
    ])
    .await;
    let client = reqwest::Client::new();

    let from_a = a.id_token().subject("same-sub").sign();
    let from_b = b.access_token().subject("same-sub").sign();
    let reply_a = get_with(&client, &server.url("/claims"), Some(&from_a)).await;
    let reply_b = get_with(&client, &server.url("/claims"), Some(&from_b)).await;
    assert_eq!(reply_a.status, 200, "{}", reply_a.body);
    assert_eq!(reply_b.status, 200, "{}", reply_b.body);
    assert_eq!(reply_a.json()["issuer"], a.url());
    assert_eq!(reply_b.json()["issuer"], b.url());

    // B's rules apply to B's tokens: no ID tokens from B.
    let id_from_b = b.id_token().sign();
    assert_eq!(
        get_with(&client, &server.url("/claims"), Some(&id_from_b))
            .await
            .status,
        401
    );
    // A token claiming A but signed by B's key does not verify.
    let forged = b
        .id_token()
        .claim("iss", a.url())
        .kid(a.current_kid(Algorithm::RS256))
        .sign();
    let reply = get_with(&client, &server.url("/claims"), Some(&forged)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.challenge(),
        Some(invalid_token("invalid signature").as_str())
    );
}

#[tokio::test]
async fn optional_mode_passes_requests_without_a_token() {
    let idp = TestIssuer::start().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .optional(true)
        .build()
        .unwrap();
    let server = Server::start(app(layer)).await;
    let client = reqwest::Client::new();

    let anonymous = get_with(&client, &server.url("/maybe"), None).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json(), serde_json::Value::Null);

    let token = idp.id_token().subject("alice").sign();
    let signed_in = get_with(&client, &server.url("/maybe"), Some(&token)).await;
    assert_eq!(signed_in.json()["subject"], "alice");

    // A bad token is refused even in optional mode.
    let expired = idp
        .id_token()
        .issued_at(now() - 7200)
        .expires_at(now() - 3600)
        .sign();
    let refused = get_with(&client, &server.url("/maybe"), Some(&expired)).await;
    assert_eq!(refused.status, 401);

    // A handler that requires claims answers 401 to an anonymous request.
    let required = get_with(&client, &server.url("/claims"), None).await;
    assert_eq!(required.status, 401);
    assert_eq!(required.challenge(), Some("Bearer"));
}

#[tokio::test]
async fn token_from_a_cookie() {
    let idp = TestIssuer::start().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .token_source(TokenSource::cookie("id_token"))
        .build()
        .unwrap();
    let server = Server::start(app(layer)).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().subject("cookie-user").sign();

    let response = client
        .get(server.url("/claims"))
        .header("cookie", format!("theme=dark; id_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["subject"], "cookie-user");

    // The header is not this layer's source.
    let header_only = get_with(&client, &server.url("/claims"), Some(&token)).await;
    assert_eq!(header_only.status, 401);
}

#[tokio::test]
async fn request_framing_errors_are_400_invalid_request() {
    let idp = TestIssuer::start().await;
    let server = serve(vec![idp.issuer()]).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().sign();

    let in_query = client
        .get(server.url(&format!("/claims?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);
    let challenge = in_query.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_request""#),
        "{challenge}"
    );
    assert!(!in_query.text().await.unwrap().contains(&token));

    let doubled = client
        .get(server.url("/claims"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(doubled.status(), 400);
}

fn base64_decode(segment: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The token with its signature removed, as an `alg: none` token is sent.
fn unsigned(token: &str) -> String {
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    format!("{signing_input}.")
}
