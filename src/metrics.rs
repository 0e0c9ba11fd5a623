//! What the pipeline counts and times, through the [`metrics`] facade: recorded only when
//! the application installs a recorder (`metrics-exporter-prometheus`, StatsD, …); without
//! one every call is a no-op. No label ever carries a person, a token or an account id: only
//! outcomes, sources, reasons and operation names, from short fixed lists.
//!
//! Stage: observation, called from every other stage. Uses nothing else of the crate.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `jit_requests_total` | counter | `outcome` (`admitted`, `anonymous`, `unauthenticated`, `refused`, `bad_request`, `unavailable`), `source` (`bearer_jwt`, `browser_oidc`, `saml`, `oauth2`, `introspection`, a custom source's name, `none`) |
//! | `jit_token_cache_total` | counter | `result` (`hit`, `miss`) |
//! | `jit_token_verifications_total` | counter | `result` (`valid`, `invalid`) |
//! | `jit_token_verification_seconds` | histogram | |
//! | `jit_introspections_total` | counter | `result` (`answered`, `unavailable`) |
//! | `jit_introspection_seconds` | histogram | |
//! | `jit_user_cache_total` | counter | `result` (`hit`, `miss`) |
//! | `jit_key_set_refreshes_total` | counter | `result` (`ok`, `failed`) |
//! | `jit_accounts_total` | counter | `event` (`provisioned`, `linked`, `updated`) |
//! | `jit_refusals_total` | counter | `reason` (a [`DenyReason`](crate::DenyReason) code) |
//! | `jit_scim_requests_total` | counter | `method`, `resource` (`Users`, `Groups`, `discovery`, `other`), `status` (`2xx`, `4xx`, `5xx`) |
//! | `jit_store_seconds` | histogram | `operation` (`find_by_identity`, `create_user`, `link_identity`, `update_user`) |
//! | `jit_store_errors_total` | counter | `kind` (`unavailable`, `failed`) |

use std::future::Future;
use std::time::{Duration, Instant};

/// One request through the layer, decided.
pub(crate) fn request(outcome: &'static str, source: &'static str) {
    metrics::counter!("jit_requests_total", "outcome" => outcome, "source" => source).increment(1);
}

/// One request let in on the cached path. Literal labels make the metric key a static: the
/// hot path allocates nothing for it.
pub(crate) fn admitted(source: &'static str) {
    macro_rules! admitted {
        ($source:literal) => {
            metrics::counter!("jit_requests_total", "outcome" => "admitted", "source" => $source)
        };
    }
    let counter = match source {
        "bearer_jwt" => admitted!("bearer_jwt"),
        "browser_oidc" => admitted!("browser_oidc"),
        "introspection" => admitted!("introspection"),
        "oauth2" => admitted!("oauth2"),
        "saml" => admitted!("saml"),
        other => return request("admitted", other),
    };
    counter.increment(1);
}

/// The outcome label for a refusal of this HTTP status.
pub(crate) fn outcome_of(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "refused",
        500..=599 => "unavailable",
        _ => "bad_request",
    }
}

pub(crate) fn token_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("jit_token_cache_total", "result" => result).increment(1);
}

pub(crate) fn verification(valid: bool, took: Duration) {
    let result = if valid { "valid" } else { "invalid" };
    metrics::counter!("jit_token_verifications_total", "result" => result).increment(1);
    metrics::histogram!("jit_token_verification_seconds").record(took.as_secs_f64());
}

pub(crate) fn introspection(answered: bool, took: Duration) {
    let result = if answered { "answered" } else { "unavailable" };
    metrics::counter!("jit_introspections_total", "result" => result).increment(1);
    metrics::histogram!("jit_introspection_seconds").record(took.as_secs_f64());
}

pub(crate) fn user_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("jit_user_cache_total", "result" => result).increment(1);
}

pub(crate) fn key_set_refresh(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!("jit_key_set_refreshes_total", "result" => result).increment(1);
}

/// An account created, linked or brought up to date by a sign-in.
pub(crate) fn account(event: &'static str) {
    metrics::counter!("jit_accounts_total", "event" => event).increment(1);
}

pub(crate) fn refusal(reason: &'static str) {
    metrics::counter!("jit_refusals_total", "reason" => reason).increment(1);
}

#[cfg(feature = "scim")]
pub(crate) fn scim(method: &'static str, resource: &'static str, status: u16) {
    let status = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(
        "jit_scim_requests_total",
        "method" => method,
        "resource" => resource,
        "status" => status
    )
    .increment(1);
}

/// Times one store call of the sign-in path.
pub(crate) async fn store<T>(operation: &'static str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("jit_store_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A store failure a sign-in met (not a race or a taken name, which are answered).
pub(crate) fn store_error(kind: &'static str) {
    metrics::counter!("jit_store_errors_total", "kind" => kind).increment(1);
}
