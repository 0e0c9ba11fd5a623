//! Provisioning over real HTTP on a real SQLite file: first sign-ins create accounts, later ones
//! find them, admission refuses before anything is written, linking, account states, sync,
//! audit, and what happens when the store fails.

mod common;
#[path = "provision/explain.rs"]
mod explain;
#[path = "provision/migration.rs"]
mod migration;

use std::sync::Arc;
use std::time::Duration;

use common::{LogCapture, Reply, Server, get_with, sqlite_store, user_app};
use serde_json::json;
use tower_jit_provisioning::testing::CountingStore;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    Actor, AttributeMapping, AuditKind, DenyReason, Field, Issuer, NewUser, ProvisioningLayer,
    ProvisioningLayerBuilder, RoleSource, SignIn, SqliteStore, SyncPolicy, UserStatus, UserStore,
};

struct Harness {
    idp: TestIssuer,
    store: SqliteStore,
    layer: ProvisioningLayer,
    _dir: tempfile::TempDir,
    server: Server,
    client: reqwest::Client,
}

impl Harness {
    /// An app on a fresh SQLite file behind a layer trusting one test issuer.
    async fn start(
        configure: impl FnOnce(ProvisioningLayerBuilder, Issuer) -> ProvisioningLayerBuilder,
    ) -> Self {
        let idp = TestIssuer::start().await;
        let (store, dir) = sqlite_store().await;
        let builder = ProvisioningLayer::builder().store(store.clone());
        let layer = configure(builder, idp.issuer()).build().unwrap();
        let server = Server::start(user_app(layer.clone())).await;
        Self {
            idp,
            store,
            layer,
            _dir: dir,
            server,
            client: reqwest::Client::new(),
        }
    }

    async fn me(&self, token: &str) -> Reply {
        get_with(&self.client, &self.server.url("/me"), Some(token)).await
    }

    async fn count(&self, table: &str) -> i64 {
        count(&self.store, table).await
    }

    async fn audit_kinds(&self) -> Vec<AuditKind> {
        self.store
            .audit_events(None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

async fn count(store: &SqliteStore, table: &str) -> i64 {
    let query = match table {
        "users" => "SELECT count(*) FROM jit_users",
        "identities" => "SELECT count(*) FROM jit_identities",
        _ => panic!("unknown table {table}"),
    };
    sqlx::query_scalar(query)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn simple(builder: ProvisioningLayerBuilder, issuer: Issuer) -> ProvisioningLayerBuilder {
    builder.issuer(issuer)
}

#[tokio::test(flavor = "current_thread")]
async fn first_login_creates_one_user_one_identity_and_an_audit_record() {
    let logs = LogCapture::install();
    let h = Harness::start(|b, i| {
        b.issuer(i)
            .mapping(AttributeMapping::new().default_roles(["member"]))
    })
    .await;
    let token = h
        .idp
        .id_token()
        .subject("alice-sub")
        .email("Alice@Example.COM", true)
        .claim("name", "Alice Liddell")
        .claim("given_name", "Alice")
        .claim("family_name", "Liddell")
        .groups(["staff"])
        .sign();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let user = reply.json();
    assert_eq!(user["subject"], "alice-sub");
    assert_eq!(user["issuer"], h.idp.url());
    // The domain is normalised, the local part kept.
    assert_eq!(user["email"], "Alice@example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["user_name"], "Alice@example.com");
    assert_eq!(user["display_name"], "Alice Liddell");
    assert_eq!(user["given_name"], "Alice");
    assert_eq!(user["family_name"], "Liddell");
    assert_eq!(user["roles"], json!(["member"]));
    assert_eq!(user["groups"], json!(["staff"]));
    assert_eq!(user["status"], "active");

    assert_eq!(h.count("users").await, 1);
    assert_eq!(h.count("identities").await, 1);
    let events = h.store.audit_events(None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, AuditKind::Provisioned);
    assert_eq!(events[0].subject.as_deref(), Some("alice-sub"));
    assert_eq!(events[0].issuer.as_deref(), Some(h.idp.url()));
    assert_eq!(events[0].user_id.unwrap().to_string(), user["id"]);

    // The same event went through tracing, structured, on the audit target.
    let logged = logs.text();
    assert!(logged.contains("tower_jit_provisioning::audit"), "{logged}");
    assert!(logged.contains("kind=\"provisioned\""), "{logged}");
    assert!(logged.contains("subject=\"alice-sub\""), "{logged}");
    assert!(!logged.contains(&token));

    // The user record is readable through the store with everything the login recorded.
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    let stored = h.store.get_user(id).await.unwrap().unwrap();
    assert!(stored.last_login_at.is_some());
    assert_eq!(
        stored.roles[0].source,
        RoleSource::Default,
        "default roles record their source"
    );
}

#[tokio::test]
async fn later_requests_reuse_the_account_without_touching_the_store() {
    let idp = TestIssuer::start().await;
    let (sqlite, _dir) = sqlite_store().await;
    let store = CountingStore::new(sqlite.clone());
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(store.clone())
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().subject("bob").sign();

    let first = get_with(&client, &server.url("/me"), Some(&token)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!((store.lookups(), store.creates()), (1, 1));
    for _ in 0..5 {
        let again = get_with(&client, &server.url("/me"), Some(&token)).await;
        assert_eq!(again.json()["id"], first.json()["id"]);
    }
    // A new token for the same person: verified again, but the account is cached.
    let second_token = idp.id_token().subject("bob").sign();
    let again = get_with(&client, &server.url("/me"), Some(&second_token)).await;
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!((store.lookups(), store.creates()), (1, 1));
    assert_eq!(count(&sqlite, "users").await, 1);
    assert_eq!(count(&sqlite, "identities").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_first_requests_create_one_user_with_one_lookup() {
    let idp = TestIssuer::start().await;
    let (sqlite, _dir) = sqlite_store().await;
    let store = CountingStore::new(sqlite.clone());
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(store.clone())
        .build()
        .unwrap();
    // Keys first, so the requests race on the account, not on the key set.
    layer.fetch_keys().await.unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let url = Arc::new(server.url("/me"));
    let gate = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        // Each request carries its own token for the same new subject.
        let token = idp.id_token().subject("carol").sign();
        let (client, url, gate) = (client.clone(), Arc::clone(&url), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            get_with(&client, &url, Some(&token)).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids.insert(reply.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every request saw the same account");
    assert_eq!(store.lookups(), 1, "one store lookup for 200 requests");
    assert_eq!(store.creates(), 1);
    assert_eq!(count(&sqlite, "users").await, 1);
    assert_eq!(count(&sqlite, "identities").await, 1);
}

#[tokio::test]
async fn the_same_subject_at_two_issuers_is_two_users() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    let (store, _dir) = sqlite_store().await;
    let layer = ProvisioningLayer::builder()
        .issuer(a.issuer())
        .issuer(b.issuer())
        .store(store.clone())
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();
    // Same `sub`, same verified e-mail: still two people, because identity is (iss, sub).
    let from_a = a
        .id_token()
        .subject("42")
        .email("same@example.com", true)
        .sign();
    let from_b = b
        .id_token()
        .subject("42")
        .email("same@example.com", true)
        .sign();
    let user_a = get_with(&client, &server.url("/me"), Some(&from_a))
        .await
        .json();
    let user_b = get_with(&client, &server.url("/me"), Some(&from_b))
        .await
        .json();
    assert_ne!(user_a["id"], user_b["id"]);
    assert_eq!(count(&store, "users").await, 2);
    assert_eq!(count(&store, "identities").await, 2);
}

/// A refusal: 403, a problem document with the code, a `denied` audit event, nothing written.
async fn assert_denied(h: &Harness, token: &str, code: &str) {
    let users_before = h.count("users").await;
    let identities_before = h.count("identities").await;
    let reply = h.me(token).await;
    assert_eq!(reply.status, 403, "{code}: {}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let problem = reply.json();
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["code"], code);
    assert!(!reply.body.contains(token));
    assert_eq!(
        h.count("users").await,
        users_before,
        "{code}: no user written"
    );
    assert_eq!(
        h.count("identities").await,
        identities_before,
        "{code}: no identity written"
    );
    let events = h.store.audit_events(None).await.unwrap();
    let last = events.last().expect("a denied event");
    assert_eq!(last.kind, AuditKind::Denied);
    assert_eq!(last.reason.as_deref(), Some(code));
}

#[tokio::test]
async fn domain_allow_list_needs_a_verified_address_in_a_listed_domain() {
    let h =
        Harness::start(|b, i| b.issuer(i.allowed_domains(["example.com", "*.corp.example.org"])))
            .await;
    let token = |email: &str, verified: bool| {
        h.idp
            .id_token()
            .subject(email)
            .email(email, verified)
            .sign()
    };

    assert_eq!(h.me(&token("ann@example.com", true)).await.status, 200);
    assert_eq!(h.me(&token("ann@EXAMPLE.com.", true)).await.status, 200);
    assert_eq!(
        h.me(&token("bo@eu.corp.example.org", true)).await.status,
        200
    );
    assert_denied(
        &h,
        &token("cy@corp.example.org", true),
        "domain_not_allowed",
    )
    .await;
    assert_denied(&h, &token("di@notexample.com", true), "domain_not_allowed").await;
    assert_denied(
        &h,
        &token("ed@example.com.evil.io", true),
        "domain_not_allowed",
    )
    .await;
    assert_denied(&h, &token("fi@sub.example.com", true), "domain_not_allowed").await;
    assert_denied(&h, &token("gus@example.com", false), "email_not_verified").await;
    let no_email = h.idp.id_token().subject("no-email").sign();
    assert_denied(&h, &no_email, "email_not_verified").await;
    let quoted = h
        .idp
        .id_token()
        .subject("quoted")
        .email("\"x@evil.io\"@example.com", true)
        .sign();
    assert_denied(&h, &quoted, "domain_not_allowed").await;
}

#[tokio::test]
async fn tenant_pin_required_groups_and_predicate_refuse_before_writing() {
    let h = Harness::start(|b, i| {
        b.issuer(
            i.require_claim("tid", "tenant-a")
                .required_groups(["staff"]),
        )
        .admit(|sign_in: SignIn| async move {
            if sign_in.claim("banned") == Some(&serde_json::Value::Bool(true)) {
                Err(DenyReason::Policy("banned"))
            } else {
                Ok(())
            }
        })
    })
    .await;
    let ok = h
        .idp
        .id_token()
        .subject("ok")
        .claim("tid", "tenant-a")
        .groups(["staff", "x"])
        .sign();
    assert_eq!(h.me(&ok).await.status, 200);

    let other_tenant = h
        .idp
        .id_token()
        .subject("t")
        .claim("tid", "tenant-b")
        .groups(["staff"])
        .sign();
    assert_denied(&h, &other_tenant, "claim_mismatch").await;
    let no_tenant = h.idp.id_token().subject("t2").groups(["staff"]).sign();
    assert_denied(&h, &no_tenant, "claim_mismatch").await;
    let no_group = h
        .idp
        .id_token()
        .subject("g")
        .claim("tid", "tenant-a")
        .groups(["contractors"])
        .sign();
    assert_denied(&h, &no_group, "missing_group").await;
    let banned = h
        .idp
        .id_token()
        .subject("b")
        .claim("tid", "tenant-a")
        .groups(["staff"])
        .claim("banned", true)
        .sign();
    assert_denied(&h, &banned, "banned").await;
}

#[tokio::test]
async fn strict_role_mapping_refuses_logins_no_rule_matches() {
    let h = Harness::start(|b, i| {
        b.issuer(i).mapping(
            AttributeMapping::new()
                .group_role("engineers", "developer")
                .default_roles(["member"])
                .strict_roles(true),
        )
    })
    .await;
    let engineer = h.idp.id_token().subject("e").groups(["engineers"]).sign();
    let reply = h.me(&engineer).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["roles"], json!(["developer", "member"]));
    // Default roles do not count as a match.
    let outsider = h.idp.id_token().subject("o").groups(["sales"]).sign();
    assert_denied(&h, &outsider, "no_matching_role").await;
}

#[tokio::test]
async fn claims_map_into_fields_groups_attributes_and_roles() {
    let h = Harness::start(|b, i| {
        b.issuer(i).mapping(
            AttributeMapping::new()
                .field(Field::DisplayName, "custom.display")
                .groups_from("realm_access.roles")
                .attribute("department", "employee.department")
                .claim_role("resource_access.orders.roles", "editor", "orders-editor")
                .group_role("realm-admin", "admin")
                .hook(|claims, profile| {
                    if claims.claim("acr").and_then(|v| v.as_str()) == Some("mfa") {
                        profile.attributes.insert("mfa".into(), true.into());
                    }
                }),
        )
    })
    .await;
    let token = h
        .idp
        .id_token()
        .subject("keycloak-user")
        .claim("custom", json!({"display": "K. User"}))
        .claim(
            "realm_access",
            json!({"roles": ["realm-admin", "offline_access"]}),
        )
        .claim(
            "resource_access",
            json!({"orders": {"roles": ["editor", "viewer"]}}),
        )
        .claim("employee", json!({"department": "R&D"}))
        .claim("acr", "mfa")
        .sign();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let user = reply.json();
    assert_eq!(user["display_name"], "K. User");
    assert_eq!(user["groups"], json!(["offline_access", "realm-admin"]));
    assert_eq!(
        user["attributes"],
        json!({"department": "R&D", "mfa": true})
    );
    assert_eq!(user["roles"], json!(["admin", "orders-editor"]));
}

#[tokio::test]
async fn later_logins_sync_what_changed_and_audit_the_fields() {
    let idp = TestIssuer::start().await;
    let (store, _dir) = sqlite_store().await;
    let mapping = || {
        AttributeMapping::new()
            .group_role("admins", "admin")
            .group_role("ops", "operator")
            .default_roles(["member"])
            .sync(Field::GivenName, SyncPolicy::Never)
            .sync(Field::Picture, SyncPolicy::IfEmpty)
    };
    let build = |mapping: AttributeMapping| {
        ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .store(store.clone())
            .mapping(mapping)
            .build()
            .unwrap()
    };
    let server = Server::start(user_app(build(mapping()))).await;
    let client = reqwest::Client::new();
    let first = idp
        .id_token()
        .subject("dana")
        .claim("name", "Dana")
        .claim("given_name", "Dana")
        .claim("picture", "https://pics/1")
        .groups(["admins", "ops"])
        .sign();
    let user = get_with(&client, &server.url("/me"), Some(&first))
        .await
        .json();
    assert_eq!(user["roles"], json!(["admin", "member", "operator"]));
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    store.grant_role(id, "auditor").await.unwrap();

    // The person left `admins`, changed their name and picture.
    let second = idp
        .id_token()
        .subject("dana")
        .claim("name", "Dana Scully")
        .claim("given_name", "D.")
        .claim("picture", "https://pics/2")
        .groups(["ops"])
        .sign();
    let user = get_with(&client, &server.url("/me"), Some(&second))
        .await
        .json();
    assert_eq!(user["display_name"], "Dana Scully", "always");
    assert_eq!(user["given_name"], "Dana", "never");
    assert_eq!(user["groups"], json!(["ops"]));
    // The mapping's `admin` is revoked; the default and the hand-granted role stay.
    assert_eq!(user["roles"], json!(["auditor", "member", "operator"]));
    let stored = store.get_user(id).await.unwrap().unwrap();
    assert_eq!(
        stored.picture.as_deref(),
        Some("https://pics/1"),
        "if empty"
    );

    let updated = store
        .audit_events(Some(id))
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == AuditKind::Updated)
        .unwrap();
    assert!(updated.fields.contains(&"display_name".to_owned()));
    assert!(updated.fields.contains(&"groups".to_owned()));
    assert!(updated.fields.contains(&"roles".to_owned()));
    assert!(!updated.fields.contains(&"given_name".to_owned()));

    // The same claims again: nothing to write.
    let versions = store.get_user(id).await.unwrap().unwrap().version;
    let third = idp
        .id_token()
        .subject("dana")
        .claim("name", "Dana Scully")
        .claim("given_name", "D.")
        .claim("picture", "https://pics/2")
        .groups(["ops"])
        .sign();
    get_with(&client, &server.url("/me"), Some(&third)).await;
    assert_eq!(store.get_user(id).await.unwrap().unwrap().version, versions);

    // The rules change: `ops` no longer maps to `operator`. A new layer (a new deploy) with the
    // changed rules revokes the grant at the next login; the hand-granted role stays.
    drop(server);
    let server = Server::start(user_app(build(
        AttributeMapping::new()
            .group_role("admins", "admin")
            .default_roles(["member"]),
    )))
    .await;
    let fourth = idp
        .id_token()
        .subject("dana")
        .claim("name", "Dana Scully")
        .groups(["ops"])
        .sign();
    let user = get_with(&client, &server.url("/me"), Some(&fourth))
        .await
        .json();
    assert_eq!(user["roles"], json!(["auditor", "member"]));
}

#[tokio::test]
async fn deactivated_users_are_refused_and_never_recreated() {
    let h = Harness::start(simple).await;
    let token = h.idp.id_token().subject("eve").sign();
    let user = h.me(&token).await.json();
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();

    h.store.deactivate(id).await.unwrap();
    // The very next request, with the token the layer has cached, is refused.
    assert_denied(&h, &token, "deactivated").await;
    // So is a fresh token, and nothing is re-created.
    let fresh = h.idp.id_token().subject("eve").sign();
    assert_eq!(h.me(&fresh).await.status, 403);
    assert_eq!(h.count("users").await, 1);
    let stored = h.store.get_user(id).await.unwrap().unwrap();
    assert_eq!(stored.status, UserStatus::Deactivated);

    h.store.reactivate(id).await.unwrap();
    assert_eq!(h.me(&fresh).await.status, 200);
    let kinds = h.audit_kinds().await;
    assert!(kinds.contains(&AuditKind::Deactivated));
    assert!(kinds.contains(&AuditKind::Reactivated));
}

#[tokio::test]
async fn reactivate_on_login_when_configured() {
    let h = Harness::start(|b, i| b.issuer(i).reactivate_on_login(true)).await;
    let token = h.idp.id_token().subject("finn").sign();
    let id = uuid::Uuid::parse_str(h.me(&token).await.json()["id"].as_str().unwrap()).unwrap();
    h.store.deactivate(id).await.unwrap();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "active");
    let events = h.store.audit_events(Some(id)).await.unwrap();
    let reactivated = events
        .iter()
        .find(|e| e.kind == AuditKind::Reactivated)
        .unwrap();
    assert_eq!(reactivated.actor, tower_jit_provisioning::Actor::Login);
}

#[tokio::test]
async fn deleted_users_never_come_back() {
    let h = Harness::start(simple).await;
    let token = h.idp.id_token().subject("gone").sign();
    let id = uuid::Uuid::parse_str(h.me(&token).await.json()["id"].as_str().unwrap()).unwrap();
    let audit = tower_jit_provisioning::AuditEvent::new(
        AuditKind::Deleted,
        tower_jit_provisioning::Actor::Application,
    );
    assert!(h.store.delete_user(id, audit).await.unwrap());
    assert_denied(&h, &token, "deleted").await;
    assert_eq!(h.count("users").await, 0);
}

#[tokio::test]
async fn new_accounts_can_be_held_for_approval_per_issuer_or_domain() {
    let idp = TestIssuer::start().await;
    let held_idp = TestIssuer::start().await;
    let (store, _dir) = sqlite_store().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .issuer(held_idp.issuer().require_approval(true))
        .require_approval_for_domains(["contractors.example.com"])
        .store(store.clone())
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();
    let me = |token: String| {
        let client = client.clone();
        let url = server.url("/me");
        async move { get_with(&client, &url, Some(&token)).await }
    };

    let staff = idp
        .id_token()
        .subject("s")
        .email("s@example.com", true)
        .sign();
    assert_eq!(me(staff).await.status, 200);

    let contractor = idp
        .id_token()
        .subject("c")
        .email("c@contractors.example.com", true)
        .sign();
    let reply = me(contractor.clone()).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["code"], "pending_approval");

    let from_held = held_idp.id_token().subject("h").sign();
    let reply = me(from_held.clone()).await;
    assert_eq!(reply.json()["code"], "pending_approval");

    // The accounts exist, waiting; approving one lets its next request through.
    let pending: Vec<_> = store_users(&store)
        .await
        .into_iter()
        .filter(|u| u.status == UserStatus::PendingApproval)
        .collect();
    assert_eq!(pending.len(), 2);
    let contractor_user = pending
        .iter()
        .find(|u| u.email.as_deref() == Some("c@contractors.example.com"))
        .unwrap();
    store.approve(contractor_user.id).await.unwrap();
    assert_eq!(me(contractor).await.status, 200);
    assert_eq!(me(from_held).await.status, 403);
}

async fn store_users(store: &SqliteStore) -> Vec<tower_jit_provisioning::User> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM jit_users")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut users = Vec::new();
    for id in ids {
        users.push(
            store
                .get_user(uuid::Uuid::parse_str(&id).unwrap())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    users
}

#[tokio::test]
async fn linking_by_claim_finds_accounts_created_ahead_of_time() {
    let h = Harness::start(|b, i| b.issuer(i).link_by_claim("oid")).await;
    let ahead = NewUser {
        email: Some("pre@example.com".into()),
        external_id: Some("object-123".into()),
        ..NewUser::default()
    };
    let created = create_without_login(&h.store, ahead).await;

    let token = h
        .idp
        .id_token()
        .subject("pairwise-sub")
        .claim("oid", "object-123")
        .sign();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["id"], created.to_string());
    assert_eq!(h.count("users").await, 1);
    assert_eq!(h.count("identities").await, 2);
    assert!(h.audit_kinds().await.contains(&AuditKind::Linked));

    // Another oid: a new account.
    let other = h
        .idp
        .id_token()
        .subject("x")
        .claim("oid", "object-999")
        .sign();
    assert_ne!(h.me(&other).await.json()["id"], created.to_string());
}

/// An account that exists before anyone signs in (as SCIM creates them): created for a
/// placeholder identity of another issuer.
async fn create_without_login(store: &SqliteStore, user: NewUser) -> uuid::Uuid {
    let seed = uuid::Uuid::now_v7().to_string();
    let key = tower_jit_provisioning::IdentityKey::new("https://hr.example.com", seed);
    let audit = tower_jit_provisioning::AuditEvent::new(
        AuditKind::Provisioned,
        tower_jit_provisioning::Actor::Application,
    );
    store
        .create_user(user, &key, None, audit)
        .await
        .unwrap()
        .user
        .id
}

#[tokio::test]
async fn linking_by_verified_email_only_when_verified_trusted_and_unambiguous() {
    let h = Harness::start(|b, i| {
        b.issuer(i.trust_email_domains(["example.com"]))
            .link_by_verified_email(true)
    })
    .await;
    let existing = create_without_login(
        &h.store,
        NewUser {
            email: Some("kim@example.com".into()),
            email_verified: true,
            ..NewUser::default()
        },
    )
    .await;

    // Unverified: never links, and gets an account of its own.
    let unverified = h
        .idp
        .id_token()
        .subject("u")
        .email("kim@example.com", false)
        .sign();
    let reply = h.me(&unverified).await;
    assert_eq!(reply.status, 200);
    assert_ne!(reply.json()["id"], existing.to_string());

    // Verified, trusted domain: links.
    let verified = h
        .idp
        .id_token()
        .subject("v")
        .email("KIM@example.com", true)
        .sign();
    assert_eq!(h.me(&verified).await.json()["id"], existing.to_string());

    // Verified, but a domain the issuer is not trusted for: no link.
    create_without_login(
        &h.store,
        NewUser {
            email: Some("lee@other.org".into()),
            email_verified: true,
            ..NewUser::default()
        },
    )
    .await;
    let untrusted = h
        .idp
        .id_token()
        .subject("w")
        .email("lee@other.org", true)
        .sign();
    let reply = h.me(&untrusted).await.json();
    assert_eq!(reply["email"], "lee@other.org");
    let lee_accounts = store_users(&h.store)
        .await
        .into_iter()
        .filter(|u| u.email.as_deref() == Some("lee@other.org"))
        .count();
    assert_eq!(lee_accounts, 2, "a new account, not a link");
}

#[tokio::test]
async fn provisioned_user_extractors() {
    let idp = TestIssuer::start().await;
    let (store, _dir) = sqlite_store().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(store)
        .optional(true)
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get_with(&client, &server.url("/maybe"), None).await.json(),
        serde_json::Value::Null
    );
    let required = get_with(&client, &server.url("/me"), None).await;
    assert_eq!(required.status, 401);
    let token = idp.id_token().subject("opt").sign();
    let user = get_with(&client, &server.url("/maybe"), Some(&token))
        .await
        .json();
    assert_eq!(user["subject"], "opt");
}

#[tokio::test]
async fn store_failure_is_503_for_uncached_users_and_cached_users_keep_working() {
    let h = Harness::start(simple).await;
    let cached = h.idp.id_token().subject("cached").sign();
    assert_eq!(h.me(&cached).await.status, 200);

    h.store.close().await;
    let reply = h.me(&cached).await;
    assert_eq!(reply.status, 200, "cached users keep working");
    let fresh = h.idp.id_token().subject("cached").sign();
    assert_eq!(h.me(&fresh).await.status, 200, "with a new token too");

    let newcomer = h.idp.id_token().subject("newcomer").sign();
    let reply = h.me(&newcomer).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.json()["code"], "store_unavailable");
}

#[tokio::test]
async fn a_failure_mid_transaction_leaves_no_half_written_account() {
    let h = Harness::start(simple).await;
    // The identity insert fails after the user insert, inside one transaction.
    sqlx::query(
        "CREATE TRIGGER fail_identity BEFORE INSERT ON jit_identities \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    .execute(h.store.pool())
    .await
    .unwrap();
    let token = h.idp.id_token().subject("half").sign();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(h.count("users").await, 0, "the user insert was rolled back");
    assert_eq!(h.count("identities").await, 0);

    // Once the store works again, the account is created whole.
    sqlx::query("DROP TRIGGER fail_identity")
        .execute(h.store.pool())
        .await
        .unwrap();
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.count("users").await, 1);
    assert_eq!(h.count("identities").await, 1);
}

#[tokio::test]
async fn store_unreachable_from_the_start_is_503_not_a_hang() {
    let idp = TestIssuer::start().await;
    let (store, _dir) = sqlite_store().await;
    store.close().await;
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(store)
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let token = idp.id_token().sign();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        get_with(&reqwest::Client::new(), &server.url("/me"), Some(&token)),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(reply.status, 503);
}

#[tokio::test]
async fn memory_store_and_audit_sinks() {
    let idp = TestIssuer::start().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        move |event: &tower_jit_provisioning::AuditEvent| {
            seen.lock()
                .unwrap()
                .push((event.kind, event.reason.clone()));
        }
    };
    let store = tower_jit_provisioning::MemoryStore::with_audit(
        tower_jit_provisioning::audit::Audit::new().with_sink(sink),
    );
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer().allowed_domains(["example.com"]))
        .store(store.clone())
        .build()
        .unwrap();
    let server = Server::start(user_app(layer)).await;
    let client = reqwest::Client::new();
    let me = server.url("/me");

    let ok = idp
        .id_token()
        .subject("m1")
        .email("m1@example.com", true)
        .sign();
    assert_eq!(get_with(&client, &me, Some(&ok)).await.status, 200);
    let refused = idp
        .id_token()
        .subject("m2")
        .email("m2@evil.org", true)
        .sign();
    assert_eq!(get_with(&client, &me, Some(&refused)).await.status, 403);
    let expired = idp
        .id_token()
        .subject("m3")
        .expires_at(1)
        .issued_at(0)
        .sign();
    assert_eq!(get_with(&client, &me, Some(&expired)).await.status, 401);

    assert_eq!(store.users().len(), 1);
    assert_eq!(store.identity_count(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (AuditKind::Provisioned, None),
            (AuditKind::Denied, Some("domain_not_allowed".to_owned())),
            (AuditKind::TokenRejected, Some("expired".to_owned())),
        ]
    );
    // The memory store keeps what it emitted, for tests.
    assert_eq!(store.audit_events().len(), 3);
}

#[tokio::test]
async fn with_creation_off_only_accounts_that_exist_sign_in() {
    for layer_wide in [true, false] {
        let h = Harness::start(|b, i| {
            let b = b.link_by_claim("oid");
            if layer_wide {
                b.create_accounts(false).issuer(i)
            } else {
                b.issuer(i.create_accounts(false))
            }
        })
        .await;
        // A stranger: 403 not_provisioned, audited, nothing written; every time.
        let stranger = h.idp.id_token().subject("stranger").sign();
        assert_denied(&h, &stranger, "not_provisioned").await;
        assert_eq!(h.me(&stranger).await.status, 403);
        assert_eq!(h.count("users").await, 0);

        // An account created ahead of time is found, and then found again by its identity.
        let ahead = create_without_login(
            &h.store,
            NewUser {
                external_id: Some("object-1".into()),
                ..NewUser::default()
            },
        )
        .await;
        let known = h
            .idp
            .id_token()
            .subject("known")
            .claim("oid", "object-1")
            .sign();
        let reply = h.me(&known).await;
        assert_eq!(reply.status, 200, "layer-wide {layer_wide}: {}", reply.body);
        assert_eq!(reply.json()["id"], ahead.to_string());
        let again = h.idp.id_token().subject("known").sign();
        assert_eq!(h.me(&again).await.json()["id"], ahead.to_string());
        assert_eq!(h.count("users").await, 1);
    }
}

#[tokio::test]
async fn creation_can_be_left_to_some_sign_in_sources() {
    use tower_jit_provisioning::SignInSource;
    let browser_only =
        Harness::start(|b, i| b.issuer(i.create_accounts_from([SignInSource::BrowserOidc]))).await;
    let token = browser_only.idp.id_token().subject("by-bearer").sign();
    assert_denied(&browser_only, &token, "not_provisioned").await;

    let bearer_too = Harness::start(|b, i| {
        b.issuer(i.create_accounts_from([SignInSource::BrowserOidc, SignInSource::BearerToken]))
    })
    .await;
    let token = bearer_too.idp.id_token().subject("by-bearer").sign();
    assert_eq!(bearer_too.me(&token).await.status, 200);
    assert_eq!(bearer_too.count("users").await, 1);
}

#[tokio::test]
async fn the_approval_queue_lists_approves_and_refuses_with_the_approver_audited() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_jit_provisioning::approval::{ApprovalError, Approvals};
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let h = {
        let (told, calls) = (Arc::clone(&told), Arc::clone(&calls));
        Harness::start(move |b, i| {
            b.issuer(i).require_approval(true).on_pending(
                move |user: &tower_jit_provisioning::User| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    told.lock().unwrap().push(user.id);
                },
            )
        })
        .await
    };
    let ada = h.idp.id_token().subject("ada").sign();
    let bob = h.idp.id_token().subject("bob").sign();
    for token in [&ada, &bob, &ada] {
        let reply = h.me(token).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["code"], "pending_approval");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "told once per account");

    let approvals = Approvals::new(h.store.clone());
    let pending = approvals.pending(None, 10).await.unwrap();
    let ids: Vec<uuid::Uuid> = pending.iter().map(|u| u.id).collect();
    assert_eq!(ids, *told.lock().unwrap());
    assert_eq!(approvals.pending(None, 1).await.unwrap().len(), 1);
    assert_eq!(
        approvals.pending(Some(ids[0]), 10).await.unwrap()[0].id,
        ids[1]
    );

    let approved = approvals.approve(ids[0], "carol").await.unwrap();
    assert_eq!(approved.status, UserStatus::Active);
    assert_eq!(h.me(&ada).await.status, 200, "in on the next request");
    approvals.refuse(ids[1], "carol").await.unwrap();
    let refused = h.me(&bob).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], "deactivated");
    assert!(approvals.pending(None, 10).await.unwrap().is_empty());

    let events = h.store.audit_events(None).await.unwrap();
    for (kind, user) in [(AuditKind::Approved, ids[0]), (AuditKind::Refused, ids[1])] {
        let event = events.iter().find(|e| e.kind == kind).expect("audited");
        assert_eq!(event.actor, Actor::Approver("carol".into()));
        assert_eq!(event.user_id, Some(user));
    }
    assert!(matches!(
        approvals.approve(ids[0], "carol").await,
        Err(ApprovalError::NotPending(UserStatus::Active))
    ));
    assert!(matches!(
        approvals.refuse(uuid::Uuid::now_v7(), "carol").await,
        Err(ApprovalError::NotFound)
    ));
}

/// Microsoft Entra ID leaves `groups` out of a token when they do not fit and says so with
/// `_claim_names`/`_claim_sources` (or `hasgroups`): such a token says nothing about groups.
/// A role a group granted stays, and the groups stay as they were; the endpoint the token
/// names is never fetched.
#[tokio::test]
async fn an_entra_overage_token_leaves_groups_and_group_roles_as_they_were() {
    let h = Harness::start(|b, i| {
        b.issuer(i)
            .mapping(AttributeMapping::new().group_role("admins", "admin"))
    })
    .await;
    let with_groups = h
        .idp
        .id_token()
        .subject("many-groups")
        .groups(["admins", "staff"])
        .sign();
    let first = h.me(&with_groups).await.json();
    assert_eq!(first["roles"], json!(["admin"]));
    for overage in [
        h.idp
            .id_token()
            .subject("many-groups")
            .claim("_claim_names", json!({"groups": "src1"}))
            .claim(
                "_claim_sources",
                json!({"src1": {"endpoint": "http://127.0.0.1:9/never-fetched"}}),
            )
            .claim("name", "Renamed Once")
            .sign(),
        h.idp
            .id_token()
            .subject("many-groups")
            .claim("hasgroups", true)
            .claim("name", "Renamed Twice")
            .sign(),
    ] {
        let reply = h.me(&overage).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let user = reply.json();
        // The sync ran (the name is new), and kept what the token could not tell.
        assert!(
            user["display_name"]
                .as_str()
                .unwrap()
                .starts_with("Renamed"),
            "{user}"
        );
        assert_eq!(user["roles"], json!(["admin"]), "{user}");
        assert_eq!(user["groups"], json!(["admins", "staff"]), "{user}");
    }
}

/// Entra ID's group overage resolved through Microsoft Graph (a local double): every page
/// read, the answer cached per person, an outage leaving groups and roles as they were, and
/// the endpoint a token names never fetched.
#[tokio::test]
async fn an_entra_overage_is_resolved_through_graph_and_an_outage_revokes_nothing() {
    use tower_jit_provisioning::testing::TestGraph;
    let graph = TestGraph::start().await;
    let admins = "6f0c4a1e-0000-4000-8000-0000000000a1";
    let many: Vec<String> = (0..5)
        .map(|i| format!("6f0c4a1e-0000-4000-8000-00000000000{i}"))
        .chain([admins.to_owned()])
        .collect();
    let ada = "11111111-1111-4111-8111-111111111111";
    let bob = "22222222-2222-4222-8222-222222222222";
    graph.set_groups(ada, many.clone());
    graph.set_groups(bob, [admins]);
    let resolver = graph.resolver(100);
    let h = Harness::start(move |b, i| {
        b.issuer(i.group_resolver(resolver))
            .mapping(AttributeMapping::new().group_role(admins, "admin"))
    })
    .await;
    // Nothing may connect here: it is the endpoint the token names.
    let named = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    named.set_nonblocking(true).unwrap();
    let overage = |oid: &str, n: u32| {
        h.idp
            .id_token()
            .subject(format!("subject-{oid}"))
            .claim("oid", oid)
            .claim("name", format!("Token {n}"))
            .claim("_claim_names", json!({"groups": "src1"}))
            .claim(
                "_claim_sources",
                json!({"src1": {"endpoint": format!("http://{}/getMemberObjects", named.local_addr().unwrap())}}),
            )
            .sign()
    };

    let first = h.me(&overage(ada, 1)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let user = first.json();
    let mut expected = many.clone();
    expected.sort();
    assert_eq!(user["groups"], json!(expected));
    assert_eq!(user["roles"], json!(["admin"]));
    assert_eq!(graph.group_calls(), 3, "6 groups at 2 a page");
    assert_eq!(graph.token_calls(), 1);

    // Another token for the same person: Graph's answer is cached.
    assert_eq!(h.me(&overage(ada, 2)).await.status, 200);
    assert_eq!(graph.group_calls(), 3);

    // Bob was an admin by a token that carried his groups; Graph is down at his next sign-in.
    let with_groups = h
        .idp
        .id_token()
        .subject(format!("subject-{bob}"))
        .claim("oid", bob)
        .groups([admins])
        .sign();
    assert_eq!(h.me(&with_groups).await.json()["roles"], json!(["admin"]));
    graph.set_outage(true);
    let during = h.me(&overage(bob, 3)).await;
    assert_eq!(during.status, 200, "{}", during.body);
    assert_eq!(during.json()["display_name"], "Token 3", "the sync ran");
    assert_eq!(
        during.json()["roles"],
        json!(["admin"]),
        "unknown, not empty"
    );
    assert_eq!(during.json()["groups"], json!([admins]));
    // A failure is not remembered: back up, the next token resolves.
    graph.set_outage(false);
    graph.set_groups(bob, Vec::<String>::new());
    let after = h.me(&overage(bob, 4)).await.json();
    assert_eq!(after["groups"], json!([]));
    assert_eq!(after["roles"], json!([]), "Graph says he left the group");

    // A malformed oid never reaches a Graph URL.
    let calls = graph.group_calls();
    assert_eq!(h.me(&overage("../../me", 5)).await.status, 200);
    assert_eq!(graph.group_calls(), calls);
    assert!(named.accept().is_err(), "the token's endpoint was fetched");
}

#[tokio::test]
async fn graph_answers_are_cached_per_person_within_the_bound() {
    use tower_jit_provisioning::provision::groups::GroupResolver;
    use tower_jit_provisioning::testing::TestGraph;
    let graph = TestGraph::start().await;
    let resolver = graph.resolver(4);
    let issuer = "https://login.microsoftonline.com/tenant/v2.0";
    let person = |n: u32| {
        let oid = format!("00000000-0000-4000-8000-{n:012}");
        graph.set_groups(&oid, [format!("6f0c4a1e-0000-4000-8000-{n:012}")]);
        SignIn::builder(
            tower_jit_provisioning::SignInSource::BearerToken,
            issuer,
            format!("subject-{n}"),
        )
        .attribute("oid", oid)
        .attribute("hasgroups", true)
        .build()
        .unwrap()
    };
    let first = person(0);
    let groups = resolver.groups(&first).await.unwrap();
    assert_eq!(groups, ["6f0c4a1e-0000-4000-8000-000000000000"]);
    let calls = graph.group_calls();
    assert_eq!(resolver.groups(&first).await.unwrap(), groups);
    assert_eq!(
        graph.group_calls(),
        calls,
        "the second answer came from the cache"
    );

    for n in 1..=40 {
        assert!(resolver.groups(&person(n)).await.is_some());
        assert!(
            resolver.cached_count().await <= 4,
            "the cache holds at most its capacity"
        );
    }
    assert_eq!(graph.group_calls(), calls + 40, "one call per new person");
    assert!(resolver.cached_count().await >= 1);
}
