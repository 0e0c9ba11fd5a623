//! Memory: bytes per cached token and per cached user.
//!
//! Each figure is the growth of resident memory while 100,000 distinct tokens (or users) go
//! through the layer, with the cache on, minus the same run with the cache off, divided by
//! 100,000. Each run is a fresh process, so one run's freed memory never hides the next one's.
//!
//! Run with `cargo bench --bench memory` (optionally `-- <entries>`).

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::ServiceExt;
use tower_jit_provisioning::testing::TestIssuer;
use tower_jit_provisioning::{Algorithm, MemoryStore, ProvisioningLayer};

const DEFAULT_ENTRIES: usize = 100_000;

#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// A verify-only layer with a token cache large enough for every token.
    TokensCached,
    /// The same with the token cache off.
    TokensUncached,
    /// A provisioning layer (memory store, token cache off) with a user cache for every user.
    UsersCached,
    /// The same with the user cache off.
    UsersUncached,
}

/// The child process that measures a bare moka cache built like the token cache (per-entry
/// expiry), holding a 32-byte key and an `Arc` of 8 bytes per entry: moka's own bookkeeping.
const BARE_CACHE: &str = "bare-cache";

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::TokensCached => "tokens-cached",
            Self::TokensUncached => "tokens-uncached",
            Self::UsersCached => "users-cached",
            Self::UsersUncached => "users-uncached",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::TokensCached,
            Self::TokensUncached,
            Self::UsersCached,
            Self::UsersUncached,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name, entries] = args.as_slice()
        && flag == "--scenario"
    {
        let entries = entries.parse().expect("a count");
        let growth = if name == BARE_CACHE {
            bare_cache(entries)
        } else {
            run(Scenario::from_name(name).expect("a scenario"), entries)
        };
        println!("{growth}");
        return;
    }
    // `cargo bench` passes `--bench`; a bare number sets the entry count.
    let entries = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(DEFAULT_ENTRIES);
    let growth = |scenario: &str| -> i64 {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--scenario", scenario, &entries.to_string()])
            .output()
            .expect("a child process");
        assert!(output.status.success(), "{scenario} failed");
        String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    println!("{entries} entries; resident memory growth per entry, cache on minus cache off");
    for (what, on, off) in [
        (
            "cached token",
            Scenario::TokensCached,
            Scenario::TokensUncached,
        ),
        (
            "cached user",
            Scenario::UsersCached,
            Scenario::UsersUncached,
        ),
    ] {
        let (on, off) = (growth(on.name()), growth(off.name()));
        println!(
            "{what:>12}: {:>6.0} bytes  (on: {:.1} MiB, off: {:.1} MiB)",
            (on - off) as f64 / entries as f64,
            on as f64 / 1048576.0,
            off as f64 / 1048576.0
        );
    }
    println!(
        "   of which moka's own bookkeeping: {:>6.0} bytes per entry (bare cache, 8-byte values)",
        growth(BARE_CACHE) as f64 / entries as f64
    );
}

/// The growth of resident memory while a bare moka cache, built like the token cache, takes
/// `entries` entries.
fn bare_cache(entries: usize) -> i64 {
    struct UntilExpiry;
    impl moka::Expiry<[u8; 32], Arc<u64>> for UntilExpiry {
        fn expire_after_create(&self, _: &[u8; 32], _: &Arc<u64>, _: Instant) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
    }
    let cache = moka::sync::Cache::builder()
        .max_capacity(entries as u64 * 2)
        .expire_after(UntilExpiry)
        .build();
    let before = resident();
    for i in 0..entries {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cache.insert(key, Arc::new(i as u64));
    }
    cache.run_pending_tasks();
    let growth = resident() - before;
    assert_eq!(cache.entry_count(), entries as u64);
    growth
}

/// Resident memory of this process, in bytes.
fn resident() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("a /proc filesystem");
    let pages: i64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Sends `entries` distinct tokens through the layer of `scenario`; returns the growth of
/// resident memory from just before the first to just after the last.
fn run(scenario: Scenario, entries: usize) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let idp = rt.block_on(TestIssuer::start());
    let capacity = entries as u64 * 2;
    let builder = ProvisioningLayer::builder().issuer(idp.issuer());
    let layer = match scenario {
        Scenario::TokensCached => builder.token_cache(capacity),
        Scenario::TokensUncached => builder.token_cache(0),
        Scenario::UsersCached => builder
            .token_cache(0)
            .store(MemoryStore::new())
            .user_cache(capacity, Duration::from_secs(3600)),
        Scenario::UsersUncached => builder
            .token_cache(0)
            .store(MemoryStore::new())
            .user_cache(0, Duration::from_secs(3600)),
    }
    .build()
    .unwrap();
    rt.block_on(layer.fetch_keys()).unwrap();
    let app = match scenario {
        Scenario::TokensCached | Scenario::TokensUncached => support::hello_claims(),
        Scenario::UsersCached | Scenario::UsersUncached => support::hello_user(),
    }
    .layer(layer);
    // Tokens like an enterprise IdP's ID token: profile, e-mail, a few groups. Minted in
    // chunks, so the tokens themselves never pile up in memory.
    let mint = |i: usize| {
        idp.id_token()
            .subject(format!("00u{i:017}"))
            .email(format!("person{i}@example.com"), true)
            .claim("name", format!("Person Number {i}"))
            .claim("given_name", "Person")
            .claim("family_name", format!("Number {i}"))
            .groups(["engineering", "staff", "vpn-users"])
            .algorithm(Algorithm::EdDSA)
            .sign()
    };
    // The token cache takes a token on its second sight: each is sent twice, in every
    // scenario, so the runs with and without the cache do the same work.
    let sights = 2;
    // Warm every one-time allocation (runtime, connection, first entries) before measuring.
    rt.block_on(send(
        &app,
        (0..100).map(|i| mint(entries + i)).collect(),
        sights,
    ));
    let before = resident();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(1000) {
        let tokens = chunk.iter().map(|&i| mint(i)).collect();
        rt.block_on(send(&app, tokens, sights));
    }
    resident() - before
}

async fn send(app: &axum::Router, tokens: Vec<String>, sights: usize) {
    for token in tokens {
        for _ in 0..sights {
            let response = app.clone().oneshot(support::request(&token)).await.unwrap();
            assert_eq!(response.status(), 200);
        }
    }
}
