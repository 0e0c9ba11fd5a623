//! A verified sign-in becomes an account and a session: provisioned through the pipeline,
//! the browser's old session ended, a new one started, and the browser sent on. The last step
//! of every browser sign-in, whatever its protocol.

use axum::response::Response;
use chrono::Utc;
use http::header::REFERRER_POLICY;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::Login;
use super::pages::{page, redirect, store_page};
use crate::error::Error;
use crate::layer::Shared;
use crate::provision::SignInMemo;
use crate::sign_in::SignIn;

/// Provisions `sign_in`'s account, starts its session (with the issuer's session id `sid`,
/// for logout from the issuer) and redirects to `return_to`; or the page that says why not.
pub(crate) async fn sign_in(
    shared: &Shared,
    login: &Login,
    headers: &HeaderMap,
    sign_in: &SignIn,
    sid: Option<String>,
    return_to: &str,
) -> Response {
    let Some(provisioner) = &shared.provisioner else {
        return store_page();
    };
    let user = match provisioner.provision(sign_in, &SignInMemo::default()).await {
        Ok(user) => user,
        Err(Error::Denied(reason)) => {
            return page(StatusCode::FORBIDDEN, "Access denied", reason.description());
        }
        Err(_) => return store_page(),
    };
    // A new session id at every sign-in, and the one this browser had, if any, ended: a
    // session id planted before the sign-in never becomes a signed-in one.
    let Ok(_) = login.sessions.end(headers).await else {
        return store_page();
    };
    match login
        .sessions
        .start(user.id(), sign_in, sid, Utc::now())
        .await
    {
        Ok(cookie) => {
            let mut response = redirect(return_to, &[cookie]);
            response
                .headers_mut()
                .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            response
        }
        Err(_) => store_page(),
    }
}
