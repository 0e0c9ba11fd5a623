//! Signature and keys: what a token can claim about how it was signed, and what it cannot make
//! the layer do.

use aws_lc_rs::hmac;
use serde_json::{Value, json};
use tower_jit_provisioning::testing::{Fault, TestIssuer};
use tower_jit_provisioning::{Algorithm, TokenKind};

use crate::harness::{Bait, Target, assemble, assert_invalid_token, b64, decoded, segments, unb64};

/// A valid token's header and payload under `header`, with `signature`.
fn resigned(token: &str, header: &Value, signature: &[u8]) -> String {
    let [_, payload, _] = segments(token);
    format!("{}.{payload}.{}", b64(header.to_string()), b64(signature))
}

#[tokio::test]
async fn alg_none_in_any_spelling_is_refused() {
    let target = Target::default().await;
    let token = target.idp().id_token().sign();
    let (header, payload) = decoded(&token);
    for alg in ["none", "None", "NONE", "nOnE", "none ", ""] {
        let mut unsigned = header.clone();
        unsigned["alg"] = alg.into();
        // As sent by attackers: an empty signature, and a signature left in place.
        let empty = format!(
            "{}.{}.",
            b64(unsigned.to_string()),
            b64(payload.to_string())
        );
        let kept = resigned(&token, &unsigned, &unb64(&segments(&token)[2]));
        for forged in [empty, kept] {
            let reply = target.refused(&forged, 401).await;
            assert_eq!(reply.status, 401, "{alg:?}");
        }
    }
}

#[tokio::test]
async fn hmac_keyed_with_the_issuers_public_key_is_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    let token = idp.id_token().sign();
    let jwks = idp.jwks();
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()
        .clone();
    // The key material an attacker can read: the JWK as published, its modulus, the whole set.
    let secrets = [
        rsa.to_string().into_bytes(),
        unb64(rsa["n"].as_str().unwrap()),
        jwks.to_string().into_bytes(),
    ];
    for alg in ["HS256", "HS384", "HS512"] {
        for secret in &secrets {
            let (mut header, _) = decoded(&token);
            header["alg"] = alg.into();
            let [h, p, _] = segments(&token);
            let _ = h;
            let forged_header = b64(header.to_string());
            let signing_input = format!("{forged_header}.{p}");
            let algorithm = match alg {
                "HS256" => hmac::HMAC_SHA256,
                "HS384" => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            let tag = hmac::sign(&hmac::Key::new(algorithm, secret), signing_input.as_bytes());
            let forged = format!("{signing_input}.{}", b64(tag.as_ref()));
            let reply = target.refused(&forged, 401).await;
            assert_invalid_token(&reply, "unsupported signing algorithm");
        }
    }
}

#[tokio::test]
async fn algorithms_outside_the_issuers_allow_list_are_refused() {
    let target = Target::start(|b, issuer| b.issuer(issuer.algorithms([Algorithm::ES256]))).await;
    let idp = target.idp();
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
        Algorithm::ES384,
    ] {
        let token = idp.id_token().algorithm(alg).sign();
        let reply = target.refused(&token, 401).await;
        assert_invalid_token(&reply, "unsupported signing algorithm");
    }
    // Algorithms no issuer may use at all.
    for alg in ["RS1", "ES256K", "HS256", "dir", "RSA-OAEP", "A128KW"] {
        let token = idp
            .id_token()
            .algorithm(Algorithm::ES256)
            .header("alg", alg)
            .sign();
        target.refused(&token, 401).await;
    }
    let fine = idp.id_token().algorithm(Algorithm::ES256).sign();
    assert_eq!(target.get(&fine).await.status, 200);
}

#[tokio::test]
async fn kid_injection_strings_find_no_key() {
    let target = Target::default().await;
    let idp = target.idp();
    let kids = [
        "../../../../dev/null",
        "' OR '1'='1",
        "\"; DROP TABLE jit_users; --",
        "%00",
        "\u{0}",
        "http://127.0.0.1:1/keys",
        "*",
        "",
    ];
    for kid in kids {
        let token = idp.id_token().kid(kid).sign();
        let reply = target.refused(&token, 401).await;
        assert_invalid_token(&reply, "unknown signing key");
    }
    // The tables are all still there and empty.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM jit_users")
        .fetch_one(target.store.pool())
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn embedded_jwk_jku_and_x5u_headers_are_never_fetched_or_trusted() {
    let target = Target::default().await;
    let attacker = TestIssuer::start().await;
    let bait = Bait::start().await;
    let own_key = attacker.jwks()["keys"][0].clone();
    let kid = attacker.current_kid(Algorithm::RS256);
    // Signed with the attacker's key, pointing at it every way a JOSE header can.
    let headers: [(&str, Value); 5] = [
        ("jwk", own_key.clone()),
        ("jku", format!("{}/jwks", attacker.url()).into()),
        ("jku", bait.url("/jwks").into()),
        ("x5u", bait.url("/cert.pem").into()),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ];
    for (name, value) in headers {
        let token = attacker
            .id_token()
            .claim("iss", target.idp().url())
            .header(name, value)
            .sign();
        let reply = target.refused(&token, 401).await;
        assert!(
            reply.challenge().unwrap().contains("unknown signing key")
                || reply.challenge().unwrap().contains("invalid signature"),
            "{name}: {:?}",
            reply.challenge()
        );
    }
    // The same with the attacker's kid removed: the issuer's own keys do not verify it.
    let token = attacker
        .id_token()
        .claim("iss", target.idp().url())
        .header("jwk", own_key)
        .without_kid()
        .sign();
    assert_invalid_token(&target.refused(&token, 401).await, "invalid signature");
    assert_eq!(bait.connections(), 0, "a token-supplied URL was fetched");
    assert_eq!(attacker.jwks_fetches(), 0);
    assert_eq!(attacker.discovery_fetches(), 0);
    let _ = kid;
}

#[tokio::test]
async fn all_zero_ecdsa_signatures_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    for (alg, size) in [
        (Algorithm::ES256, 64),
        (Algorithm::ES384, 96),
        (Algorithm::ES512, 132),
    ] {
        let token = idp.id_token().algorithm(alg).sign();
        let [h, p, _] = segments(&token);
        for signature in [vec![0u8; size], vec![0u8; 0], vec![0u8; 8]] {
            let forged = format!("{h}.{p}.{}", b64(&signature));
            target.refused(&forged, 401).await;
        }
        // A DER-encoded (r = 0, s = 0), as CVE-2022-21449 sent it.
        let forged = format!(
            "{h}.{p}.{}",
            b64([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
        );
        target.refused(&forged, 401).await;
    }
}

#[tokio::test]
async fn a_token_for_issuer_a_signed_with_issuer_bs_key_is_refused() {
    let target = Target::with_issuers(2, |b, idps| {
        b.issuer(idps[0].issuer()).issuer(idps[1].issuer())
    })
    .await;
    let (a, b) = (&target.idps[0], &target.idps[1]);
    // B's key, B's kid, A's name.
    let token = b.id_token().claim("iss", a.url()).sign();
    target.refused(&token, 401).await;
    // B's key under the kid of A's key.
    let token = b
        .id_token()
        .claim("iss", a.url())
        .kid(a.current_kid(Algorithm::RS256))
        .sign();
    assert_invalid_token(&target.refused(&token, 401).await, "invalid signature");
    // Both issuers still work for their own tokens.
    target.sign_in(&a.id_token().sign()).await;
    target.sign_in(&b.id_token().sign()).await;
}

#[tokio::test]
async fn crit_headers_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("exp")] {
        let token = idp
            .id_token()
            .header("crit", crit)
            .header("b64", false)
            .sign();
        assert_invalid_token(
            &target.refused(&token, 401).await,
            "unsupported token header",
        );
    }
}

#[tokio::test]
async fn nested_and_encrypted_tokens_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    let inner = idp.id_token().sign();
    // A signed token whose payload is another token (`cty: JWT`).
    let nested = idp.id_token().header("cty", "JWT").sign();
    assert_invalid_token(
        &target.refused(&nested, 401).await,
        "unsupported token header",
    );
    // A JWE compact serialization: five segments.
    let jwe = format!(
        "{}.{}.{}.{}.{}",
        b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","cty":"JWT"}"#),
        b64([1u8; 256]),
        b64([2u8; 12]),
        b64(inner.as_bytes()),
        b64([3u8; 16]),
    );
    assert_invalid_token(&target.refused(&jwe, 401).await, "malformed token");
    // A JWS whose header announces encryption.
    let enc = idp.id_token().header("enc", "A256GCM").sign();
    assert_invalid_token(&target.refused(&enc, 401).await, "unsupported token header");
    // Compressed payloads.
    let zip = idp.id_token().header("zip", "DEF").sign();
    assert_invalid_token(&target.refused(&zip, 401).await, "unsupported token header");
}

#[tokio::test]
async fn claims_edited_after_signing_are_refused() {
    let target = Target::default().await;
    let idp = target.idp();
    let token = idp.id_token().email("me@example.com", false).sign();
    let (_, payload) = decoded(&token);
    let [h, _, s] = segments(&token);
    let edits: [(&str, Value); 5] = [
        ("sub", "admin".into()),
        ("email_verified", true.into()),
        ("exp", (crate::harness::now() + 86_400 * 365).into()),
        ("groups", json!(["admins"])),
        ("name", "Administrator".into()),
    ];
    for (claim, value) in edits {
        let mut edited = payload.clone();
        edited[claim] = value;
        let forged = format!("{h}.{}.{s}", b64(edited.to_string()));
        assert_invalid_token(&target.refused(&forged, 401).await, "invalid signature");
    }
    // The header edited: another kid of the same issuer.
    let other_kid = idp.add_key(Algorithm::RS256);
    let (mut header, _) = decoded(&token);
    header["kid"] = other_kid.into();
    let [_, p, _] = segments(&token);
    let forged = format!("{}.{p}.{s}", b64(header.to_string()));
    target.refused(&forged, 401).await;
}

#[tokio::test]
async fn weak_rsa_keys_are_dropped_when_the_key_set_is_read() {
    // A 1024-bit modulus: below the 2048 bits accepted.
    const WEAK_N: &str = "_Q3XxiEqtKRMOb7LsnnYIBsd2ETG6TRwqLoCSNGW9N8vcxvwtZQ9BAObGupwwM19Sg4WxlepgsiFwLkuap2iJO85TXE_Mv91yBGswM9l4P2pDO40XiR120qv002sPgwUuIbzod8h_-lVCbbv1kY6eNr0X6uhwhybzGPNiV4MKw0";
    let weak = json!({"kty": "RSA", "kid": "weak", "use": "sig", "alg": "RS256", "n": WEAK_N, "e": "AQAB"});
    // Published alone, the set has no usable key: nothing is accepted, fail closed.
    let idp = TestIssuer::start().await;
    idp.set_fault(Some(Fault::KeySet(json!({"keys": [weak.clone()]}))));
    let layer = tower_jit_provisioning::ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .build()
        .unwrap();
    assert!(
        layer.fetch_keys().await.is_err(),
        "a weak-only key set counts as no keys"
    );
    // Published beside good keys, only the good keys are used.
    let target = Target::default().await;
    let mut keys = target.idp().jwks();
    keys["keys"].as_array_mut().unwrap().push(weak);
    target.idp().set_fault(Some(Fault::KeySet(keys)));
    let token = target.idp().id_token().kid("weak").sign();
    target.refused(&token, 401).await;
    target.sign_in(&target.idp().id_token().sign()).await;
}

#[tokio::test]
async fn symmetric_keys_in_the_key_set_are_never_used() {
    let target = Target::default().await;
    let secret = b"a shared secret an attacker knows";
    let mut keys = target.idp().jwks();
    keys["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hmac", "k": b64(secret), "alg": "HS256"}));
    target.idp().set_fault(Some(Fault::KeySet(keys)));
    let token = target.idp().id_token().sign();
    let [_, p, _] = segments(&token);
    let header = b64(r#"{"alg":"HS256","typ":"JWT","kid":"hmac"}"#);
    let input = format!("{header}.{p}");
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    let forged = format!("{input}.{}", b64(tag.as_ref()));
    target.refused(&forged, 401).await;
}

#[tokio::test]
async fn an_access_token_signature_cannot_be_reused_as_an_id_token() {
    // The same claims under another `typ` are another signing input: the signature fails.
    let target = Target::start(|b, i| b.issuer(i.token_kinds([TokenKind::Id]))).await;
    let access = target.idp().access_token().sign();
    let (mut header, payload) = decoded(&access);
    header["typ"] = "JWT".into();
    let forged = assemble(
        &header.to_string(),
        &payload.to_string(),
        &unb64(&segments(&access)[2]),
    );
    target.refused(&forged, 401).await;
}
