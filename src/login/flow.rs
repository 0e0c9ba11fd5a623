//! Sign-in flows in progress: kept in the store under the hash of their public key, bound to the
//! browser that started them by a cookie, taken once, dead after ten minutes; and the one rule
//! for where a finished sign-in may send the browser.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use http::HeaderMap;
use serde_json::Value;

use super::session::random_token;
use crate::session::{LoginFlow, SessionHash};
use crate::store::{DynStore, StoreError};

/// How long a sign-in may take from start to finish.
pub(crate) const FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// The binding cookie's name.
pub(crate) fn binding_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-jit_flow"
    } else {
        "jit_flow"
    }
}

/// A fresh public key for a flow (the OAuth `state`).
pub(crate) fn new_key() -> String {
    random_token(32)
}

/// Why a flow cannot be finished. Each is the browser's or an attacker's doing, never shown
/// in detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowRefused {
    /// No such flow: never started, already finished, or expired.
    Unknown,
    /// Started by another browser (login CSRF).
    WrongBrowser,
}

/// Starts a flow of `kind` holding `data`: keeps it under the hash of its public `key`, bound
/// to the browser's binding cookie (the one it has, or a new one). Returns the binding cookie
/// to set.
pub(crate) async fn start(
    store: &dyn DynStore,
    headers: &HeaderMap,
    secure: bool,
    key: &str,
    kind: &str,
    data: Value,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let name = binding_cookie(secure);
    // Reuse the browser's binding, so sign-ins started in several tabs can all finish.
    let binding = match crate::cookies::read(headers, name) {
        Ok(Some(value)) if is_token(value) => value.to_owned(),
        _ => random_token(32),
    };
    let lifetime = TimeDelta::from_std(FLOW_LIFETIME).unwrap_or(TimeDelta::MAX);
    let flow = LoginFlow::new(
        SessionHash::of(key.as_bytes()),
        SessionHash::of(binding.as_bytes()),
        kind,
        data,
        now,
        now + lifetime,
    );
    store.put_login_flow(flow).await?;
    let max_age = i64::try_from(FLOW_LIFETIME.as_secs()).unwrap_or(600);
    Ok(crate::cookies::set(name, &binding, max_age, secure))
}

/// Takes the flow `key` names, once: it must be bound to this browser. The caller reads its
/// kind.
pub(crate) async fn finish(
    store: &dyn DynStore,
    headers: &HeaderMap,
    secure: bool,
    key: &str,
) -> Result<Result<LoginFlow, FlowRefused>, StoreError> {
    if !is_token(key) {
        return Ok(Err(FlowRefused::Unknown));
    }
    // Taken before anything is checked: a flow that was tried with the wrong browser is gone.
    let Some(flow) = store
        .take_login_flow(SessionHash::of(key.as_bytes()))
        .await?
    else {
        return Ok(Err(FlowRefused::Unknown));
    };
    let binding = crate::cookies::read(headers, binding_cookie(secure))
        .ok()
        .flatten()
        .map(|value| SessionHash::of(value.as_bytes()));
    let bound = binding.is_some_and(|binding| {
        aws_lc_rs::constant_time::verify_slices_are_equal(&binding.0, &flow.binding.0).is_ok()
    });
    if !bound {
        return Ok(Err(FlowRefused::WrongBrowser));
    }
    Ok(Ok(flow))
}

/// A value this crate generated: base64url of 32 random bytes.
fn is_token(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a sign-in started with these query `params` goes when it is done: its `return_to`,
/// when that is a path on this site, else `home`; `None` for a `return_to` that could leave it.
pub(crate) fn return_to(
    params: &std::collections::HashMap<String, String>,
    home: String,
) -> Option<String> {
    match params.get("return_to") {
        Some(path) => safe_return_to(path),
        None => Some(home),
    }
}

/// `path` if it is a path on this same site, safe to redirect to after a sign-in; `None` for
/// anything that could leave it: other hosts (`//host`, `/\host`), schemes (`https:`,
/// `javascript:`), backslashes, control characters, dot segments (`/..//host` resolves to
/// `//host` in some clients), and the same again percent-encoded, once or twice.
pub(crate) fn safe_return_to(path: &str) -> Option<String> {
    if path.len() > 2048 || !is_local_path(path) {
        return None;
    }
    // A browser or a proxy may decode before it follows: every decoding must stay local.
    let once = percent_decode(path)?;
    let twice = percent_decode(&once)?;
    (is_local_path(&once) && is_local_path(&twice)).then(|| path.to_owned())
}

fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
        && !has_dot_segment(path)
}

/// Whether the path part (before `?` or `#`) has a `.` or `..` segment: removing it can leave a
/// path that starts with `//`, which a client may read as another host.
fn has_dot_segment(path: &str) -> bool {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path[..end]
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// `text` with `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_places_to_return_to() {
        for good in [
            "/",
            "/orders",
            "/orders?id=7&tab=a",
            "/a/b#frag",
            "/search?q=https://example.com",
            "/%7Euser",
            "/file.tar.gz",
            "/a/...",
            "/search?path=../x",
        ] {
            assert_eq!(safe_return_to(good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "",
            "orders",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:/evil.example",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%252F%252Fevil.example",
            "/%255Cevil.example",
            "/\tevil",
            "/a\nb",
            "/ a",
            "/%0d%0aSet-Cookie:x=y",
            "/%FF%FE",
            "/..//evil.example",
            "/a/../..//evil.example",
            "/./",
            "/a/..",
            "/%2e%2e//evil.example",
            "/%2E/%2E%2E//evil.example",
            "/%252e%252e//evil.example",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad:?}");
        }
        assert_eq!(safe_return_to(&format!("/{}", "a".repeat(3000))), None);
    }
}
