//! [`TestGitHub`]: the parts of GitHub's OAuth and REST API this crate uses, on loopback, as
//! GitHub documents them: `GET /login/oauth/authorize` (with a page to pick a user, or `login`
//! to pick one without a page), `POST /login/oauth/access_token` (errors as `200` with an
//! `error` member, as GitHub answers them), `GET /user`, `/user/emails`, `/user/orgs` and
//! `/user/teams` (refused without a `User-Agent`, as GitHub refuses them). Users can be renamed,
//! their addresses and memberships changed, their tokens revoked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::signin::{
    basic_credentials, html_escape, json_response, params, redirect, text, with_query,
};
use super::{form_post, random_hex, request_host, serve_with};
use crate::login::OAuth2Provider;

type Response = http::Response<Full<Bytes>>;

/// A person with a GitHub account at [`TestGitHub`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitHubUser {
    /// The numeric id: the identity, which never changes.
    pub id: u64,
    /// The login name, which its owner can change.
    pub login: String,
    /// The display name.
    pub name: String,
    /// Addresses, each primary or not, verified or not.
    pub emails: Vec<GitHubEmail>,
    /// Organisation logins.
    pub orgs: Vec<String>,
    /// Team memberships: (organisation login, team slug).
    pub teams: Vec<(String, String)>,
}

/// One of a [`GitHubUser`]'s addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitHubEmail {
    /// The address.
    pub email: String,
    /// Whether it is the account's primary address.
    pub primary: bool,
    /// Whether GitHub verified it.
    pub verified: bool,
}

impl GitHubEmail {
    /// An address, primary or not, verified or not.
    pub fn new(email: &str, primary: bool, verified: bool) -> Self {
        Self {
            email: email.to_owned(),
            primary,
            verified,
        }
    }
}

impl GitHubUser {
    /// A user with this id, login and name, with no address and no membership.
    pub fn new(id: u64, login: &str, name: &str) -> Self {
        Self {
            id,
            login: login.to_owned(),
            name: name.to_owned(),
            emails: Vec::new(),
            orgs: Vec::new(),
            teams: Vec::new(),
        }
    }

    /// The same user with these addresses.
    #[must_use]
    pub fn emails(mut self, emails: Vec<GitHubEmail>) -> Self {
        self.emails = emails;
        self
    }

    /// The same user in these organisations and teams (`(org, team slug)`).
    #[must_use]
    pub fn memberships<O, T>(mut self, orgs: O, teams: T) -> Self
    where
        O: IntoIterator<Item = &'static str>,
        T: IntoIterator<Item = (&'static str, &'static str)>,
    {
        self.orgs = orgs.into_iter().map(str::to_owned).collect();
        self.teams = teams
            .into_iter()
            .map(|(org, team)| (org.to_owned(), team.to_owned()))
            .collect();
        self
    }

    /// The built-in users: `ada` (1001; `ada@example.com` primary and verified; org `acme`,
    /// team `acme/admins`), `bob` (1002; primary `bob@example.com` *unverified*, and a verified
    /// but non-primary `bob@example.org`), `carol` (1003; `carol@example.com` primary and
    /// verified; no organisation).
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new(1001, "ada", "Ada Lovelace")
                .emails(vec![GitHubEmail::new("ada@example.com", true, true)])
                .memberships(["acme"], [("acme", "admins")]),
            Self::new(1002, "bob", "Bob Dylan").emails(vec![
                GitHubEmail::new("bob@example.com", true, false),
                GitHubEmail::new("bob@example.org", false, true),
            ]),
            Self::new(1003, "carol", "Carol Shaw").emails(vec![GitHubEmail::new(
                "carol@example.com",
                true,
                true,
            )]),
        ]
    }
}

/// An authorization request waiting for the person to pick a user.
#[derive(Clone)]
struct Pending {
    redirect_uri: String,
    state: Option<String>,
    challenge: Option<String>,
    scopes: Vec<String>,
}

struct Code {
    pending: Pending,
    user: u64,
    used: bool,
}

struct Token {
    user: u64,
    scopes: Vec<String>,
    revoked: bool,
}

#[derive(Default)]
struct GitHubState {
    users: Mutex<Vec<GitHubUser>>,
    pending: Mutex<HashMap<String, Pending>>,
    codes: Mutex<HashMap<String, Code>>,
    tokens: Mutex<HashMap<String, Token>>,
    user_calls: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// GitHub's OAuth and user API on loopback, for sign-in tests with no network. Its web and API
/// base URL are both [`url`](Self::url); [`provider`](Self::provider) is the
/// [`OAuth2Provider::github`] preset pointed at it. Dropping it stops the server.
pub struct TestGitHub {
    state: Arc<GitHubState>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl TestGitHub {
    /// The OAuth app's client id the double accepts.
    pub const CLIENT_ID: &'static str = "test-github-client";
    /// The OAuth app's client secret the double accepts.
    pub const CLIENT_SECRET: &'static str = "test-github-secret";

    /// Starts the double on a free loopback port, with [`GitHubUser::defaults`].
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        Self::start_on(0)
            .await
            .expect("a free loopback port for the GitHub double")
    }

    /// Starts the double on `port` (0: any free one).
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub async fn start_on(port: u16) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(GitHubState {
            users: Mutex::new(GitHubUser::defaults()),
            ..GitHubState::default()
        });
        let server = tokio::spawn(serve_with(listener, Arc::clone(&state), respond));
        Ok(Self {
            state,
            addr,
            server,
        })
    }

    /// The double's base URL, `http://127.0.0.1:<port>`, for the web and the API alike.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// [`OAuth2Provider::github`] with the double's client and URLs (plain http on loopback
    /// allowed). The sign-in's issuer is `github`.
    pub fn provider(&self) -> OAuth2Provider {
        OAuth2Provider::github(Self::CLIENT_ID, Self::CLIENT_SECRET)
            .github_urls(self.url(), self.url())
            .allow_http_loopback(true)
    }

    /// Adds `user`, or replaces the user with the same id.
    pub fn add_user(&self, user: GitHubUser) {
        let mut users = lock(&self.state.users);
        users.retain(|u| u.id != user.id);
        users.push(user);
    }

    /// Renames user `id` to `login`, as its owner can.
    pub fn rename(&self, id: u64, login: &str) {
        if let Some(user) = lock(&self.state.users).iter_mut().find(|u| u.id == id) {
            user.login = login.to_owned();
        }
    }

    /// An access token for user `id` with GitHub's default sign-in scopes, as a CLI holds one
    /// (`gho_…`).
    pub fn token_for(&self, id: u64) -> String {
        let token = format!("gho_{}", random_hex(18));
        lock(&self.state.tokens).insert(
            token.clone(),
            Token {
                user: id,
                scopes: crate::login::GITHUB_SCOPES.map(str::to_owned).to_vec(),
                revoked: false,
            },
        );
        token
    }

    /// Revokes an access token: the API answers `401 Bad credentials` for it from now on.
    pub fn revoke(&self, token: &str) {
        if let Some(token) = lock(&self.state.tokens).get_mut(token) {
            token.revoked = true;
        }
    }

    /// How many `GET /user` requests the API has answered.
    pub fn user_calls(&self) -> usize {
        self.state.user_calls.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for TestGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGitHub")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Drop for TestGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn respond(
    state: Arc<GitHubState>,
    request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let path = request.uri().path().to_owned();
    let response = match (request.method().as_str(), path.as_str()) {
        ("GET", "/login/oauth/authorize") => authorize(&state, &query),
        ("GET", "/login/oauth/choose") => choose(&state, &query),
        ("POST", "/login/oauth/access_token") => match form_post(request).await {
            Ok((authorization, body)) => access_token(&state, authorization.as_deref(), &body),
            Err(response) => response,
        },
        ("GET", "/user" | "/user/emails" | "/user/orgs" | "/user/teams") => {
            let host = request_host(request.headers());
            api(&state, &path, &query, &host, request.headers())
        }
        _ => json_response(404, &json!({ "message": "Not Found" })),
    };
    Ok(response)
}

/// `GET /login/oauth/authorize`: `login` picks the user; without it, a page to pick one.
fn authorize(state: &GitHubState, query: &str) -> Response {
    let params = params(query);
    if params.get("client_id").map(String::as_str) != Some(TestGitHub::CLIENT_ID) {
        return text(404, "unknown client\n");
    }
    let Some(redirect_uri) = params.get("redirect_uri").cloned() else {
        return text(400, "redirect_uri required\n");
    };
    if params
        .get("code_challenge_method")
        .is_some_and(|method| method != "S256")
    {
        return text(400, "code_challenge_method must be S256\n");
    }
    let pending = Pending {
        redirect_uri,
        state: params.get("state").cloned(),
        challenge: params.get("code_challenge").cloned(),
        scopes: params
            .get("scope")
            .map(|s| s.split([' ', ',']).map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    if let Some(login) = params.get("login") {
        return grant(state, pending, login);
    }
    let ticket = random_hex(16);
    lock(&state.pending).insert(ticket.clone(), pending);
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Test GitHub: sign in</title>\
         </head><body><h1>Authorize the application</h1><ul>",
    );
    for user in lock(&state.users).iter() {
        page.push_str(&format!(
            "<li><a id=\"user-{login}\" href=\"/login/oauth/choose?ticket={ticket}&amp;user={login}\">\
             {name} (@{login})</a></li>",
            login = html_escape(&user.login),
            name = html_escape(&user.name),
        ));
    }
    page.push_str(&format!(
        "</ul><p><a id=\"deny\" href=\"/login/oauth/choose?ticket={ticket}&amp;user=deny\">\
         Cancel</a></p></body></html>"
    ));
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::from(page))
        .expect("static response")
}

fn choose(state: &GitHubState, query: &str) -> Response {
    let params = params(query);
    let Some(pending) = params
        .get("ticket")
        .and_then(|ticket| lock(&state.pending).remove(ticket))
    else {
        return text(400, "unknown or used ticket\n");
    };
    match params.get("user") {
        Some(user) => grant(state, pending, user),
        None => text(400, "no user picked\n"),
    }
}

/// `login` (a login name, or `deny`) authorizes the application: a code back to it.
fn grant(state: &GitHubState, pending: Pending, login: &str) -> Response {
    let mut back = Vec::new();
    if let Some(state) = &pending.state {
        back.push(("state", state.clone()));
    }
    let user = lock(&state.users)
        .iter()
        .find(|u| u.login == login)
        .map(|u| u.id);
    let Some(user) = user.filter(|_| login != "deny") else {
        back.insert(0, ("error", "access_denied".to_owned()));
        let pairs: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return redirect(&with_query(&pending.redirect_uri, &pairs));
    };
    let code = random_hex(10);
    back.insert(0, ("code", code.clone()));
    let pairs: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = with_query(&pending.redirect_uri, &pairs);
    lock(&state.codes).insert(
        code,
        Code {
            pending,
            user,
            used: false,
        },
    );
    redirect(&location)
}

/// GitHub answers token-endpoint errors with `200` and an `error` member.
fn oauth_error(error: &str) -> Response {
    json_response(
        200,
        &json!({ "error": error, "error_description": "refused by the test double" }),
    )
}

/// `POST /login/oauth/access_token`.
fn access_token(state: &GitHubState, authorization: Option<&str>, body: &[u8]) -> Response {
    let form = params(&String::from_utf8_lossy(body));
    let (client_id, secret) = match basic_credentials(authorization) {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if client_id != TestGitHub::CLIENT_ID || secret != TestGitHub::CLIENT_SECRET {
        return oauth_error("incorrect_client_credentials");
    }
    let Some(code) = form.get("code") else {
        return oauth_error("bad_verification_code");
    };
    let (user, scopes) = {
        let mut codes = lock(&state.codes);
        let Some(grant) = codes.get_mut(code).filter(|grant| !grant.used) else {
            return oauth_error("bad_verification_code");
        };
        grant.used = true;
        if form.get("redirect_uri") != Some(&grant.pending.redirect_uri) {
            return oauth_error("redirect_uri_mismatch");
        }
        if let Some(challenge) = &grant.pending.challenge {
            let verified = form.get("code_verifier").is_some_and(|verifier| {
                let digest =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
                URL_SAFE_NO_PAD.encode(digest.as_ref()) == *challenge
            });
            if !verified {
                return oauth_error("bad_verification_code");
            }
        }
        (grant.user, grant.pending.scopes.clone())
    };
    let token = format!("gho_{}", random_hex(18));
    let scope = scopes.join(",");
    lock(&state.tokens).insert(
        token.clone(),
        Token {
            user,
            scopes,
            revoked: false,
        },
    );
    json_response(
        200,
        &json!({ "access_token": token, "token_type": "bearer", "scope": scope }),
    )
}

/// The REST API: who the token belongs to, their addresses, organisations and teams.
fn api(
    state: &GitHubState,
    path: &str,
    query: &str,
    host: &str,
    headers: &http::HeaderMap,
) -> Response {
    if !headers.contains_key(http::header::USER_AGENT) {
        return json_response(
            403,
            &json!({ "message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header" }),
        );
    }
    if path == "/user" {
        state.user_calls.fetch_add(1, Ordering::SeqCst);
    }
    let bad_credentials = || json_response(401, &json!({ "message": "Bad credentials" }));
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        });
    let Some(presented) = presented else {
        return json_response(401, &json!({ "message": "Requires authentication" }));
    };
    let (user, scopes) = {
        let tokens = lock(&state.tokens);
        match tokens.get(presented).filter(|t| !t.revoked) {
            Some(token) => (token.user, token.scopes.clone()),
            None => return bad_credentials(),
        }
    };
    let Some(user) = lock(&state.users).iter().find(|u| u.id == user).cloned() else {
        return bad_credentials();
    };
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let body: Value = match path {
        "/user" => json!({
            "id": user.id,
            "login": user.login,
            "name": user.name,
            "avatar_url": format!("https://avatars.example.com/u/{}", user.id),
            "html_url": format!("https://github.example/{}", user.login),
            "type": "User",
            // The public address, if any: whatever the person chose, verified or not.
            "email": user.emails.first().map(|e| e.email.clone()),
        }),
        "/user/emails" if has("user:email") || has("user") => Value::Array(
            user.emails
                .iter()
                .map(|e| {
                    json!({
                        "email": e.email,
                        "primary": e.primary,
                        "verified": e.verified,
                        "visibility": if e.primary { Some("private") } else { None },
                    })
                })
                .collect(),
        ),
        "/user/orgs" => {
            let orgs: Vec<Value> = user
                .orgs
                .iter()
                .map(|org| json!({ "login": org, "id": 1 }))
                .collect();
            return paginated(&orgs, path, query, host);
        }
        "/user/teams" if has("read:org") || has("user") || has("repo") => {
            let teams: Vec<Value> = user
                .teams
                .iter()
                .map(|(org, slug)| {
                    json!({ "slug": slug, "name": slug, "organization": { "login": org } })
                })
                .collect();
            return paginated(&teams, path, query, host);
        }
        _ => return json_response(404, &json!({ "message": "Not Found" })),
    };
    json_response(200, &body)
}

/// One page of a list, as GitHub pages them: `per_page` (30 by default, 100 at most) and
/// `page`, with a `Link: <…>; rel="next"` header while more remain.
fn paginated(items: &[Value], path: &str, query: &str, host: &str) -> Response {
    let params = params(query);
    let per_page = params
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = params
        .get("page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    let mut response = json_response(200, &Value::Array(slice));
    if start + per_page < items.len() {
        let next = format!(
            "<http://{host}{path}?per_page={per_page}&page={}>; rel=\"next\"",
            page + 1
        );
        if let Ok(value) = http::HeaderValue::from_str(&next) {
            response.headers_mut().insert(http::header::LINK, value);
        }
    }
    response
}
