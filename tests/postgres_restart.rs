//! A real PostgreSQL restart in the middle of traffic. Its own test binary, so no other test runs
//! while the database is down. Needs `JIT_TEST_POSTGRES_URL` and `JIT_TEST_POSTGRES_CTL` (the
//! `pg_ctlcluster … main` prefix that stops and starts the server); skipped loudly without them.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{PgDatabase, Server, get_with, user_app};
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{PostgresStore, ProvisioningLayer, UserStore};

/// Stops and starts the cluster; starts it again if the test fails while it is down.
struct Cluster {
    ctl: String,
}

impl Cluster {
    fn run(&self, action: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{} {action}", self.ctl))
            .status()
            .unwrap();
        assert!(status.success(), "`{} {action}` failed", self.ctl);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("{} start", self.ctl))
            .status();
    }
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: timed out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_during_traffic_is_survived() {
    let Ok(ctl) = std::env::var("JIT_TEST_POSTGRES_CTL") else {
        eprintln!(
            "\n*** SKIPPED a_database_restart_during_traffic_is_survived: \
             JIT_TEST_POSTGRES_CTL is not set (see DEVELOPERS.md) ***\n"
        );
        return;
    };
    let Some(db) = PgDatabase::create("a_database_restart_during_traffic").await else {
        return;
    };
    let idp = TestIssuer::start().await;
    let start = |store: PostgresStore| {
        let layer = ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .store(store)
            .build()
            .unwrap();
        async move {
            layer.fetch_keys().await.unwrap();
            Server::start(user_app(layer)).await
        }
    };
    let store_a = db.store().await;
    let store_b = db.store().await;
    let a = start(store_a.clone()).await;
    let b = start(store_b.clone()).await;
    until("listeners", async || {
        store_a.is_listening() && store_b.is_listening()
    })
    .await;
    let client = reqwest::Client::new();
    let regular = idp.id_token().subject("regular").sign();
    let regular_id = get_with(&client, &a.url("/me"), Some(&regular))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get_with(&client, &b.url("/me"), Some(&regular))
            .await
            .status,
        200
    );

    // Traffic throughout: the regular user and newcomers, on both servers.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        let urls = [a.url("/me"), b.url("/me")];
        let tokens: Vec<String> = (0..400)
            .map(|i| idp.id_token().subject(format!("newcomer-{i}")).sign())
            .collect();
        let regular = regular.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) && i < tokens.len() {
                let url = &urls[i % 2];
                let reply = tokio::time::timeout(
                    Duration::from_secs(15),
                    get_with(&client, url, Some(&tokens[i])),
                )
                .await
                .expect("an answer, never a hang");
                statuses.push((
                    tokens[i].clone(),
                    reply.status,
                    reply.header("retry-after").is_some(),
                ));
                let cached = get_with(&client, url, Some(&regular)).await;
                assert_eq!(
                    cached.status, 200,
                    "the cached user keeps working: {}",
                    cached.body
                );
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    let cluster = Cluster { ctl };
    cluster.run("stop -m fast");
    // Down: uncached users get 503 with Retry-After; the cached user still gets in.
    let newcomer = idp.id_token().subject("during-outage").sign();
    let reply = get_with(&client, &a.url("/me"), Some(&newcomer)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        get_with(&client, &b.url("/me"), Some(&regular))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.run("start");

    // Up again: newcomers get accounts, and the listeners are back.
    until("newcomers served again", async || {
        get_with(&client, &a.url("/me"), Some(&newcomer))
            .await
            .status
            == 200
    })
    .await;
    until("listeners back", async || {
        store_a.is_listening() && store_b.is_listening()
    })
    .await;
    stop.store(true, Ordering::Release);
    let statuses = traffic.await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|(_, status, _)| *status == 200 || *status == 503),
        "only 200 or 503: {:?}",
        statuses.iter().map(|(_, s, _)| s).collect::<Vec<_>>()
    );
    assert!(
        statuses
            .iter()
            .filter(|(_, status, _)| *status == 503)
            .all(|(_, _, retry_after)| *retry_after)
    );
    let refused = statuses.iter().filter(|(_, s, _)| *s == 503).count();
    println!(
        "{} requests during the restart, {refused} answered 503",
        statuses.len()
    );

    // Nothing half-written: every user has exactly its identity, and every 200 has its user.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM jit_users")
        .fetch_one(store_a.pool())
        .await
        .unwrap();
    let identities: i64 = sqlx::query_scalar("SELECT count(*) FROM jit_identities")
        .fetch_one(store_a.pool())
        .await
        .unwrap();
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jit_users u WHERE NOT EXISTS \
         (SELECT 1 FROM jit_identities i WHERE i.user_id = u.id)",
    )
    .fetch_one(store_a.pool())
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    assert_eq!(users, identities);
    let served = statuses.iter().filter(|(_, s, _)| *s == 200).count() as i64;
    assert_eq!(
        users,
        served + 2,
        "each served newcomer, the regular, the outage newcomer"
    );

    // Invalidation across servers works after the restart.
    let id = uuid::Uuid::parse_str(&regular_id).unwrap();
    store_b.deactivate(id).await.unwrap();
    until("A hears the deactivation", async || {
        get_with(&client, &a.url("/me"), Some(&regular))
            .await
            .status
            == 403
    })
    .await;
}
