//! Single Logout: an IdP's LogoutRequest, by the HTTP-Redirect binding (a signature over the
//! query) or the HTTP-POST binding (an XML signature), verified with the IdP's metadata keys
//! only, and read for whom it signs out. An unsigned or wrongly signed request is refused and
//! ends nothing.

use std::io::Read as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bergshamra::xml::uppsala::{Document, NodeId};
use chrono::{DateTime, TimeDelta, Utc};

use super::dom::{self, ASSERTION, PROTOCOL};
use super::metadata::parse_time;
use super::verify::{
    NameId, Refusal, TrustedIdp, decode_bounded, named_idp, verify_redirect_signature,
    verify_signed_message,
};

/// The largest LogoutRequest read, encoded or inflated.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How old a LogoutRequest may be.
const MAX_AGE: TimeDelta = TimeDelta::minutes(10);

/// How a LogoutRequest arrived.
#[derive(Debug)]
pub(crate) enum Binding<'a> {
    /// `GET /saml/slo?SAMLRequest=…&RelayState=…&SigAlg=…&Signature=…`: the raw query, as
    /// sent (the signature covers the encoded octets).
    Redirect { query: &'a str },
    /// `POST /saml/slo` with the form's `SAMLRequest`.
    Post { saml_request: &'a str },
}

/// What a LogoutRequest must match.
#[derive(Debug)]
pub(crate) struct LogoutExpectations<'a> {
    pub(crate) slo_url: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) leeway: TimeDelta,
    pub(crate) allow_sha1: bool,
}

/// A verified LogoutRequest.
#[derive(Debug)]
pub(crate) struct LogoutRequest {
    pub(crate) id: String,
    pub(crate) idp: Arc<TrustedIdp>,
    pub(crate) name_id: NameId,
    /// The IdP sessions to end; empty: every session of `name_id` there.
    pub(crate) session_indexes: Vec<String>,
    /// Until when its id is remembered, so it is accepted once.
    pub(crate) remember_until: DateTime<Utc>,
    /// The `RelayState` to send back with the response.
    pub(crate) relay_state: Option<String>,
}

/// Verifies a LogoutRequest from one of `idps`.
pub(crate) fn verify_logout_request(
    binding: &Binding<'_>,
    idps: &[Arc<TrustedIdp>],
    expected: &LogoutExpectations<'_>,
) -> Result<LogoutRequest, Refusal> {
    match binding {
        Binding::Redirect { query } => redirect(query, idps, expected),
        Binding::Post { saml_request } => post(saml_request, idps, expected),
    }
}

fn redirect(
    query: &str,
    idps: &[Arc<TrustedIdp>],
    expected: &LogoutExpectations<'_>,
) -> Result<LogoutRequest, Refusal> {
    if query.len() > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge);
    }
    // The raw pairs, each at most once: the signature is over their encoded form.
    let raw = |name: &str| -> Result<Option<&str>, Refusal> {
        let mut found = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| value);
        let first = found.next();
        match found.next() {
            Some(_) => Err(Refusal::Malformed),
            None => Ok(first),
        }
    };
    let request = raw("SAMLRequest")?.ok_or(Refusal::Malformed)?;
    let relay_state = raw("RelayState")?;
    let (Some(sig_alg), Some(signature)) = (raw("SigAlg")?, raw("Signature")?) else {
        return Err(Refusal::Unsigned);
    };
    let decode = |value: &str| -> Result<String, Refusal> {
        url::form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or(Refusal::Malformed)
    };
    let compressed = STANDARD
        .decode(decode(request)?)
        .map_err(|_| Refusal::NotBase64)?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&compressed[..])
        .take(MAX_REQUEST_BYTES as u64)
        .read_to_string(&mut xml)
        .map_err(|_| Refusal::Malformed)?;
    let doc = dom::parse(&xml)?;
    let root = logout_root(&doc)?;
    let idp = Arc::clone(named_idp(&doc, root, idps)?);
    let mut signed = format!("SAMLRequest={request}");
    if let Some(relay_state) = relay_state {
        signed.push_str(&format!("&RelayState={relay_state}"));
    }
    signed.push_str(&format!("&SigAlg={sig_alg}"));
    let signature = STANDARD
        .decode(decode(signature)?)
        .map_err(|_| Refusal::NotBase64)?;
    verify_redirect_signature(
        &idp,
        signed.as_bytes(),
        &decode(sig_alg)?,
        &signature,
        expected.allow_sha1,
    )?;
    let relay_state = relay_state.map(decode).transpose()?;
    read(&doc, root, idp, relay_state, expected)
}

fn post(
    posted: &str,
    idps: &[Arc<TrustedIdp>],
    expected: &LogoutExpectations<'_>,
) -> Result<LogoutRequest, Refusal> {
    let xml = decode_bounded(posted, MAX_REQUEST_BYTES)?;
    let doc = dom::parse(&xml)?;
    let root = logout_root(&doc)?;
    let idp = Arc::clone(named_idp(&doc, root, idps)?);
    let signed = verify_signed_message(&doc, root, &idp, expected.allow_sha1)?;
    // From here on, only the signed bytes are read.
    let signed_doc = dom::parse(&signed)?;
    let signed_root = logout_root(&signed_doc)?;
    read(&signed_doc, signed_root, idp, None, expected)
}

fn logout_root(doc: &Document<'_>) -> Result<NodeId, Refusal> {
    let root = doc.document_element().ok_or(Refusal::Malformed)?;
    if !dom::is(doc, root, PROTOCOL, "LogoutRequest") {
        return Err(Refusal::NotAResponse);
    }
    Ok(root)
}

fn read(
    doc: &Document<'_>,
    root: NodeId,
    idp: Arc<TrustedIdp>,
    relay_state: Option<String>,
    expected: &LogoutExpectations<'_>,
) -> Result<LogoutRequest, Refusal> {
    if dom::attr(doc, root, "Version") != Some("2.0") {
        return Err(Refusal::Malformed);
    }
    let id = dom::attr(doc, root, "ID")
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .ok_or(Refusal::Malformed)?
        .to_owned();
    if let Some(destination) = dom::attr(doc, root, "Destination")
        && destination != expected.slo_url
    {
        return Err(Refusal::WrongDestination);
    }
    let (now, leeway) = (expected.now, expected.leeway);
    let issued = dom::attr(doc, root, "IssueInstant")
        .and_then(parse_time)
        .ok_or(Refusal::Malformed)?;
    if issued > now + leeway {
        return Err(Refusal::NotYetValid);
    }
    if issued + MAX_AGE + leeway <= now {
        return Err(Refusal::Expired);
    }
    if let Some(until) = dom::attr(doc, root, "NotOnOrAfter") {
        let until = parse_time(until).ok_or(Refusal::Malformed)?;
        if until + leeway <= now {
            return Err(Refusal::Expired);
        }
    }
    let name_id = dom::only_child(doc, root, ASSERTION, "NameID")
        .map_err(|_| Refusal::Malformed)?
        .ok_or(Refusal::Malformed)?;
    if dom::has_comments(doc, name_id) {
        return Err(Refusal::MixedContent);
    }
    let name_id = NameId {
        value: dom::text(doc, name_id)
            .filter(|v| !v.is_empty())
            .ok_or(Refusal::MixedContent)?,
        format: dom::attr(doc, name_id, "Format").map(str::to_owned),
    };
    let session_indexes = dom::children(doc, root, PROTOCOL, "SessionIndex")
        .map(|node| {
            dom::text(doc, node)
                .filter(|s| !s.is_empty() && s.len() <= 255)
                .ok_or(Refusal::MixedContent)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LogoutRequest {
        id,
        idp,
        name_id,
        session_indexes,
        remember_until: issued + MAX_AGE + leeway + leeway,
        relay_state,
    })
}
