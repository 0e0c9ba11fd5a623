//! Issuer, audience and token kind.

use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{TokenError, TokenKind};

use crate::harness::{Bait, Target, assert_invalid_token, decoded};

#[tokio::test]
async fn issuer_look_alikes_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    let url = idp.url().to_owned();
    let look_alikes = [
        format!("{url}/"),
        format!("{url}//"),
        url.to_uppercase(),
        url.replace("http://", "HTTP://"),
        url.replace("127.0.0.1", "127.0.0.01"),
        url.replace("127.0.0.1", "localhost"),
        format!("{url}.evil.example"),
        format!("{url}evil"),
        format!("{url}/tenant"),
        format!("{url}?"),
        format!("{url}#"),
        format!(" {url}"),
        format!("{url} "),
        url[..url.len() - 1].to_owned(),
    ];
    for iss in look_alikes {
        let token = idp.id_token().claim("iss", iss.as_str()).sign();
        let reply = target.refused(&token, 401).await;
        assert_invalid_token(&reply, "untrusted issuer");
    }
    // A missing or non-string `iss`.
    for value in [
        serde_json::json!(null),
        serde_json::json!(["x"]),
        serde_json::json!(1),
    ] {
        let token = idp.id_token().claim("iss", value).sign();
        target.refused(&token, 401).await;
    }
    let token = idp.id_token().without_claim("iss").sign();
    target.refused(&token, 401).await;
}

#[tokio::test]
async fn a_token_from_an_unconfigured_issuer_makes_no_network_request() {
    let target = Target::default().await;
    let bait = Bait::start().await;
    let stranger = TestIssuer::start().await;
    // The stranger's real token, and one naming a URL that only counts connections.
    let tokens = [
        stranger.id_token().sign(),
        stranger.id_token().claim("iss", bait.url("")).sign(),
        stranger
            .id_token()
            .claim("iss", bait.url("/.well-known/openid-configuration"))
            .sign(),
    ];
    for token in &tokens {
        assert_invalid_token(&target.refused(token, 401).await, "untrusted issuer");
    }
    assert_eq!(bait.connections(), 0);
    assert_eq!(stranger.discovery_fetches(), 0);
    assert_eq!(stranger.jwks_fetches(), 0);
}

#[tokio::test]
async fn wrong_missing_or_extra_audiences_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    let cases = [
        idp.id_token().audience("another-app").sign(),
        idp.id_token().audience("test-client ").sign(),
        idp.id_token().audience("TEST-CLIENT").sign(),
        idp.id_token().audiences(Vec::<String>::new()).sign(),
        idp.id_token().without_claim("aud").sign(),
        idp.id_token()
            .claim("aud", serde_json::json!({"test-client": true}))
            .sign(),
        // An ID token for several clients must name its authorized party; ours is not enough.
        idp.id_token()
            .audiences([TestIssuer::AUDIENCE, "another-app"])
            .sign(),
    ];
    for token in &cases {
        let reply = target.refused(token, 401).await;
        let challenge = reply.challenge().unwrap();
        assert!(
            challenge.contains("wrong audience") || challenge.contains("client not allowed"),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn azp_is_checked_against_the_allow_list() {
    let target = Target::start(|b, i| b.issuer(i.authorized_parties(["web-app"]))).await;
    let idp = target.idp();
    for azp in ["mobile-app", "web-app ", "WEB-APP"] {
        let token = idp.id_token().claim("azp", azp).sign();
        assert_invalid_token(&target.refused(&token, 401).await, "client not allowed");
    }
    // An access token names its client in `client_id`.
    let token = idp.access_token().claim("client_id", "mobile-app").sign();
    assert_invalid_token(&target.refused(&token, 401).await, "client not allowed");
    let token = idp.id_token().claim("azp", "web-app").sign();
    target.sign_in(&token).await;
}

#[tokio::test]
async fn an_id_token_is_refused_where_only_access_tokens_are_accepted() {
    let target = Target::start(|b, i| b.issuer(i.token_kinds([TokenKind::Access]))).await;
    let idp = target.idp();
    let cases = [
        idp.id_token().sign(),
        // No `typ` at all: the `openidconnect` verifier would take it; this layer reads it as
        // an ID token.
        idp.id_token().without_header("typ").sign(),
        idp.access_token().without_header("typ").sign(),
        idp.access_token().header("typ", "JWT").sign(),
        idp.access_token().header("typ", "application/jwt").sign(),
    ];
    for token in &cases {
        assert_invalid_token(
            &target.refused(token, 401).await,
            &TokenError::ExpectedAccessToken.to_string(),
        );
    }
    target.sign_in(&idp.access_token().sign()).await;
}

#[tokio::test]
async fn an_access_token_is_refused_where_only_id_tokens_are_accepted() {
    let target = Target::start(|b, i| b.issuer(i.token_kinds([TokenKind::Id]))).await;
    let idp = target.idp();
    for typ in ["at+jwt", "at+JWT", "application/at+jwt"] {
        let token = idp.access_token().header("typ", typ).sign();
        let (header, _) = decoded(&token);
        assert_eq!(header["typ"], typ);
        assert_invalid_token(
            &target.refused(&token, 401).await,
            "expected an ID token; this is an access token",
        );
    }
    // Types that are neither.
    for typ in ["dpop+jwt", "logout+jwt", "secevent+jwt", "JOSE", ""] {
        let token = idp.id_token().header("typ", typ).sign();
        assert_invalid_token(
            &target.refused(&token, 401).await,
            "unsupported token type: typ must be JWT, at+jwt or absent",
        );
    }
    target.sign_in(&idp.id_token().sign()).await;
}
