//! The SCIM endpoint beside the layer: its secret, and the accounts it manages.

use serde_json::json;

use crate::harness::{SCIM_SECRET, Target, assert_denied};

const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[tokio::test]
async fn wrong_scim_secrets_are_401_and_no_secret_is_ever_echoed_or_logged() {
    let target = Target::with_scim(|b, i| b.issuer(i)).await;
    let body = json!({"schemas": [CORE_USER], "userName": "intruder@example.com"});
    let near_misses = [
        String::new(),
        SCIM_SECRET[..SCIM_SECRET.len() - 1].to_owned(),
        format!("{SCIM_SECRET}x"),
        SCIM_SECRET.to_uppercase(),
        format!("{SCIM_SECRET} {SCIM_SECRET}"),
        "idp".to_owned(),
    ];
    for secret in &near_misses {
        let reply = target
            .scim(secret, "POST", "/Users", Some(body.clone()))
            .await;
        assert_eq!(reply.status, 401, "{secret:?}: {}", reply.body);
        assert_eq!(
            reply.json()["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert!(!reply.body.contains(SCIM_SECRET));
    }
    // Another scheme carrying the right secret is not the bearer scheme.
    let basic = target
        .client
        .get(target.server.url("/scim/v2/Users"))
        .header("authorization", format!("Basic {SCIM_SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(target.written().await.users, 0, "nothing was created");
    // The right one works, and no secret, right or wrong, reached the logs.
    let ok = target.scim(SCIM_SECRET, "POST", "/Users", Some(body)).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let logs = target.logs.text();
    assert!(!logs.contains(SCIM_SECRET));
    assert!(!logs.contains(&SCIM_SECRET[..SCIM_SECRET.len() - 1]));
}

#[tokio::test]
async fn a_user_deactivated_by_scim_is_refused_at_once_and_never_reactivated_by_a_login() {
    let target = Target::with_scim(|b, i| b.issuer(i)).await;
    let idp = target.idp();
    let cached = idp.id_token().subject("leaver").sign();
    let id = target.sign_in(&cached).await;
    let patch = json!({
        "schemas": [PATCH_OP],
        "Operations": [{"op": "Replace", "value": {"active": "False"}}]
    });
    let reply = target
        .scim(SCIM_SECRET, "PATCH", &format!("/Users/{id}"), Some(patch))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The cached token, on the very next request.
    assert_denied(&target.refused(&cached, 403).await, "deactivated");
    // A new token, with claims that would otherwise sync.
    let fresh = idp
        .id_token()
        .subject("leaver")
        .email("leaver@example.com", true)
        .sign();
    assert_denied(&target.refused(&fresh, 403).await, "deactivated");
    let user = target
        .scim(SCIM_SECRET, "GET", &format!("/Users/{id}"), None)
        .await;
    assert_eq!(user.json()["active"], false);
}

#[tokio::test]
async fn an_account_provisioned_by_scim_is_never_claimed_with_an_unverified_email() {
    let target = Target::with_scim(|b, i| {
        b.issuer(i.trust_email_domains(["example.com"]))
            .link_by_verified_email(true)
    })
    .await;
    let created = target
        .scim(
            SCIM_SECRET,
            "POST",
            "/Users",
            Some(json!({
                "schemas": [CORE_USER],
                "userName": "cfo@example.com",
                "emails": [{"value": "cfo@example.com", "type": "work", "primary": true}],
                "active": true
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let account = created.json()["id"].as_str().unwrap().to_owned();
    let idp = target.idp();
    let squatter = target
        .sign_in(
            &idp.id_token()
                .subject("squatter")
                .email("cfo@example.com", false)
                .sign(),
        )
        .await;
    assert_ne!(
        squatter, account,
        "an unverified address claimed a SCIM account"
    );
    // The person the IdP vouches for is linked to it.
    let owner = target
        .sign_in(
            &idp.id_token()
                .subject("cfo")
                .email("cfo@example.com", true)
                .sign(),
        )
        .await;
    assert_eq!(owner, account);
}
