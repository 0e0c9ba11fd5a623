//! The SAML endpoints: `GET /saml/metadata`, `GET /saml/login`, `POST /saml/acs` and its
//! same-site finish, `GET /saml/acs?finish=…`, and Single Logout at `GET|POST /saml/slo`.
//!
//! The IdP posts the response cross-site, so the browser leaves out the `SameSite=Lax` cookie
//! that binds the sign-in to it. The response is therefore verified and its assertion id spent
//! at the POST, parked under a one-use key, and the browser sent on to this site's own
//! `GET /saml/acs`: a top-level GET, which carries the cookie, so the flow the response
//! answers can be taken only by the browser that started it (django-allauth's approach).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Saml;
use super::attributes::{self, NoIdentity};
#[cfg(feature = "organizations")]
use super::connections::ConnectionIdp;
use super::logout::{Binding, LogoutExpectations, verify_logout_request};
use super::metadata::{SpDescription, sp_metadata};
use super::request::{AuthnRequest, LogoutResponse};
use super::verify::{self, Expectations, MAX_RESPONSE_BYTES, Refusal, TrustedIdp};
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::layer::Shared;
use crate::login::Login;
use crate::login::complete;
use crate::login::flow::{self, FlowRefused};
use crate::login::pages::{
    again_page, elsewhere_page, home, page, redirect, refused, store_page, unreachable_page,
};
use crate::session::{LoginFlow, SessionHash, SessionSelector};
use crate::sign_in::{ConnectionRef, SignIn, SignInSource};

/// The flow kind of a sign-in started at `/saml/login`.
const SAML_FLOW: &str = "saml";
/// The kind of a verified response waiting for its browser.
const PARKED: &str = "saml_parked";
/// How long a parked response waits for the browser's same-site GET.
const PARK_LIFETIME: TimeDelta = TimeDelta::seconds(120);

/// The SAML routes, added to the sign-in router.
pub(crate) fn routes(router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    router
        .route("/saml/metadata", get(metadata))
        .route("/saml/login", get(login))
        .route(
            "/saml/acs",
            get(finish)
                .post(acs)
                // The form may carry a response up to the bound, which is then refused
                // with its own page; beyond this, axum's 413.
                .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES + 16 * 1024)),
        )
        .route("/saml/slo", get(slo_redirect).post(slo_post))
}

fn parts(shared: &Shared) -> (&Login, &Saml) {
    let login = shared
        .login
        .as_ref()
        .expect("the router exists only with browser login");
    let saml = login
        .saml
        .as_ref()
        .expect("the SAML routes exist only with SAML sign-in");
    (login, saml)
}

async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    let (_, saml) = parts(&shared);
    let xml = sp_metadata(&SpDescription {
        entity_id: &saml.entity_id,
        acs_url: &saml.acs_url,
        slo_url: &saml.slo_url,
        certificate: saml.certificate.as_deref(),
        want_assertions_signed: saml.require_signed_assertion,
    });
    let mut response = (StatusCode::OK, xml).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}

/// What a SAML flow keeps until its response comes back.
#[derive(Debug, Serialize, Deserialize)]
struct FlowData {
    idp: String,
    /// The organisation's connection the sign-in started at, if it did.
    #[serde(default)]
    connection: Option<uuid::Uuid>,
    return_to: String,
}

async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (login, saml) = parts(&shared);
    let Chosen {
        idp,
        persistent_name_id,
        connection,
    } = match chosen_idp(saml, &params).await {
        Ok(chosen) => chosen,
        Err(page) => return page,
    };
    let Some(return_to) = flow::return_to(&params, home(login)) else {
        return elsewhere_page();
    };
    let key = flow::new_key();
    let Some(url) = (AuthnRequest {
        id: &request_id(&key),
        sp_entity_id: &saml.entity_id,
        acs_url: &saml.acs_url,
        destination: &idp.metadata.sso_redirect,
        persistent_name_id,
        issued_at: Utc::now(),
    })
    .redirect_url(saml.signing_key.as_ref()) else {
        return store_page();
    };
    let data = FlowData {
        idp: idp.metadata.entity_id.clone(),
        connection,
        return_to,
    };
    let Ok(data) = serde_json::to_value(data) else {
        return store_page();
    };
    match flow::start(
        &*login.store,
        &headers,
        login.secure,
        &key,
        SAML_FLOW,
        data,
        Utc::now(),
    )
    .await
    {
        Ok(binding) => redirect(&url, &[binding]),
        Err(_) => store_page(),
    }
}

/// The AuthnRequest `ID` of the flow `key`: an NCName, as the schema wants.
fn request_id(key: &str) -> String {
    format!("_{key}")
}

/// How one IdP's assertions are read: by the layer's SAML settings, or, for an organisation's
/// connection, by its own.
struct Reading<'a> {
    subject_attribute: Option<&'a str>,
    trust_email: bool,
    connection: Option<ConnectionRef>,
}

impl Saml {
    /// The reading of the layer's own IdPs.
    fn own_reading(&self) -> Reading<'_> {
        Reading {
            subject_attribute: self.subject_attribute.as_deref(),
            trust_email: self.trust_email,
            connection: None,
        }
    }
}

/// The reading of an organisation's connection: its subject attribute, and its e-mail
/// addresses taken as verified (provisioning counts them only in the organisation's domains).
#[cfg(feature = "organizations")]
fn connection_reading(idp: &ConnectionIdp) -> Reading<'_> {
    Reading {
        subject_attribute: idp.subject_attribute.as_deref(),
        trust_email: true,
        connection: Some(idp.connection),
    }
}

/// Where `/saml/login` sends the browser.
struct Chosen {
    idp: Arc<TrustedIdp>,
    /// Whether to ask for a persistent NameID (no subject attribute identifies people).
    persistent_name_id: bool,
    /// The organisation's connection, if it is one.
    connection: Option<uuid::Uuid>,
}

/// The IdP `/saml/login` sends the browser to: `?connection=ID` (an organisation's SAML
/// connection), `?idp=ENTITYID` (one of the layer's own), or the layer's only one; or the page
/// that says why not.
async fn chosen_idp(saml: &Saml, params: &HashMap<String, String>) -> Result<Chosen, Response> {
    let unknown = || {
        page(
            StatusCode::BAD_REQUEST,
            "Unknown identity provider",
            "There is no SAML sign-in at that identity provider here.",
        )
    };
    #[cfg(feature = "organizations")]
    if let Some(wanted) = params.get("connection") {
        let Ok(id) = uuid::Uuid::parse_str(wanted) else {
            return Err(unknown());
        };
        let connection = match saml.connection(id).await {
            Ok(Some(connection)) => connection,
            Ok(None) => return Err(unknown()),
            Err(_) => return Err(store_page()),
        };
        let Some(idp) = connection.current().await else {
            return Err(unreachable_page());
        };
        return Ok(Chosen {
            idp,
            persistent_name_id: connection.subject_attribute.is_none(),
            connection: Some(id),
        });
    }
    let wanted = match params.get("idp") {
        Some(wanted) => saml.entity_ids().find(|id| *id == wanted.as_str()),
        None if saml.idps.len() == 1 => saml.entity_ids().next(),
        None => None,
    };
    let Some(wanted) = wanted else {
        return Err(unknown());
    };
    let current = saml.idps.current().await;
    match current.into_iter().find(|i| i.metadata.entity_id == wanted) {
        Some(idp) => Ok(Chosen {
            idp,
            persistent_name_id: saml.subject_attribute.is_none(),
            connection: None,
        }),
        // Configured, but its metadata cannot be had.
        None => Err(unreachable_page()),
    }
}

/// The organisation's SAML connection whose IdP the response `xml` claims to come from, with
/// its metadata: none when it claims none, or one of the layer's own IdPs.
#[cfg(feature = "organizations")]
async fn claimed_connection(
    saml: &Saml,
    xml: &str,
) -> Result<Option<(Arc<ConnectionIdp>, Arc<TrustedIdp>)>, crate::error::Error> {
    let Some(claimed) = verify::claimed_issuer(xml) else {
        return Ok(None);
    };
    let Some(connection) = saml.connection_of(&claimed).await? else {
        return Ok(None);
    };
    Ok(connection.current().await.map(|idp| (connection, idp)))
}

/// A verified sign-in parked between the IdP's POST and the browser's GET.
#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    issuer: String,
    subject: String,
    attributes: Map<String, Value>,
    email: Option<(String, bool)>,
    expires_at: DateTime<Utc>,
    session_index: Option<String>,
    in_response_to: Option<String>,
    /// The organisation's connection whose IdP signed it, if one did.
    #[serde(default)]
    connection: Option<ConnectionRef>,
}

impl Parked {
    fn sign_in(&self) -> Option<SignIn> {
        let mut builder = SignIn::builder(
            SignInSource::Saml,
            self.issuer.as_str(),
            self.subject.as_str(),
        )
        .attributes(self.attributes.clone())
        .expires_at(self.expires_at)
        .connection(self.connection);
        if let Some((address, verified)) = &self.email {
            builder = builder.email(address.clone(), *verified);
        }
        builder.build().ok()
    }
}

async fn acs(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let (login, saml) = parts(&shared);
    let mut posted = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "SAMLResponse")
        .map(|(_, value)| value);
    let (Some(posted), None) = (posted.next(), posted.next()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This is not a SAML response.",
        );
    };
    let xml = match verify::decode(&posted) {
        Ok(xml) => xml,
        Err(refusal) => return refusal_page(refusal),
    };
    #[allow(unused_mut)]
    let mut idps = saml.idps.current().await;
    #[cfg(feature = "organizations")]
    let connection = match claimed_connection(saml, &xml).await {
        Ok(connection) => connection,
        Err(_) => return store_page(),
    };
    #[cfg(feature = "organizations")]
    if let Some((_, idp)) = &connection {
        idps.push(Arc::clone(idp));
    }
    let verified = verify::verify_response(
        &xml,
        &idps,
        &Expectations {
            sp_entity_id: &saml.entity_id,
            acs_url: &saml.acs_url,
            now: Utc::now(),
            leeway: saml.leeway,
            require_signed_assertion: saml.require_signed_assertion,
            allow_sha1: saml.allow_sha1,
            allow_unsolicited: saml.allow_idp_initiated,
        },
        saml.decryptor.as_ref(),
    );
    let assertion = match verified {
        Ok(assertion) => assertion,
        Err(refusal) => return refusal_page(refusal),
    };
    // The connection's settings apply only when its own key verified the assertion.
    #[cfg(feature = "organizations")]
    let reading = match &connection {
        Some((connection, idp)) if idp.metadata.entity_id == assertion.idp => {
            connection_reading(connection)
        }
        _ => saml.own_reading(),
    };
    #[cfg(not(feature = "organizations"))]
    let reading = saml.own_reading();
    let sign_in =
        match attributes::sign_in(&assertion, reading.subject_attribute, reading.trust_email) {
            Ok(sign_in) => sign_in,
            Err(no_identity) => return no_identity_page(no_identity),
        };
    // Spent before anything else is written: a replay, on this server or another, before or
    // after a restart, stops here.
    let once = SessionHash::of(format!("{}\n{}", assertion.idp, assertion.id).as_bytes());
    match login
        .store
        .consume_once("saml_assertion", once, assertion.valid_until + saml.leeway)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            refused("saml_acs", "replayed");
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in response was already used. Please sign in again.",
            );
        }
        Err(_) => return store_page(),
    }
    let parked = Parked {
        issuer: sign_in.issuer().to_owned(),
        subject: sign_in.subject().to_owned(),
        attributes: sign_in.attributes().clone(),
        email: sign_in
            .email()
            .map(|address| (address.to_owned(), sign_in.email_verified())),
        expires_at: assertion.valid_until,
        session_index: assertion.session_index.clone(),
        in_response_to: assertion.in_response_to.clone(),
        connection: reading.connection,
    };
    let Ok(data) = serde_json::to_value(&parked) else {
        return store_page();
    };
    let key = flow::new_key();
    let now = Utc::now();
    let hash = SessionHash::of(key.as_bytes());
    let flow = LoginFlow::new(hash, hash, PARKED, data, now, now + PARK_LIFETIME);
    if login.store.put_login_flow(flow).await.is_err() {
        return store_page();
    }
    let finish = format!("{}?finish={key}", acs_path(&saml.acs_url));
    redirect(&finish, &[])
}

/// The path of the ACS URL, for the same-site redirect.
fn acs_path(acs_url: &str) -> String {
    url::Url::parse(acs_url)
        .map(|url| url.path().to_owned())
        .unwrap_or_else(|_| "/saml/acs".to_owned())
}

async fn finish(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (login, saml) = parts(&shared);
    let Some(key) = params.get("finish").filter(|k| k.len() == 43) else {
        return again_page();
    };
    let parked = match login
        .store
        .take_login_flow(SessionHash::of(key.as_bytes()))
        .await
    {
        Ok(Some(flow)) if flow.kind == PARKED => flow,
        Ok(_) => {
            refused("saml_finish", "unknown_or_used");
            return again_page();
        }
        Err(_) => return store_page(),
    };
    let Ok(parked) = serde_json::from_value::<Parked>(parked.data) else {
        return again_page();
    };
    let return_to = match &parked.in_response_to {
        Some(request) => {
            let Some(flow_key) = request.strip_prefix('_') else {
                refused("saml_finish", "unknown_request");
                return again_page();
            };
            let flow = match flow::finish(&*login.store, &headers, login.secure, flow_key).await {
                Ok(Ok(flow)) if flow.kind == SAML_FLOW => flow,
                Ok(Ok(_)) | Ok(Err(FlowRefused::Unknown)) => {
                    refused("saml_finish", "unknown_request");
                    return expired_page();
                }
                Ok(Err(FlowRefused::WrongBrowser)) => {
                    refused("saml_finish", "other_browser");
                    return expired_page();
                }
                Err(_) => return store_page(),
            };
            match serde_json::from_value::<FlowData>(flow.data) {
                // The response must come from the IdP the request went to, through the same
                // connection.
                Ok(data)
                    if data.idp == parked.issuer
                        && data.connection == parked.connection.map(|c| c.connection) =>
                {
                    data.return_to
                }
                _ => {
                    refused("saml_finish", "other_idp");
                    return again_page();
                }
            }
        }
        None if saml.allow_idp_initiated => home(login),
        None => return again_page(),
    };
    let Some(sign_in) = parked.sign_in() else {
        return again_page();
    };
    complete::sign_in(
        &shared,
        login,
        &headers,
        &sign_in,
        parked.session_index.clone(),
        &return_to,
    )
    .await
}

/// `GET /saml/slo`: a LogoutRequest by the HTTP-Redirect binding.
async fn slo_redirect(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    single_logout(
        &shared,
        &Binding::Redirect {
            query: uri.query().unwrap_or(""),
        },
    )
    .await
}

/// `POST /saml/slo`: a LogoutRequest by the HTTP-POST binding.
async fn slo_post(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut requests = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "SAMLRequest")
        .map(|(_, value)| value);
    let (Some(request), None) = (requests.next(), requests.next()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-out failed",
            "This is not a SAML logout request.",
        );
    };
    let relay_state = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "RelayState")
        .map(|(_, value)| value.into_owned());
    let page = single_logout(
        &shared,
        &Binding::Post {
            saml_request: &request,
        },
    )
    .await;
    match relay_state {
        Some(relay_state) => with_relay_state(page, &relay_state),
        None => page,
    }
}

/// The LogoutResponse redirect of a POSTed request, with its `RelayState` added (it came in
/// the form, not in the request the verifier read).
fn with_relay_state(response: Response, relay_state: &str) -> Response {
    let Some(location) = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .filter(|l| !l.contains("RelayState="))
    else {
        return response;
    };
    let mut location = location.to_owned();
    location.push_str("&RelayState=");
    location.extend(url::form_urlencoded::byte_serialize(relay_state.as_bytes()));
    redirect(&location, &[])
}

/// Ends the sessions a verified LogoutRequest names, on every server, and answers the IdP.
async fn single_logout(shared: &Shared, binding: &Binding<'_>) -> Response {
    let (login, saml) = parts(shared);
    #[allow(unused_mut)]
    let mut idps = saml.idps.current().await;
    // Organisations' SAML IdPs too, each by its own keys.
    #[cfg(feature = "organizations")]
    let connections = match saml.connections().await {
        Ok(connections) => connections,
        Err(_) => return store_page(),
    };
    #[cfg(feature = "organizations")]
    for connection in &connections {
        if let Some(idp) = connection.current().await {
            idps.push(idp);
        }
    }
    let now = Utc::now();
    let request = match verify_logout_request(
        binding,
        &idps,
        &LogoutExpectations {
            slo_url: &saml.slo_url,
            now,
            leeway: saml.leeway,
            allow_sha1: saml.allow_sha1,
        },
    ) {
        Ok(request) => request,
        Err(refusal) => {
            refused("saml_slo", refusal.code());
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "The sign-out request could not be verified.",
            );
        }
    };
    let issuer = request.idp.metadata.entity_id.clone();
    let once = SessionHash::of(format!("{issuer}\n{}", request.id).as_bytes());
    match login
        .store
        .consume_once("saml_logout", once, request.remember_until)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            refused("saml_slo", "replayed");
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "This sign-out request was already used.",
            );
        }
        Err(_) => return store_page(),
    }
    // SAML core §3.7.1: SessionIndex names sessions at the IdP; without one, every session of
    // the NameID. The NameID is the identity's subject only when no attribute is.
    #[cfg(feature = "organizations")]
    let subject_attribute = match connections.iter().find(|c| c.source.entity_id() == issuer) {
        Some(connection) => connection.subject_attribute.as_deref(),
        None => saml.subject_attribute.as_deref(),
    };
    #[cfg(not(feature = "organizations"))]
    let subject_attribute = saml.subject_attribute.as_deref();
    let name_is_subject = subject_attribute.is_none()
        && request.name_id.format.as_deref() == Some(super::verify::PERSISTENT);
    let selectors: Vec<SessionSelector> = if !request.session_indexes.is_empty() {
        request
            .session_indexes
            .iter()
            .map(|sid| SessionSelector::IssuerSession {
                issuer: issuer.clone(),
                sid: sid.clone(),
            })
            .collect()
    } else if name_is_subject {
        vec![SessionSelector::Subject {
            issuer: issuer.clone(),
            subject: request.name_id.value.clone(),
        }]
    } else {
        Vec::new()
    };
    let complete = !selectors.is_empty();
    let mut ended = 0;
    for which in selectors {
        match login.store.end_sessions(which).await {
            Ok(count) => ended += count,
            Err(_) => return store_page(),
        }
    }
    let mut event = AuditEvent::new(AuditKind::LoggedOut, Actor::Login)
        .source(SignInSource::Saml.as_str())
        .reason("saml_logout");
    event.issuer = Some(issuer);
    event.subject = name_is_subject.then(|| request.name_id.value.clone());
    event.fields = vec![format!("sessions:{ended}")];
    login.store.record_audit(event).await;
    let Some(destination) = &request.idp.metadata.slo_redirect else {
        return page(
            StatusCode::OK,
            "Signed out",
            "You are signed out of this site.",
        );
    };
    let id = request_id(&flow::new_key());
    let response = LogoutResponse {
        id: &id,
        in_response_to: &request.id,
        sp_entity_id: &saml.entity_id,
        destination,
        success: complete,
        issued_at: now,
    };
    match response.redirect_url(request.relay_state.as_deref(), saml.signing_key.as_ref()) {
        Some(url) => redirect(&url, &[]),
        None => store_page(),
    }
}

fn expired_page() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        "This sign-in expired, was already used, or was started in another browser. Please sign in again.",
    )
}

fn refusal_page(refusal: Refusal) -> Response {
    refused("saml_acs", refusal.code());
    let (status, message) = match refusal {
        Refusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "The sign-in response is too large.",
        ),
        Refusal::Status => (
            StatusCode::FORBIDDEN,
            "The identity provider did not sign you in.",
        ),
        Refusal::Expired | Refusal::NotYetValid => (
            StatusCode::BAD_REQUEST,
            "The sign-in response is outside its validity period. Please sign in again.",
        ),
        Refusal::Unsolicited => (
            StatusCode::BAD_REQUEST,
            "Sign-in must start at this site. Please sign in again from here.",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "The identity provider's answer could not be verified.",
        ),
    };
    let mut response = page(status, "Sign-in failed", message);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn no_identity_page(no_identity: NoIdentity) -> Response {
    let (code, message) = match no_identity {
        NoIdentity::NoPersistentNameId => (
            "no_persistent_name_id",
            "The identity provider sent no persistent NameID, and a transient or e-mail NameID \
             cannot identify a person. Configure the IdP to send a persistent NameID, or set the \
             subject attribute (SamlLogin::subject_attribute; JIT_SAML_SUBJECT_ATTRIBUTE on the \
             reference server) to an immutable attribute it sends.",
        ),
        NoIdentity::NoSubjectAttribute => (
            "no_subject_attribute",
            "The identity provider did not send the configured subject attribute with exactly \
             one value.",
        ),
        NoIdentity::Invalid => (
            "invalid_identity",
            "The identity provider's subject cannot identify a person here.",
        ),
    };
    refused("saml_acs", code);
    page(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Sign-in not configured",
        message,
    )
}
