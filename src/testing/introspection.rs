//! The test issuer's opaque access tokens and its RFC 7662 introspection endpoint: tokens minted
//! from any [`TokenBuilder`]'s claims, revocable, answered at `POST /introspect` to a client
//! that authenticates with [`TestIssuer::CLIENT_SECRET`], with calls counted and faults to
//! order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use serde_json::{Map, Value, json};

use super::signin::{basic_credentials, json_response, params};
use super::{Fault, State, TestIssuer, TokenBuilder, now_secs, random_hex};

type Response = http::Response<http_body_util::Full<bytes::Bytes>>;

/// The opaque tokens the issuer minted, and how its introspection endpoint behaves.
#[derive(Default)]
pub(super) struct Opaque {
    tokens: Mutex<HashMap<String, OpaqueToken>>,
    calls: AtomicUsize,
    fault: RwLock<Option<Fault>>,
}

struct OpaqueToken {
    claims: Map<String, Value>,
    revoked: bool,
}

impl TokenBuilder {
    /// Mints an **opaque** access token carrying this builder's claims: a random handle (no
    /// dots, nothing to decode) that only the issuer's introspection endpoint can answer for.
    /// The header settings are ignored; `token_type` is `Bearer` unless a claim sets it.
    pub fn opaque(self) -> String {
        let handle = format!("tjp_at_{}", random_hex(24));
        let mut claims = self.claims;
        claims.remove("typ");
        claims
            .entry("token_type")
            .or_insert_with(|| Value::from("Bearer"));
        self.state
            .opaque
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                handle.clone(),
                OpaqueToken {
                    claims,
                    revoked: false,
                },
            );
        handle
    }
}

impl TestIssuer {
    /// A builder for an opaque access token: the claims of
    /// [`access_token`](Self::access_token), minted with [`TokenBuilder::opaque`].
    pub fn opaque_token(&self) -> TokenBuilder {
        self.access_token()
    }

    /// Revokes an opaque token: its introspection answers `{"active": false}` from now on.
    pub fn revoke(&self, token: &str) {
        if let Some(minted) = self
            .state
            .opaque
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(token)
        {
            minted.revoked = true;
        }
    }

    /// How many introspection requests the issuer has answered (or failed on purpose).
    pub fn introspections(&self) -> usize {
        self.state.opaque.calls.load(Ordering::SeqCst)
    }

    /// Makes the introspection endpoint misbehave ([`Fault::Status`], [`Fault::Html`],
    /// [`Fault::Delay`] before a normal answer, …) until set back to `None`.
    pub fn set_introspection_fault(&self, fault: Option<Fault>) {
        *self
            .state
            .opaque
            .fault
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }
}

/// `POST /introspect`: RFC 7662, for a client authenticated by `client_secret_basic` or
/// `client_secret_post`.
pub(super) async fn introspect(
    state: &State,
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    state.opaque.calls.fetch_add(1, Ordering::SeqCst);
    let fault = state
        .opaque
        .fault
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match fault {
        None => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(fault) => return super::faulty(state, fault).await,
    }
    let form = params(&String::from_utf8_lossy(body));
    let secret = match basic_credentials(authorization) {
        Some((_, secret)) => Some(secret),
        None => form.get("client_secret").cloned(),
    };
    if secret.as_deref() != Some(TestIssuer::CLIENT_SECRET) {
        return json_response(401, &json!({ "error": "invalid_client" }));
    }
    let Some(token) = form.get("token") else {
        return json_response(400, &json!({ "error": "invalid_request" }));
    };
    let tokens = state
        .opaque
        .tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let answer = tokens.get(token).and_then(|minted| {
        let expired = minted
            .claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_some_and(|exp| exp <= now_secs());
        (!minted.revoked && !expired).then(|| {
            let mut answer = minted.claims.clone();
            answer.insert("active".into(), Value::Bool(true));
            Value::Object(answer)
        })
    });
    json_response(200, &answer.unwrap_or_else(|| json!({ "active": false })))
}
