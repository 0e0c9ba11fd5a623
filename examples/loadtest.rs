//! HTTP load check: the same axum "hello" app served twice on loopback, bare and behind
//! `ProvisioningLayer` (SQLite store, default caches), driven by the same keep-alive load for the
//! same time in alternating rounds.
//!
//! ```text
//! cargo run --release --example loadtest -- [--seconds 3] [--rounds 4] [--connections 16] \
//!     [--server-threads 1]
//! ```
//!
//! The servers run in a child process (on `--server-threads` runtime threads; the load
//! generator takes one thread of its own), so the CPU time they use is read from
//! `/proc/<pid>/stat` apart from the load generator's: CPU µs per request is the steadier figure
//! on a shared machine, requests per second the one users feel. Every request must answer 2xx;
//! a round with any other answer is reported and the run fails.
//!
//! The layered app is measured on its hot path: each connection sends its own user's token,
//! provisioned and cached during the warm-up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{Issuer, ProvisionedUser, ProvisioningLayer, SqliteStore};

struct Options {
    seconds: u64,
    rounds: usize,
    connections: usize,
    server_threads: usize,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 3,
        rounds: 4,
        connections: 16,
        server_threads: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = || pair.get(1).and_then(|v| v.parse().ok()).expect("a number");
        match pair[0].as_str() {
            "--seconds" => options.seconds = value() as u64,
            "--rounds" => options.rounds = value(),
            "--connections" => options.connections = value(),
            "--server-threads" => options.server_threads = value(),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let issuer = std::env::args().nth(2).expect("issuer URL");
        let threads = std::env::args().nth(3).and_then(|t| t.parse().ok());
        return serve(&issuer, threads.unwrap_or(1));
    }
    let options = options();
    // The load generator: one thread, so it leaves the other core to the servers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(drive(options));
}

/// The child: both apps, each on its own port, on a runtime of `threads` threads.
fn serve(issuer: &str, threads: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("load.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let layer = ProvisioningLayer::builder()
            .issuer(
                Issuer::new(issuer)
                    .audience(TestIssuer::AUDIENCE)
                    .allow_http_loopback(true),
            )
            .store(store)
            .build()
            .unwrap();
        layer.fetch_keys().await.unwrap();
        let bare = Router::new().route("/", get(|| async { "hello" }));
        let layered = Router::new()
            .route(
                "/",
                get(|user: ProvisionedUser| async move {
                    if user.has_role("nobody") {
                        "?"
                    } else {
                        "hello"
                    }
                }),
            )
            .layer(layer);
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let layered_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "ports {} {}",
            bare_listener.local_addr().unwrap().port(),
            layered_listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(bare_listener, bare).await.unwrap() });
        axum::serve(layered_listener, layered).await.unwrap();
    });
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a /proc filesystem");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output();
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Totals {
    requests: u64,
    failures: u64,
    seconds: f64,
    cpu_seconds: f64,
}

async fn drive(options: Options) {
    let idp = TestIssuer::start().await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", idp.url(), &options.server_threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process");
    // Read off this thread: the issuer the child fetches keys from runs on it.
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let server = ServerProcess(child);
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("ports ")
        .expect("the servers' ports")
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let targets = [
        ("bare", SocketAddr::from(([127, 0, 0, 1], ports[0]))),
        ("layered", SocketAddr::from(([127, 0, 0, 1], ports[1]))),
    ];
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..options.connections)
            .map(|i| {
                idp.id_token()
                    .subject(format!("load-{i}"))
                    .email(format!("load-{i}@example.com"), true)
                    .sign()
            })
            .collect(),
    );
    let ticks = clock_ticks_per_second() as f64;
    let pid = server.0.id();

    // Warm-up: connections opened, users provisioned, caches filled.
    for (_, addr) in targets {
        let warm = load(addr, &tokens, Duration::from_millis(500)).await;
        assert_eq!(warm.1, 0, "warm-up answered non-2xx");
    }

    let mut totals = [Totals::default(), Totals::default()];
    println!(
        "{} rounds of {} s, {} keep-alive connections, alternating; {} server thread(s)",
        options.rounds, options.seconds, options.connections, options.server_threads
    );
    for round in 0..options.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let (name, addr) = targets[index];
            let cpu_before = cpu_ticks(pid);
            let started = Instant::now();
            let (requests, failures) =
                load(addr, &tokens, Duration::from_secs(options.seconds)).await;
            let seconds = started.elapsed().as_secs_f64();
            let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks;
            println!(
                "round {round} {name:>7}: {:>8.0} req/s, {:>6.2} µs server CPU/request{}",
                requests as f64 / seconds,
                cpu * 1e6 / requests.max(1) as f64,
                if failures > 0 {
                    format!(", {failures} NON-2xx")
                } else {
                    String::new()
                }
            );
            let total = &mut totals[index];
            total.requests += requests;
            total.failures += failures;
            total.seconds += seconds;
            total.cpu_seconds += cpu;
        }
    }
    let rps = |t: &Totals| t.requests as f64 / t.seconds;
    let cpu = |t: &Totals| t.cpu_seconds * 1e6 / t.requests.max(1) as f64;
    let [bare, layered] = &totals;
    println!("---");
    println!(
        "bare:    {:>8.0} req/s, {:.2} µs server CPU/request ({} requests)",
        rps(bare),
        cpu(bare),
        bare.requests
    );
    println!(
        "layered: {:>8.0} req/s, {:.2} µs server CPU/request ({} requests)",
        rps(layered),
        cpu(layered),
        layered.requests
    );
    println!(
        "ratio layered/bare: {:.3} of the throughput; the layer adds {:.2} µs CPU/request",
        rps(layered) / rps(bare),
        cpu(layered) - cpu(bare)
    );
    let failures = bare.failures + layered.failures;
    assert_eq!(
        failures, 0,
        "{failures} requests answered non-2xx: the figures do not count"
    );
}

/// Drives `addr` from one keep-alive connection per token for `duration`; returns the
/// requests answered and how many of them were not 2xx.
async fn load(addr: SocketAddr, tokens: &Arc<Vec<String>>, duration: Duration) -> (u64, u64) {
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..tokens.len())
        .map(|i| {
            let (tokens, answered, failed) = (
                Arc::clone(tokens),
                Arc::clone(&answered),
                Arc::clone(&failed),
            );
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let authorization = format!("Bearer {}", tokens[i]);
                while Instant::now() < deadline {
                    let request = http::Request::get("/")
                        .header(http::header::HOST, "127.0.0.1")
                        .header(http::header::AUTHORIZATION, &authorization)
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    let ok = response.status().is_success();
                    response.into_body().collect().await.unwrap();
                    answered.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}
