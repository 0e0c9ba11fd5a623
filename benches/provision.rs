//! First logins: the cost of one, the throughput with 1 and 32 concurrent new users, on SQLite
//! and PostgreSQL (when `JIT_TEST_POSTGRES_URL` is set), beside the same tokens through a layer
//! that only verifies them (`verify_only`: the signature check and claims, no store), so that
//! a first login's cost beyond the signature check is a difference within one run; and a
//! thundering herd of 1,000 concurrent first requests for one subject, counting store lookups
//! and inserts.
//!
//! Run with `cargo bench --bench provision`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower::ServiceExt;
use tower_jit_provisioning::testing::{CountingStore, TestIssuer};
use tower_jit_provisioning::{Algorithm, PostgresStore, ProvisioningLayer, SqliteStore, UserStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn app<S: UserStore + Clone>(rt: &tokio::runtime::Runtime, idp: &TestIssuer, store: S) -> Router {
    let layer = ProvisioningLayer::builder()
        .issuer(idp.issuer())
        .store(store)
        .build()
        .unwrap();
    rt.block_on(layer.fetch_keys()).unwrap();
    support::hello_user().layer(layer)
}

/// `count` tokens for people never seen, EdDSA-signed (cheap to mint, outside the timing).
fn newcomers(idp: &TestIssuer, count: u64) -> Vec<String> {
    (0..count)
        .map(|_| {
            idp.id_token()
                .subject(uuid::Uuid::now_v7().to_string())
                .algorithm(Algorithm::EdDSA)
                .sign()
        })
        .collect()
}

/// Times `tokens.len()` first logins spread over `tasks` concurrent tasks.
async fn first_logins(app: &Router, tokens: Vec<String>, tasks: usize) -> Duration {
    let chunks: Vec<Vec<String>> = tokens
        .chunks(tokens.len().div_ceil(tasks).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let started = Instant::now();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let app = app.clone();
            tokio::spawn(async move {
                for token in chunk {
                    let response = app.clone().oneshot(support::request(&token)).await.unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    started.elapsed()
}

fn first_login(c: &mut Criterion) {
    let rt = runtime();
    let idp = rt.block_on(TestIssuer::start());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt.block_on(async {
        let store = SqliteStore::connect(&format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store
    });
    // The same tokens through a layer that only verifies: what a first login costs beyond the
    // signature check is each store's figure minus this one.
    let verify_only = {
        let layer = ProvisioningLayer::builder()
            .issuer(idp.issuer())
            .build()
            .unwrap();
        rt.block_on(layer.fetch_keys()).unwrap();
        support::hello_claims().layer(layer)
    };
    let mut apps = vec![
        ("verify_only", verify_only),
        ("sqlite", app(&rt, &idp, sqlite)),
    ];
    let postgres = rt.block_on(support::postgres_database("first_login"));
    if let Some(url) = &postgres {
        let store = rt.block_on(async {
            let store = PostgresStore::connect(url).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
        apps.push(("postgres", app(&rt, &idp, store)));
    }

    let mut group = c.benchmark_group("first_login");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for (name, app) in &apps {
        for tasks in [1, 32] {
            group.bench_function(format!("{name}/{tasks}_tasks"), |b| {
                b.iter_custom(|iters| {
                    let tokens = newcomers(&idp, iters);
                    rt.block_on(first_logins(app, tokens, tasks))
                })
            });
        }
    }
    group.finish();
    drop(apps);
    if let Some(url) = postgres {
        rt.block_on(support::drop_postgres_database(&url));
    }
}

fn thundering_herd(c: &mut Criterion) {
    let rt = runtime();
    let idp = rt.block_on(TestIssuer::start());
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let store = SqliteStore::connect(&format!(
            "sqlite://{}",
            dir.path().join("herd.db").display()
        ))
        .await
        .unwrap();
        store.migrate().await.unwrap();
        CountingStore::new(store)
    });
    let app = app(&rt, &idp, store.clone());
    let mut group = c.benchmark_group("thundering_herd");
    group.sample_size(10);
    group.bench_function("1000_requests_one_subject", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let token = idp
                    .id_token()
                    .subject(uuid::Uuid::now_v7().to_string())
                    .sign();
                store.reset();
                total += rt.block_on(async {
                    let gate = Arc::new(tokio::sync::Barrier::new(1000));
                    let started = Instant::now();
                    let handles: Vec<_> = (0..1000)
                        .map(|_| {
                            let (app, gate, token) =
                                (app.clone(), Arc::clone(&gate), token.clone());
                            tokio::spawn(async move {
                                gate.wait().await;
                                let response = app.oneshot(support::request(&token)).await.unwrap();
                                assert_eq!(response.status(), 200);
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.unwrap();
                    }
                    started.elapsed()
                });
                assert_eq!(
                    (store.lookups(), store.creates()),
                    (1, 1),
                    "1000 concurrent first requests: one lookup, one insert"
                );
            }
            total
        })
    });
    group.finish();
    println!(
        "thundering herd: 1000 concurrent first requests for one subject -> {} store lookup(s), {} insert(s)",
        store.lookups(),
        store.creates()
    );
}

criterion_group!(benches, first_login, thundering_herd);
criterion_main!(benches);
