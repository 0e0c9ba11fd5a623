//! Accounts: identity is (issuer, subject) and nothing else; e-mail links only under every
//! condition at once; roles come from the mapping and trusted issuers; deactivated and deleted
//! people stay out.

use tower_jit_provisioning::{
    Actor, AttributeMapping, AuditEvent, AuditKind, NewUser, UserStatus, UserStore,
};

use crate::harness::{Target, assert_denied};

fn by_application() -> AuditEvent {
    AuditEvent::new(AuditKind::Provisioned, Actor::Application)
}

#[tokio::test]
async fn noauth_a_second_issuer_with_someone_elses_unverified_email_gets_a_new_account() {
    // Linking by e-mail is on, and both issuers are trusted for the domain: the attacker's
    // issuer simply does not verify addresses.
    let target = Target::with_issuers(2, |b, idps| {
        b.issuer(idps[0].issuer().trust_email_domains(["corp.example"]))
            .issuer(idps[1].issuer().trust_email_domains(["corp.example"]))
            .link_by_verified_email(true)
    })
    .await;
    let (home, attacker) = (&target.idps[0], &target.idps[1]);
    let victim = target
        .sign_in(
            &home
                .id_token()
                .subject("alice")
                .email("alice@corp.example", true)
                .sign(),
        )
        .await;
    let mallory = target
        .sign_in(
            &attacker
                .id_token()
                .subject("mallory-new-subject")
                .email("alice@corp.example", false)
                .claim("preferred_username", "alice@corp.example")
                .sign(),
        )
        .await;
    assert_ne!(
        victim, mallory,
        "the attacker landed on the victim's account"
    );
    let identities = target
        .store
        .identities(victim.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        identities.len(),
        1,
        "no identity was added to the victim's account"
    );
}

#[tokio::test]
async fn email_from_an_issuer_not_trusted_for_the_domain_never_links() {
    let target = Target::with_issuers(2, |b, idps| {
        b.issuer(idps[0].issuer().trust_email_domains(["corp.example"]))
            .issuer(idps[1].issuer().trust_email_domains(["other.example"]))
            .link_by_verified_email(true)
    })
    .await;
    let victim = target
        .sign_in(
            &target.idps[0]
                .id_token()
                .subject("alice")
                .email("alice@corp.example", true)
                .sign(),
        )
        .await;
    // Verified, but by an issuer that does not own corp.example.
    let other = target
        .sign_in(
            &target.idps[1]
                .id_token()
                .subject("someone")
                .email("alice@corp.example", true)
                .sign(),
        )
        .await;
    assert_ne!(victim, other);
}

#[tokio::test]
async fn email_linking_with_two_candidates_links_nobody() {
    let target = Target::start(|b, i| {
        b.issuer(i.trust_email_domains(["corp.example"]))
            .link_by_verified_email(true)
    })
    .await;
    let mut existing = Vec::new();
    for _ in 0..2 {
        let user = target
            .store
            .insert_user(
                NewUser {
                    email: Some("shared@corp.example".into()),
                    email_verified: true,
                    ..NewUser::default()
                },
                by_application(),
            )
            .await
            .unwrap();
        existing.push(user.id.to_string());
    }
    let id = target
        .sign_in(
            &target
                .idp()
                .id_token()
                .subject("claimant")
                .email("shared@corp.example", true)
                .sign(),
        )
        .await;
    assert!(
        !existing.contains(&id),
        "an ambiguous address linked an account"
    );
}

#[tokio::test]
async fn an_unverified_email_never_reserves_an_address() {
    let target = Target::with_issuers(2, |b, idps| {
        b.issuer(idps[0].issuer()).issuer(idps[1].issuer())
    })
    .await;
    // The squatter signs in first with the address, unverified.
    let squatter = target.idps[1]
        .id_token()
        .subject("squatter")
        .email("ceo@corp.example", false)
        .sign();
    let reply = target.get(&squatter).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["user_name"].is_null(), "{}", reply.body);
    assert_eq!(reply.json()["email_verified"], false);
    // The owner still gets the address as their login name.
    let owner = target.idps[0]
        .id_token()
        .subject("ceo")
        .email("ceo@corp.example", true)
        .sign();
    let reply = target.get(&owner).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["user_name"], "ceo@corp.example");
    let found = target
        .store
        .find_by_user_name("ceo@corp.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.to_string(), reply.json()["id"].as_str().unwrap());
}

#[tokio::test]
async fn an_email_change_at_the_idp_never_moves_a_person_into_another_account() {
    let target = Target::start(|b, i| {
        b.issuer(i.trust_email_domains(["corp.example"]))
            .link_by_verified_email(true)
    })
    .await;
    let idp = target.idp();
    let alice = target
        .sign_in(
            &idp.id_token()
                .subject("a1")
                .email("alice@corp.example", true)
                .sign(),
        )
        .await;
    let bob = target
        .sign_in(
            &idp.id_token()
                .subject("b1")
                .email("bob@corp.example", true)
                .sign(),
        )
        .await;
    // Bob's address is changed to Alice's at the IdP (by an admin, or a self-service flaw).
    let moved = target
        .sign_in(
            &idp.id_token()
                .subject("b1")
                .email("alice@corp.example", true)
                .sign(),
        )
        .await;
    assert_eq!(moved, bob, "identity is the subject, not the address");
    assert_ne!(moved, alice);
    let alice_identities = target
        .store
        .identities(alice.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(alice_identities.len(), 1);
}

#[tokio::test]
async fn preferred_username_is_never_used_to_find_an_account() {
    let target = Target::start(|b, i| {
        b.issuer(i.trust_any_email_domain())
            .link_by_verified_email(true)
    })
    .await;
    let admin = target
        .store
        .insert_user(
            NewUser {
                user_name: Some("admin".into()),
                ..NewUser::default()
            },
            by_application(),
        )
        .await
        .unwrap();
    let id = target
        .sign_in(
            &target
                .idp()
                .id_token()
                .subject("newcomer")
                .claim("preferred_username", "admin")
                .claim("upn", "admin")
                .sign(),
        )
        .await;
    assert_ne!(id, admin.id.to_string());
}

#[tokio::test]
async fn role_claims_in_a_token_never_become_roles_without_a_mapping_rule() {
    let target = Target::start(|b, i| {
        b.issuer(i)
            .mapping(AttributeMapping::new().default_roles(["member"]))
    })
    .await;
    let token = target
        .idp()
        .id_token()
        .claim("roles", serde_json::json!(["admin", "owner"]))
        .claim("role", "admin")
        .groups(["admin", "Administrators"])
        .claim("realm_access", serde_json::json!({"roles": ["admin"]}))
        .sign();
    let reply = target.get(&token).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["roles"],
        serde_json::json!(["member"]),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn an_issuer_not_trusted_for_roles_earns_no_roles_through_the_mapping() {
    let mapping = AttributeMapping::new()
        .default_roles(["member"])
        .group_role("admins", "admin")
        .claim_role("realm_access.roles", "admin", "admin");
    let target = Target::with_issuers(2, |b, idps| {
        b.issuer(idps[0].issuer())
            .issuer(idps[1].issuer().trust_roles(false))
            .mapping(mapping)
    })
    .await;
    let claims = |idp: &tower_jit_provisioning::testing::TestIssuer, sub: &str| {
        idp.id_token()
            .subject(sub)
            .groups(["admins"])
            .claim("realm_access", serde_json::json!({"roles": ["admin"]}))
            .sign()
    };
    let trusted = target.get(&claims(&target.idps[0], "insider")).await;
    assert_eq!(
        trusted.json()["roles"],
        serde_json::json!(["admin", "member"])
    );
    let untrusted = target.get(&claims(&target.idps[1], "outsider")).await;
    assert_eq!(untrusted.status, 200);
    assert_eq!(untrusted.json()["roles"], serde_json::json!(["member"]));
    // The groups are still recorded as asserted.
    assert_eq!(untrusted.json()["groups"], serde_json::json!(["admins"]));
}

#[tokio::test]
async fn a_tenant_not_trusted_for_roles_earns_no_roles_through_the_mapping() {
    const HOME: &str = "home-tenant";
    let target = Target::start(|b, i| {
        b.issuer(i.trust_roles_when("tid", HOME)).mapping(
            AttributeMapping::new()
                .default_roles(["member"])
                .group_role("admins", "admin"),
        )
    })
    .await;
    let idp = target.idp();
    let home = idp
        .id_token()
        .subject("home-admin")
        .claim("tid", HOME)
        .groups(["admins"])
        .sign();
    assert_eq!(
        target.get(&home).await.json()["roles"],
        serde_json::json!(["admin", "member"])
    );
    for tid in [serde_json::json!("guest-tenant"), serde_json::json!(null)] {
        let guest = idp
            .id_token()
            .subject(format!("guest-{tid}"))
            .claim("tid", tid)
            .groups(["admins"])
            .sign();
        assert_eq!(
            target.get(&guest).await.json()["roles"],
            serde_json::json!(["member"])
        );
    }
    // A later login from a guest tenant neither grants nor revokes.
    let moved = idp
        .id_token()
        .subject("home-admin")
        .claim("tid", "guest-tenant")
        .groups([] as [&str; 0])
        .sign();
    assert_eq!(
        target.get(&moved).await.json()["roles"],
        serde_json::json!(["admin", "member"])
    );
}

#[tokio::test]
async fn a_deactivated_user_never_comes_back_through_jit() {
    let target = Target::default().await;
    let idp = target.idp();
    let id = target
        .sign_in(&idp.id_token().subject("leaver").sign())
        .await;
    target.store.deactivate(id.parse().unwrap()).await.unwrap();
    for token in [
        idp.id_token().subject("leaver").sign(),
        idp.id_token()
            .subject("leaver")
            .email("leaver@example.com", true)
            .sign(),
        idp.access_token().subject("leaver").sign(),
    ] {
        let reply = target.refused(&token, 403).await;
        assert_denied(&reply, "deactivated");
    }
    let user = target
        .store
        .get_user(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.status, UserStatus::Deactivated);
}

#[tokio::test]
async fn a_deleted_user_never_comes_back_through_jit() {
    let target = Target::default().await;
    let idp = target.idp();
    let id = target.sign_in(&idp.id_token().subject("gone").sign()).await;
    target
        .store
        .delete_user(
            id.parse().unwrap(),
            AuditEvent::new(AuditKind::Deleted, Actor::Application),
        )
        .await
        .unwrap();
    let token = idp.id_token().subject("gone").sign();
    let reply = target.refused(&token, 403).await;
    assert_denied(&reply, "deleted");
    let users = target.store.list_users(None, 10).await.unwrap();
    assert!(users.is_empty());
}
