//! The reference server measured from outside, over loopback HTTP, as users meet it, beside an
//! axum server behind `jwt-authorizer` in the same run.
//!
//! ```text
//! bench/http/run [--rounds 5] [--seconds 3] [--connections 64] [--new-tokens 20000]
//! ```
//!
//! Variants, in interleaved rounds with a rotating order:
//!
//! - `healthz`: the reference server's `GET /healthz` (same binary, no credential);
//! - `healthz_bearer`: the same, each request carrying the `me_hot` tokens (`/healthz` is outside
//!   the layer): what the bytes of a bearer token cost the server before any layer sees them;
//! - `me_hot`: its `GET /me`, each connection with a token seen before, its user cached;
//! - `me_new_token`: its `GET /me`, every request a distinct pre-signed token of one cached user,
//!   on a fresh server each round, so no token is ever seen twice;
//! - `me_session`: its `GET /me` by session cookie, each connection a person signed in through
//!   the browser flow (`/login`, the issuer, `/callback`), account and session cached;
//! - `authorizer`: a plain axum server behind `jwt-authorizer`, which verifies every token
//!   (RS256, the same key set), answering the same shape of JSON from the claims, sent the same
//!   distinct tokens.
//!
//! `--only <variant>` runs that variant alone, for a profiler attached to the servers.
//!
//! Servers run on one Tokio worker (`TOKIO_WORKER_THREADS=1`) pinned to CPU 0; this load
//! generator runs on one thread pinned to CPU 1. Server CPU per request is read from
//! `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU, every thread of the server). Every
//! response must be 2xx, or the run fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::json;
use tower_jit_provisioning::testing::TestIssuer;

struct Options {
    server: String,
    rounds: usize,
    seconds: u64,
    connections: usize,
    new_tokens: usize,
    /// Only this variant, for profiling.
    only: Option<String>,
}

fn options() -> Options {
    let mut options = Options {
        server: "target/release/examples/server".to_owned(),
        rounds: 5,
        seconds: 3,
        connections: 64,
        new_tokens: 20_000,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().expect("a value after each option");
        let number = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--server" => options.server = value.clone(),
            "--rounds" => options.rounds = number(),
            "--seconds" => options.seconds = number() as u64,
            "--connections" => options.connections = number(),
            "--new-tokens" => options.new_tokens = number(),
            "--only" => options.only = Some(value.clone()),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-authorizer") {
        return serve_authorizer(&args[2], &args[3], &args[4]);
    }
    let options = options();
    pin_to_cpu(std::process::id(), 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(drive(options));
}

/// Pins the process `pid` (every thread it starts after) to `cpu`, when `taskset` is there.
fn pin_to_cpu(pid: u32, cpu: usize) {
    let pinned = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        eprintln!("warning: taskset failed; processes are not pinned");
    }
}

/// The baseline server: axum behind jwt-authorizer, RS256 keys from the key set at `jwks`,
/// `/me` answering the claims as JSON.
fn serve_authorizer(issuer: &str, audience: &str, jwks: &str) {
    use axum07::Json;
    use axum07::routing::get;
    use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, JwtClaims, Validation};

    #[derive(Clone, serde::Deserialize, serde::Serialize)]
    struct Claims {
        sub: String,
        iss: String,
        email: Option<String>,
        email_verified: Option<bool>,
        name: Option<String>,
        given_name: Option<String>,
        family_name: Option<String>,
        locale: Option<String>,
        groups: Option<Vec<String>>,
    }

    if std::env::var_os("BENCH_SERVER_STDERR").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let validation = Validation::new().iss(&[issuer]).aud(&[audience]);
        let authorizer: Authorizer<Claims> = JwtAuthorizer::from_jwks_url(jwks)
            .validation(validation)
            .build()
            .await
            .expect("jwt-authorizer from the issuer's key set");
        let app = axum07::Router::new()
            .route(
                "/me",
                get(|JwtClaims(claims): JwtClaims<Claims>| async move {
                    Json(json!({
                        "email": claims.email,
                        "email_verified": claims.email_verified,
                        "display_name": claims.name,
                        "given_name": claims.given_name,
                        "family_name": claims.family_name,
                        "locale": claims.locale,
                        "groups": claims.groups,
                        "identity": {"issuer": claims.iss, "subject": claims.sub},
                    }))
                }),
            )
            .layer(authorizer.into_layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        axum07::serve(listener, app).await.unwrap();
    });
}

/// Serves the issuer's RSA keys alone, as a key set, and returns its URL: the issuer's own key
/// set also holds key types (P-521, Ed448) the `jsonwebtoken` crate under jwt-authorizer cannot
/// read, and it refuses the whole set for them.
async fn serve_rsa_keys(idp: &TestIssuer) -> String {
    let mut jwks = idp.jwks();
    jwks["keys"]
        .as_array_mut()
        .expect("a key set")
        .retain(|key| key["kty"] == "RSA");
    let app = axum07::Router::new().route(
        "/jwks",
        axum07::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum07::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum07::serve(listener, app).await.unwrap() });
    url
}

/// Signs `who` in through the reference server's browser flow and returns the session cookie
/// (`name=value`).
async fn sign_in(server: &Server, who: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.starts_with(&format!("{name}=")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} cookie"))
    };
    let location = |response: &reqwest::Response| {
        response.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let base = format!("http://{}", server.addr);
    let login = client
        .get(format!("{base}/login?login_hint={who}"))
        .send()
        .await
        .unwrap();
    assert!(
        login.status().is_redirection(),
        "/login: {}",
        login.status()
    );
    let flow = cookie_of(&login, "jit_flow");
    let at_issuer = client.get(location(&login)).send().await.unwrap();
    assert!(
        at_issuer.status().is_redirection(),
        "the issuer: {}",
        at_issuer.status()
    );
    let callback = client
        .get(location(&at_issuer))
        .header(reqwest::header::COOKIE, flow)
        .send()
        .await
        .unwrap();
    assert!(
        callback.status().is_redirection(),
        "/callback: {}",
        callback.status()
    );
    cookie_of(&callback, "jit_session")
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` pinned to CPU 0 on one Tokio worker and waits for its
    /// "listening on" line; the rest of its output is drained.
    fn start(mut command: Command, dir: Option<tempfile::TempDir>) -> Self {
        command
            .env("TOKIO_WORKER_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BENCH_SERVER_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().expect("the server process");
        pin_to_cpu(child.id(), 0);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr.trim().parse().expect("an address");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The reference server at `issuer`, on a fresh SQLite file.
    fn reference(binary: &str, issuer: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JIT_ISSUERS", issuer)
            .env("JIT_AUDIENCES", TestIssuer::AUDIENCE)
            .env("JIT_ALLOW_HTTP_ISSUERS", "1")
            .env("JIT_LISTEN", "127.0.0.1:0")
            .env("JIT_OIDC_CLIENT_ID", TestIssuer::CLIENT_ID)
            .env("JIT_OIDC_CLIENT_SECRET", TestIssuer::CLIENT_SECRET)
            .env(
                "JIT_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("jit.db").display()),
            );
        Self::start(command, Some(dir))
    }

    fn authorizer(issuer: &str, jwks: &str) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["serve-authorizer", issuer, TestIssuer::AUDIENCE, jwks]);
        Self::start(command, None)
    }

    /// Nanoseconds every thread of the server has run on a CPU.
    fn cpu_ns(&self) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .expect("a /proc filesystem");
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Where each request's credential comes from.
#[derive(Clone)]
enum Credentials {
    /// None: `/healthz`.
    None,
    /// One token per connection, the same for every request on it.
    PerConnection(Arc<Vec<String>>),
    /// One session cookie per connection.
    Cookies(Arc<Vec<String>>),
    /// Each request takes the next token of the pool; the run ends when it is used up.
    Pool(Arc<Vec<String>>, Arc<AtomicUsize>),
}

/// One measured run of a variant.
#[derive(Clone, Copy, Default)]
struct Sample {
    requests: u64,
    failures: u64,
    seconds: f64,
    cpu_ns: u64,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.requests.max(1) as f64
    }
}

/// The tokens of this benchmark: about 900 bytes, RS256, like an ID token of a directory user.
fn token(idp: &TestIssuer, subject: &str, serial: usize) -> String {
    idp.id_token()
        .subject(subject)
        .email(format!("{subject}@example.com"), true)
        .claim("name", "Load Tester")
        .claim("given_name", "Load")
        .claim("family_name", "Tester")
        .claim("locale", "en-GB")
        .claim("jti", format!("{subject}-{serial:08}"))
        .claim(
            "picture",
            "https://images.example.com/people/load-tester.png",
        )
        .groups(["engineering", "staff", "on-call", "readers"])
        .sign()
}

async fn drive(options: Options) {
    let idp = TestIssuer::start().await;
    let hot_tokens: Arc<Vec<String>> = Arc::new(
        (0..options.connections)
            .map(|i| token(&idp, &format!("hot-{i}"), 0))
            .collect(),
    );
    let started = Instant::now();
    let new_tokens: Arc<Vec<String>> = Arc::new(
        (1..=options.new_tokens)
            .map(|i| token(&idp, "cold", i))
            .collect(),
    );
    println!(
        "signed {} distinct tokens of {} bytes in {:.1} s",
        new_tokens.len(),
        new_tokens[0].len(),
        started.elapsed().as_secs_f64()
    );
    let issuer = idp.url().to_owned();
    let binary = options.server.clone();
    // The issuer serves key sets on this thread: servers start off it.
    let spawn = |make: Box<dyn FnOnce() -> Server + Send>| tokio::task::spawn_blocking(make);
    let reference = {
        let (binary, issuer) = (binary.clone(), issuer.clone());
        spawn(Box::new(move || Server::reference(&binary, &issuer)))
            .await
            .unwrap()
    };
    let jwks = serve_rsa_keys(&idp).await;
    let authorizer = {
        let issuer = issuer.clone();
        spawn(Box::new(move || Server::authorizer(&issuer, &jwks)))
            .await
            .unwrap()
    };
    let warm = token(&idp, "cold", 0);
    let mut cookies = Vec::new();
    for i in 0..options.connections {
        cookies.push(sign_in(&reference, &format!("session-{i}")).await);
    }
    let cookies = Arc::new(cookies);
    // Warm-up: connections, users provisioned and cached, key sets fetched.
    let warmup = Duration::from_millis(500);
    for (name, path, credentials, server) in [
        ("reference", "/healthz", Credentials::None, &reference),
        (
            "reference",
            "/me",
            Credentials::PerConnection(Arc::clone(&hot_tokens)),
            &reference,
        ),
        (
            "reference",
            "/me",
            Credentials::Cookies(Arc::clone(&cookies)),
            &reference,
        ),
        (
            "authorizer",
            "/me",
            Credentials::PerConnection(Arc::new(vec![warm.clone()])),
            &authorizer,
        ),
    ] {
        let sample = load(server, path, credentials, options.connections, warmup).await;
        assert_eq!(
            sample.failures, 0,
            "warm-up of the {name} server's {path} answered non-2xx"
        );
    }

    const VARIANTS: [&str; 6] = [
        "healthz",
        "me_hot",
        "me_session",
        "me_new_token",
        "authorizer",
        "healthz_bearer",
    ];
    let mut samples: Vec<[Sample; 6]> = Vec::new();
    println!(
        "{} rounds; {} keep-alive connections; {} s per timed variant, {} distinct tokens per \
         new-token variant",
        options.rounds, options.connections, options.seconds, options.new_tokens
    );
    let seconds = Duration::from_secs(options.seconds);
    for round in 0..options.rounds {
        // A fresh reference server for the new tokens, its user cached by one token of its own.
        let fresh = {
            let (binary, issuer) = (binary.clone(), issuer.clone());
            spawn(Box::new(move || Server::reference(&binary, &issuer)))
                .await
                .unwrap()
        };
        let warmed = load(
            &fresh,
            "/me",
            Credentials::PerConnection(Arc::new(vec![warm.clone()])),
            1,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(
            warmed.failures, 0,
            "warm-up of the fresh server answered non-2xx"
        );
        let mut row = [Sample::default(); 6];
        for k in 0..VARIANTS.len() {
            let index = (round + k) % VARIANTS.len();
            if options
                .only
                .as_deref()
                .is_some_and(|only| only != VARIANTS[index])
            {
                continue;
            }
            let pool = || Credentials::Pool(Arc::clone(&new_tokens), Arc::new(AtomicUsize::new(0)));
            let sample = match VARIANTS[index] {
                "healthz" => {
                    load(
                        &reference,
                        "/healthz",
                        Credentials::None,
                        options.connections,
                        seconds,
                    )
                    .await
                }
                "healthz_bearer" => {
                    let tokens = Credentials::PerConnection(Arc::clone(&hot_tokens));
                    load(&reference, "/healthz", tokens, options.connections, seconds).await
                }
                "me_hot" => {
                    let tokens = Credentials::PerConnection(Arc::clone(&hot_tokens));
                    load(&reference, "/me", tokens, options.connections, seconds).await
                }
                "me_session" => {
                    let sessions = Credentials::Cookies(Arc::clone(&cookies));
                    load(&reference, "/me", sessions, options.connections, seconds).await
                }
                "me_new_token" => {
                    load(&fresh, "/me", pool(), options.connections, Duration::MAX).await
                }
                _ => {
                    load(
                        &authorizer,
                        "/me",
                        pool(),
                        options.connections,
                        Duration::MAX,
                    )
                    .await
                }
            };
            println!(
                "round {round} {:>13}: {:>8.0} req/s, {:>7.2} µs server CPU/request{}",
                VARIANTS[index],
                sample.rps(),
                sample.cpu_us(),
                if sample.failures > 0 {
                    format!(", {} NON-2xx", sample.failures)
                } else {
                    String::new()
                }
            );
            row[index] = sample;
        }
        samples.push(row);
    }

    if options.only.is_some() {
        return;
    }
    println!("---");
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    };
    for (index, name) in VARIANTS.iter().enumerate() {
        println!(
            "{name:>13}: median {:>8.0} req/s, {:>7.2} µs server CPU/request",
            median(samples.iter().map(|r| r[index].rps()).collect()),
            median(samples.iter().map(|r| r[index].cpu_us()).collect()),
        );
    }
    let per_round = |f: &dyn Fn(&[Sample; 6]) -> f64| median(samples.iter().map(f).collect());
    println!("ratios within a round (median over rounds):");
    println!(
        "  me_hot adds {:.2} µs server CPU/request over healthz (target ≤ 3.0), and serves {:.3}× \
         its req/s (target ≥ 0.65)",
        per_round(&|r| r[1].cpu_us() - r[0].cpu_us()),
        per_round(&|r| r[1].rps() / r[0].rps()),
    );
    println!(
        "  of which the token's bytes (healthz_bearer over healthz): {:.2} µs; me_hot over \
         healthz_bearer, the layer and the /me handler: {:.2} µs",
        per_round(&|r| r[5].cpu_us() - r[0].cpu_us()),
        per_round(&|r| r[1].cpu_us() - r[5].cpu_us()),
    );
    println!(
        "  me_session costs {:+.2} µs server CPU/request against me_hot (target ≤ +0.5)",
        per_round(&|r| r[2].cpu_us() - r[1].cpu_us()),
    );
    println!(
        "  me_new_token costs {:.3}× authorizer's server CPU/request (target ≤ 0.9), and serves \
         {:.3}× its req/s",
        per_round(&|r| r[3].cpu_us() / r[4].cpu_us()),
        per_round(&|r| r[3].rps() / r[4].rps()),
    );
    let failures: u64 = samples.iter().flatten().map(|s| s.failures).sum();
    assert_eq!(
        failures, 0,
        "{failures} requests answered non-2xx: the figures do not count"
    );
}

/// Drives `path` of `server` from `connections` keep-alive connections until `duration` has
/// passed or the credentials' pool is used up.
async fn load(
    server: &Server,
    path: &'static str,
    credentials: Credentials,
    connections: usize,
    duration: Duration,
) -> Sample {
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started.checked_add(duration);
    let cpu_before = server.cpu_ns();
    let addr = server.addr;
    let tasks: Vec<_> = (0..connections)
        .map(|connection| {
            let (credentials, answered, failed) = (
                credentials.clone(),
                Arc::clone(&answered),
                Arc::clone(&failed),
            );
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection_task) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection_task);
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let authorization = match &credentials {
                        Credentials::None | Credentials::Cookies(_) => None,
                        Credentials::PerConnection(tokens) => {
                            Some(format!("Bearer {}", tokens[connection % tokens.len()]))
                        }
                        Credentials::Pool(tokens, next) => {
                            match tokens.get(next.fetch_add(1, Ordering::Relaxed)) {
                                Some(token) => Some(format!("Bearer {token}")),
                                None => break,
                            }
                        }
                    };
                    let mut request =
                        http::Request::get(path).header(http::header::HOST, "127.0.0.1");
                    if let Some(authorization) = authorization {
                        request = request.header(http::header::AUTHORIZATION, authorization);
                    }
                    if let Credentials::Cookies(cookies) = &credentials {
                        request = request
                            .header(http::header::COOKIE, &cookies[connection % cookies.len()]);
                    }
                    let request = request.body(Empty::<Bytes>::new()).unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    let status = response.status();
                    let ok = status.is_success();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    if !ok && failed.load(Ordering::Relaxed) == 0 {
                        eprintln!(
                            "{path} answered {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        );
                    }
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
    Sample {
        requests: answered.load(Ordering::Relaxed),
        failures: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        cpu_ns: server.cpu_ns() - cpu_before,
    }
}
