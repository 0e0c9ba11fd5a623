//! Several independent layer instances — each with its own caches, pool and listener — on one
//! real PostgreSQL database, as several application servers behind a load balancer. Skipped
//! loudly without `JIT_TEST_POSTGRES_URL`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PgDatabase, Server, get_with, user_app};
use sqlx::postgres::PgPoolOptions;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{PostgresStore, ProvisioningLayer, UserStore};

/// One application server: its own store (pool and listener), layer and HTTP server.
struct Instance {
    store: PostgresStore,
    server: Server,
}

impl Instance {
    async fn start(db: &PgDatabase, idp: &TestIssuer) -> Self {
        let store = db.store().await;
        Self::with_store(store, idp).await
    }

    async fn with_store(store: PostgresStore, idp: &TestIssuer) -> Self {
        let layer = ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .store(store.clone())
            .build()
            .unwrap();
        layer.fetch_keys().await.unwrap();
        let started = Instant::now();
        while !store.is_listening() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "listener never subscribed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            store,
            server: Server::start(user_app(layer)).await,
        }
    }

    fn me(&self) -> String {
        self.server.url("/me")
    }
}

async fn count(store: &PostgresStore, table: &str) -> i64 {
    let query = match table {
        "users" => "SELECT count(*) FROM jit_users",
        "identities" => "SELECT count(*) FROM jit_identities",
        _ => unreachable!(),
    };
    sqlx::query_scalar(query)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn concurrent_first_logins_on_three_servers_make_exactly_one_account_each() {
    let db = PgDatabase::create("concurrent_first_logins_on_three_servers").await;
    let idp = TestIssuer::start().await;
    let instances = Arc::new(vec![
        Instance::start(&db, &idp).await,
        Instance::start(&db, &idp).await,
        Instance::start(&db, &idp).await,
    ]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(100)
        .build()
        .unwrap();
    // 500 first logins for 100 new subjects, five per subject, spread over the servers,
    // released together.
    let gate = Arc::new(tokio::sync::Barrier::new(500));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let subject = format!("person-{}", i % 100);
        let token = idp.id_token().subject(&subject).sign();
        let (client, gate, instances) = (client.clone(), Arc::clone(&gate), Arc::clone(&instances));
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let reply = get_with(&client, &instances[i % 3].me(), Some(&token)).await;
            (subject, reply)
        }));
    }
    let mut ids = std::collections::HashMap::new();
    for task in tasks {
        let (subject, reply) = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        let seen = ids.entry(subject).or_insert_with(HashSet::new);
        seen.insert(id);
    }
    assert_eq!(ids.len(), 100);
    assert!(
        ids.values().all(|set| set.len() == 1),
        "one account per person"
    );
    assert_eq!(count(&instances[0].store, "users").await, 100);
    assert_eq!(count(&instances[0].store, "identities").await, 100);
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn a_deactivation_through_one_server_is_refused_by_the_others_at_once() {
    let db = PgDatabase::create("a_deactivation_through_one_server").await;
    let idp = TestIssuer::start().await;
    let a = Instance::start(&db, &idp).await;
    let b = Instance::start(&db, &idp).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().subject("leaver").sign();
    // Both servers have the account cached, and the token.
    let user = get_with(&client, &a.me(), Some(&token)).await.json();
    assert_eq!(get_with(&client, &b.me(), Some(&token)).await.status, 200);
    assert_eq!(get_with(&client, &b.me(), Some(&token)).await.status, 200);
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    let started = Instant::now();
    a.store.deactivate(id).await.unwrap();
    let committed = started.elapsed();
    // Through A itself: refused on the very next request.
    assert_eq!(get_with(&client, &a.me(), Some(&token)).await.status, 403);
    println!(
        "deactivation committed after {committed:?}, A refused after {:?}",
        started.elapsed()
    );
    // Through B: as soon as the notification arrives.
    let delay = loop {
        let reply = get_with(&client, &b.me(), Some(&token)).await;
        if reply.status == 403 {
            assert_eq!(reply.json()["code"], "deactivated");
            break started.elapsed();
        }
        assert_eq!(reply.status, 200);
        assert!(started.elapsed() < Duration::from_secs(10), "B never heard");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!("deactivation through A refused by B after {delay:?}");

    // Reactivation travels the same way.
    let started = Instant::now();
    b.store.reactivate(id).await.unwrap();
    loop {
        if get_with(&client, &a.me(), Some(&token)).await.status == 200 {
            println!(
                "reactivation through B accepted by A after {:?}",
                started.elapsed()
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "A never heard");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn role_and_profile_changes_and_deletions_reach_every_server() {
    let db = PgDatabase::create("role_and_profile_changes").await;
    let idp = TestIssuer::start().await;
    let a = Instance::start(&db, &idp).await;
    let b = Instance::start(&db, &idp).await;
    let client = reqwest::Client::new();
    let token = idp.id_token().subject("changer").sign();
    let id = get_with(&client, &b.me(), Some(&token)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(get_with(&client, &a.me(), Some(&token)).await.status, 200);

    a.store.grant_role(id, "auditor").await.unwrap();
    let started = Instant::now();
    loop {
        let user = get_with(&client, &b.me(), Some(&token)).await.json();
        if user["roles"] == serde_json::json!(["auditor"]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B kept stale roles"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let deleted = tower_jit_provisioning::AuditEvent::new(
        tower_jit_provisioning::AuditKind::Deleted,
        tower_jit_provisioning::Actor::Application,
    );
    a.store.delete_user(id, deleted).await.unwrap();
    let started = Instant::now();
    loop {
        let reply = get_with(&client, &b.me(), Some(&token)).await;
        if reply.status == 403 {
            assert_eq!(reply.json()["code"], "deleted");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B kept a deleted user"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(count(&a.store, "users").await, 0, "and never re-created");
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn a_connection_killed_mid_transaction_leaves_no_orphan() {
    let db = PgDatabase::create("a_connection_killed_mid_transaction").await;
    let idp = TestIssuer::start().await;
    let a = Instance::start(&db, &idp).await;
    let admin = PgPoolOptions::new().connect(&db.url).await.unwrap();

    // Hold a lock that lets the provisioning read the identities but makes its write wait:
    // the provisioning transaction is open, half-way through.
    let mut blocker = admin.begin().await.unwrap();
    sqlx::query("LOCK TABLE jit_identities IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let token = idp.id_token().subject("victim").sign();
    let url = a.me();
    let request =
        tokio::spawn(async move { get_with(&reqwest::Client::new(), &url, Some(&token)).await });
    let started = Instant::now();
    let pid: i32 = loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&admin)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let uncommitted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state LIKE '%transaction%' \
         OR pid = $1 AND wait_event_type = 'Lock'",
    )
    .bind(pid)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(uncommitted, 1, "the provisioning transaction is open");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&admin)
        .await
        .unwrap();
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    blocker.rollback().await.unwrap();

    assert_eq!(count(&a.store, "users").await, 0, "no orphan user");
    assert_eq!(count(&a.store, "identities").await, 0, "no orphan identity");
    // The next attempt creates the account whole.
    let token = idp.id_token().subject("victim").sign();
    let reply = get_with(&reqwest::Client::new(), &a.me(), Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(count(&a.store, "users").await, 1);
    assert_eq!(count(&a.store, "identities").await, 1);
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn an_exhausted_pool_answers_503_instead_of_hanging() {
    let db = PgDatabase::create("an_exhausted_pool_answers_503").await;
    let idp = TestIssuer::start().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect(&db.url)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool.clone());
    store.migrate().await.unwrap();
    let a = Instance::with_store(store, &idp).await;
    let client = reqwest::Client::new();
    let cached = idp.id_token().subject("cached").sign();
    assert_eq!(get_with(&client, &a.me(), Some(&cached)).await.status, 200);

    let held = pool.acquire().await.unwrap();
    let newcomer = idp.id_token().subject("newcomer").sign();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        get_with(&client, &a.me(), Some(&newcomer)),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["code"], "store_unavailable");
    // Cached users do not need the pool.
    assert_eq!(get_with(&client, &a.me(), Some(&cached)).await.status, 200);
    drop(held);
    assert_eq!(
        get_with(&client, &a.me(), Some(&newcomer)).await.status,
        200
    );
}

#[tokio::test]
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL: set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn migrations_run_once_and_live_in_their_own_table() {
    let db = PgDatabase::create("migrations_run_once").await;
    let (first, second) = tokio::join!(db.store(), db.store());
    first.migrate().await.unwrap();
    second.migrate().await.unwrap();
    let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM _jit_provisioning_migrations")
        .fetch_one(first.pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(ours, files, "each migration applied once");
    let sqlx_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(first.pool())
            .await
            .unwrap();
    assert_eq!(
        sqlx_table, None,
        "the application's sqlx table is left alone"
    );
}
