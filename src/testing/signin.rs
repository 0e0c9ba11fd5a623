//! The test issuer as an OpenID provider for browsers: an authorization endpoint with a page to
//! pick a test user (or `login_hint` to pick one without a page), a token endpoint that checks
//! the client secret, the redirect URI and PKCE and honours each code once, and back-channel
//! logout tokens. Enough for an application's own sign-in tests, with no real provider.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::{State, TestIssuer, TokenBuilder, random_hex};
use crate::token::TokenKind;

/// A person who can sign in at the test issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestUser {
    /// `sub`.
    pub subject: String,
    /// `email`, verified.
    pub email: String,
    /// `name`.
    pub name: String,
    /// `groups`.
    pub groups: Vec<String>,
}

impl TestUser {
    /// A user with this subject, address and name, in no group.
    pub fn new(subject: &str, email: &str, name: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            email: email.to_owned(),
            name: name.to_owned(),
            groups: Vec::new(),
        }
    }

    /// The same user in these groups.
    #[must_use]
    pub fn groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The built-in users: `alice` (group `staff`), `bob` and `carol`, at `example.com`.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new("alice", "alice@example.com", "Alice Liddell").groups(["staff"]),
            Self::new("bob", "bob@example.com", "Bob Dylan"),
            Self::new("carol", "carol@example.com", "Carol Shaw"),
        ]
    }
}

/// How clients authenticate at the test issuer's token endpoint: what discovery advertises in
/// `token_endpoint_auth_methods_supported`, and all the endpoint accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic` or `client_secret_post`.
    #[default]
    Either,
    /// `client_secret_basic` only: the secret in the `Authorization` header.
    Basic,
    /// `client_secret_post` only: the secret in the form body.
    Post,
}

impl ClientAuth {
    pub(super) fn advertised(self) -> &'static [&'static str] {
        match self {
            Self::Either => &["client_secret_basic", "client_secret_post"],
            Self::Basic => &["client_secret_basic"],
            Self::Post => &["client_secret_post"],
        }
    }
}

/// A way the test issuer's token endpoint hands out a bad ID token, to test that a relying
/// party refuses each: the sign-in must fail with no session and no account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInFault {
    /// The ID token's `nonce` is not the one the authorization request carried.
    WrongNonce,
    /// The ID token has no `nonce`.
    NoNonce,
    /// The ID token's `at_hash` does not match the access token beside it.
    AccessTokenHashMismatch,
    /// The ID token is for another client.
    WrongAudience,
    /// The ID token expired ten minutes ago.
    Expired,
    /// The ID token names a signing key (`kid`) the issuer does not publish.
    UnknownKey,
    /// The token response has no ID token at all.
    NoIdToken,
    /// The token endpoint answers 500.
    ServerError,
}

/// An authorization request waiting for the person to pick a user.
#[derive(Clone)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: Option<String>,
}

/// A code handed to the client, redeemable once.
struct Grant {
    request: AuthRequest,
    user: TestUser,
    sid: String,
    used: bool,
    issued: Instant,
}

/// The sign-in side of the test issuer's state.
pub(super) struct Logins {
    users: Vec<TestUser>,
    pending: HashMap<String, AuthRequest>,
    codes: HashMap<String, Grant>,
    /// Every issued session id, with its subject, newest last.
    sids: Vec<(String, String)>,
    token_requests: usize,
    pub(super) client_auth: ClientAuth,
    fault: Option<SignInFault>,
}

impl Default for Logins {
    fn default() -> Self {
        Self {
            users: TestUser::defaults(),
            pending: HashMap::new(),
            codes: HashMap::new(),
            sids: Vec::new(),
            token_requests: 0,
            client_auth: ClientAuth::Either,
            fault: None,
        }
    }
}

/// How long a code stays redeemable.
const CODE_LIFETIME: Duration = Duration::from_secs(60);

type Response = http::Response<Full<Bytes>>;

fn logins(state: &State) -> std::sync::MutexGuard<'_, Logins> {
    state.logins.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn params(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn text(status: u16, body: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::from(body.to_owned()))
        .expect("static response")
}

pub(super) fn redirect(location: &str) -> Response {
    http::Response::builder()
        .status(302)
        .header(http::header::LOCATION, location)
        .body(Full::default())
        .expect("static response")
}

pub(super) fn json_response(status: u16, value: &Value) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Full::from(value.to_string()))
        .expect("static response")
}

/// Escapes text for HTML.
pub(super) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `redirect_uri` with `params` added to its query.
pub(super) fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => return redirect_uri.to_owned(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
    }
    url.to_string()
}

/// `GET /authorize`: with `login_hint`, signs that user in at once (an unknown hint is a user of
/// its own, `deny` refuses with `access_denied`); without, a page to pick a user.
pub(super) fn authorize(state: &Arc<State>, query: &str) -> Response {
    let params = params(query);
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let (Some(client_id), Some(redirect_uri)) = (param("client_id"), param("redirect_uri")) else {
        return text(400, "client_id and redirect_uri are required\n");
    };
    if url::Url::parse(&redirect_uri).is_err() {
        return text(400, "redirect_uri is not a URL\n");
    }
    let request = AuthRequest {
        client_id,
        redirect_uri,
        state: param("state"),
        nonce: param("nonce"),
        challenge: param("code_challenge"),
    };
    if param("response_type").as_deref() != Some("code") {
        return redirect_error(&request, "unsupported_response_type");
    }
    if let Some(method) = param("code_challenge_method")
        && method != "S256"
    {
        return redirect_error(&request, "invalid_request");
    }
    if let Some(hint) = param("login_hint") {
        return sign_in(state, request, &hint);
    }
    let ticket = random_hex(16);
    let users = {
        let mut logins = logins(state);
        logins.pending.insert(ticket.clone(), request);
        logins.users.clone()
    };
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Test issuer: sign in</title>\
         </head><body><h1>Sign in to the test issuer</h1><p>Pick a test user:</p><ul>",
    );
    for user in users {
        page.push_str(&format!(
            "<li><a id=\"user-{sub}\" href=\"/authorize/choose?ticket={ticket}&amp;user={sub}\">{name} \
             &lt;{email}&gt;</a></li>",
            sub = html_escape(&user.subject),
            name = html_escape(&user.name),
            email = html_escape(&user.email),
        ));
    }
    page.push_str(&format!(
        "</ul><p><a id=\"deny\" href=\"/authorize/choose?ticket={ticket}&amp;user=deny\">\
         Refuse</a></p></body></html>"
    ));
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::from(page))
        .expect("static response")
}

/// `GET /authorize/choose?ticket=…&user=…`: the pick on the page.
pub(super) fn choose(state: &Arc<State>, query: &str) -> Response {
    let params = params(query);
    let Some(request) = params
        .get("ticket")
        .and_then(|ticket| logins(state).pending.remove(ticket))
    else {
        return text(400, "unknown or used sign-in ticket\n");
    };
    match params.get("user") {
        Some(user) => sign_in(state, request, user),
        None => text(400, "no user picked\n"),
    }
}

fn redirect_error(request: &AuthRequest, error: &str) -> Response {
    let mut params = vec![("error", error)];
    if let Some(state) = &request.state {
        params.push(("state", state));
    }
    redirect(&with_query(&request.redirect_uri, &params))
}

/// Signs `who` (a subject or e-mail of a known user, `deny`, or anyone new) in: a code back to
/// the client.
fn sign_in(state: &Arc<State>, request: AuthRequest, who: &str) -> Response {
    if who == "deny" {
        return redirect_error(&request, "access_denied");
    }
    let code = random_hex(16);
    let sid = random_hex(8);
    let location = {
        let mut logins = logins(state);
        let user = logins
            .users
            .iter()
            .find(|u| u.subject == who || u.email == who)
            .cloned()
            .unwrap_or_else(|| {
                let email = if who.contains('@') {
                    who.to_owned()
                } else {
                    format!("{who}@example.com")
                };
                TestUser::new(who, &email, who)
            });
        logins.sids.push((user.subject.clone(), sid.clone()));
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            params.push(("state", state.as_str()));
        }
        let location = with_query(&request.redirect_uri, &params);
        logins.codes.insert(
            code.clone(),
            Grant {
                request,
                user,
                sid,
                used: false,
                issued: Instant::now(),
            },
        );
        location
    };
    redirect(&location)
}

/// The client id and secret of an `Authorization: Basic` header (RFC 6749 §2.3.1: each
/// form-urlencoded before joining).
pub(super) fn basic_credentials(authorization: Option<&str>) -> Option<(String, String)> {
    authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':').map(|(id, secret)| {
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (decode(id), decode(secret))
            })
        })
}

fn token_error(status: u16, error: &str) -> Response {
    json_response(status, &json!({ "error": error }))
}

/// `POST /token`: the authorization code grant, with `client_secret_basic` or
/// `client_secret_post`, the redirect URI of the request, and the PKCE verifier when the
/// request had a challenge. A code is honoured once.
pub(super) fn token(state: &Arc<State>, authorization: Option<&str>, body: &[u8]) -> Response {
    logins(state).token_requests += 1;
    let form = params(&String::from_utf8_lossy(body));
    let field = |name: &str| form.get(name).cloned();
    let basic = basic_credentials(authorization);
    let in_body = field("client_secret").is_some();
    let allowed = match logins(state).client_auth {
        ClientAuth::Either => basic.is_some() != in_body,
        ClientAuth::Basic => basic.is_some() && !in_body,
        ClientAuth::Post => basic.is_none() && in_body,
    };
    if !allowed {
        return token_error(401, "invalid_client");
    }
    let (client_id, secret) = match basic {
        Some(pair) => pair,
        None => (
            field("client_id").unwrap_or_default(),
            field("client_secret").unwrap_or_default(),
        ),
    };
    if secret != TestIssuer::CLIENT_SECRET {
        return token_error(401, "invalid_client");
    }
    if field("grant_type").as_deref() != Some("authorization_code") {
        return token_error(400, "unsupported_grant_type");
    }
    let Some(code) = field("code") else {
        return token_error(400, "invalid_request");
    };
    let grant = {
        let mut logins = logins(state);
        let Some(grant) = logins.codes.get_mut(&code) else {
            return token_error(400, "invalid_grant");
        };
        if grant.used || grant.issued.elapsed() > CODE_LIFETIME {
            return token_error(400, "invalid_grant");
        }
        grant.used = true;
        (grant.request.clone(), grant.user.clone(), grant.sid.clone())
    };
    let (request, user, sid) = grant;
    if request.client_id != client_id
        || field("redirect_uri").as_deref() != Some(request.redirect_uri.as_str())
    {
        return token_error(400, "invalid_grant");
    }
    if let Some(challenge) = &request.challenge {
        let verified = field("code_verifier").is_some_and(|verifier| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref()) == *challenge
        });
        if !verified {
            return token_error(400, "invalid_grant");
        }
    }
    let fault = logins(state).fault;
    if fault == Some(SignInFault::ServerError) {
        return token_error(500, "server_error");
    }
    let access_token = TestIssuer::token_for(state, TokenKind::Access)
        .subject(user.subject.as_str())
        .claim("client_id", client_id.as_str())
        .claim("scope", "openid email profile")
        .sign();
    let at_hash = {
        let hashed = match fault {
            Some(SignInFault::AccessTokenHashMismatch) => "another access token",
            _ => access_token.as_str(),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, hashed.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    };
    let mut id_token = TestIssuer::token_for(state, TokenKind::Id)
        .subject(user.subject.as_str())
        .audience(client_id.as_str())
        .claim("azp", client_id.as_str())
        .claim("sid", sid.as_str())
        .claim("at_hash", at_hash)
        .claim("auth_time", super::now_secs())
        .email(user.email.as_str(), true)
        .claim("name", user.name.as_str())
        .groups(user.groups.iter().map(String::as_str));
    match (fault, &request.nonce) {
        (Some(SignInFault::NoNonce), _) | (_, None) => {}
        (Some(SignInFault::WrongNonce), Some(_)) => {
            id_token = id_token.claim("nonce", random_hex(16));
        }
        (_, Some(nonce)) => id_token = id_token.claim("nonce", nonce.as_str()),
    }
    match fault {
        Some(SignInFault::WrongAudience) => {
            id_token = id_token
                .audience("another-client")
                .claim("azp", "another-client");
        }
        Some(SignInFault::Expired) => {
            let now = super::now_secs();
            id_token = id_token.issued_at(now - 1200).expires_at(now - 600);
        }
        Some(SignInFault::UnknownKey) => id_token = id_token.kid("not-published"),
        _ => {}
    }
    let mut response = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
    });
    if fault != Some(SignInFault::NoIdToken) {
        response["id_token"] = Value::String(id_token.sign());
    }
    json_response(200, &response)
}

impl TestIssuer {
    /// The client secret the token endpoint accepts, with any client id.
    pub const CLIENT_SECRET: &'static str = "test-secret";

    /// Makes `user` one of the users who can sign in (replacing one with the same subject).
    pub fn add_user(&self, user: TestUser) {
        let mut logins = logins(&self.state);
        logins.users.retain(|u| u.subject != user.subject);
        logins.users.push(user);
    }

    /// The session ids (`sid`) issued to `subject`'s sign-ins, oldest first.
    pub fn sids(&self, subject: &str) -> Vec<String> {
        logins(&self.state)
            .sids
            .iter()
            .filter(|(sub, _)| sub == subject)
            .map(|(_, sid)| sid.clone())
            .collect()
    }

    /// Sets how clients must authenticate at the token endpoint, and what discovery advertises.
    /// Set it before a relying party reads the discovery document.
    pub fn set_client_auth(&self, auth: ClientAuth) {
        logins(&self.state).client_auth = auth;
    }

    /// Makes the token endpoint hand out bad ID tokens (or none) until set back to `None`.
    pub fn set_sign_in_fault(&self, fault: Option<SignInFault>) {
        logins(&self.state).fault = fault;
    }

    /// How many requests the token endpoint has answered.
    pub fn token_requests(&self) -> usize {
        logins(&self.state).token_requests
    }

    /// A builder for an OpenID Connect Back-Channel Logout token: `typ: logout+jwt`, the
    /// back-channel logout event, a fresh `jti`, `aud` [`CLIENT_ID`](Self::CLIENT_ID), issued now,
    /// valid for two minutes, and no subject or session yet (add `sub`, `sid` or both).
    pub fn logout_token(&self) -> TokenBuilder {
        Self::token_for(&self.state, TokenKind::Id)
            .header("typ", "logout+jwt")
            .without_claim("sub")
            .claim("jti", random_hex(12))
            .claim(
                "events",
                json!({ "http://schemas.openid.net/event/backchannel-logout": {} }),
            )
            .valid_for(Duration::from_secs(120))
    }

    /// Posts `logout_token` to a relying party's back-channel logout endpoint, as the issuer
    /// does when the person signs out there; returns the status it answered.
    ///
    /// # Panics
    ///
    /// If the endpoint cannot be reached.
    pub async fn send_backchannel_logout(&self, endpoint: &str, logout_token: &str) -> u16 {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", logout_token)
            .finish();
        let response = reqwest::Client::new()
            .post(endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .expect("the back-channel logout endpoint answers");
        response.status().as_u16()
    }
}
