//! The `UserStore` contract, written once and run against every store: memory, SQLite (a real
//! file) and PostgreSQL (a fresh database; its tests show as ignored without
//! `JIT_TEST_POSTGRES_URL`).

mod common;

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{TimeDelta, Utc};
use tower_jit_provisioning::organization::{Connection, Organization};
use tower_jit_provisioning::session::{LoginFlow, Session, SessionHash, SessionSelector};
use tower_jit_provisioning::store::StoreEvent;
use tower_jit_provisioning::{
    Actor, AttributeMapping, AuditEvent, AuditKind, DenyReason, Error, GroupUpdate, IdentityKey,
    IssuerPolicy, MemoryStore, NewGroup, NewUser, PostgresStore, ProvisioningLayer, SignIn,
    SignInSource, SqliteStore, StoreError, UserStatus, UserStore, UserUpdate,
};

fn audit() -> AuditEvent {
    AuditEvent::new(AuditKind::Provisioned, Actor::Login)
}

fn key(subject: &str) -> IdentityKey {
    IdentityKey::new("https://idp.example.com", subject.to_owned())
}

fn named(email: &str, verified: bool) -> NewUser {
    NewUser {
        email: Some(email.to_owned()),
        email_verified: verified,
        ..NewUser::default()
    }
}

type Guard = Box<dyn Any + Send>;

/// The audit events a store has emitted (the memory store) or persisted (the SQL stores).
trait AuditLog {
    fn events(&self) -> impl Future<Output = Vec<AuditEvent>> + Send;
}

impl AuditLog for MemoryStore {
    async fn events(&self) -> Vec<AuditEvent> {
        self.audit_events()
    }
}

impl AuditLog for SqliteStore {
    async fn events(&self) -> Vec<AuditEvent> {
        self.audit_events(None).await.unwrap()
    }
}

impl AuditLog for PostgresStore {
    async fn events(&self) -> Vec<AuditEvent> {
        self.audit_events(None).await.unwrap()
    }
}

/// A session of `user_id` with the id `secret`, an hour long.
/// A new account for `name@example.com`, signed in as subject `name`; its id.
async fn account(store: &impl UserStore, name: &str) -> uuid::Uuid {
    store
        .create_user(
            named(&format!("{name}@example.com"), true),
            &key(name),
            None,
            audit(),
        )
        .await
        .unwrap()
        .user
        .id
}

fn session(secret: &str, user_id: uuid::Uuid, subject: &str, sid: Option<&str>) -> Session {
    let now = Utc::now();
    Session::new(
        SessionHash::of(secret.as_bytes()),
        user_id,
        "https://idp.example.com",
        subject,
        sid.map(str::to_owned),
        "browser_oidc",
        now,
        now + TimeDelta::hours(1),
        600,
    )
}

const PROXY: &str = "https://proxy.example.com";
const CONTRACT: SignInSource = SignInSource::Custom("contract");

/// A sign-in through the contract's own source.
fn sign_in(subject: &str, email: &str, verified: bool) -> SignIn {
    SignIn::builder(CONTRACT, PROXY, subject)
        .email(email, verified)
        .attribute("name", "Grace Hopper")
        .attribute("employee_id", format!("E-{subject}"))
        .groups(["compilers"])
        .build()
        .unwrap()
}

/// A layer provisioning into `store`, with admission rules for the contract's source.
fn layer(store: impl UserStore) -> ProvisioningLayer {
    ProvisioningLayer::builder()
        .policy(PROXY, IssuerPolicy::new().allowed_domains(["example.com"]))
        .link_by_claim("employee_id")
        .store(store)
        .mapping(
            AttributeMapping::new()
                .group_role("compilers", "engineer")
                .default_roles(["member"]),
        )
        .build()
        .unwrap()
}

macro_rules! store_contract {
    ($name:ident, [$(#[$attr:meta])*], $make:expr) => {
        mod $name {
            use super::*;

            async fn make() -> (impl UserStore + AuditLog + Clone, Guard) {
                $make
            }

            #[tokio::test]
            $(#[$attr])*
            async fn organisations_own_their_domains_and_connections_alone() {
                let (store, _guard) = make().await;
                let changes = Arc::new(Mutex::new(0));
                let _subscription = {
                    let changes = Arc::clone(&changes);
                    store.changes().subscribe(move |event| {
                        if *event == StoreEvent::OrganizationsChanged {
                            *changes.lock().unwrap() += 1;
                        }
                    })
                };
                let entra = "https://login.microsoftonline.com/common/v2.0";
                let acme = Organization::new("Acme")
                    .domains(["Acme.example", "acme.example"])
                    .connection(Connection::oidc(entra, ["app"]).tenant("tid", "t-acme"));
                let acme = store.create_organization(acme).await.unwrap();
                assert_eq!(acme.domains, ["acme.example"]);
                assert_eq!(acme.version, 1);
                // Published before returning (PostgreSQL's listener may echo it again).
                assert!(*changes.lock().unwrap() >= 1, "published before returning");
                assert_eq!(store.get_organization(acme.id).await.unwrap().as_ref(), Some(&acme));

                // Another organisation may not take a domain or a connection of Acme's...
                let grabs_domain = Organization::new("Globex").domains(["ACME.example"]);
                let refused = store.create_organization(grabs_domain).await;
                assert!(matches!(refused, Err(StoreError::Duplicate("domain"))), "{refused:?}");
                let grabs_tenant = Organization::new("Globex")
                    .connection(Connection::oidc(entra, ["app"]).tenant("tid", "t-acme"));
                let refused = store.create_organization(grabs_tenant).await;
                assert!(matches!(refused, Err(StoreError::Duplicate("connection"))), "{refused:?}");
                assert_eq!(store.list_organizations().await.unwrap().len(), 1, "nothing written");

                // ...but another tenant of the same issuer is its own connection.
                let globex = Organization::new("Globex")
                    .domains(["globex.example"])
                    .connection(Connection::oidc(entra, ["app"]).tenant("tid", "t-globex"));
                let globex = store.create_organization(globex).await.unwrap();
                assert_eq!(store.list_organizations().await.unwrap().len(), 2);

                // Updates check the version, and a refused update changes nothing.
                let mut renamed = acme.clone();
                renamed.name = "Acme Corp".into();
                let renamed = store.update_organization(renamed, Some(1)).await.unwrap();
                assert_eq!(renamed.version, 2);
                let stale = store.update_organization(acme.clone(), Some(1)).await;
                assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
                let mut takes = globex.clone();
                takes.domains.push("acme.example".into());
                let refused = store.update_organization(takes, None).await;
                assert!(matches!(refused, Err(StoreError::Duplicate("domain"))), "{refused:?}");
                let kept = store.get_organization(globex.id).await.unwrap().unwrap();
                assert_eq!(kept, globex);
                let missing = store.update_organization(Organization::new("Nobody"), None).await;
                assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

                // Accounts keep their organisation, whichever way they are written.
                let member = NewUser {
                    organization_id: Some(acme.id),
                    ..named("ada@acme.example", true)
                };
                store.create_user(member.clone(), &key("ada"), None, audit()).await.unwrap();
                let (user, _) = store.find_by_identity(&key("ada")).await.unwrap().unwrap();
                assert_eq!(user.organization_id, Some(acme.id));
                let inserted = store.insert_user(NewUser { user_name: Some("bob".into()), ..member }, audit())
                    .await
                    .unwrap();
                assert_eq!(
                    store.get_user(inserted.id).await.unwrap().unwrap().organization_id,
                    Some(acme.id)
                );

                // Deleting frees its domains and connections.
                assert!(store.delete_organization(acme.id).await.unwrap());
                assert!(!store.delete_organization(acme.id).await.unwrap());
                let heir = Organization::new("Heir")
                    .domains(["acme.example"])
                    .connection(Connection::oidc(entra, ["app"]).tenant("tid", "t-acme"));
                store.create_organization(heir).await.unwrap();
                assert!(*changes.lock().unwrap() >= 5, "one event at least per write");
            }

            #[tokio::test]
            $(#[$attr])*
            async fn a_legacy_account_is_adopted_once_ever_with_its_user_and_identity() {
                let (store, _guard) = make().await;
                let adopted = store
                    .adopt_legacy_account(
                        "L-42",
                        named("ada@example.com", true),
                        &key("ada"),
                        Some("fp"),
                        AuditEvent::new(AuditKind::Linked, Actor::Login).reason("legacy:crm"),
                    )
                    .await
                    .unwrap();
                assert!(adopted.written);
                assert_eq!(adopted.identity.claims_fingerprint.as_deref(), Some("fp"));
                let found = store.find_by_identity(&key("ada")).await.unwrap().unwrap();
                assert_eq!(found.0.id, adopted.user.id);
                assert_eq!(
                    store.find_by_legacy_id("L-42").await.unwrap().map(|u| u.id),
                    Some(adopted.user.id)
                );
                assert!(store.find_by_legacy_id("L-43").await.unwrap().is_none());

                // The same identity again: its account, and nothing new recorded.
                let again = store
                    .adopt_legacy_account("L-43", named("x@example.com", true), &key("ada"), None, audit())
                    .await
                    .unwrap();
                assert!(!again.written);
                assert_eq!(again.user.id, adopted.user.id);
                assert!(store.find_by_legacy_id("L-43").await.unwrap().is_none());

                // Another identity: refused, and nothing of it written.
                let before = store.list_users(None, 10).await.unwrap().len();
                let events = store.events().await.len();
                let claimed = store
                    .adopt_legacy_account("L-42", named("m@example.com", true), &key("mallory"), None, audit())
                    .await;
                assert!(matches!(claimed, Err(StoreError::Duplicate("legacy_id"))), "{claimed:?}");
                assert!(store.find_by_identity(&key("mallory")).await.unwrap().is_none());
                assert_eq!(store.list_users(None, 10).await.unwrap().len(), before);
                assert_eq!(store.events().await.len(), events);

                // A legacy account is adopted once ever: deleting the account frees nothing.
                store
                    .delete_user(adopted.user.id, AuditEvent::new(AuditKind::Deleted, Actor::Application))
                    .await
                    .unwrap();
                let after_delete = store
                    .adopt_legacy_account("L-42", NewUser::default(), &key("bob"), None, audit())
                    .await;
                assert!(matches!(after_delete, Err(StoreError::Duplicate("legacy_id"))), "{after_delete:?}");
                assert!(store.find_by_legacy_id("L-42").await.unwrap().is_none());

                // A taken login name writes no adoption record either: the legacy account
                // stays free for the caller's retry.
                let taken = NewUser {
                    user_name: Some("grace".into()),
                    ..NewUser::default()
                };
                store.create_user(taken.clone(), &key("grace-1"), None, audit()).await.unwrap();
                let clash = store
                    .adopt_legacy_account("L-7", taken, &key("grace-2"), None, audit())
                    .await;
                assert!(matches!(clash, Err(StoreError::Duplicate("user_name"))), "{clash:?}");
                let retried = store
                    .adopt_legacy_account("L-7", NewUser::default(), &key("grace-2"), None, audit())
                    .await
                    .unwrap();
                assert!(retried.written);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn identities_racing_for_one_legacy_account_leave_one_adopter() {
                let (store, _guard) = make().await;
                let mut tasks = Vec::new();
                for i in 0..8 {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        store
                            .adopt_legacy_account(
                                "L-1",
                                NewUser::default(),
                                &key(&format!("claimant-{i}")),
                                None,
                                audit(),
                            )
                            .await
                    }));
                }
                let mut adopted = Vec::new();
                for task in tasks {
                    match task.await.unwrap() {
                        Ok(resolved) => adopted.push(resolved.user.id),
                        Err(StoreError::Duplicate("legacy_id")) => {}
                        Err(other) => panic!("{other:?}"),
                    }
                }
                assert_eq!(adopted.len(), 1, "exactly one adopter");
                assert_eq!(store.list_users(None, 10).await.unwrap().len(), 1);
                assert_eq!(
                    store.find_by_legacy_id("L-1").await.unwrap().map(|u| u.id),
                    Some(adopted[0])
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn sessions_are_kept_touched_forward_only_and_ended_by_each_selector() {
                let (store, _guard) = make().await;
                let ada = account(&store, "ada").await;
                let bob = account(&store, "bob").await;
                let ended = Arc::new(Mutex::new(Vec::new()));
                let _subscription = {
                    let ended = Arc::clone(&ended);
                    store.changes().subscribe(move |event| {
                        if let StoreEvent::SessionsEnded { user_id } = event {
                            ended.lock().unwrap().push(*user_id);
                        }
                    })
                };
                let sessions = [
                    session("a1", ada, "ada", Some("sid-1")),
                    session("a2", ada, "ada", Some("sid-2")),
                    session("a3", ada, "ada", None),
                    session("b1", bob, "bob", Some("sid-1")),
                ];
                for s in &sessions {
                    store.create_session(s.clone()).await.unwrap();
                }
                let duplicate = store.create_session(sessions[0].clone()).await;
                assert!(matches!(duplicate, Err(StoreError::Duplicate(_))), "{duplicate:?}");
                let found = store.find_session(sessions[0].id).await.unwrap().unwrap();
                assert_eq!(found.user_id, ada);
                assert_eq!(found.sid.as_deref(), Some("sid-1"));
                assert_eq!(found.idle_secs, 600);
                assert!(found.is_live(Utc::now()));
                assert!(store.find_session(SessionHash::of(b"never")).await.unwrap().is_none());

                // Last-seen times move forward only, whichever batch lands last.
                let later = sessions[0].last_seen_at + TimeDelta::seconds(90);
                let earlier = sessions[0].last_seen_at + TimeDelta::seconds(30);
                store.touch_sessions(vec![(sessions[0].id, later)]).await.unwrap();
                store.touch_sessions(vec![(sessions[0].id, earlier)]).await.unwrap();
                let seen = store.find_session(sessions[0].id).await.unwrap().unwrap();
                assert_eq!(seen.last_seen_at, later);

                // The issuer's session id ends only that issuer session's sessions.
                let by_sid = SessionSelector::IssuerSession {
                    issuer: "https://idp.example.com".to_owned(),
                    sid: "sid-2".to_owned(),
                };
                assert_eq!(store.end_sessions(by_sid).await.unwrap(), 1);
                assert!(store.find_session(sessions[1].id).await.unwrap().is_none());
                // Published before the call returns (PostgreSQL's listener may echo it again).
                assert!(ended.lock().unwrap().iter().all(|id| *id == ada));
                assert!(!ended.lock().unwrap().is_empty(), "published before returning");
                assert_eq!(
                    store.end_sessions(SessionSelector::Id(sessions[3].id)).await.unwrap(),
                    1
                );
                let by_subject = SessionSelector::Subject {
                    issuer: "https://idp.example.com".to_owned(),
                    subject: "ada".to_owned(),
                };
                assert_eq!(store.end_sessions(by_subject).await.unwrap(), 2);
                for s in &sessions {
                    assert!(store.find_session(s.id).await.unwrap().is_none());
                }
                assert_eq!(
                    store.end_sessions(SessionSelector::User(ada)).await.unwrap(),
                    0
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn deactivating_or_deleting_an_account_ends_its_sessions() {
                let (store, _guard) = make().await;
                let ada = account(&store, "ada").await;
                let first = session("s1", ada, "ada", None);
                store.create_session(first.clone()).await.unwrap();
                store.deactivate(ada).await.unwrap();
                assert!(store.find_session(first.id).await.unwrap().is_none());
                // Reactivation does not bring it back; a new sign-in makes a new one.
                store.reactivate(ada).await.unwrap();
                assert!(store.find_session(first.id).await.unwrap().is_none());
                let second = session("s2", ada, "ada", None);
                store.create_session(second.clone()).await.unwrap();
                store
                    .delete_user(ada, AuditEvent::new(AuditKind::Deleted, Actor::Application))
                    .await
                    .unwrap();
                assert!(store.find_session(second.id).await.unwrap().is_none());
                // No session for an account that does not exist.
                let orphan = store
                    .create_session(session("s3", uuid::Uuid::now_v7(), "x", None))
                    .await;
                assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$attr])*
            async fn a_login_flow_is_taken_once_however_many_race_for_it() {
                let (store, _guard) = make().await;
                let now = Utc::now();
                let flow = LoginFlow::new(
                    SessionHash::of(b"state-1"),
                    SessionHash::of(b"browser-1"),
                    "oidc",
                    serde_json::json!({"nonce": "n", "verifier": "v", "return_to": "/x"}),
                    now,
                    now + TimeDelta::minutes(10),
                );
                store.put_login_flow(flow.clone()).await.unwrap();
                let takers: Vec<_> = (0..8)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store.take_login_flow(SessionHash::of(b"state-1")).await.unwrap()
                        })
                    })
                    .collect();
                let mut taken = Vec::new();
                for taker in takers {
                    taken.extend(taker.await.unwrap());
                }
                assert_eq!(taken.len(), 1, "exactly one taker gets the flow");
                assert_eq!(taken[0].data["return_to"], "/x");
                assert_eq!(taken[0].binding, SessionHash::of(b"browser-1"));
                // An expired flow is never handed out.
                let stale = LoginFlow::new(
                    SessionHash::of(b"state-2"),
                    SessionHash::of(b"browser-1"),
                    "oidc",
                    serde_json::json!({}),
                    now - TimeDelta::minutes(20),
                    now - TimeDelta::minutes(10),
                );
                store.put_login_flow(stale).await.unwrap();
                assert!(store.take_login_flow(SessionHash::of(b"state-2")).await.unwrap().is_none());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$attr])*
            async fn a_one_time_key_is_accepted_once_however_many_race_for_it() {
                let (store, _guard) = make().await;
                let until = Utc::now() + TimeDelta::minutes(5);
                let key = SessionHash::of(b"jti-1");
                let racers: Vec<_> = (0..8)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store.consume_once("logout_jti", key, until).await.unwrap()
                        })
                    })
                    .collect();
                let mut firsts = 0;
                for racer in racers {
                    firsts += usize::from(racer.await.unwrap());
                }
                assert_eq!(firsts, 1);
                // Keys of another kind are another space.
                assert!(store.consume_once("saml_assertion", key, until).await.unwrap());
            }

            #[tokio::test]
            $(#[$attr])*
            async fn purging_removes_only_what_expired() {
                let (store, _guard) = make().await;
                let ada = account(&store, "ada").await;
                let now = Utc::now();
                let mut old = session("old", ada, "ada", None);
                old.expires_at = now - TimeDelta::seconds(1);
                let live = session("live", ada, "ada", None);
                store.create_session(old.clone()).await.unwrap();
                store.create_session(live.clone()).await.unwrap();
                store
                    .consume_once("k", SessionHash::of(b"a"), now - TimeDelta::seconds(1))
                    .await
                    .unwrap();
                assert_eq!(store.purge_expired(now).await.unwrap(), 2);
                assert!(store.find_session(old.id).await.unwrap().is_none());
                assert!(store.find_session(live.id).await.unwrap().is_some());
                // The purged key may be used again: its record is gone.
                assert!(
                    store
                        .consume_once("k", SessionHash::of(b"a"), now + TimeDelta::minutes(1))
                        .await
                        .unwrap()
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn a_sign_in_of_any_source_is_provisioned_once_and_audited_with_its_source() {
                let (store, _guard) = make().await;
                let layer = layer(store.clone());
                let first = layer
                    .provision(&sign_in("grace", "grace@example.com", true))
                    .await
                    .unwrap();
                assert_eq!(first.source(), CONTRACT);
                assert_eq!(first.identity().key.issuer(), PROXY);
                assert_eq!(first.user().display_name.as_deref(), Some("Grace Hopper"));
                assert!(first.user().email_verified);
                assert_eq!(first.user().role_names(), ["engineer", "member"]);
                let again = layer
                    .provision(&sign_in("grace", "grace@example.com", true))
                    .await
                    .unwrap();
                assert_eq!(again.id(), first.id());
                let (found, _) = store
                    .find_by_identity(&IdentityKey::new(PROXY, "grace"))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(found.id, first.id());
                // The same subject at another issuer is another person.
                let saml = SignIn::builder(SignInSource::Saml, "https://idp.example.org/saml", "grace")
                    .build()
                    .unwrap();
                let other = layer.provision(&saml).await.unwrap();
                assert_ne!(other.id(), first.id());
                let events = store.events().await;
                let provisioned: Vec<_> = events
                    .iter()
                    .filter(|e| e.kind == AuditKind::Provisioned)
                    .map(|e| e.source.as_deref())
                    .collect();
                assert_eq!(provisioned, [Some("contract"), Some("saml")]);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn a_sign_in_refused_by_its_issuers_rules_writes_nothing_but_its_audit() {
                let (store, _guard) = make().await;
                let layer = layer(store.clone());
                for (who, email, verified, reason) in [
                    ("mallory", "mallory@evil.example", true, DenyReason::DomainNotAllowed),
                    ("eve", "eve@example.com", false, DenyReason::EmailNotVerified),
                ] {
                    let refused = layer.provision(&sign_in(who, email, verified)).await;
                    assert!(
                        matches!(refused, Err(Error::Denied(r)) if r == reason),
                        "{who}: {refused:?}"
                    );
                }
                assert!(store.list_users(None, 10).await.unwrap().is_empty());
                let events = store.events().await;
                assert_eq!(events.len(), 2, "{events:?}");
                assert!(events.iter().all(|e| e.kind == AuditKind::Denied
                    && e.source.as_deref() == Some("contract")));
                // Each carries, as stored, the trace that decided it.
                let refusals: Vec<_> = events
                    .iter()
                    .map(|e| {
                        let trace = e.trace.as_ref().expect("a refusal's trace");
                        let refusal = trace.refusal().expect("the refusing step").clone();
                        (refusal.rule, refusal.seen)
                    })
                    .collect();
                assert_eq!(
                    refusals,
                    [
                        ("allowed_domains".to_owned(), Some(serde_json::json!("evil.example"))),
                        ("allowed_domains".to_owned(), Some(serde_json::json!("example.com"))),
                    ]
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn a_deleted_identity_is_known_as_deleted_without_a_write() {
                let (store, _guard) = make().await;
                let id = account(&store, "gone").await;
                assert!(!store.is_identity_deleted(&key("gone")).await.unwrap());
                assert!(store.delete_user(id, audit()).await.unwrap());
                assert!(store.is_identity_deleted(&key("gone")).await.unwrap());
                assert!(!store.is_identity_deleted(&key("never-seen")).await.unwrap());
            }

            #[tokio::test]
            $(#[$attr])*
            async fn a_first_sign_in_of_any_source_links_to_the_account_made_ahead_for_it() {
                let (store, _guard) = make().await;
                let ahead = store
                    .insert_user(
                        NewUser {
                            external_id: Some("E-ada".to_owned()),
                            ..NewUser::default()
                        },
                        AuditEvent::new(AuditKind::Provisioned, Actor::Scim("idp".to_owned())),
                    )
                    .await
                    .unwrap();
                let user = layer(store.clone())
                    .provision(&sign_in("ada", "ada@example.com", true))
                    .await
                    .unwrap();
                assert_eq!(user.id(), ahead.id);
                let linked = store
                    .events()
                    .await
                    .into_iter()
                    .find(|e| e.kind == AuditKind::Linked)
                    .expect("a linked event");
                assert_eq!(linked.source.as_deref(), Some("contract"));
                assert_eq!(linked.reason.as_deref(), Some("external_id"));
            }

            #[tokio::test]
            $(#[$attr])*
            async fn create_is_insert_or_get() {
                let (store, _guard) = make().await;
                let first = store
                    .create_user(
                        named("a@example.com", true),
                        &key("a"),
                        Some("fp1"),
                        audit(),
                    )
                    .await
                    .unwrap();
                assert!(first.written);
                assert_eq!(first.user.version, 1);
                assert_eq!(first.user.status, UserStatus::Active);
                assert!(first.user.last_login_at.is_some());
                assert_eq!(first.identity.claims_fingerprint.as_deref(), Some("fp1"));
                let again = store
                    .create_user(named("other@example.com", true), &key("a"), None, audit())
                    .await
                    .unwrap();
                assert!(!again.written);
                assert_eq!(again.user.id, first.user.id);
                assert_eq!(again.user.email.as_deref(), Some("a@example.com"));
                let (found, identity) = store.find_by_identity(&key("a")).await.unwrap().unwrap();
                assert_eq!(found.id, first.user.id);
                assert_eq!(identity.key, key("a"));
                assert_eq!(identity.user_id, first.user.id);
                assert!(
                    store
                        .find_by_identity(&key("nobody"))
                        .await
                        .unwrap()
                        .is_none()
                );
                assert_eq!(store.get_user(first.user.id).await.unwrap().unwrap(), found);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            $(#[$attr])*
            async fn concurrent_creates_for_one_identity_make_one_user() {
                let (store, _guard) = make().await;
                let gate = Arc::new(tokio::sync::Barrier::new(16));
                let mut tasks = Vec::new();
                for i in 0..16 {
                    let (store, gate) = (store.clone(), Arc::clone(&gate));
                    tasks.push(tokio::spawn(async move {
                        gate.wait().await;
                        let user = named(&format!("racer{i}@example.com"), true);
                        store.create_user(user, &key("race"), None, audit()).await
                    }));
                }
                let mut written = 0;
                let mut ids = HashSet::new();
                for task in tasks {
                    let resolved = task.await.unwrap().unwrap();
                    written += usize::from(resolved.written);
                    ids.insert(resolved.user.id);
                }
                assert_eq!(written, 1, "exactly one creator");
                assert_eq!(ids.len(), 1, "one user for everyone");
                let id = *ids.iter().next().unwrap();
                assert_eq!(store.identities(id).await.unwrap().len(), 1);
            }

            /// First sign-ins arriving together (which the SQL stores write in one batch) each
            /// get their own answer: one's conflict costs no one else theirs.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$attr])*
            async fn concurrent_creates_each_get_their_own_answer() {
                let (store, _guard) = make().await;
                let gone = store
                    .create_user(NewUser::default(), &key("gone"), None, audit())
                    .await
                    .unwrap();
                store.delete_user(gone.user.id, audit()).await.unwrap();
                let holder = NewUser {
                    external_id: Some("ext-taken".into()),
                    ..NewUser::default()
                };
                store
                    .create_user(holder, &key("holder"), None, audit())
                    .await
                    .unwrap();

                #[derive(Clone, Copy, Debug, PartialEq)]
                enum Case {
                    Fresh,
                    Shared,
                    SameName,
                    Tombstoned,
                    ExternalIdTaken,
                }
                let mut cases = Vec::new();
                for i in 0..16 {
                    cases.push((Case::Fresh, i));
                }
                for i in 0..8 {
                    cases.push((Case::Shared, i));
                    cases.push((Case::SameName, i));
                }
                for i in 0..4 {
                    cases.push((Case::Tombstoned, i));
                    cases.push((Case::ExternalIdTaken, i));
                }
                let gate = Arc::new(tokio::sync::Barrier::new(cases.len()));
                let tasks: Vec<_> = cases
                    .into_iter()
                    .map(|(case, i)| {
                        let (store, gate) = (store.clone(), Arc::clone(&gate));
                        tokio::spawn(async move {
                            let (subject, user) = match case {
                                Case::Fresh => (format!("fresh{i}"), NewUser::default()),
                                Case::Shared => ("shared".to_owned(), NewUser::default()),
                                Case::SameName => (
                                    format!("named{i}"),
                                    NewUser {
                                        // The same login name, in different case.
                                        user_name: Some(if i % 2 == 0 {
                                            "Same@Example.com".into()
                                        } else {
                                            "same@example.COM".into()
                                        }),
                                        ..NewUser::default()
                                    },
                                ),
                                Case::Tombstoned => ("gone".to_owned(), NewUser::default()),
                                Case::ExternalIdTaken => (
                                    format!("ext{i}"),
                                    NewUser {
                                        external_id: Some("ext-taken".into()),
                                        ..NewUser::default()
                                    },
                                ),
                            };
                            gate.wait().await;
                            (
                                case,
                                store.create_user(user, &key(&subject), None, audit()).await,
                            )
                        })
                    })
                    .collect();
                let mut shared_ids = HashSet::new();
                let (mut fresh, mut shared_written, mut named) = (0, 0, 0);
                for task in tasks {
                    let (case, result) = task.await.unwrap();
                    match (case, result) {
                        (Case::Fresh, Ok(r)) if r.written => fresh += 1,
                        (Case::Shared, Ok(r)) => {
                            shared_written += usize::from(r.written);
                            shared_ids.insert(r.user.id);
                        }
                        (Case::SameName, Ok(r)) if r.written => named += 1,
                        (Case::SameName, Err(StoreError::Duplicate("user_name"))) => {}
                        (Case::Tombstoned, Err(StoreError::IdentityDeleted)) => {}
                        (Case::ExternalIdTaken, Err(StoreError::Duplicate("external_id"))) => {}
                        (case, other) => panic!("{case:?}: unexpected {other:?}"),
                    }
                }
                assert_eq!(fresh, 16, "every fresh identity created");
                assert_eq!(shared_written, 1, "one creator of the shared identity");
                assert_eq!(shared_ids.len(), 1, "one user for the shared identity");
                assert_eq!(named, 1, "one owner of the login name");
                // holder + 16 fresh + shared + one named.
                assert_eq!(store.list_users(None, 100).await.unwrap().len(), 19);
                assert!(
                    store
                        .find_by_identity(&key("gone"))
                        .await
                        .unwrap()
                        .is_none()
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn one_subject_at_two_issuers_is_two_users() {
                let (store, _guard) = make().await;
                let a = IdentityKey::new("https://a.example.com", "7");
                let b = IdentityKey::new("https://b.example.com", "7");
                let ua = store
                    .create_user(NewUser::default(), &a, None, audit())
                    .await
                    .unwrap();
                let ub = store
                    .create_user(NewUser::default(), &b, None, audit())
                    .await
                    .unwrap();
                assert_ne!(ua.user.id, ub.user.id);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn linking_adds_an_identity_once() {
                let (store, _guard) = make().await;
                let elsewhere = |sub: &str| IdentityKey::new("https://other.example.com", sub);
                let owner = store
                    .create_user(NewUser::default(), &key("l1"), None, audit())
                    .await
                    .unwrap();
                let other = store
                    .create_user(NewUser::default(), &key("l2"), None, audit())
                    .await
                    .unwrap();
                let linked = store
                    .link_identity(owner.user.id, &elsewhere("l3"), None, audit())
                    .await
                    .unwrap();
                assert!(linked.written);
                assert_eq!(linked.user.id, owner.user.id);
                // Linked already, to owner: another link attempt returns the owner.
                let again = store
                    .link_identity(other.user.id, &elsewhere("l3"), None, audit())
                    .await
                    .unwrap();
                assert!(!again.written);
                assert_eq!(again.user.id, owner.user.id);
                assert_eq!(store.identities(owner.user.id).await.unwrap().len(), 2);
                assert_eq!(store.identities(other.user.id).await.unwrap().len(), 1);
                let missing = store
                    .link_identity(uuid::Uuid::now_v7(), &elsewhere("l4"), None, audit())
                    .await;
                assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
            }

            #[tokio::test]
            $(#[$attr])*
            async fn an_account_holds_one_identity_per_issuer_even_under_concurrent_links() {
                let (store, _guard) = make().await;
                let owner = store
                    .create_user(NewUser::default(), &key("p1"), None, audit())
                    .await
                    .unwrap();
                // A second subject at the same issuer is refused.
                let second = store
                    .link_identity(owner.user.id, &key("p2"), None, audit())
                    .await;
                assert!(
                    matches!(second, Err(StoreError::IssuerAlreadyLinked)),
                    "{second:?}"
                );
                // An account with no identity yet, and ten subjects of one issuer racing for it.
                let target = store
                    .insert_user(NewUser::default(), audit())
                    .await
                    .unwrap();
                let attempts = (0..10).map(|i| {
                    let store = store.clone();
                    let id = target.id;
                    async move {
                        store
                            .link_identity(id, &key(&format!("racer-{i}")), None, audit())
                            .await
                    }
                });
                let results = futures_util::future::join_all(attempts).await;
                let won = results.iter().filter(|r| r.is_ok()).count();
                let refused = results
                    .iter()
                    .filter(|r| matches!(r, Err(StoreError::IssuerAlreadyLinked)))
                    .count();
                assert_eq!((won, refused), (1, 9), "{results:?}");
                assert_eq!(store.identities(target.id).await.unwrap().len(), 1);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn external_ids_are_unique_and_exact() {
                let (store, _guard) = make().await;
                let with_id = |id: &str| NewUser {
                    external_id: Some(id.to_owned()),
                    ..NewUser::default()
                };
                let created = store
                    .create_user(with_id("ext-1"), &key("e1"), None, audit())
                    .await
                    .unwrap();
                let duplicate = store
                    .create_user(with_id("ext-1"), &key("e2"), None, audit())
                    .await;
                assert!(
                    matches!(duplicate, Err(StoreError::Duplicate(_))),
                    "{duplicate:?}"
                );
                assert!(
                    store.find_by_identity(&key("e2")).await.unwrap().is_none(),
                    "nothing half-written"
                );
                let found = store.find_by_external_id("ext-1").await.unwrap().unwrap();
                assert_eq!(found.id, created.user.id);
                assert!(store.find_by_external_id("EXT-1").await.unwrap().is_none());
                let second = store
                    .create_user(NewUser::default(), &key("e3"), None, audit())
                    .await
                    .unwrap();
                let taken = store
                    .update_user(
                        second.user.id,
                        None,
                        UserUpdate {
                            external_id: Some(Some("ext-1".into())),
                            ..UserUpdate::default()
                        },
                        None,
                    )
                    .await;
                assert!(matches!(taken, Err(StoreError::Duplicate(_))), "{taken:?}");
            }

            #[tokio::test]
            $(#[$attr])*
            async fn verified_email_lookup_is_case_insensitive_and_verified_only() {
                let (store, _guard) = make().await;
                store
                    .create_user(named("Kim@Example.com", true), &key("k1"), None, audit())
                    .await
                    .unwrap();
                store
                    .create_user(named("kim@example.com", false), &key("k2"), None, audit())
                    .await
                    .unwrap();
                let found = store
                    .find_by_verified_email("KIM@example.COM", 2)
                    .await
                    .unwrap();
                assert_eq!(found.len(), 1);
                assert!(found[0].email_verified);
                store
                    .create_user(named("kim@example.com", true), &key("k3"), None, audit())
                    .await
                    .unwrap();
                assert_eq!(
                    store
                        .find_by_verified_email("kim@example.com", 5)
                        .await
                        .unwrap()
                        .len(),
                    2
                );
                assert_eq!(
                    store
                        .find_by_verified_email("kim@example.com", 1)
                        .await
                        .unwrap()
                        .len(),
                    1
                );
                assert!(
                    store
                        .find_by_verified_email("nobody@example.com", 2)
                        .await
                        .unwrap()
                        .is_empty()
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn updates_check_the_version_they_read() {
                let (store, _guard) = make().await;
                let user = store
                    .create_user(NewUser::default(), &key("u"), None, audit())
                    .await
                    .unwrap()
                    .user;
                let rename = |name: &str| UserUpdate {
                    display_name: Some(Some(name.to_owned())),
                    ..UserUpdate::default()
                };
                let updated = store
                    .update_user(user.id, Some(user.version), rename("one"), None)
                    .await
                    .unwrap();
                assert_eq!(updated.version, user.version + 1);
                assert_eq!(updated.display_name.as_deref(), Some("one"));
                let stale = store
                    .update_user(user.id, Some(user.version), rename("two"), None)
                    .await;
                assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
                let unconditional = store
                    .update_user(user.id, None, rename("three"), None)
                    .await
                    .unwrap();
                assert_eq!(unconditional.display_name.as_deref(), Some("three"));
                let stored = store.get_user(user.id).await.unwrap().unwrap();
                assert_eq!(stored, unconditional);
                let missing = store
                    .update_user(uuid::Uuid::now_v7(), None, rename("x"), None)
                    .await;
                assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            $(#[$attr])*
            async fn concurrent_changes_are_never_lost() {
                let (store, _guard) = make().await;
                let id = store
                    .create_user(NewUser::default(), &key("c"), None, audit())
                    .await
                    .unwrap()
                    .user
                    .id;
                let gate = Arc::new(tokio::sync::Barrier::new(12));
                let mut tasks = Vec::new();
                for i in 0..12 {
                    let (store, gate) = (store.clone(), Arc::clone(&gate));
                    tasks.push(tokio::spawn(async move {
                        gate.wait().await;
                        store.grant_role(id, &format!("role-{i}")).await
                    }));
                }
                for task in tasks {
                    task.await.unwrap().unwrap();
                }
                let user = store.get_user(id).await.unwrap().unwrap();
                assert_eq!(user.role_names().len(), 12, "{:?}", user.role_names());
                let user = store.revoke_role(id, "role-3").await.unwrap();
                assert!(!user.has_role("role-3"));
                assert_eq!(user.role_names().len(), 11);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn status_changes() {
                let (store, _guard) = make().await;
                let pending = NewUser {
                    status: UserStatus::PendingApproval,
                    ..NewUser::default()
                };
                let id = store
                    .create_user(pending, &key("s"), None, audit())
                    .await
                    .unwrap()
                    .user
                    .id;
                assert_eq!(store.approve(id).await.unwrap().status, UserStatus::Active);
                assert_eq!(
                    store.deactivate(id).await.unwrap().status,
                    UserStatus::Deactivated
                );
                assert_eq!(
                    store.reactivate(id).await.unwrap().status,
                    UserStatus::Active
                );
            }

            #[tokio::test]
            $(#[$attr])*
            async fn logins_are_recorded_without_a_new_version() {
                let (store, _guard) = make().await;
                let created = store
                    .create_user(NewUser::default(), &key("r"), None, audit())
                    .await
                    .unwrap();
                let at = chrono::Utc::now() + chrono::TimeDelta::seconds(60);
                store
                    .record_login(&key("r"), at, Some("fp2"))
                    .await
                    .unwrap();
                let (user, identity) = store.find_by_identity(&key("r")).await.unwrap().unwrap();
                assert_eq!(identity.claims_fingerprint.as_deref(), Some("fp2"));
                let close = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    (t.unwrap() - at).num_milliseconds().abs() < 1
                };
                assert!(close(identity.last_login_at));
                assert!(close(user.last_login_at));
                assert_eq!(user.version, created.user.version);
                let missing = store.record_login(&key("nobody"), at, None).await;
                assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
            }

            #[tokio::test]
            $(#[$attr])*
            async fn deleted_identities_are_never_provisioned_again() {
                let (store, _guard) = make().await;
                let id = store
                    .create_user(NewUser::default(), &key("d"), None, audit())
                    .await
                    .unwrap()
                    .user
                    .id;
                let other = store
                    .create_user(NewUser::default(), &key("d2"), None, audit())
                    .await
                    .unwrap()
                    .user
                    .id;
                let linked = IdentityKey::new("https://other.example.com", "d3");
                store
                    .link_identity(id, &linked, None, audit())
                    .await
                    .unwrap();
                let deleted = AuditEvent::new(AuditKind::Deleted, Actor::Application);
                assert!(store.delete_user(id, deleted.clone()).await.unwrap());
                assert!(!store.delete_user(id, deleted).await.unwrap());
                assert!(store.get_user(id).await.unwrap().is_none());
                assert!(store.find_by_identity(&key("d")).await.unwrap().is_none());
                for k in [key("d"), linked] {
                    let again = store
                        .create_user(NewUser::default(), &k, None, audit())
                        .await;
                    assert!(
                        matches!(again, Err(StoreError::IdentityDeleted)),
                        "{k:?}: {again:?}"
                    );
                    let link = store.link_identity(other, &k, None, audit()).await;
                    assert!(
                        matches!(link, Err(StoreError::IdentityDeleted)),
                        "{k:?}: {link:?}"
                    );
                }
            }

            #[tokio::test]
            $(#[$attr])*
            async fn users_without_identities_and_unique_login_names() {
                let (store, _guard) = make().await;
                let with_name = |name: &str| NewUser {
                    user_name: Some(name.to_owned()),
                    ..NewUser::default()
                };
                let created = store
                    .insert_user(with_name("Bjensen@Example.com"), audit())
                    .await
                    .unwrap();
                assert!(store.identities(created.id).await.unwrap().is_empty());
                let found = store
                    .find_by_user_name("bjensen@example.COM")
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(found.id, created.id);
                let taken = store
                    .insert_user(with_name("BJENSEN@example.com"), audit())
                    .await;
                assert!(
                    matches!(taken, Err(StoreError::Duplicate("user_name"))),
                    "{taken:?}"
                );
                let by_login = store
                    .create_user(with_name("bjensen@example.com"), &key("b"), None, audit())
                    .await;
                assert!(
                    matches!(by_login, Err(StoreError::Duplicate("user_name"))),
                    "{by_login:?}"
                );
                assert!(store.find_by_identity(&key("b")).await.unwrap().is_none());
                // Users without a login name do not collide.
                store
                    .insert_user(NewUser::default(), audit())
                    .await
                    .unwrap();
                store
                    .insert_user(NewUser::default(), audit())
                    .await
                    .unwrap();
            }

            #[tokio::test]
            $(#[$attr])*
            async fn users_page_in_a_stable_order() {
                let (store, _guard) = make().await;
                let mut ids = Vec::new();
                for _ in 0..7 {
                    ids.push(
                        store
                            .insert_user(NewUser::default(), audit())
                            .await
                            .unwrap()
                            .id,
                    );
                }
                ids.sort();
                let first = store.list_users(None, 3).await.unwrap();
                let second = store.list_users(Some(first[2].id), 3).await.unwrap();
                let third = store.list_users(Some(second[2].id), 3).await.unwrap();
                let paged: Vec<_> = first
                    .iter()
                    .chain(&second)
                    .chain(&third)
                    .map(|u| u.id)
                    .collect();
                assert_eq!(paged, ids);
                assert_eq!(third.len(), 1);
            }

            #[tokio::test]
            $(#[$attr])*
            async fn groups_and_memberships() {
                let (store, _guard) = make().await;
                let a = store
                    .insert_user(NewUser::default(), audit())
                    .await
                    .unwrap()
                    .id;
                let b = store
                    .insert_user(NewUser::default(), audit())
                    .await
                    .unwrap()
                    .id;
                let group = store
                    .insert_group(NewGroup {
                        display_name: "Admins".into(),
                        external_id: Some("g-1".into()),
                        members: vec![a],
                        ..NewGroup::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(group.members, vec![a]);
                assert_eq!(store.get_group(group.id).await.unwrap().unwrap(), group);
                let dup = store
                    .insert_group(NewGroup {
                        display_name: "ADMINS".into(),
                        ..NewGroup::default()
                    })
                    .await;
                assert!(
                    matches!(dup, Err(StoreError::Duplicate("display_name"))),
                    "{dup:?}"
                );
                let ghost = store
                    .insert_group(NewGroup {
                        display_name: "Ghosts".into(),
                        members: vec![uuid::Uuid::now_v7()],
                        ..NewGroup::default()
                    })
                    .await;
                assert!(matches!(ghost, Err(StoreError::NotFound)), "{ghost:?}");

                let (updated, affected) = store
                    .update_group(
                        group.id,
                        Some(group.version),
                        GroupUpdate {
                            members: Some(vec![b]),
                            ..GroupUpdate::default()
                        },
                    )
                    .await
                    .unwrap();
                let mut expected = vec![a, b];
                expected.sort();
                assert_eq!(affected, expected);
                assert_eq!(updated.members, vec![b]);
                let stale = store
                    .update_group(group.id, Some(group.version), GroupUpdate::default())
                    .await;
                assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
                assert!(store.groups_of(a).await.unwrap().is_empty());
                assert_eq!(store.groups_of(b).await.unwrap()[0].id, group.id);
                let (renamed, affected) = store
                    .update_group(
                        group.id,
                        None,
                        GroupUpdate {
                            display_name: Some("Operators".into()),
                            ..GroupUpdate::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(renamed.display_name, "Operators");
                assert_eq!(affected, vec![b], "a rename affects every member");
                assert_eq!(store.list_groups(None, 10).await.unwrap().len(), 1);

                // Deleting a member user removes the membership.
                store
                    .delete_user(b, AuditEvent::new(AuditKind::Deleted, Actor::Application))
                    .await
                    .unwrap();
                assert!(
                    store
                        .get_group(group.id)
                        .await
                        .unwrap()
                        .unwrap()
                        .members
                        .is_empty()
                );
                assert_eq!(store.delete_group(group.id).await.unwrap(), Some(vec![]));
                assert_eq!(store.delete_group(group.id).await.unwrap(), None);
                assert!(store.get_group(group.id).await.unwrap().is_none());
            }

            #[tokio::test]
            $(#[$attr])*
            async fn every_change_is_published_before_the_write_returns() {
                let (store, _guard) = make().await;
                let seen = Arc::new(Mutex::new(Vec::new()));
                let _subscription = {
                    let seen = Arc::clone(&seen);
                    store
                        .changes()
                        .subscribe(move |event| seen.lock().unwrap().push(*event))
                };
                let changed = |events: &[StoreEvent], id, version| {
                    events.contains(&StoreEvent::Changed {
                        user_id: id,
                        version,
                    })
                };
                let id = store
                    .create_user(NewUser::default(), &key("p"), None, audit())
                    .await
                    .unwrap()
                    .user
                    .id;
                assert!(changed(&seen.lock().unwrap(), id, 1));
                store.deactivate(id).await.unwrap();
                assert!(changed(&seen.lock().unwrap(), id, 2));
                store
                    .delete_user(id, AuditEvent::new(AuditKind::Deleted, Actor::Application))
                    .await
                    .unwrap();
                assert!(
                    seen.lock()
                        .unwrap()
                        .contains(&StoreEvent::Deleted { user_id: id })
                );
            }
        }
    };
    ($name:ident, $make:expr) => {
        store_contract!($name, [], $make);
    };
}

store_contract!(memory, {
    (
        tower_jit_provisioning::MemoryStore::new(),
        Box::new(()) as Guard,
    )
});

store_contract!(sqlite, {
    let (store, dir) = common::sqlite_store().await;
    (store, Box::new(dir) as Guard)
});

store_contract!(
    postgres,
    [#[cfg_attr(
        not(jit_test_postgres),
        ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
    )]],
    {
    let db = common::PgDatabase::create("store_contract::postgres").await;
    let store = db.store().await;
    (store, Box::new(db) as Guard)
});
