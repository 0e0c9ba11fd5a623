//! Explaining decisions on a real SQLite file: a trace for every kind of decision (admission,
//! mapping, groups, roles, linking, the account, sync) naming the rule and the value it saw; a
//! dry run that writes nothing; refusals whose persisted audit events carry the trace that
//! decided them; and tokens refused with their reason.

use super::{Harness, create_without_login};
use serde_json::{Value, json};
use tower_jit_provisioning::provision::groups::{GroupResolver, ResolvedGroups};
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{
    AccountAction, AttributeMapping, AuditEvent, AuditKind, DecisionTrace, DenyReason, Error,
    Explanation, Field, NewUser, SignIn, Stage, SyncPolicy, TokenError, TraceStep, UserStatus,
    UserStore, Verdict,
};

impl Harness {
    pub(super) async fn explain(&self, claims: Value) -> Explanation {
        let Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        self.layer
            .explain_claims(self.idp.url(), claims)
            .await
            .unwrap()
    }

    /// Every row of every table the layer writes, counted.
    async fn rows(&self) -> Vec<(&'static str, i64)> {
        let mut counts = Vec::new();
        for table in [
            "jit_users",
            "jit_identities",
            "jit_identity_tombstones",
            "jit_audit_events",
            "jit_groups",
            "jit_group_members",
            "jit_sessions",
        ] {
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(self.store.pool())
                    .await
                    .unwrap();
            counts.push((table, count));
        }
        let versions: i64 = sqlx::query_scalar("SELECT coalesce(sum(version), 0) FROM jit_users")
            .fetch_one(self.store.pool())
            .await
            .unwrap();
        counts.push(("user versions", versions));
        counts
    }

    /// The last `denied` event, as persisted.
    async fn last_denial(&self) -> AuditEvent {
        self.store
            .audit_events(None)
            .await
            .unwrap()
            .into_iter()
            .rfind(|e| e.kind == AuditKind::Denied)
            .expect("a denied event")
    }
}

/// The step of `rule`, which must be there.
fn step<'a>(trace: &'a DecisionTrace, rule: &str) -> &'a TraceStep {
    trace
        .rule(rule)
        .unwrap_or_else(|| panic!("no step `{rule}` in\n{trace}"))
}

fn assert_step(trace: &DecisionTrace, rule: &str, verdict: Verdict, seen: Option<Value>) {
    let step = step(trace, rule);
    assert_eq!(step.verdict, verdict, "{rule} in\n{trace}");
    if let Some(seen) = seen {
        assert_eq!(step.seen.as_ref(), Some(&seen), "{rule} in\n{trace}");
    }
}

#[tokio::test]
async fn refusals_carry_the_deciding_trace_in_their_persisted_audit_event() {
    let h = Harness::start(|b, i| {
        b.issuer(
            i.allowed_domains(["example.com"])
                .require_claim("tid", "tenant-a")
                .required_groups(["staff"]),
        )
        .admit(|sign_in: SignIn| async move {
            if sign_in.claim("banned") == Some(&Value::Bool(true)) {
                Err(DenyReason::Policy("banned"))
            } else {
                Ok(())
            }
        })
    })
    .await;
    let token = |sub: &str, email: &str, tid: &str, groups: &[&str]| {
        h.idp
            .id_token()
            .subject(sub)
            .email(email, true)
            .claim("tid", tid)
            .groups(groups.iter().copied())
    };
    let cases = [
        (
            token("a", "ann@evil.example", "tenant-a", &["staff"]).sign(),
            "domain_not_allowed",
            "allowed_domains",
            json!("evil.example"),
        ),
        (
            token("b", "bo@example.com", "tenant-b", &["staff"]).sign(),
            "claim_mismatch",
            "required_claim:tid",
            json!("tenant-b"),
        ),
        (
            token("c", "cy@example.com", "tenant-a", &["contractors"]).sign(),
            "missing_group",
            "required_group:staff",
            json!(["contractors"]),
        ),
    ];
    for (token, code, rule, seen) in cases {
        let reply = h.me(&token).await;
        assert_eq!(reply.status, 403, "{code}: {}", reply.body);
        let denied = h.last_denial().await;
        assert_eq!(denied.reason.as_deref(), Some(code));
        let trace = denied.trace.expect("a refusal carries its trace");
        let refusal = trace.refusal().expect("the refusing step");
        assert_eq!(refusal.rule, rule, "{trace}");
        assert_eq!(refusal.seen.as_ref(), Some(&seen), "{trace}");
        assert_eq!(
            trace.steps.last(),
            Some(refusal),
            "the trace ends at the refusal"
        );
        let persisted = serde_json::to_string(&h.store.audit_events(None).await.unwrap()).unwrap();
        assert!(!persisted.contains(&token), "no token in the audit trail");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!persisted.contains(signature));
    }
    // The rules before the refusing one are in the trace too, with what they saw.
    let denied = h.last_denial().await.trace.unwrap();
    assert_step(
        &denied,
        "allowed_domains",
        Verdict::Passed,
        Some(json!("example.com")),
    );
    assert_step(
        &denied,
        "required_claim:tid",
        Verdict::Passed,
        Some(json!("tenant-a")),
    );

    let banned = token("d", "di@example.com", "tenant-a", &["staff"])
        .claim("banned", true)
        .sign();
    assert_eq!(h.me(&banned).await.status, 403);
    let trace = h.last_denial().await.trace.unwrap();
    let refusal = trace.refusal().unwrap();
    assert_eq!(refusal.rule, "predicate");
    assert_eq!(refusal.target.as_deref(), Some("banned"));

    // A refusal by the account's state names the account and its state.
    let ok = token("e", "ed@example.com", "tenant-a", &["staff"]).sign();
    let id = h.me(&ok).await.json()["id"].as_str().unwrap().to_owned();
    h.store
        .deactivate(uuid::Uuid::parse_str(&id).unwrap())
        .await
        .unwrap();
    assert_eq!(h.me(&ok).await.status, 403);
    let denied = h.last_denial().await;
    assert_eq!(denied.reason.as_deref(), Some("deactivated"));
    let trace = denied.trace.unwrap();
    let refusal = trace.refusal().unwrap();
    assert_eq!(
        (refusal.stage, refusal.rule.as_str()),
        (Stage::Account, "status")
    );
    assert_eq!(refusal.seen, Some(json!("deactivated")));
    assert_eq!(refusal.target.as_deref(), Some(id.as_str()));
    assert_step(&trace, "required_group:staff", Verdict::Passed, None);
}

#[tokio::test]
async fn a_refusal_for_want_of_an_account_says_creation_is_off() {
    let h = Harness::start(|b, i| b.issuer(i).create_accounts(false)).await;
    let stranger = h.idp.id_token().subject("stranger").sign();
    assert_eq!(h.me(&stranger).await.status, 403);
    let trace = h.last_denial().await.trace.unwrap();
    assert_eq!(trace.refusal().unwrap().rule, "create_accounts");

    let explained = h.explain(json!({"sub": "stranger"})).await;
    assert!(!explained.admitted);
    assert_eq!(explained.reason, Some(DenyReason::NotProvisioned));
    assert_eq!(explained.account_action, None);
    assert_eq!(explained.trace.refusal().unwrap().rule, "create_accounts");
}

#[tokio::test]
async fn explain_traces_mapping_roles_and_admission_of_a_first_sign_in() {
    let h = Harness::start(|b, i| {
        b.issuer(i.allowed_domains(["example.com"])).mapping(
            AttributeMapping::new()
                .attribute("department", "employee.department")
                .group_role("staff-admins", "admin")
                .claim_role("acr", "mfa", "strong")
                .default_roles(["member"]),
        )
    })
    .await;
    let explained = h
        .explain(json!({
            "sub": "ann-1",
            "email": "Ann@Example.COM",
            "email_verified": true,
            "name": "Ann Example",
            "groups": ["staff", "staff-admins"],
            "employee": {"department": "R&D"},
        }))
        .await;
    let trace = &explained.trace;
    assert!(explained.admitted, "{explained}");
    assert_eq!(explained.reason, None);
    assert_eq!(explained.account_action, Some(AccountAction::Created));
    let account = explained.account.as_ref().unwrap();
    assert_eq!(account.email.as_deref(), Some("Ann@example.com"));
    assert_eq!(account.role_names(), ["admin", "member"]);
    assert_eq!(account.attributes["department"], "R&D");
    assert_eq!(account.status, UserStatus::Active);

    // Mapping: which claim filled which field.
    assert_step(
        trace,
        "field:display_name",
        Verdict::Mapped,
        Some(json!("Ann Example")),
    );
    assert_eq!(
        step(trace, "field:display_name").note.as_deref(),
        Some("from claim name")
    );
    assert_eq!(
        step(trace, "field:email").note.as_deref(),
        Some("from claim email, verified")
    );
    assert_step(trace, "field:locale", Verdict::Absent, None);
    assert_step(
        trace,
        "attribute:department",
        Verdict::Mapped,
        Some(json!("R&D")),
    );
    assert_step(
        trace,
        "groups",
        Verdict::Mapped,
        Some(json!(["staff", "staff-admins"])),
    );
    // Roles: which rule granted which role, and which did not match on what.
    assert_step(trace, "group:staff-admins", Verdict::Granted, None);
    assert_eq!(
        step(trace, "group:staff-admins").target.as_deref(),
        Some("admin")
    );
    assert_step(
        trace,
        "claim:acr=mfa",
        Verdict::NotMatched,
        Some(Value::Null),
    );
    assert!(
        trace.stage(Stage::Roles).any(|s| s.rule == "default"
            && s.verdict == Verdict::Granted
            && s.target.as_deref() == Some("member")),
        "{trace}"
    );
    // Admission and the account.
    assert_step(
        trace,
        "allowed_domains",
        Verdict::Passed,
        Some(json!("example.com")),
    );
    assert_step(trace, "create_accounts", Verdict::Passed, None);
    assert_step(trace, "identity", Verdict::Created, None);

    // The claim rule matches on the value it sees.
    let strong = h
        .explain(
            json!({"sub": "ann-2", "email": "a2@example.com", "email_verified": true,
            "acr": "mfa"}),
        )
        .await;
    assert_step(
        &strong.trace,
        "claim:acr=mfa",
        Verdict::Granted,
        Some(json!("mfa")),
    );

    // Refused: the trace ends at the rule, with the value seen, and no account is shown.
    let refused = h
        .explain(json!({"sub": "eve", "email": "eve@evil.example", "email_verified": true}))
        .await;
    assert!(!refused.admitted);
    assert_eq!(refused.reason, Some(DenyReason::DomainNotAllowed));
    assert!(refused.account.is_none());
    assert_eq!(
        refused.trace.refusal().unwrap().seen,
        Some(json!("evil.example"))
    );
    let json = serde_json::to_value(&refused).unwrap();
    assert_eq!(json["reason"], "domain_not_allowed");
    assert_eq!(json["admitted"], false);
    assert!(
        refused
            .to_string()
            .starts_with("refused: domain_not_allowed\n")
    );
    assert!(
        refused
            .to_string()
            .contains("admission  allowed_domains                seen \"evil.example\"  refused")
    );
}

#[derive(Debug)]
struct Unreachable;

impl GroupResolver for Unreachable {
    fn groups<'a>(&'a self, _: &'a SignIn) -> ResolvedGroups<'a> {
        Box::pin(async { None })
    }
}

#[derive(Debug)]
struct Answers;

impl GroupResolver for Answers {
    fn groups<'a>(&'a self, _: &'a SignIn) -> ResolvedGroups<'a> {
        Box::pin(async { Some(vec!["from-graph".to_owned()]) })
    }
}

#[tokio::test]
async fn explain_traces_a_group_overage_resolved_or_not() {
    let overage = json!({"sub": "many-groups", "hasgroups": true});
    let unresolved = Harness::start(|b, i| b.issuer(i.group_resolver(Unreachable))).await;
    let explained = unresolved.explain(overage.clone()).await;
    assert_step(&explained.trace, "group_overage", Verdict::Unresolved, None);
    assert_step(&explained.trace, "groups", Verdict::Absent, None);

    let resolved = Harness::start(|b, i| {
        b.issuer(i.group_resolver(Answers))
            .mapping(AttributeMapping::new().group_role("from-graph", "graph-role"))
    })
    .await;
    let explained = resolved.explain(overage).await;
    assert_step(
        &explained.trace,
        "group_overage",
        Verdict::Resolved,
        Some(json!(["from-graph"])),
    );
    assert_eq!(
        explained.account.unwrap().role_names(),
        ["graph-role"],
        "{}",
        explained.trace
    );
}

#[tokio::test]
async fn explain_traces_the_linking_candidates_considered() {
    let h = Harness::start(|b, i| {
        b.issuer(i.trust_email_domains(["example.com"]))
            .link_by_claim("oid")
            .link_by_verified_email(true)
    })
    .await;
    let ahead = create_without_login(
        &h.store,
        NewUser {
            external_id: Some("object-123".into()),
            ..NewUser::default()
        },
    )
    .await;
    for _ in 0..2 {
        create_without_login(
            &h.store,
            NewUser {
                email: Some("twin@example.com".into()),
                email_verified: true,
                ..NewUser::default()
            },
        )
        .await;
    }
    let solo = create_without_login(
        &h.store,
        NewUser {
            email: Some("solo@example.com".into()),
            email_verified: true,
            ..NewUser::default()
        },
    )
    .await;

    let by_claim = h.explain(json!({"sub": "p1", "oid": "object-123"})).await;
    assert_eq!(by_claim.account_action, Some(AccountAction::Linked));
    assert_eq!(by_claim.account.as_ref().unwrap().id, ahead);
    let taken = step(&by_claim.trace, "link_by_claim:oid");
    assert_eq!(taken.verdict, Verdict::Taken);
    assert_eq!(taken.seen, Some(json!("object-123")));
    assert_eq!(taken.target.as_deref(), Some(ahead.to_string().as_str()));

    let ambiguous = h
        .explain(
            json!({"sub": "p2", "oid": "object-999", "email": "twin@example.com",
            "email_verified": true}),
        )
        .await;
    assert_eq!(ambiguous.account_action, Some(AccountAction::Created));
    assert_step(
        &ambiguous.trace,
        "link_by_claim:oid",
        Verdict::Skipped,
        Some(json!("object-999")),
    );
    let email = step(&ambiguous.trace, "link_by_verified_email");
    assert_eq!(email.verdict, Verdict::Skipped);
    assert_eq!(email.seen, Some(json!("twin@example.com")));
    assert!(email.note.as_deref().unwrap().contains("more than one"));

    let by_email = h
        .explain(json!({"sub": "p3", "email": "solo@example.com", "email_verified": true}))
        .await;
    assert_eq!(by_email.account_action, Some(AccountAction::Linked));
    assert_eq!(by_email.account.as_ref().unwrap().id, solo);
    assert_step(
        &by_email.trace,
        "link_by_verified_email",
        Verdict::Taken,
        None,
    );

    let unverified = h
        .explain(json!({"sub": "p4", "email": "solo@example.com", "email_verified": false}))
        .await;
    assert_eq!(unverified.account_action, Some(AccountAction::Created));
    assert_step(
        &unverified.trace,
        "link_by_verified_email",
        Verdict::Skipped,
        None,
    );

    // Once someone signs in to the account with an identity at this issuer, another subject
    // there cannot take it.
    let first = h
        .idp
        .id_token()
        .subject("p3")
        .email("solo@example.com", true)
        .sign();
    assert_eq!(h.me(&first).await.json()["id"], solo.to_string());
    let second = h
        .explain(json!({"sub": "p5", "email": "solo@example.com", "email_verified": true}))
        .await;
    assert_eq!(second.account_action, Some(AccountAction::Created));
    assert_step(
        &second.trace,
        "one_identity_per_issuer",
        Verdict::Skipped,
        None,
    );
}

#[tokio::test]
async fn explain_traces_what_each_sync_policy_decides() {
    let h = Harness::start(|b, i| {
        b.issuer(i).mapping(
            AttributeMapping::new()
                .sync(Field::GivenName, SyncPolicy::Never)
                .group_role("admins", "admin")
                .default_roles(["member"]),
        )
    })
    .await;
    let token = h
        .idp
        .id_token()
        .subject("sync-1")
        .claim("name", "Ann")
        .claim("given_name", "Ann")
        .groups(["admins"])
        .sign();
    let before = h.me(&token).await.json();
    assert_eq!(before["roles"], json!(["admin", "member"]));

    // The same attributes as the last sign-in: nothing to sync.
    let same = h.layer.explain_token(&token).await.unwrap();
    assert_eq!(same.account_action, Some(AccountAction::Found));
    assert!(same.changes.is_empty());
    assert_step(&same.trace, "fingerprint", Verdict::Unchanged, None);

    let changed = h
        .explain(json!({"sub": "sync-1", "name": "Annie", "given_name": "Anna", "groups": []}))
        .await;
    assert!(changed.admitted);
    assert_eq!(changed.account_action, Some(AccountAction::Found));
    let trace = &changed.trace;
    assert_step(
        trace,
        "sync:display_name",
        Verdict::Written,
        Some(json!("Annie")),
    );
    assert_eq!(
        step(trace, "sync:display_name").note.as_deref(),
        Some("policy always")
    );
    assert_step(
        trace,
        "sync:given_name",
        Verdict::Preserved,
        Some(json!("Anna")),
    );
    assert_eq!(
        step(trace, "sync:given_name").note.as_deref(),
        Some("policy never")
    );
    assert_step(trace, "sync:family_name", Verdict::Absent, None);
    assert_step(trace, "sync:groups", Verdict::Written, Some(json!([])));
    let revoked = step(trace, "mapping:group:admins");
    assert_eq!(revoked.verdict, Verdict::Revoked);
    assert_eq!(revoked.target.as_deref(), Some("admin"));
    assert_step(trace, "default", Verdict::Kept, None);
    assert_eq!(changed.changes, ["display_name", "groups", "roles"]);
    let account = changed.account.unwrap();
    assert_eq!(account.display_name.as_deref(), Some("Annie"));
    assert_eq!(account.given_name.as_deref(), Some("Ann"));
    assert_eq!(account.role_names(), ["member"]);

    // Explained, not done: the stored account is as it was.
    let stored = h.me(&token).await.json();
    assert_eq!(stored["display_name"], "Ann");
    assert_eq!(stored["roles"], json!(["admin", "member"]));
}

#[tokio::test]
async fn explaining_writes_nothing_whatever_it_explains() {
    let h = Harness::start(|b, i| {
        b.issuer(i.allowed_domains(["example.com"]))
            .link_by_claim("oid")
            .require_approval(true)
            .mapping(AttributeMapping::new().default_roles(["member"]))
    })
    .await;
    create_without_login(
        &h.store,
        NewUser {
            external_id: Some("object-1".into()),
            ..NewUser::default()
        },
    )
    .await;
    let pending = h
        .idp
        .id_token()
        .subject("waits")
        .email("waits@example.com", true)
        .sign();
    assert_eq!(h.me(&pending).await.status, 403);
    let rows = h.rows().await;
    assert!(
        rows.iter().any(|(t, n)| *t == "jit_users" && *n == 2),
        "{rows:?}"
    );

    let creates = h
        .explain(json!({"sub": "new", "email": "new@example.com", "email_verified": true}))
        .await;
    assert_eq!(creates.account_action, Some(AccountAction::Created));
    assert_eq!(creates.reason, Some(DenyReason::PendingApproval));
    assert_eq!(
        creates.account.as_ref().unwrap().status,
        UserStatus::PendingApproval
    );
    assert_step(&creates.trace, "require_approval", Verdict::Pending, None);
    let links = h
        .explain(
            json!({"sub": "linked", "oid": "object-1", "email": "l@example.com",
            "email_verified": true}),
        )
        .await;
    assert_eq!(links.account_action, Some(AccountAction::Linked));
    let waits = h.layer.explain_token(&pending).await.unwrap();
    assert_eq!(waits.reason, Some(DenyReason::PendingApproval));
    assert_eq!(waits.account_action, Some(AccountAction::Found));
    let refused = h
        .explain(json!({"sub": "out", "email": "out@evil.example", "email_verified": true}))
        .await;
    assert_eq!(refused.reason, Some(DenyReason::DomainNotAllowed));

    assert_eq!(h.rows().await, rows, "explaining wrote nothing");
    // And a real sign-in of the person explained still creates their account.
    let new = h
        .idp
        .id_token()
        .subject("new")
        .email("new@example.com", true)
        .sign();
    assert_eq!(h.me(&new).await.json()["code"], "pending_approval");
    assert_ne!(h.rows().await, rows);
}

#[tokio::test]
async fn explain_names_why_a_token_or_claims_were_refused() {
    let h = Harness::start(|b, i| b.issuer(i)).await;
    let refused = |result: Result<Explanation, Error>| match result {
        Err(Error::InvalidToken(reason)) => reason,
        other => panic!("expected a refused token, got {other:?}"),
    };
    let expired = h
        .idp
        .id_token()
        .subject("late")
        .issued_at(1_000_000_000)
        .expires_at(1_000_000_600)
        .sign();
    assert_eq!(
        refused(h.layer.explain_token(&expired).await),
        TokenError::Expired
    );
    let good = h.idp.id_token().subject("forged").sign();
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let mut forged_signature: Vec<char> = signature.chars().collect();
    forged_signature[10] = if forged_signature[10] == 'A' {
        'B'
    } else {
        'A'
    };
    let forged = format!("{signed}.{}", forged_signature.iter().collect::<String>());
    assert_eq!(
        refused(h.layer.explain_token(&forged).await),
        TokenError::BadSignature
    );
    let stranger = TestIssuer::start().await;
    let foreign = stranger.id_token().subject("x").sign();
    assert_eq!(
        refused(h.layer.explain_token(&foreign).await),
        TokenError::UntrustedIssuer
    );
    let claims = |v: Value| v.as_object().unwrap().clone();
    assert_eq!(
        refused(
            h.layer
                .explain_claims(stranger.url(), claims(json!({"sub": "x"})))
                .await
        ),
        TokenError::UntrustedIssuer
    );
    assert_eq!(
        refused(
            h.layer
                .explain_claims(h.idp.url(), claims(json!({"name": "no subject"})))
                .await
        ),
        TokenError::InvalidSubject
    );
    assert!(h.rows().await.iter().all(|(_, n)| *n == 0));
}
