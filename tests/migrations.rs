//! Databases written by an earlier release migrate forward with every record intact.
//!
//! `tests/fixtures/v0.1.0.sqlite` and `tests/fixtures/v0.1.0.postgres.sql` (a `pg_dump
//! --inserts`) were written by release 0.1.0's stores: four users (one provisioned with two
//! linked identities and a role granted by hand, one created by SCIM, one deactivated, one
//! pending approval), one deleted user whose identity is a tombstone, a renamed group with two
//! members, and ten audit records. Each test opens a copy, migrates it with this release, and
//! reads everything back through the store.

mod common;

use tower_jit_provisioning::audit::{Actor, AuditKind};
use tower_jit_provisioning::{
    AuditEvent, IdentityKey, NewUser, RoleSource, StoreError, UserStatus, UserStore,
};
use uuid::Uuid;

const ISSUER: &str = "https://idp.example.com";

/// Everything the fixture holds, read back through `store`.
async fn assert_fixture_intact(store: &impl UserStore, audit: Vec<AuditEvent>) {
    let users = store.list_users(None, 100).await.unwrap();
    let emails: Vec<_> = users.iter().map(|u| u.email.as_deref().unwrap()).collect();
    assert_eq!(
        emails,
        [
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@partner.example"
        ]
    );

    let (alice, identity) = store
        .find_by_identity(&IdentityKey::new(ISSUER, "alice-sub"))
        .await
        .unwrap()
        .expect("alice signs in as before");
    assert!(alice.email_verified);
    assert_eq!(alice.user_name.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(alice.given_name.as_deref(), Some("Alice"));
    assert_eq!(alice.family_name.as_deref(), Some("Example"));
    assert_eq!(alice.picture.as_deref(), Some("https://example.com/a.png"));
    assert_eq!(alice.locale.as_deref(), Some("en-GB"));
    assert_eq!(alice.groups, ["ops", "staff"]);
    assert_eq!(alice.attributes["department"], "R&D");
    assert_eq!(alice.attributes["level"], 3);
    assert_eq!(alice.role_names(), ["admin", "auditor", "member"]);
    assert!(
        alice
            .roles
            .iter()
            .any(|g| g.role == "auditor" && g.source == RoleSource::Manual)
    );
    assert!(
        alice
            .roles
            .iter()
            .any(|g| g.role == "admin" && g.source == RoleSource::Mapping("group:ops".to_owned()))
    );
    assert_eq!(alice.version, 2);
    assert!(alice.last_login_at.is_some());
    assert_eq!(identity.claims_fingerprint.as_deref(), Some("fp-alice-2"));
    let identities = store.identities(alice.id).await.unwrap();
    let keys: Vec<_> = identities
        .iter()
        .map(|i| (i.key.issuer(), i.key.subject()))
        .collect();
    assert_eq!(
        keys,
        [(ISSUER, "alice-sub"), ("https://other.example.org", "a-9")]
    );

    let bob = store
        .find_by_external_id("ext-bob")
        .await
        .unwrap()
        .expect("the SCIM account");
    assert_eq!(bob.user_name.as_deref(), Some("bob"));
    assert_eq!(bob.scim_attributes["title"], "Engineer");
    assert_eq!(bob.scim_attributes["phoneNumbers"][0]["type"], "work");
    assert_eq!(bob.scim_managed, ["display_name", "user_name"]);
    assert!(store.identities(bob.id).await.unwrap().is_empty());
    assert_eq!(
        store.find_by_user_name("BOB").await.unwrap().map(|u| u.id),
        Some(bob.id)
    );

    let status = |email: &str| {
        users
            .iter()
            .find(|u| u.email.as_deref() == Some(email))
            .unwrap()
            .status
    };
    assert_eq!(status("carol@example.com"), UserStatus::Deactivated);
    assert_eq!(status("dave@partner.example"), UserStatus::PendingApproval);

    // The deleted user's identity is still a tombstone: never provisioned again.
    let again = store
        .create_user(
            NewUser::default(),
            &IdentityKey::new(ISSUER, "eve-sub"),
            None,
            AuditEvent::new(AuditKind::Provisioned, Actor::Login),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::IdentityDeleted)),
        "{again:?}"
    );

    let groups = store.list_groups(None, 10).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].display_name, "Engineering Team");
    assert_eq!(groups[0].external_id.as_deref(), Some("grp-eng"));
    assert_eq!(groups[0].version, 2);
    let mut members = vec![alice.id, bob.id];
    members.sort();
    assert_eq!(groups[0].members, members);
    assert_eq!(store.groups_of(bob.id).await.unwrap()[0].id, groups[0].id);

    let kinds: Vec<_> = audit.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "provisioned",
            "linked",
            "updated",
            "provisioned",
            "provisioned",
            "deactivated",
            "provisioned",
            "provisioned",
            "deleted",
            "denied"
        ]
    );
    assert_eq!(audit[1].reason.as_deref(), Some("verified_email"));
    assert_eq!(audit[3].actor, Actor::Scim("okta".to_owned()));
    assert_eq!(audit[9].subject.as_deref(), Some("mallory"));
    assert_eq!(audit[9].reason.as_deref(), Some("domain_not_allowed"));
    assert_eq!(audit[0].user_id, Some(alice.id));

    // And the migrated database takes new accounts as any other.
    let created = store
        .create_user(
            NewUser {
                email: Some("frank@example.com".to_owned()),
                ..NewUser::default()
            },
            &IdentityKey::new(ISSUER, "frank-sub"),
            None,
            AuditEvent::new(AuditKind::Provisioned, Actor::Login).source("bearer_jwt"),
        )
        .await
        .unwrap();
    assert!(created.written);
    assert_ne!(created.user.id, Uuid::nil());
}

/// Events written before the sign-in source was recorded have none; new ones keep theirs.
fn assert_sources_recorded(events: &[AuditEvent]) {
    assert_eq!(events.len(), 11);
    assert!(events[..10].iter().all(|e| e.source.is_none()));
    assert_eq!(events[10].source.as_deref(), Some("bearer_jwt"));
}

#[tokio::test]
async fn a_sqlite_file_of_release_0_1_0_migrates_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jit.db");
    std::fs::copy("tests/fixtures/v0.1.0.sqlite", &path).unwrap();
    let store =
        tower_jit_provisioning::SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
    store.migrate().await.unwrap();
    let audit = store.audit_events(None).await.unwrap();
    assert_fixture_intact(&store, audit).await;
    assert_sources_recorded(&store.audit_events(None).await.unwrap());
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn a_postgres_database_of_release_0_1_0_migrates_with_every_record() {
    let db = common::PgDatabase::create("migrations::postgres").await;
    let dump = std::fs::read_to_string("tests/fixtures/v0.1.0.postgres.sql").unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    let store = db.store().await;
    let audit = store.audit_events(None).await.unwrap();
    assert_fixture_intact(&store, audit).await;
    assert_sources_recorded(&store.audit_events(None).await.unwrap());
    store.migrate().await.unwrap();
}
