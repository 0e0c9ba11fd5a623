//! Migration through the layer, on a real SQLite file: the legacy account hook is asked once
//! per identity with only a trusted address, its answer adopted atomically and audited, a
//! failing hook writes nothing, creation-off still lets legacy accounts in, and explaining
//! says what would be adopted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Harness;
use tower_jit_provisioning::provision::migration::{
    LegacyAccount, LegacyLookup, legacy_accounts_fn,
};
use tower_jit_provisioning::{
    AccountAction, AuditKind, DenyReason, ProvisioningLayerBuilder, RoleSource, UserStore,
};

/// A hook that knows `ada@example.com` as legacy account 42, counts its calls and records the
/// addresses it was given.
#[derive(Clone, Default)]
struct Crm {
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    fail: bool,
}

impl Crm {
    fn hook(&self) -> impl tower_jit_provisioning::provision::migration::LegacyAccounts {
        let crm = self.clone();
        legacy_accounts_fn("crm", move |lookup: LegacyLookup| {
            let crm = crm.clone();
            async move {
                crm.calls.fetch_add(1, Ordering::SeqCst);
                crm.seen
                    .lock()
                    .unwrap()
                    .push(lookup.trusted_email().map(str::to_owned));
                // Slow enough that concurrent first requests overlap.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if crm.fail {
                    return Err("the CRM database is down".into());
                }
                Ok(match lookup.trusted_email() {
                    Some(email) if email.eq_ignore_ascii_case("ada@example.com") => Some(
                        LegacyAccount::new("42")
                            .roles(["editor"])
                            .attribute("plan", "pro")
                            .display_name("Ada (legacy)"),
                    ),
                    _ => None,
                })
            }
        })
    }
}

impl Crm {
    /// A layer trusting the test issuer for `trusted` addresses, with this CRM as its hook;
    /// `more` configures the rest.
    async fn harness(
        &self,
        trusted: &'static str,
        more: impl FnOnce(ProvisioningLayerBuilder) -> ProvisioningLayerBuilder,
    ) -> Harness {
        let hook = self.hook();
        Harness::start(move |b, i| {
            more(
                b.issuer(i.trust_email_domains([trusted]))
                    .legacy_accounts(hook),
            )
        })
        .await
    }
}

impl Harness {
    /// A token of `subject` with `email`, verified or not.
    fn person(&self, subject: &str, email: &str, verified: bool) -> String {
        self.idp
            .id_token()
            .subject(subject)
            .email(email, verified)
            .sign()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_ask_the_hook_once_and_adopt_once() {
    let crm = Crm::default();
    let h = crm.harness("example.com", |b| b).await;
    let token = h.person("ada", "ada@example.com", true);
    let replies = futures_util::future::join_all((0..16).map(|_| h.me(&token))).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["id"], replies[0].json()["id"]);
    }
    assert_eq!(
        crm.calls.load(Ordering::SeqCst),
        1,
        "one question per identity"
    );
    let user = replies[0].json();
    assert_eq!(user["display_name"], "Ada (legacy)");
    assert_eq!(user["attributes"]["legacy_id"], "42");
    assert_eq!(user["attributes"]["plan"], "pro");
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    let stored = h.store.get_user(id).await.unwrap().unwrap();
    assert!(
        stored
            .roles
            .iter()
            .any(|g| g.role == "editor" && g.source == RoleSource::Manual)
    );
    assert_eq!(
        h.store.find_by_legacy_id("42").await.unwrap().map(|u| u.id),
        Some(id)
    );
    let events = h.store.audit_events(Some(id)).await.unwrap();
    let linked: Vec<_> = events
        .iter()
        .filter(|e| e.kind == AuditKind::Linked)
        .collect();
    assert_eq!(linked.len(), 1, "{events:?}");
    assert_eq!(linked[0].reason.as_deref(), Some("legacy:crm"));
    assert!(!events.iter().any(|e| e.kind == AuditKind::Provisioned));
    // A later token of the same person finds the account: the hook is not asked again.
    let later = h
        .idp
        .id_token()
        .subject("ada")
        .email("ada@example.com", true)
        .claim("name", "Ada Lovelace")
        .sign();
    assert_eq!(h.me(&later).await.json()["id"], user["id"]);
    assert_eq!(crm.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_hook_gets_an_address_only_from_an_issuer_trusted_for_its_domain() {
    let crm = Crm::default();
    // Trusted for partner.example only: ada's verified example.com address is not vouched for.
    let h = crm.harness("partner.example", |b| b).await;
    let ada = h.person("ada", "ada@example.com", true);
    let reply = h.me(&ada).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.json()["attributes"].get("legacy_id").is_none(),
        "{}",
        reply.body
    );
    let unverified = h.person("bob", "bob@partner.example", false);
    assert_eq!(h.me(&unverified).await.status, 200);
    let trusted = h.person("carol", "carol@PARTNER.example", true);
    assert_eq!(h.me(&trusted).await.status, 200);
    assert_eq!(
        *crm.seen.lock().unwrap(),
        [None, None, Some("carol@partner.example".to_owned())]
    );
    assert!(h.store.find_by_legacy_id("42").await.unwrap().is_none());
}

#[tokio::test]
async fn a_failing_hook_answers_503_and_writes_nothing() {
    let crm = Crm {
        fail: true,
        ..Crm::default()
    };
    let h = crm.harness("example.com", |b| b).await;
    let token = h.person("ada", "ada@example.com", true);
    let reply = h.me(&token).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    assert!(!reply.body.contains("CRM"), "{}", reply.body);
    assert_eq!(h.count("users").await, 0);
    assert_eq!(h.count("identities").await, 0);
}

#[tokio::test]
async fn with_creation_off_only_people_with_a_legacy_account_get_in() {
    let crm = Crm::default();
    let h = crm
        .harness("example.com", |b| b.create_accounts(false))
        .await;
    let ada = h.person("ada", "ada@example.com", true);
    assert_eq!(h.me(&ada).await.status, 200);
    let eve = h.person("eve", "eve@example.com", true);
    let refused = h.me(&eve).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], DenyReason::NotProvisioned.code());
    // Another identity with ada's address: the legacy account is hers already.
    let mallory = h.person("mallory", "ada@example.com", true);
    let claimed = h.me(&mallory).await;
    assert_eq!(claimed.status, 403);
    assert_eq!(
        claimed.json()["code"],
        DenyReason::LegacyAccountClaimed.code()
    );
    assert_eq!(h.count("users").await, 1);
    let denied = h
        .store
        .audit_events(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Denied)
        .map(|e| e.reason.unwrap_or_default())
        .collect::<Vec<_>>();
    assert_eq!(denied, ["not_provisioned", "legacy_account_claimed"]);
}

#[tokio::test]
async fn explaining_says_what_would_be_adopted_and_writes_nothing() {
    let crm = Crm::default();
    let h = crm.harness("example.com", |b| b).await;
    let claims = serde_json::json!({
        "sub": "ada", "email": "ada@example.com", "email_verified": true
    });
    let explained = h.explain(claims.clone()).await;
    assert!(explained.admitted, "{explained}");
    assert_eq!(explained.account_action, Some(AccountAction::Adopted));
    let account = explained.account.as_ref().unwrap();
    assert_eq!(account.attributes["legacy_id"], "42");
    assert!(
        explained.trace.to_string().contains("legacy:crm"),
        "{}",
        explained.trace
    );
    assert_eq!(h.count("users").await, 0);

    // Once someone else adopted it, the explanation says another identity would be refused.
    let token = h.person("ada", "ada@example.com", true);
    assert_eq!(h.me(&token).await.status, 200);
    let other = serde_json::json!({
        "sub": "mallory", "email": "ada@example.com", "email_verified": true
    });
    let explained = h.explain(other).await;
    assert!(!explained.admitted);
    assert_eq!(explained.reason, Some(DenyReason::LegacyAccountClaimed));
}
