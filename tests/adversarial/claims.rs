//! Claim shape: JSON and base64 that a lenient parser would read one way and the signer meant
//! another, and claims whose type or content must not be trusted.

use serde_json::{Value, json};

use crate::harness::{Target, assert_denied, assert_invalid_token, b64, decoded, segments, unb64};

/// The token with its payload text replaced by `payload` (the signature no longer matches, so
/// the answer must be the parser's, before any signature check).
fn with_payload_text(token: &str, payload: &[u8]) -> String {
    let [h, _, s] = segments(token);
    format!("{h}.{}.{s}", b64(payload))
}

#[tokio::test]
async fn duplicate_json_members_are_refused() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let (header, payload) = decoded(&token);
    let text = payload.to_string();
    let body = &text[1..text.len() - 1];
    // The same member twice in the payload: a parser keeping the first and one keeping the
    // last would see different people.
    let duplicated = format!(r#"{{{body},"sub":"admin"}}"#);
    let forged = with_payload_text(&token, duplicated.as_bytes());
    assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
    // Escaped spellings of the same name are the same name.
    let escaped = format!(r#"{{{body},"s\u0075b":"admin"}}"#);
    let forged = with_payload_text(&token, escaped.as_bytes());
    assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
    // Nested duplicates and duplicates in the header.
    let nested = format!(r#"{{{body},"realm_access":{{"roles":["a"],"roles":["admin"]}}}}"#);
    let forged = with_payload_text(&token, nested.as_bytes());
    assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
    let header_text = header.to_string();
    let doubled_alg = format!(
        r#"{{{},"alg":"none"}}"#,
        &header_text[1..header_text.len() - 1]
    );
    let [_, p, s] = segments(&token);
    let forged = format!("{}.{p}.{s}", b64(doubled_alg));
    assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
}

#[tokio::test]
async fn non_canonical_base64_is_refused() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let [h, p, s] = segments(&token);
    // RS256 signatures are 256 bytes: the last base64 character carries 4 unused bits.
    let last = s.chars().last().unwrap();
    let index = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .find(last)
        .unwrap();
    let sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .chars()
        .nth(index ^ 1)
        .unwrap();
    let cases = [
        // Same bytes, different text: a cache keyed on text must not see two tokens.
        format!("{h}.{p}.{}{sibling}", &s[..s.len() - 1]),
        // Padding, standard alphabet, whitespace.
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
        format!("{h} .{p}.{s}"),
    ];
    for forged in &cases {
        // 400 where the text is not even a b64token in the header, 401 otherwise.
        target.refused_with_one_of(forged, &[400, 401]).await;
    }
    target.sign_in(&token).await;
}

#[tokio::test]
async fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let (_, payload) = decoded(&token);
    let text = payload.to_string();
    let body = &text[1..text.len() - 1];
    for depth in [200, 5_000] {
        let deep = format!(
            r#"{{{body},"x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let forged = with_payload_text(&token, deep.as_bytes());
        if forged.len() > 16 * 1024 {
            assert_invalid_token(&target.refused(&forged, 401).await, "token too large");
        } else {
            assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
        }
    }
    // Signed by the issuer, deep nesting is still refused.
    let mut nested = json!(1);
    for _ in 0..200 {
        nested = json!([nested]);
    }
    let signed = target.idp().id_token().claim("x", nested).sign();
    assert_invalid_token(&target.refused(&signed, 401).await, "malformed token");
}

#[tokio::test]
async fn invalid_utf8_is_refused() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let (_, payload) = decoded(&token);
    let text = payload.to_string();
    let body = &text[1..text.len() - 1];
    let cases: [Vec<u8>; 4] = [
        [
            format!("{{{body},\"name\":\"").as_bytes(),
            b"\xff\xfe",
            b"\"}",
        ]
        .concat(),
        [
            format!("{{{body},\"name\":\"").as_bytes(),
            b"\xc0\xaf",
            b"\"}",
        ]
        .concat(),
        [
            format!("{{{body},\"name\":\"").as_bytes(),
            b"\xed\xa0\x80",
            b"\"}",
        ]
        .concat(),
        // An unpaired surrogate written as an escape.
        format!("{{{body},\"name\":\"\\ud800\"}}").into_bytes(),
    ];
    for bytes in &cases {
        let forged = with_payload_text(&token, bytes);
        assert_invalid_token(&target.refused(&forged, 401).await, "malformed token");
    }
    // A byte-order mark or trailing data after the object.
    let bom = [b"\xef\xbb\xbf".as_slice(), text.as_bytes()].concat();
    assert_invalid_token(
        &target.refused(&with_payload_text(&token, &bom), 401).await,
        "malformed token",
    );
    let trailing = format!("{text}{text}");
    assert_invalid_token(
        &target
            .refused(&with_payload_text(&token, trailing.as_bytes()), 401)
            .await,
        "malformed token",
    );
    let _ = unb64;
}

#[tokio::test]
async fn email_verified_of_the_wrong_type_never_counts_as_verified() {
    let target = Target::start(|b, i| b.issuer(i.allowed_domains(["example.com"]))).await;
    let values: [Value; 8] = [
        json!("true"),
        json!("TRUE"),
        json!(1),
        json!("1"),
        json!(["true"]),
        json!({"value": true}),
        json!(null),
        json!("yes"),
    ];
    for value in values {
        let token = target
            .idp()
            .id_token()
            .subject(format!("typed-{value}"))
            .claim("email", "someone@example.com")
            .claim("email_verified", value.clone())
            .sign();
        // Refused either way: as an unverified address (403), or, where `openidconnect`'s
        // typed claims cannot read the value at all, as a malformed token (401).
        let reply = target.refused_with_one_of(&token, &[401, 403]).await;
        match reply.status {
            403 => assert_denied(&reply, "email_not_verified"),
            _ => assert_invalid_token(&reply, "malformed token"),
        }
    }
    // The spelling some IdPs use is read, and still not trusted by default.
    let token = target
        .idp()
        .id_token()
        .subject("string-true")
        .claim("email", "someone@example.com")
        .claim("email_verified", "true")
        .sign();
    assert_denied(&target.refused(&token, 403).await, "email_not_verified");
}

#[tokio::test]
async fn string_booleans_count_only_for_an_issuer_configured_to_accept_them() {
    let target = Target::start(|b, i| {
        b.issuer(
            i.allowed_domains(["example.com"])
                .accept_string_booleans(true),
        )
    })
    .await;
    let token = |verified: Value| {
        target
            .idp()
            .id_token()
            .subject(format!("s-{verified}"))
            .claim("email", "someone@example.com")
            .claim("email_verified", verified)
            .sign()
    };
    target.sign_in(&token(json!("true"))).await;
    for value in [json!("false"), json!("yes"), json!(1), json!("truex")] {
        let reply = target
            .refused_with_one_of(&token(value.clone()), &[401, 403])
            .await;
        match reply.status {
            403 => assert_denied(&reply, "email_not_verified"),
            _ => assert_invalid_token(&reply, "malformed token"),
        }
    }
}

#[tokio::test]
async fn an_empty_sub_is_refused() {
    let target = Target::default().await;
    let token = target.idp().id_token().subject("").sign();
    assert_invalid_token(&target.refused(&token, 401).await, "invalid subject");
}

#[tokio::test]
async fn a_sub_over_255_bytes_is_refused() {
    let target = Target::default().await;
    let exactly = "s".repeat(255);
    target
        .sign_in(&target.idp().id_token().subject(exactly.as_str()).sign())
        .await;
    for sub in ["s".repeat(256), "é".repeat(128)] {
        let token = target.idp().id_token().subject(sub.as_str()).sign();
        assert_invalid_token(&target.refused(&token, 401).await, "invalid subject");
    }
}

#[tokio::test]
async fn a_sub_with_control_characters_is_refused() {
    let target = Target::default().await;
    for sub in [
        "a\u{0}b",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\u{7f}",
        "a\u{85}b",
        "\u{1b}[31mred",
    ] {
        let token = target.idp().id_token().subject(sub).sign();
        assert_invalid_token(&target.refused(&token, 401).await, "invalid subject");
    }
}

#[tokio::test]
async fn a_sub_that_is_not_a_string_is_refused() {
    let target = Target::default().await;
    for value in [
        json!(12345),
        json!(null),
        json!(["a"]),
        json!({"id": "a"}),
        json!(true),
    ] {
        let token = target.idp().id_token().claim("sub", value.clone()).sign();
        let reply = target.refused(&token, 401).await;
        let challenge = reply.challenge().unwrap();
        assert!(
            challenge.contains("invalid subject") || challenge.contains("malformed token"),
            "{value}: {challenge}"
        );
    }
    let token = target.idp().id_token().without_claim("sub").sign();
    target.refused(&token, 401).await;
}
