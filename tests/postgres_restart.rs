//! A real PostgreSQL restart in the middle of traffic, on a PostgreSQL instance of the test's
//! own (`initdb` in a temporary directory, on a free port), so nobody else's server is touched.
//! Its own test binary, so no other test runs while the database is down. Needs PostgreSQL's
//! server programs (`initdb`, `pg_ctl`); shows as ignored without `JIT_TEST_POSTGRES_URL`, which
//! `bash .ci/run` sets when it has PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, get_with, user_app};
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{PostgresStore, ProvisioningLayer, UserStore};

/// A PostgreSQL instance of this test's own, stopped and removed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `initdb` refuses to run as root: as root, the server runs as the `postgres` user.
    as_postgres: bool,
}

impl Cluster {
    fn create() -> Self {
        let bin = server_programs();
        let dir = tempfile::tempdir().unwrap();
        let whoami = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&whoami.stdout).trim() == "0";
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.pg_ctl("start");
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-w"];
        match action {
            "start" => args.extend(["-l", &log, "-o", &options, "start"]),
            _ => args.extend(["-m", "fast", "stop"]),
        }
        self.run("pg_ctl", &args);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// The directory of `initdb` and `pg_ctl`: on the `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (the newest).
fn server_programs() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()))
    {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|dir| Path::new(dir).join("initdb").is_file());
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions
        .pop()
        .expect("PostgreSQL's server programs (initdb, pg_ctl): install PostgreSQL")
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
#[cfg_attr(
    not(jit_test_postgres),
    ignore = "needs PostgreSQL (initdb, pg_ctl): set JIT_TEST_POSTGRES_URL (bash .ci/run does)"
)]
async fn a_database_restart_during_traffic_is_survived() {
    let cluster = Cluster::create();
    let connect = || async {
        let store = PostgresStore::connect(&cluster.url()).await.unwrap();
        store.migrate().await.unwrap();
        store
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
    let store_a = connect().await;
    let store_b = connect().await;
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
    cluster.pg_ctl("stop");
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
    cluster.pg_ctl("start");

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
