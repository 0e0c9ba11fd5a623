//! The sign-in routes' answers to browsers: plain pages of fixed text, redirects, and the one
//! debug line per refused step. Nothing the issuer or the browser sent is echoed.

use axum::response::{IntoResponse, Response};
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, RETRY_AFTER,
    SET_COOKIE,
};
use http::{HeaderValue, StatusCode};

use super::Login;

/// The path a finished sign-in or sign-out goes to by default: the public URL's own.
pub(crate) fn home(login: &Login) -> String {
    let path = login
        .redirect_uri
        .strip_suffix("/callback")
        .and_then(|base| url::Url::parse(base).ok())
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("{path}/")
}

/// The answer to a `return_to` that would leave this site.
pub(crate) fn elsewhere_page() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in refused",
        "After signing in you can only be sent to a page of this site.",
    )
}

pub(crate) fn again_page() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        "Please sign in again.",
    )
}

/// One debug line per refused sign-in step: the step and a fixed code, nothing the client sent.
pub(crate) fn refused(step: &'static str, code: &str) {
    tracing::debug!(
        target: "tower_jit_provisioning::login",
        step,
        code,
        "sign-in step refused"
    );
}

pub(crate) fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, location);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(cookie) = HeaderValue::from_str(cookie) {
            headers.append(SET_COOKIE, cookie);
        }
    }
    response
}

pub(crate) fn unreachable_page() -> Response {
    let mut response = page(
        StatusCode::BAD_GATEWAY,
        "Sign-in unavailable",
        "The identity provider cannot be reached. Please try again shortly.",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

pub(crate) fn store_page() -> Response {
    let mut response = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        "Please try again shortly.",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// A plain page of fixed text.
pub(crate) fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head><body><h1>{title}</h1><p>{message}</p><p><a href=\"/\">Back</a></p></body></html>",
        title = escape(title),
        message = escape(message),
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
