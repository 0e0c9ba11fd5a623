//! The assertion consumer's verification: a `SAMLResponse` in, the one assertion its IdP signed
//! out, or the reason it is refused. Knows nothing of browsers, flows or sessions.
//!
//! ```text
//! base64 ─► size, markup (no DTD, entity, PI) ─► parse ─► shape: one Response, one Assertion
//!   as its child, signatures only as children of either ─► each signature's SignedInfo: one
//!   Reference to its parent's ID, enveloped + exclusive c14n, allowed algorithms
//!   ─► bergshamra: the IdP's metadata keys only ─► the signed element canonicalized again and
//!   its digest compared ─► the assertion read from those bytes only ─► issuer, status,
//!   destination, audience, bearer confirmation, recipient, times
//! ```
//!
//! Reading from the re-parsed signed bytes, rather than from the document that was verified, is
//! what makes signature wrapping (XSW) powerless: whatever else the message holds, the code
//! below the signature check never sees it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bergshamra::core::algorithm;
use bergshamra::xml::NodeSet;
use bergshamra::xml::uppsala::{Document, NodeId};
use bergshamra::{DsigContext, EncContext, KeysManager, VerifyResult};
use chrono::{DateTime, TimeDelta, Utc};

use super::dom::{self, ASSERTION, DSIG, PROTOCOL, XMLENC};
use super::metadata::{IdpMetadata, parse_idp_metadata, parse_time};

/// The largest `SAMLResponse` form value read, base64 as posted.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// An identity provider whose responses are accepted: its entity id and the keys of its
/// metadata, nothing else.
pub(crate) struct TrustedIdp {
    pub(crate) metadata: IdpMetadata,
    signatures: DsigContext,
    /// The same keys as `SubjectPublicKeyInfo`, for the HTTP-Redirect binding's signatures.
    public_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TrustedIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIdp")
            .field("entity_id", &self.metadata.entity_id)
            .finish_non_exhaustive()
    }
}

impl TrustedIdp {
    /// The IdP `entity_id` as its metadata document `xml` describes it; `allow_http` admits plain
    /// http endpoints (loopback tests).
    pub(crate) fn from_metadata(
        xml: &str,
        entity_id: &str,
        allow_http: bool,
    ) -> Result<Self, &'static str> {
        parse_idp_metadata(xml, allow_http, Utc::now())
            .map_err(|_| "not SAML 2.0 IdP metadata, or expired")?
            .into_iter()
            .find(|m| m.entity_id == entity_id)
            .ok_or("describes no IdP with this connection's entity id (`issuer`)")
            .and_then(|metadata| Self::new(metadata).ok_or("has no usable signing certificate"))
    }

    /// The IdP with its metadata's signing keys; `None` when none of its certificates holds a
    /// key that can verify.
    pub(crate) fn new(metadata: IdpMetadata) -> Option<Self> {
        let mut keys = KeysManager::new();
        let mut public_keys = Vec::new();
        for der in &metadata.signing_certificates {
            if let Ok(key) = bergshamra::keys::loader::load_x509_cert_der(der) {
                if let Some(spki) = key.data.to_spki_der() {
                    public_keys.push(spki);
                }
                keys.add_key(key);
            }
        }
        if keys.is_empty() {
            return None;
        }
        // Secure defaults: keys from the manager only (never `KeyInfo`), references only to
        // the document, an ancestor or a sibling of the signature, every digest checked.
        let signatures = DsigContext::new(keys);
        Some(Self {
            metadata,
            signatures,
            public_keys,
        })
    }
}

/// Whether `xml` is metadata for the IdP `entity_id` that can verify its assertions, for
/// [`Organization::validate`](crate::organization::Organization::validate).
pub(crate) fn check_idp_metadata(xml: &str, entity_id: &str) -> Result<(), &'static str> {
    TrustedIdp::from_metadata(xml, entity_id, true).map(drop)
}

/// What the response must match.
#[derive(Clone, Debug)]
pub(crate) struct Expectations<'a> {
    pub(crate) sp_entity_id: &'a str,
    pub(crate) acs_url: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) leeway: TimeDelta,
    /// The assertion itself must carry the signature; one on the Response is not enough.
    pub(crate) require_signed_assertion: bool,
    /// RSA-SHA1 signatures and SHA-1 digests are accepted.
    pub(crate) allow_sha1: bool,
    /// A response that answers no request (IdP-initiated) is accepted.
    pub(crate) allow_unsolicited: bool,
}

/// A subject's `NameID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameId {
    pub(crate) value: String,
    pub(crate) format: Option<String>,
}

pub(crate) const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

/// One `Attribute` of the assertion, with its text values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SamlAttribute {
    pub(crate) name: String,
    pub(crate) friendly_name: Option<String>,
    pub(crate) values: Vec<String>,
}

/// The assertion, read only from the bytes its IdP signed, every condition checked.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedAssertion {
    /// The IdP's entity id.
    pub(crate) idp: String,
    /// The assertion's `ID`, accepted once.
    pub(crate) id: String,
    /// The AuthnRequest it answers; `None` for an unsolicited response.
    pub(crate) in_response_to: Option<String>,
    pub(crate) name_id: Option<NameId>,
    pub(crate) session_index: Option<String>,
    pub(crate) attributes: Vec<SamlAttribute>,
    /// Until when it may be used: the earliest of its `NotOnOrAfter`s. Its id is remembered
    /// that long.
    pub(crate) valid_until: DateTime<Utc>,
}

/// Why a response is refused. The browser sees only that sign-in failed; the code goes to
/// the debug log and the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Refusal {
    TooLarge,
    NotBase64,
    ForbiddenMarkup,
    Malformed,
    NotAResponse,
    /// More or fewer than one assertion, or one out of place.
    AssertionCount,
    /// A signature out of place, or a reference that is not the signed element's own ID by
    /// the allowed transforms.
    SignatureShape,
    Algorithm,
    UnknownIdp,
    Unsigned,
    BadSignature,
    /// The signed element's bytes did not match its signed digest when read again.
    SignedBytes,
    Status,
    WrongIssuer,
    WrongDestination,
    WrongAudience,
    NoBearerConfirmation,
    WrongRecipient,
    WrongInResponseTo,
    Unsolicited,
    Expired,
    NotYetValid,
    /// A value (NameID, Issuer, …) with a comment or markup inside.
    MixedContent,
    /// An `EncryptedAssertion` without an SP key to decrypt it, or encrypted identifiers or
    /// attributes.
    Encrypted,
    /// An `EncryptedAssertion` the SP key does not decrypt.
    Undecryptable,
    /// An assertion without an `AuthnStatement`: no one signed in.
    NoAuthnStatement,
}

impl Refusal {
    /// A fixed code for logs and tests.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotBase64 => "not_base64",
            Self::ForbiddenMarkup => "forbidden_markup",
            Self::Malformed => "malformed",
            Self::NotAResponse => "not_a_response",
            Self::AssertionCount => "assertion_count",
            Self::SignatureShape => "signature_shape",
            Self::Algorithm => "algorithm",
            Self::UnknownIdp => "unknown_idp",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::SignedBytes => "signed_bytes",
            Self::Status => "status",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongDestination => "wrong_destination",
            Self::WrongAudience => "wrong_audience",
            Self::NoBearerConfirmation => "no_bearer_confirmation",
            Self::WrongRecipient => "wrong_recipient",
            Self::WrongInResponseTo => "wrong_in_response_to",
            Self::Unsolicited => "unsolicited",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MixedContent => "mixed_content",
            Self::Encrypted => "encrypted",
            Self::Undecryptable => "undecryptable",
            Self::NoAuthnStatement => "no_authn_statement",
        }
    }
}

impl From<dom::Unreadable> for Refusal {
    fn from(unreadable: dom::Unreadable) -> Self {
        match unreadable {
            dom::Unreadable::ForbiddenMarkup => Self::ForbiddenMarkup,
            dom::Unreadable::Malformed => Self::Malformed,
        }
    }
}

/// The `SAMLResponse` form value decoded: base64 (line breaks allowed) of UTF-8 XML.
pub(crate) fn decode(posted: &str) -> Result<String, Refusal> {
    decode_bounded(posted, MAX_RESPONSE_BYTES)
}

/// A posted message decoded, refused when its base64 is over `max` bytes.
pub(crate) fn decode_bounded(posted: &str, max: usize) -> Result<String, Refusal> {
    if posted.len() > max {
        return Err(Refusal::TooLarge);
    }
    let compact: String = posted
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD.decode(compact).map_err(|_| Refusal::NotBase64)?;
    String::from_utf8(bytes).map_err(|_| Refusal::Malformed)
}

/// The IdP the message's `Issuer` child of `node` names. It is trusted only once its own key
/// verified the signature.
pub(crate) fn named_idp<'i>(
    doc: &Document<'_>,
    node: NodeId,
    idps: &'i [Arc<TrustedIdp>],
) -> Result<&'i Arc<TrustedIdp>, Refusal> {
    let issuer = dom::only_child(doc, node, ASSERTION, "Issuer")
        .map_err(|_| Refusal::Malformed)?
        .and_then(|issuer| dom::text(doc, issuer))
        .ok_or(Refusal::Malformed)?;
    idps.iter()
        .find(|idp| idp.metadata.entity_id == issuer)
        .ok_or(Refusal::UnknownIdp)
}

/// The entity id a response says it comes from (its own `Issuer`, else its one plain
/// assertion's), unverified: only to choose which IdP's keys to try. An IdP is trusted by
/// nothing but its own key verifying the signature.
#[cfg(feature = "organizations")]
pub(crate) fn claimed_issuer(xml: &str) -> Option<String> {
    let doc = dom::parse(xml).ok()?;
    let response = doc.document_element()?;
    let issuer_of = |node| {
        dom::only_child(&doc, node, ASSERTION, "Issuer")
            .ok()
            .flatten()
            .and_then(|issuer| dom::text(&doc, issuer))
    };
    issuer_of(response).or_else(|| match dom::all(&doc, ASSERTION, "Assertion")[..] {
        [assertion] => issuer_of(assertion),
        _ => None,
    })
}

/// Verifies the response `xml` from one of `idps` against `expected`.
pub(crate) fn verify_response(
    xml: &str,
    idps: &[Arc<TrustedIdp>],
    expected: &Expectations<'_>,
    decryptor: Option<&EncContext>,
) -> Result<VerifiedAssertion, Refusal> {
    let doc = dom::parse(xml)?;
    let response = doc.document_element().ok_or(Refusal::Malformed)?;
    if !dom::is(&doc, response, PROTOCOL, "Response") {
        return Err(Refusal::NotAResponse);
    }
    if dom::all(&doc, ASSERTION, "EncryptedAssertion").is_empty() {
        // Encrypted identifiers or attributes are not read: refused rather than ignored.
        if !dom::all(&doc, XMLENC, "EncryptedData").is_empty() {
            return Err(Refusal::Encrypted);
        }
        return verify_plain(&doc, response, idps, expected, None);
    }
    let decryptor = decryptor.ok_or(Refusal::Encrypted)?;
    let (lifted, verified_by) = decrypt_assertion(&doc, xml, response, idps, expected, decryptor)?;
    let doc = dom::parse(&lifted)?;
    let response = doc.document_element().ok_or(Refusal::Undecryptable)?;
    verify_plain(&doc, response, idps, expected, verified_by.as_deref())
}

/// The data and key-transport ciphers an encrypted assertion may use. RSA PKCS#1 v1.5 key
/// transport (Bleichenbacher's oracle) and 3DES are refused before anything is decrypted.
const ALLOWED_CIPHERS: [&str; 8] = [
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2009/xmlenc11#aes192-gcm",
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
];

/// The response with its one `EncryptedAssertion` decrypted (with the SP key) and the
/// assertion put in its place, and the IdP whose signature on the Response covered the
/// ciphertext, if one did. A signed Response is verified before anything is decrypted, and
/// what is decrypted is its signed bytes.
fn decrypt_assertion(
    doc: &Document<'_>,
    xml: &str,
    response: NodeId,
    idps: &[Arc<TrustedIdp>],
    expected: &Expectations<'_>,
    decryptor: &EncContext,
) -> Result<(String, Option<String>), Refusal> {
    let encrypted = dom::all(doc, ASSERTION, "EncryptedAssertion");
    let data = dom::all(doc, XMLENC, "EncryptedData");
    let ([envelope], [data]) = (&encrypted[..], &data[..]) else {
        return Err(Refusal::AssertionCount);
    };
    if doc.parent(*envelope) != Some(response)
        || !doc.ancestors(*data).contains(envelope)
        || !dom::all(doc, ASSERTION, "Assertion").is_empty()
    {
        return Err(Refusal::AssertionCount);
    }
    for method in dom::all(doc, XMLENC, "EncryptionMethod") {
        let algorithm = dom::attr(doc, method, "Algorithm").unwrap_or_default();
        if !ALLOWED_CIPHERS.contains(&algorithm) {
            return Err(Refusal::Algorithm);
        }
    }
    let signatures = dom::all(doc, DSIG, "Signature");
    let (source, verified_by) = match signatures[..] {
        [] => (std::borrow::Cow::Borrowed(xml), None),
        [_] => {
            let idp = named_idp(doc, response, idps)?;
            let signed = verify_signed_message(doc, response, idp, expected.allow_sha1)?;
            (
                std::borrow::Cow::Owned(signed),
                Some(idp.metadata.entity_id.clone()),
            )
        }
        _ => return Err(Refusal::SignatureShape),
    };
    let plaintext = bergshamra::decrypt(decryptor, &source).map_err(|_| Refusal::Undecryptable)?;
    let plain = dom::parse(&plaintext)?;
    let root = plain.document_element().ok_or(Refusal::Undecryptable)?;
    let envelope = dom::only_child(&plain, root, ASSERTION, "EncryptedAssertion")
        .ok()
        .flatten()
        .ok_or(Refusal::Undecryptable)?;
    let mut inside = dom::children(&plain, envelope, ASSERTION, "Assertion");
    let (Some(assertion), None) = (inside.next(), inside.next()) else {
        return Err(Refusal::AssertionCount);
    };
    // The assertion, lifted out of its envelope with every namespace in scope (inclusive
    // c14n, comments kept for the checks that look for them): its own signature, if it has
    // one, still verifies, and the response reads as one with a plain assertion.
    let lifted = bergshamra::c14n::canonicalize_doc::<&str>(
        &plain,
        bergshamra::c14n::C14nMode::InclusiveWithComments,
        Some(&NodeSet::tree_with_comments(assertion, &plain)),
        &[],
    )
    .map_err(|_| Refusal::Undecryptable)?;
    let lifted = String::from_utf8(lifted).map_err(|_| Refusal::Undecryptable)?;
    let range = plain.node_range(envelope).ok_or(Refusal::Undecryptable)?;
    let mut rebuilt = String::with_capacity(plaintext.len());
    rebuilt.push_str(&plaintext[..range.start]);
    rebuilt.push_str(&lifted);
    rebuilt.push_str(&plaintext[range.end..]);
    Ok((rebuilt, verified_by))
}

/// Verifies a response whose assertion is in plain sight: as posted, or as decrypted from
/// what `verified_by`'s signature on the Response covered.
fn verify_plain(
    doc: &Document<'_>,
    response: NodeId,
    idps: &[Arc<TrustedIdp>],
    expected: &Expectations<'_>,
    verified_by: Option<&str>,
) -> Result<VerifiedAssertion, Refusal> {
    // Exactly one assertion in the whole message, and it is the Response's child: no copy
    // hides in Extensions, Status detail, an Advice or a signature's Object.
    let assertions = dom::all(doc, ASSERTION, "Assertion");
    let [assertion] = assertions[..] else {
        return Err(Refusal::AssertionCount);
    };
    if doc.parent(assertion) != Some(response) {
        return Err(Refusal::AssertionCount);
    }
    // Values are read from canonical bytes, where comments are gone: a comment inside a
    // value is refused here, before it could join or split what the IdP meant.
    for (namespace, local) in [
        (ASSERTION, "NameID"),
        (ASSERTION, "Issuer"),
        (ASSERTION, "Audience"),
        (ASSERTION, "AttributeValue"),
    ] {
        if dom::all(doc, namespace, local)
            .into_iter()
            .any(|node| dom::has_comments(doc, node))
        {
            return Err(Refusal::MixedContent);
        }
    }

    // The IdP is chosen by the issuer the message names; it is trusted only once its own
    // key verified the signature and the signed issuer says the same.
    let idp = named_idp(doc, assertion, idps)?;
    if verified_by.is_some_and(|by| by != idp.metadata.entity_id) {
        return Err(Refusal::WrongIssuer);
    }

    let signatures = dom::all(doc, DSIG, "Signature");
    let mut planned = Vec::with_capacity(signatures.len());
    for &signature in &signatures {
        let parent = doc.parent(signature).ok_or(Refusal::SignatureShape)?;
        if parent != response && parent != assertion {
            return Err(Refusal::SignatureShape);
        }
        planned.push(signed_info(doc, signature, parent, expected.allow_sha1)?);
    }
    if planned.iter().filter(|p| p.parent == response).count() > 1
        || planned.iter().filter(|p| p.parent == assertion).count() > 1
    {
        return Err(Refusal::SignatureShape);
    }
    if planned.is_empty() && verified_by.is_none() {
        return Err(Refusal::Unsigned);
    }
    let results = if planned.is_empty() {
        Vec::new()
    } else {
        bergshamra::dsig::verify::verify_all_document(&idp.signatures, doc)
            .map_err(|_| Refusal::BadSignature)?
    };
    if results.len() != planned.len() {
        return Err(Refusal::BadSignature);
    }
    // Every signature present must hold: a broken one is never outvoted by a good one.
    for (result, plan) in results.iter().zip(&planned) {
        match result {
            VerifyResult::Valid {
                signature_node,
                references,
                ..
            } if *signature_node == plan.signature
                && references.len() == 1
                && references[0].digest_verified
                && references[0].resolved_node == Some(plan.parent) => {}
            _ => return Err(Refusal::BadSignature),
        }
    }
    let assertion_signed = planned.iter().find(|p| p.parent == assertion);
    let response_signed = planned.iter().find(|p| p.parent == response);
    let covering = match (assertion_signed, response_signed) {
        (Some(plan), _) => Some(plan),
        (None, Some(plan)) if !expected.require_signed_assertion => Some(plan),
        // Decrypted from the signed bytes of the Response: the whole document is signed.
        (None, None) if verified_by.is_some() && !expected.require_signed_assertion => None,
        _ => return Err(Refusal::Unsigned),
    };
    let signed = match covering {
        Some(plan) => signed_bytes(doc, plan)?,
        None => doc.input_text().to_owned(),
    };

    // From here on, only the signed bytes are read.
    let signed_doc = dom::parse(&signed)?;
    let signed_root = signed_doc.document_element().ok_or(Refusal::SignedBytes)?;
    let (signed_assertion, signed_response) = if covering.is_some_and(|c| c.parent == assertion) {
        (signed_root, None)
    } else {
        let mut found = dom::children(&signed_doc, signed_root, ASSERTION, "Assertion");
        let (Some(only), None) = (found.next(), found.next()) else {
            return Err(Refusal::AssertionCount);
        };
        (only, Some(signed_root))
    };
    if !dom::is(&signed_doc, signed_assertion, ASSERTION, "Assertion") {
        return Err(Refusal::SignedBytes);
    }

    // The Response's own fields: from the signed bytes when the Response was signed, else
    // from the message (they only ever narrow what is accepted).
    let (response_doc, response_node) = match signed_response {
        Some(node) => (&signed_doc, node),
        None => (doc, response),
    };
    check_response(response_doc, response_node, idp, expected)?;
    read_assertion(&signed_doc, signed_assertion, idp, expected).and_then(|verified| {
        let response_in_response_to = dom::attr(response_doc, response_node, "InResponseTo");
        match (response_in_response_to, verified.in_response_to.as_deref()) {
            (Some(a), Some(b)) if a != b => Err(Refusal::WrongInResponseTo),
            (Some(_), None) => Err(Refusal::WrongInResponseTo),
            _ => Ok(verified),
        }
    })
}

/// Verifies a message signed as a whole by `idp` (a LogoutRequest by HTTP-POST): exactly one
/// signature, the root's child, covering the root by the rules responses follow; returns the
/// signed bytes, the only ones to read.
pub(crate) fn verify_signed_message(
    doc: &Document<'_>,
    root: NodeId,
    idp: &TrustedIdp,
    allow_sha1: bool,
) -> Result<String, Refusal> {
    let signatures = dom::all(doc, DSIG, "Signature");
    let [signature] = signatures[..] else {
        return Err(if signatures.is_empty() {
            Refusal::Unsigned
        } else {
            Refusal::SignatureShape
        });
    };
    if doc.parent(signature) != Some(root) {
        return Err(Refusal::SignatureShape);
    }
    let plan = signed_info(doc, signature, root, allow_sha1)?;
    let results = bergshamra::dsig::verify::verify_all_document(&idp.signatures, doc)
        .map_err(|_| Refusal::BadSignature)?;
    match &results[..] {
        [
            VerifyResult::Valid {
                signature_node,
                references,
                ..
            },
        ] if *signature_node == signature
            && references.len() == 1
            && references[0].digest_verified
            && references[0].resolved_node == Some(root) => {}
        _ => return Err(Refusal::BadSignature),
    }
    signed_bytes(doc, &plan)
}

/// Verifies an HTTP-Redirect binding signature (SAML bindings §3.4.4.1): `signature` over the
/// query's `signed` octets by one of `idp`'s keys, with the algorithm `sig_alg` names.
pub(crate) fn verify_redirect_signature(
    idp: &TrustedIdp,
    signed: &[u8],
    sig_alg: &str,
    signature: &[u8],
    allow_sha1: bool,
) -> Result<(), Refusal> {
    use aws_lc_rs::signature as sig;
    let algorithm: &'static dyn sig::VerificationAlgorithm = match sig_alg {
        algorithm::RSA_SHA256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        algorithm::RSA_SHA384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        algorithm::RSA_SHA512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        algorithm::ECDSA_SHA256 => &sig::ECDSA_P256_SHA256_ASN1,
        algorithm::ECDSA_SHA384 => &sig::ECDSA_P384_SHA384_ASN1,
        algorithm::ECDSA_SHA512 => &sig::ECDSA_P521_SHA512_ASN1,
        algorithm::RSA_SHA1 if allow_sha1 => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        _ => return Err(Refusal::Algorithm),
    };
    idp.public_keys
        .iter()
        .any(|key| {
            sig::UnparsedPublicKey::new(algorithm, key)
                .verify(signed, signature)
                .is_ok()
        })
        .then_some(())
        .ok_or(Refusal::BadSignature)
}

/// A signature as its `SignedInfo` describes it, checked before any cryptography.
#[derive(Debug)]
struct Planned {
    signature: NodeId,
    parent: NodeId,
    prefixes: Vec<String>,
    digest: &'static aws_lc_rs::digest::Algorithm,
    digest_value: Vec<u8>,
}

fn signed_info(
    doc: &Document<'_>,
    signature: NodeId,
    parent: NodeId,
    allow_sha1: bool,
) -> Result<Planned, Refusal> {
    let shape = Refusal::SignatureShape;
    let one = |node, local| {
        dom::only_child(doc, node, DSIG, local)
            .ok()
            .flatten()
            .ok_or(shape)
    };
    let info = one(signature, "SignedInfo")?;
    let algorithm_of = |node| dom::attr(doc, node, "Algorithm").ok_or(shape);
    if algorithm_of(one(info, "CanonicalizationMethod")?)? != algorithm::EXC_C14N {
        return Err(Refusal::Algorithm);
    }
    let method = algorithm_of(one(info, "SignatureMethod")?)?;
    let allowed_methods = [
        algorithm::RSA_SHA256,
        algorithm::RSA_SHA384,
        algorithm::RSA_SHA512,
        algorithm::ECDSA_SHA256,
        algorithm::ECDSA_SHA384,
        algorithm::ECDSA_SHA512,
    ];
    if !(allowed_methods.contains(&method) || (allow_sha1 && method == algorithm::RSA_SHA1)) {
        return Err(Refusal::Algorithm);
    }
    let reference = one(info, "Reference")?;
    let id = dom::attr(doc, parent, "ID")
        .filter(|id| !id.is_empty())
        .ok_or(shape)?;
    if dom::attr(doc, reference, "URI") != Some(&format!("#{id}")) {
        return Err(shape);
    }
    let transforms: Vec<NodeId> =
        dom::children(doc, one(reference, "Transforms")?, DSIG, "Transform").collect();
    let [enveloped, exclusive] = transforms[..] else {
        return Err(shape);
    };
    if algorithm_of(enveloped)? != algorithm::ENVELOPED_SIGNATURE
        || algorithm_of(exclusive)? != algorithm::EXC_C14N
    {
        return Err(Refusal::Algorithm);
    }
    let prefixes = dom::child_elements(doc, exclusive)
        .find(|&n| dom::is(doc, n, algorithm::EXC_C14N, "InclusiveNamespaces"))
        .and_then(|n| dom::attr(doc, n, "PrefixList"))
        .map(|list| list.split_ascii_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let digest = match algorithm_of(one(reference, "DigestMethod")?)? {
        algorithm::SHA256 => &aws_lc_rs::digest::SHA256,
        algorithm::SHA384 => &aws_lc_rs::digest::SHA384,
        algorithm::SHA512 => &aws_lc_rs::digest::SHA512,
        algorithm::SHA1 if allow_sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        _ => return Err(Refusal::Algorithm),
    };
    let digest_value = dom::text(doc, one(reference, "DigestValue")?)
        .map(|b64| b64.split_ascii_whitespace().collect::<String>())
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or(shape)?;
    Ok(Planned {
        signature,
        parent,
        prefixes,
        digest,
        digest_value,
    })
}

/// The signed element as it was digested (exclusive c14n, its signature left out), checked
/// against the signed digest once more: the bytes the rest of verification reads.
fn signed_bytes(doc: &Document<'_>, plan: &Planned) -> Result<String, Refusal> {
    let mut set = NodeSet::tree_without_comments(plan.parent, doc);
    for node in std::iter::once(plan.signature).chain(doc.descendants(plan.signature)) {
        set.remove_id(node);
    }
    let bytes = bergshamra::c14n::canonicalize_doc(
        doc,
        bergshamra::c14n::C14nMode::Exclusive,
        Some(&set),
        &plan.prefixes,
    )
    .map_err(|_| Refusal::SignedBytes)?;
    let digest = aws_lc_rs::digest::digest(plan.digest, &bytes);
    if digest.as_ref() != plan.digest_value.as_slice() {
        return Err(Refusal::SignedBytes);
    }
    String::from_utf8(bytes).map_err(|_| Refusal::SignedBytes)
}

fn check_response(
    doc: &Document<'_>,
    response: NodeId,
    idp: &TrustedIdp,
    expected: &Expectations<'_>,
) -> Result<(), Refusal> {
    if dom::attr(doc, response, "Version") != Some("2.0") {
        return Err(Refusal::NotAResponse);
    }
    if let Some(issuer) =
        dom::only_child(doc, response, ASSERTION, "Issuer").map_err(|_| Refusal::Malformed)?
    {
        let issuer = dom::text(doc, issuer).ok_or(Refusal::MixedContent)?;
        if issuer != idp.metadata.entity_id {
            return Err(Refusal::WrongIssuer);
        }
    }
    // SAML core §3.2.2: Destination must be present on a signed response and always match.
    if let Some(destination) = dom::attr(doc, response, "Destination")
        && destination != expected.acs_url
    {
        return Err(Refusal::WrongDestination);
    }
    let status = dom::only_child(doc, response, PROTOCOL, "Status")
        .ok()
        .flatten()
        .ok_or(Refusal::Status)?;
    let code = dom::only_child(doc, status, PROTOCOL, "StatusCode")
        .ok()
        .flatten()
        .ok_or(Refusal::Status)?;
    if dom::attr(doc, code, "Value") != Some(SUCCESS) {
        return Err(Refusal::Status);
    }
    Ok(())
}

fn read_assertion(
    doc: &Document<'_>,
    assertion: NodeId,
    idp: &TrustedIdp,
    expected: &Expectations<'_>,
) -> Result<VerifiedAssertion, Refusal> {
    let malformed = |_| Refusal::Malformed;
    let one = |node, local| dom::only_child(doc, node, ASSERTION, local).map_err(malformed);
    if dom::attr(doc, assertion, "Version") != Some("2.0") {
        return Err(Refusal::Malformed);
    }
    let id = dom::attr(doc, assertion, "ID")
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .ok_or(Refusal::Malformed)?
        .to_owned();
    let issuer = one(assertion, "Issuer")?.ok_or(Refusal::Malformed)?;
    if dom::text(doc, issuer).ok_or(Refusal::MixedContent)? != idp.metadata.entity_id {
        return Err(Refusal::WrongIssuer);
    }
    let now = expected.now;
    let leeway = expected.leeway;
    let time = |node, name| -> Result<Option<DateTime<Utc>>, Refusal> {
        dom::attr(doc, node, name)
            .map(|t| parse_time(t).ok_or(Refusal::Malformed))
            .transpose()
    };

    // Conditions: the time window and this SP among the audiences.
    let conditions = one(assertion, "Conditions")?.ok_or(Refusal::WrongAudience)?;
    if time(conditions, "NotBefore")?.is_some_and(|t| now + leeway < t) {
        return Err(Refusal::NotYetValid);
    }
    let mut valid_until = time(conditions, "NotOnOrAfter")?;
    let restrictions: Vec<_> =
        dom::children(doc, conditions, ASSERTION, "AudienceRestriction").collect();
    if restrictions.is_empty() {
        return Err(Refusal::WrongAudience);
    }
    // Each restriction must name this SP (SAML core §2.5.1.4: they all apply).
    for restriction in restrictions {
        let named = dom::children(doc, restriction, ASSERTION, "Audience")
            .any(|a| dom::text(doc, a).as_deref() == Some(expected.sp_entity_id));
        if !named {
            return Err(Refusal::WrongAudience);
        }
    }

    // Subject: a bearer confirmation for this ACS, answering the request (or none).
    let subject = one(assertion, "Subject")?.ok_or(Refusal::NoBearerConfirmation)?;
    let name_id = match one(subject, "NameID")? {
        Some(node) => Some(NameId {
            value: dom::text(doc, node)
                .filter(|v| !v.is_empty())
                .ok_or(Refusal::MixedContent)?,
            format: dom::attr(doc, node, "Format").map(str::to_owned),
        }),
        None => None,
    };
    let mut in_response_to = None;
    let mut confirmed = false;
    for confirmation in dom::children(doc, subject, ASSERTION, "SubjectConfirmation") {
        if dom::attr(doc, confirmation, "Method") != Some(BEARER) {
            continue;
        }
        let Some(data) = one(confirmation, "SubjectConfirmationData")? else {
            continue;
        };
        if dom::attr(doc, data, "Recipient") != Some(expected.acs_url) {
            return Err(Refusal::WrongRecipient);
        }
        // SAML profiles §4.1.4.2: a bearer confirmation must bound its use in time.
        let until = time(data, "NotOnOrAfter")?.ok_or(Refusal::Malformed)?;
        if time(data, "NotBefore")?.is_some() {
            return Err(Refusal::Malformed);
        }
        if until + leeway <= now {
            return Err(Refusal::Expired);
        }
        valid_until = Some(valid_until.map_or(until, |v| v.min(until)));
        in_response_to = dom::attr(doc, data, "InResponseTo").map(str::to_owned);
        confirmed = true;
        break;
    }
    if !confirmed {
        return Err(Refusal::NoBearerConfirmation);
    }
    let valid_until = valid_until.ok_or(Refusal::Malformed)?;
    if valid_until + leeway <= now {
        return Err(Refusal::Expired);
    }
    if in_response_to.is_none() && !expected.allow_unsolicited {
        return Err(Refusal::Unsolicited);
    }

    // SAML profiles §4.1.4.2: an assertion that signs someone in says how they authenticated;
    // one without (an attribute query's answer, say) is not a sign-in.
    let mut statements = dom::children(doc, assertion, ASSERTION, "AuthnStatement").peekable();
    if statements.peek().is_none() {
        return Err(Refusal::NoAuthnStatement);
    }
    let session_index = statements
        .find_map(|s| dom::attr(doc, s, "SessionIndex"))
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .map(str::to_owned);
    let mut attributes = Vec::new();
    for statement in dom::children(doc, assertion, ASSERTION, "AttributeStatement") {
        for attribute in dom::children(doc, statement, ASSERTION, "Attribute") {
            let Some(name) = dom::attr(doc, attribute, "Name") else {
                continue;
            };
            let values = dom::children(doc, attribute, ASSERTION, "AttributeValue")
                .filter_map(|v| dom::text(doc, v))
                .collect();
            attributes.push(SamlAttribute {
                name: name.to_owned(),
                friendly_name: dom::attr(doc, attribute, "FriendlyName").map(str::to_owned),
                values,
            });
        }
    }
    Ok(VerifiedAssertion {
        idp: idp.metadata.entity_id.clone(),
        id,
        in_response_to,
        name_id,
        session_index,
        attributes,
        valid_until,
    })
}
