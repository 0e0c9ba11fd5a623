//! Domain rules: strict address parsing, whole-label matching, one normal form for checking
//! and storing, and tenant checks.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::harness::{Target, assert_denied};

async fn allowing(domains: &[&str]) -> Target {
    let domains: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
    Target::start(move |b, i| b.issuer(i.allowed_domains(domains))).await
}

/// A new subject for every token, whatever its address.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn token(target: &Target, email: &str) -> String {
    target
        .idp()
        .id_token()
        .subject(format!("person-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
        .email(email, true)
        .sign()
}

#[tokio::test]
async fn addresses_that_do_not_parse_strictly_are_refused() {
    let target = allowing(&["example.com"]).await;
    let addresses = [
        "a@b@example.com",
        "\"a@evil.com\"@example.com",
        "\"quoted\"@example.com",
        "a(comment)@example.com",
        "a@example.com(comment)",
        "a@(comment)example.com",
        "<a@example.com>",
        "Name <a@example.com>",
        "a@example.com, b@evil.com",
        "a@evil.com\n@example.com",
        "@example.com",
        "a@",
        "a",
        " a@example.com",
        "a@example.com ",
        "a@[127.0.0.1]",
        "a@example..com",
        "a@.example.com",
        "a@-example.com",
        "a\u{0}@example.com",
        "a@example.com\u{0}",
    ];
    for address in addresses {
        let reply = target.refused(&token(&target, address), 403).await;
        assert_denied(&reply, "domain_not_allowed");
    }
}

#[tokio::test]
async fn domains_match_whole_labels_only() {
    let target = allowing(&["example.com"]).await;
    for address in [
        "a@example.com.evil.com",
        "a@evil-example.com",
        "a@evilexample.com",
        "a@sub.example.com",
        "a@example.co",
        "a@example.comm",
        "a@com",
    ] {
        let reply = target.refused(&token(&target, address), 403).await;
        assert_denied(&reply, "domain_not_allowed");
    }
}

#[tokio::test]
async fn sub_domains_only_when_listed_with_a_wildcard() {
    let target = allowing(&["*.example.com"]).await;
    target.sign_in(&token(&target, "a@eu.example.com")).await;
    target.sign_in(&token(&target, "b@x.eu.example.com")).await;
    for address in [
        "c@example.com",
        "d@eu.example.com.evil.org",
        "e@evil-example.com",
    ] {
        let reply = target.refused(&token(&target, address), 403).await;
        assert_denied(&reply, "domain_not_allowed");
    }
}

#[tokio::test]
async fn case_and_trailing_dot_are_normalized_the_same_for_checking_and_storing() {
    let target = allowing(&["Example.COM."]).await;
    for (i, address) in ["Ann@EXAMPLE.com", "ann2@example.com.", "ann3@ExAmPlE.CoM."]
        .into_iter()
        .enumerate()
    {
        let reply = target.get(&token(&target, address)).await;
        assert_eq!(reply.status, 200, "{address}: {}", reply.body);
        let stored = reply.json()["email"].as_str().unwrap().to_owned();
        let domain = stored.rsplit_once('@').unwrap().1;
        assert_eq!(domain, "example.com", "{i}: stored {stored}");
    }
    // Two trailing dots are not a trailing dot.
    let reply = target
        .refused(&token(&target, "a@example.com.."), 403)
        .await;
    assert_denied(&reply, "domain_not_allowed");
}

#[tokio::test]
async fn look_alike_and_full_width_unicode_domains_are_refused() {
    let target = allowing(&["example.com"]).await;
    for address in [
        "a@exаmple.com",         // Cyrillic а
        "a@ехample.com",         // Cyrillic е and х
        "a@ｅｘａｍｐｌｅ.com",  // full-width
        "a@example．com",        // full-width full stop
        "a@example。com",        // ideographic full stop
        "a@example.com\u{200b}", // zero-width space
        "a@xn--exmple-cua.com",  // the punycode of a look-alike is another domain
        "a@EXAMPLE.ℂOM",         // compatibility character
    ] {
        let reply = target.refused(&token(&target, address), 403).await;
        assert_denied(&reply, "domain_not_allowed");
    }
}

#[tokio::test]
async fn google_hd_is_checked_per_issuer() {
    let target = Target::start(|b, i| b.issuer(i.require_claim("hd", "example.com"))).await;
    let idp = target.idp();
    let cases = [
        idp.id_token().subject("no-hd").sign(),
        idp.id_token()
            .subject("other-hd")
            .claim("hd", "evil.com")
            .sign(),
        idp.id_token()
            .subject("case-hd")
            .claim("hd", "EXAMPLE.COM")
            .sign(),
        idp.id_token()
            .subject("array-hd")
            .claim("hd", json!(["example.com"]))
            .sign(),
    ];
    for token in &cases {
        assert_denied(&target.refused(token, 403).await, "claim_mismatch");
    }
    let ok = idp
        .id_token()
        .subject("ok")
        .claim("hd", "example.com")
        .sign();
    target.sign_in(&ok).await;
}

#[tokio::test]
async fn entra_tid_and_xms_edov_are_checked_per_issuer() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let target = Target::start(|b, i| {
        b.issuer(
            i.require_claim("tid", TENANT)
                .require_claim("xms_edov", true),
        )
    })
    .await;
    let idp = target.idp();
    let cases = [
        idp.id_token()
            .subject("other-tenant")
            .claim("tid", "9188040d-6c67-4c5b-b112-36a304b66dad")
            .claim("xms_edov", true)
            .sign(),
        idp.id_token()
            .subject("no-tid")
            .claim("xms_edov", true)
            .sign(),
        idp.id_token()
            .subject("unverified-domain")
            .claim("tid", TENANT)
            .claim("xms_edov", false)
            .sign(),
        idp.id_token()
            .subject("string-edov")
            .claim("tid", TENANT)
            .claim("xms_edov", "true")
            .sign(),
        idp.id_token()
            .subject("no-edov")
            .claim("tid", TENANT)
            .sign(),
    ];
    for token in &cases {
        assert_denied(&target.refused(token, 403).await, "claim_mismatch");
    }
    let ok = idp
        .id_token()
        .subject("ok")
        .claim("tid", TENANT)
        .claim("xms_edov", true)
        .sign();
    target.sign_in(&ok).await;
}
