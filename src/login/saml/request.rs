//! The AuthnRequest, sent by the HTTP-Redirect binding: DEFLATE, base64, and, with an SP key,
//! an RSA-SHA256 signature over the query as SAML bindings §3.4.4.1 defines it.

use std::io::Write as _;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use url::form_urlencoded::byte_serialize;

use super::dom::{ASSERTION, PROTOCOL};
use super::metadata::{POST_BINDING, escape};

const SIG_ALG: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// What an AuthnRequest says.
#[derive(Debug)]
pub(crate) struct AuthnRequest<'a> {
    /// Its `ID`: the flow it belongs to, answered as `InResponseTo`.
    pub(crate) id: &'a str,
    pub(crate) sp_entity_id: &'a str,
    pub(crate) acs_url: &'a str,
    /// The IdP's SingleSignOnService, the request's `Destination`.
    pub(crate) destination: &'a str,
    /// Ask for a persistent NameID (off when the identity is an attribute, so an IdP that
    /// cannot make one still answers).
    pub(crate) persistent_name_id: bool,
    pub(crate) issued_at: DateTime<Utc>,
}

impl AuthnRequest<'_> {
    fn xml(&self) -> String {
        let policy = if self.persistent_name_id {
            "<samlp:NameIDPolicy Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\" \
             AllowCreate=\"true\"/>"
        } else {
            "<samlp:NameIDPolicy AllowCreate=\"true\"/>"
        };
        format!(
            "<samlp:AuthnRequest xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" \
             ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{at}\" Destination=\"{destination}\" \
             AssertionConsumerServiceURL=\"{acs}\" ProtocolBinding=\"{POST_BINDING}\">\
             <saml:Issuer>{issuer}</saml:Issuer>{policy}</samlp:AuthnRequest>",
            id = escape(self.id),
            at = self.issued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            destination = escape(self.destination),
            acs = escape(self.acs_url),
            issuer = escape(self.sp_entity_id),
        )
    }

    /// The IdP's URL carrying this request, signed with `key` when there is one.
    pub(crate) fn redirect_url(&self, key: Option<&RsaKeyPair>) -> Option<String> {
        redirect_binding(self.destination, "SAMLRequest", &self.xml(), None, key)
    }
}

/// A LogoutResponse to the IdP's LogoutRequest `in_response_to`.
#[derive(Debug)]
pub(crate) struct LogoutResponse<'a> {
    pub(crate) id: &'a str,
    pub(crate) in_response_to: &'a str,
    pub(crate) sp_entity_id: &'a str,
    /// The IdP's SingleLogoutService.
    pub(crate) destination: &'a str,
    /// Whether every session it named was ended.
    pub(crate) success: bool,
    pub(crate) issued_at: DateTime<Utc>,
}

impl LogoutResponse<'_> {
    fn xml(&self) -> String {
        let status = if self.success {
            "urn:oasis:names:tc:SAML:2.0:status:Success"
        } else {
            "urn:oasis:names:tc:SAML:2.0:status:Responder"
        };
        format!(
            "<samlp:LogoutResponse xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" \
             ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{at}\" Destination=\"{destination}\" \
             InResponseTo=\"{in_response_to}\"><saml:Issuer>{issuer}</saml:Issuer>\
             <samlp:Status><samlp:StatusCode Value=\"{status}\"/></samlp:Status>\
             </samlp:LogoutResponse>",
            id = escape(self.id),
            at = self.issued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            destination = escape(self.destination),
            in_response_to = escape(self.in_response_to),
            issuer = escape(self.sp_entity_id),
        )
    }

    /// The IdP's URL carrying this response (and the request's `RelayState`), signed with
    /// `key` when there is one.
    pub(crate) fn redirect_url(
        &self,
        relay_state: Option<&str>,
        key: Option<&RsaKeyPair>,
    ) -> Option<String> {
        redirect_binding(
            self.destination,
            "SAMLResponse",
            &self.xml(),
            relay_state,
            key,
        )
    }
}

/// `destination` with the message `xml` as the HTTP-Redirect binding carries it under
/// `parameter`: DEFLATE, base64, and the signature over
/// `parameter=…[&RelayState=…]&SigAlg=…` (SAML bindings §3.4.4.1).
fn redirect_binding(
    destination: &str,
    parameter: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: Option<&RsaKeyPair>,
) -> Option<String> {
    let mut deflated =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflated.write_all(xml.as_bytes()).ok()?;
    let encoded = STANDARD.encode(deflated.finish().ok()?);
    let mut query = format!(
        "{parameter}={}",
        byte_serialize(encoded.as_bytes()).collect::<String>()
    );
    if let Some(relay_state) = relay_state {
        query.push_str("&RelayState=");
        query.extend(byte_serialize(relay_state.as_bytes()));
    }
    if let Some(key) = key {
        query.push_str("&SigAlg=");
        query.extend(byte_serialize(SIG_ALG.as_bytes()));
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            query.as_bytes(),
            &mut signature,
        )
        .ok()?;
        query.push_str("&Signature=");
        query.extend(byte_serialize(STANDARD.encode(signature).as_bytes()));
    }
    let separator = if destination.contains('?') { '&' } else { '?' };
    Some(format!("{destination}{separator}{query}"))
}
