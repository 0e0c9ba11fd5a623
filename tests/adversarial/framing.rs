//! Request framing (RFC 6750 §2): where a token may come from, and how it must be written.

use crate::harness::{Target, assert_invalid_token};

#[tokio::test]
async fn no_credentials_get_a_bare_bearer_challenge() {
    let target = Target::default().await;
    let before = target.written().await;
    let reply = target.send(|r| r).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.challenge(), Some("Bearer"));
    assert_eq!(target.written().await, before);
}

#[tokio::test]
async fn another_scheme_is_not_a_bearer_token() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    for scheme in ["Basic", "Digest", "Token", "MAC", "JWT", "Bearer-Token"] {
        let reply = target
            .refused_with(&token, 401, |r| {
                r.header("authorization", format!("{scheme} {token}"))
            })
            .await;
        assert_eq!(reply.challenge(), Some("Bearer"), "{scheme}");
    }
}

#[tokio::test]
async fn the_scheme_name_is_case_insensitive() {
    // RFC 7235 §2.1: auth-scheme is case-insensitive; the token after it is not.
    let target = Target::default().await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let token = target.idp().id_token().subject(scheme).sign();
        let reply = target
            .send(|r| r.header("authorization", format!("{scheme} {token}")))
            .await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
    }
}

#[tokio::test]
async fn malformed_bearer_values_are_400_invalid_request() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let values = [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {token} extra"),
        format!("Bearer {token},{token}"),
    ];
    for value in values {
        let reply = target
            .refused_with(&token, 400, |r| r.header("authorization", value.as_str()))
            .await;
        let challenge = reply.challenge().unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_request""#),
            "{value:?}: {challenge}"
        );
    }
    // A quoted token is not a b64token: refused as a malformed token.
    let quoted = target
        .refused_with(&token, 401, |r| {
            r.header("authorization", format!("Bearer \"{token}\""))
        })
        .await;
    assert_invalid_token(&quoted, "malformed token");
}

#[tokio::test]
async fn doubled_authorization_headers_are_400() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let other = target.idp().id_token().subject("someone-else").sign();
    target
        .refused_with(&token, 400, |r| {
            r.header("authorization", format!("Bearer {token}"))
                .header("authorization", format!("Bearer {other}"))
        })
        .await;
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_by_default() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    // RFC 6750 §2.3's parameter: refused outright, since query strings end up in logs.
    let url = format!("{}?access_token={token}", target.url());
    let reply = target
        .refused_with(&token, 400, |_| target.client.get(url.as_str()))
        .await;
    let challenge = reply.challenge().unwrap_or_default();
    assert!(challenge.contains("invalid_request"), "{challenge}");
    // Any other parameter is no credential at all.
    let url = format!("{}?id_token={token}", target.url());
    target
        .refused_with(&token, 401, |_| target.client.get(url.as_str()))
        .await;
    // Nor in a form body.
    target
        .refused_with(&token, 401, |_| {
            target
                .client
                .post(target.url())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("access_token={token}"))
        })
        .await;
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_decoding_or_any_key_fetch() {
    let target = Target::default().await;
    let huge = target
        .idp()
        .id_token()
        .claim("padding", "x".repeat(20_000))
        .sign();
    let reply = target.refused(&huge, 401).await;
    assert_invalid_token(&reply, "token too large");
    assert_eq!(target.idp().discovery_fetches(), 0);
    assert_eq!(target.idp().jwks_fetches(), 0);
    // Garbage of the same size is refused the same way, unparsed.
    let garbage = "A".repeat(17 * 1024);
    assert_invalid_token(&target.refused(&garbage, 401).await, "token too large");
}

#[tokio::test]
async fn attacker_text_in_iss_kid_and_aud_is_never_reflected() {
    let target = Target::default().await;
    let idp = target.idp();
    let marker = "INJECTED-7f3a";
    let evil = format!("\r\nX-Evil: {marker}\n\"><script>{marker}</script>");
    let tokens = [
        idp.id_token().claim("iss", evil.as_str()).sign(),
        idp.id_token().kid(evil.as_str()).sign(),
        idp.id_token().audience(evil.as_str()).sign(),
        idp.id_token().claim("azp", evil.as_str()).sign(),
    ];
    for token in &tokens {
        let reply = target.refused(token, 401).await;
        assert!(!reply.body.contains(marker), "{}", reply.body);
        for (name, value) in &reply.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(marker),
                "{name}"
            );
        }
        assert!(reply.headers.get("x-evil").is_none());
    }
    // Logged, if at all, escaped: never as a raw line break followed by attacker text.
    let logs = target.logs.text();
    assert!(!logs.contains(&format!("\nX-Evil: {marker}")));
}
