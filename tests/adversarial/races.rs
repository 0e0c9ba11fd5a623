//! Races: many first logins at once, linking at once, and a deactivation while requests are in
//! flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_jit_provisioning::{Actor, AuditEvent, AuditKind, NewUser, UserStore};

use crate::harness::{Target, assert_denied};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_logins_for_one_person_make_one_account() {
    let target = Arc::new(Target::default().await);
    let gate = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        // A different token each time: the token cache cannot absorb the race.
        let token = target.idp().id_token().subject("popular").sign();
        let (target, gate) = (Arc::clone(&target), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            target.sign_in(&token).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let written = target.written().await;
    assert_eq!((written.users, written.identities), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_linking_to_one_account_links_one_identity_per_issuer() {
    // Two people at one issuer both present the external id of one account created ahead of
    // time: exactly one of them gets it.
    let target = Arc::new(Target::start(|b, i| b.issuer(i).link_by_claim("employee_id")).await);
    let account = target
        .store
        .insert_user(
            NewUser {
                external_id: Some("E-1001".into()),
                ..NewUser::default()
            },
            AuditEvent::new(AuditKind::Provisioned, Actor::Application),
        )
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let token = target
            .idp()
            .id_token()
            .subject(format!("claimant-{}", i % 2))
            .claim("employee_id", "E-1001")
            .sign();
        let (target, gate) = (Arc::clone(&target), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let id = target.sign_in(&token).await;
            (i % 2, id)
        }));
    }
    let mut landed = [
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    ];
    for task in tasks {
        let (who, id) = task.await.unwrap();
        landed[who].insert(id);
    }
    // Each claimant always sees the same account, and only one of them got the linked one.
    assert_eq!(landed[0].len(), 1);
    assert_eq!(landed[1].len(), 1);
    let account = account.id.to_string();
    let winners = landed.iter().filter(|ids| ids.contains(&account)).count();
    assert_eq!(winners, 1);
    let identities = target
        .store
        .identities(account.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(identities.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_starting_after_a_deactivation_committed_is_let_through() {
    let target = Arc::new(Target::default().await);
    let token = target.idp().id_token().subject("in-flight").sign();
    let id: uuid::Uuid = target.sign_in(&token).await.parse().unwrap();
    // Steady traffic on the cached token, each request timed from its start.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (target, token, stop) = (Arc::clone(&target), token.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let status = target.get(&token).await.status;
                seen.push((started, status));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    target.store.deactivate(id).await.unwrap();
    let committed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut before = 0;
    let mut after = 0;
    for worker in workers {
        for (started, status) in worker.await.unwrap() {
            if started > committed {
                assert_eq!(status, 403, "a request after the deactivation got through");
                after += 1;
            } else if status == 200 {
                before += 1;
            }
        }
    }
    assert!(
        before > 0 && after > 0,
        "traffic on both sides: {before} / {after}"
    );
    assert_denied(&target.get(&token).await, "deactivated");
}
