//! [`TestSamlIdp`]: a SAML 2.0 identity provider on loopback (features `test-util` and `saml`).
//!
//! It has its own RSA key and self-signed certificate, serves its metadata at `GET /metadata`,
//! answers AuthnRequests by the HTTP-Redirect binding at `GET /sso` with a page that posts a
//! signed response to the request's assertion consumer service (as a real IdP does), and makes
//! any response a test needs, well-formed or not: signed on the assertion, the response or both,
//! expired, for another audience, unsolicited, SHA-1, and the eight signature-wrapping
//! permutations of Somorovsky et al. ("On Breaking SAML", 2012).
//!
//! Never use it outside tests: it signs whatever it is asked to.

use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bergshamra::{DsigContext, KeysManager};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::serve_with;
use super::signin::{html_escape, params, text};
use crate::login::saml::dom;

type Response = http::Response<Full<Bytes>>;

const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// A person the test IdP signs in: a NameID and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamlUser {
    /// The NameID's value.
    pub name_id: String,
    /// The NameID's format (persistent by default).
    pub name_id_format: String,
    /// Attributes by `Name`, each with its values.
    pub attributes: Vec<(String, Vec<String>)>,
}

impl SamlUser {
    /// A person with a persistent NameID and no attributes.
    pub fn persistent(name_id: impl Into<String>) -> Self {
        Self {
            name_id: name_id.into(),
            name_id_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".to_owned(),
            attributes: Vec::new(),
        }
    }

    /// The same person with another NameID format (transient, e-mail address, …).
    #[must_use]
    pub fn format(mut self, format: impl Into<String>) -> Self {
        self.name_id_format = format.into();
        self
    }

    /// The same person with one more attribute.
    #[must_use]
    pub fn attribute<I, V>(mut self, name: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        self.attributes
            .push((name.into(), values.into_iter().map(Into::into).collect()));
        self
    }
}

/// How the test IdP encrypts an assertion for an SP (RSA-OAEP key transport to the SP's
/// certificate, then the content cipher).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamlCipher {
    /// AES-256-GCM content, RSA-OAEP (MGF1 with SHA-1) key transport: what Entra ID and most
    /// current IdPs send.
    Aes256Gcm,
    /// AES-128-CBC content, XML Encryption 1.1 RSA-OAEP key transport.
    Aes128Cbc,
    /// AES-256-CBC content, RSA-OAEP (MGF1 with SHA-1) key transport: older ADFS and
    /// Shibboleth defaults.
    Aes256Cbc,
}

impl SamlCipher {
    fn uris(self) -> (&'static str, &'static str) {
        match self {
            Self::Aes256Gcm => (
                "http://www.w3.org/2009/xmlenc11#aes256-gcm",
                "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
            ),
            Self::Aes128Cbc => (
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                "http://www.w3.org/2009/xmlenc11#rsa-oaep",
            ),
            Self::Aes256Cbc => (
                "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
                "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
            ),
        }
    }
}

/// A running SAML test IdP. Dropping it stops the server.
pub struct TestSamlIdp {
    state: Arc<IdpState>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

struct IdpState {
    entity_id: String,
    base: String,
    signer: DsigContext,
    /// The same key, for the HTTP-Redirect binding's signatures.
    query_signer: aws_lc_rs::signature::RsaKeyPair,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    private_key_pem: String,
    user: Mutex<SamlUser>,
    requests: Mutex<Vec<ReceivedRequest>>,
}

/// An AuthnRequest the IdP received at `/sso`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedRequest {
    /// Its `ID`.
    pub id: String,
    /// Its `Issuer`: the SP's entity id.
    pub issuer: String,
    /// Where the response is to go.
    pub acs_url: String,
    /// Whether it came with a `Signature` parameter.
    pub signed: bool,
    /// The `RelayState` that came with it.
    pub relay_state: Option<String>,
}

impl TestSamlIdp {
    /// Starts the IdP on a free loopback port with a fresh 2048-bit RSA key, signing in
    /// `SamlUser::persistent("saml-alice")` with an e-mail address and names until told
    /// otherwise.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or no key can be made.
    pub async fn start() -> Self {
        Self::start_as("127.0.0.1").await
    }

    /// Starts the IdP as [`start`](Self::start) does, its URLs (entity id, metadata, SSO)
    /// under `host` instead of `127.0.0.1`: `localhost`, so that a browser sees the IdP and an
    /// application on `127.0.0.1` as two sites, and its POST to the application as cross-site.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or no key can be made.
    pub async fn start_as(host: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a free loopback port for the SAML test IdP");
        let addr = listener.local_addr().expect("a bound address");
        let base = format!("http://{host}:{}", addr.port());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("an RSA key for the SAML test IdP");
        let certificate = rcgen::CertificateParams::new(vec!["saml-idp.test".to_owned()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("a self-signed certificate");
        let mut keys = KeysManager::new();
        keys.add_key(
            bergshamra::keys::loader::load_pem_auto(key.serialize_pem().as_bytes(), None)
                .expect("the IdP key loads"),
        );
        let query_signer = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&key.serialize_der())
            .expect("the IdP key as PKCS#8");
        let state = Arc::new(IdpState {
            entity_id: format!("{base}/saml"),
            base,
            signer: DsigContext::new(keys),
            query_signer,
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            user: Mutex::new(
                SamlUser::persistent("saml-alice")
                    .attribute(
                        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                        ["alice@example.com"],
                    )
                    .attribute(
                        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                        ["Alice"],
                    )
                    .attribute(
                        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
                        ["Liddell"],
                    ),
            ),
            requests: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve_with(listener, Arc::clone(&state), respond));
        Self {
            state,
            addr,
            server,
        }
    }

    /// The IdP's entity id: `http://127.0.0.1:<port>/saml` (or the host it was started as).
    pub fn entity_id(&self) -> String {
        self.state.entity_id.clone()
    }

    /// Where its metadata is served: `http://127.0.0.1:<port>/metadata`.
    pub fn metadata_url(&self) -> String {
        format!("{}/metadata", self.state.base)
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its metadata document: entity id, signing certificate, SSO and SLO by HTTP-Redirect.
    pub fn metadata(&self) -> String {
        self.state.metadata()
    }

    /// Its private key, PKCS#8 PEM, for tests that sign with another tool.
    pub fn private_key_pem(&self) -> String {
        self.state.private_key_pem.clone()
    }

    /// Its signing certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        self.state.certificate_pem.clone()
    }

    /// Who `/sso` signs in from now on.
    pub fn sign_in_as(&self, user: SamlUser) {
        *lock(&self.state.user) = user;
    }

    /// The AuthnRequests `/sso` received, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.requests).clone()
    }

    /// A LogoutRequest signing out `name_id` (persistent) at the SP whose Single Logout
    /// service is `sp_slo_url`: of the IdP session `session_index`, or of all of them.
    pub fn logout_request(
        &self,
        name_id: &str,
        session_index: Option<&str>,
        sp_slo_url: &str,
    ) -> SamlLogout<'_> {
        SamlLogout {
            idp: &self.state,
            name_id: name_id.to_owned(),
            session_index: session_index.map(str::to_owned),
            destination: sp_slo_url.to_owned(),
            id: format!("_l{}", super::random_hex(16)),
            issued_at: Utc::now(),
            signed: true,
            relay_state: None,
        }
    }

    /// A response for `user`, to an SP at `sp_entity_id` with its ACS at `acs_url`, valid
    /// for five minutes from now, the assertion signed: change what a test needs, then
    /// [`xml`](SamlResponse::xml) or [`encoded`](SamlResponse::encoded).
    pub fn response(&self, user: &SamlUser, sp_entity_id: &str, acs_url: &str) -> SamlResponse<'_> {
        SamlResponse::new(&self.state, user, sp_entity_id, acs_url)
    }
}

impl std::fmt::Debug for TestSamlIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSamlIdp")
            .field("entity_id", &self.state.entity_id)
            .finish_non_exhaustive()
    }
}

impl Drop for TestSamlIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for IdpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpState")
            .field("entity_id", &self.entity_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdpState {
    fn metadata(&self) -> String {
        let cert = STANDARD.encode(&self.certificate_der);
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
             xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\">\
             <md:IDPSSODescriptor protocolSupportEnumeration=\"{PROTOCOL}\" \
             WantAuthnRequestsSigned=\"false\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo>\
             <ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data>\
             </ds:KeyInfo></md:KeyDescriptor>\
             <md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
             Location=\"{base}/slo\"/>\
             <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>\
             <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
             Location=\"{base}/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>",
            entity = self.entity_id,
            base = self.base,
        )
    }
}

/// A response the test IdP will sign, described field by field.
#[derive(Debug)]
#[must_use]
pub struct SamlResponse<'a> {
    idp: &'a IdpState,
    user: SamlUser,
    issuer: String,
    audience: String,
    recipient: String,
    destination: Option<String>,
    in_response_to: Option<String>,
    issued_at: DateTime<Utc>,
    not_before: DateTime<Utc>,
    not_on_or_after: DateTime<Utc>,
    assertion_id: String,
    response_id: String,
    session_index: Option<String>,
    status: String,
    sign_assertion: bool,
    sign_response: bool,
    sha1: bool,
    authn_statement: bool,
    /// The SP certificate (PEM) and cipher the assertion is encrypted with, if it is.
    encrypt: Option<(String, SamlCipher)>,
}

impl SamlResponse<'_> {
    fn new<'a>(
        idp: &'a IdpState,
        user: &SamlUser,
        sp_entity_id: &str,
        acs_url: &str,
    ) -> SamlResponse<'a> {
        let now = Utc::now();
        SamlResponse {
            idp,
            user: user.clone(),
            issuer: idp.entity_id.clone(),
            audience: sp_entity_id.to_owned(),
            recipient: acs_url.to_owned(),
            destination: Some(acs_url.to_owned()),
            in_response_to: None,
            issued_at: now,
            not_before: now - TimeDelta::seconds(30),
            not_on_or_after: now + TimeDelta::minutes(5),
            assertion_id: format!("_a{}", super::random_hex(16)),
            response_id: format!("_r{}", super::random_hex(16)),
            session_index: Some(format!("_s{}", super::random_hex(8))),
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".to_owned(),
            sign_assertion: true,
            sign_response: false,
            sha1: false,
            authn_statement: true,
            encrypt: None,
        }
    }

    /// The AuthnRequest it answers; without one the response is unsolicited.
    pub fn in_response_to(mut self, id: impl Into<String>) -> Self {
        self.in_response_to = Some(id.into());
        self
    }

    /// Another issuer in the Response and the Assertion.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Another audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Another bearer confirmation recipient.
    pub fn recipient(mut self, recipient: impl Into<String>) -> Self {
        self.recipient = recipient.into();
        self
    }

    /// Another `Destination` on the Response, or none.
    pub fn destination(mut self, destination: Option<String>) -> Self {
        self.destination = destination;
        self
    }

    /// The assertion's validity window: from `not_before` until `not_on_or_after` (the
    /// conditions and the bearer confirmation alike).
    pub fn valid(mut self, not_before: DateTime<Utc>, not_on_or_after: DateTime<Utc>) -> Self {
        self.not_before = not_before;
        self.not_on_or_after = not_on_or_after;
        self
    }

    /// Another top-level status code.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = status.into();
        self
    }

    /// The `SessionIndex` of the authentication statement (a random one by default).
    pub fn session_index(mut self, index: impl Into<String>) -> Self {
        self.session_index = Some(index.into());
        self
    }

    /// Another assertion `ID` (to replay one).
    pub fn assertion_id(mut self, id: impl Into<String>) -> Self {
        self.assertion_id = id.into();
        self
    }

    /// Which parts are signed: the assertion, the response, both or neither.
    pub fn signed(mut self, assertion: bool, response: bool) -> Self {
        self.sign_assertion = assertion;
        self.sign_response = response;
        self
    }

    /// The assertion (signed first, if it is) encrypted for the SP whose certificate is
    /// `sp_certificate_pem`, as an `EncryptedAssertion`.
    pub fn encrypt_for(
        mut self,
        sp_certificate_pem: impl Into<String>,
        cipher: SamlCipher,
    ) -> Self {
        self.encrypt = Some((sp_certificate_pem.into(), cipher));
        self
    }

    /// No `AuthnStatement`: an assertion that says nothing about an authentication.
    pub fn without_authn_statement(mut self) -> Self {
        self.authn_statement = false;
        self
    }

    /// RSA-SHA1 and SHA-1 digests instead of SHA-256. aws-lc does not sign with SHA-1, so
    /// such a response can only be had as a [`template`](Self::template), for a tool that
    /// does (`xmlsec1 --sign`, with [`TestSamlIdp::private_key_pem`]).
    pub fn sha1(mut self) -> Self {
        self.sha1 = true;
        self
    }

    /// The response's XML, signed as asked.
    ///
    /// # Panics
    ///
    /// For a [`sha1`](Self::sha1) response, which aws-lc cannot sign.
    pub fn xml(&self) -> String {
        assert!(
            !self.sha1,
            "aws-lc does not sign with RSA-SHA1: use template()"
        );
        self.build(true)
    }

    /// The response's XML with its signatures as templates (empty `DigestValue` and
    /// `SignatureValue`), for another tool to sign.
    pub fn template(&self) -> String {
        self.build(false)
    }

    fn build(&self, sign: bool) -> String {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let esc = |s: &str| html_escape(s);
        let mut attributes = String::new();
        if !self.user.attributes.is_empty() {
            attributes.push_str("<saml:AttributeStatement>");
            for (name, values) in &self.user.attributes {
                attributes.push_str(&format!("<saml:Attribute Name=\"{}\">", esc(name)));
                for value in values {
                    attributes.push_str(&format!(
                        "<saml:AttributeValue>{}</saml:AttributeValue>",
                        esc(value)
                    ));
                }
                attributes.push_str("</saml:Attribute>");
            }
            attributes.push_str("</saml:AttributeStatement>");
        }
        let in_response_to = self
            .in_response_to
            .as_deref()
            .map(|id| format!(" InResponseTo=\"{}\"", esc(id)))
            .unwrap_or_default();
        let session_index = self
            .session_index
            .as_deref()
            .map(|s| format!(" SessionIndex=\"{}\"", esc(s)))
            .unwrap_or_default();
        let statement = if self.authn_statement {
            format!(
                "<saml:AuthnStatement AuthnInstant=\"{}\"{session_index}><saml:AuthnContext>\
                 <saml:AuthnContextClassRef>\
                 urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport\
                 </saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
                time(self.issued_at)
            )
        } else {
            String::new()
        };
        let assertion_signature = if self.sign_assertion {
            self.signature_template(&self.assertion_id)
        } else {
            String::new()
        };
        let assertion = format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION}\" ID=\"{id}\" Version=\"2.0\" \
             IssueInstant=\"{issued}\"><saml:Issuer>{issuer}</saml:Issuer>{assertion_signature}\
             <saml:Subject><saml:NameID Format=\"{format}\">{name_id}</saml:NameID>\
             <saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
             <saml:SubjectConfirmationData NotOnOrAfter=\"{until}\" Recipient=\"{recipient}\"\
             {in_response_to}/></saml:SubjectConfirmation></saml:Subject>\
             <saml:Conditions NotBefore=\"{from}\" NotOnOrAfter=\"{until}\">\
             <saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience>\
             </saml:AudienceRestriction></saml:Conditions>\
             {statement}{attributes}</saml:Assertion>",
            id = esc(&self.assertion_id),
            issued = time(self.issued_at),
            issuer = esc(&self.issuer),
            format = esc(&self.user.name_id_format),
            name_id = esc(&self.user.name_id),
            until = time(self.not_on_or_after),
            from = time(self.not_before),
            recipient = esc(&self.recipient),
            audience = esc(&self.audience),
        );
        let assertion = if self.sign_assertion && sign {
            self.sign(&assertion)
        } else {
            assertion
        };
        let assertion = match &self.encrypt {
            Some((certificate, cipher)) => encrypted(&assertion, certificate, *cipher),
            None => assertion,
        };
        let destination = self
            .destination
            .as_deref()
            .map(|d| format!(" Destination=\"{}\"", esc(d)))
            .unwrap_or_default();
        let response_signature = if self.sign_response {
            self.signature_template(&self.response_id)
        } else {
            String::new()
        };
        let response = format!(
            "<samlp:Response xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" ID=\"{id}\" \
             Version=\"2.0\" IssueInstant=\"{issued}\"{destination}{in_response_to}>\
             <saml:Issuer>{issuer}</saml:Issuer>{response_signature}<samlp:Status>\
             <samlp:StatusCode Value=\"{status}\"/></samlp:Status>{assertion}</samlp:Response>",
            id = esc(&self.response_id),
            issued = time(self.issued_at),
            issuer = esc(&self.issuer),
            status = esc(&self.status),
        );
        if self.sign_response && sign {
            self.sign(&response)
        } else {
            response
        }
    }

    /// The signed XML, base64, as the `SAMLResponse` form field carries it.
    pub fn encoded(&self) -> String {
        STANDARD.encode(self.xml())
    }

    fn signature_template(&self, id: &str) -> String {
        signature_template(self.idp, id, self.sha1)
    }

    fn sign(&self, template: &str) -> String {
        bergshamra::sign(&self.idp.signer, template).expect("the test IdP signs its template")
    }
}

/// `assertion` as an `EncryptedAssertion` for the holder of `certificate_pem`.
fn encrypted(assertion: &str, certificate_pem: &str, cipher: SamlCipher) -> String {
    let (content, transport) = cipher.uris();
    let template = format!(
        "<saml:EncryptedAssertion xmlns:saml=\"{ASSERTION}\"><xenc:EncryptedData \
         xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" \
         Type=\"http://www.w3.org/2001/04/xmlenc#Element\"><xenc:EncryptionMethod \
         Algorithm=\"{content}\"/><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\
         <xenc:EncryptedKey><xenc:EncryptionMethod Algorithm=\"{transport}\"/><xenc:CipherData>\
         <xenc:CipherValue></xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>\
         <xenc:CipherData><xenc:CipherValue></xenc:CipherValue></xenc:CipherData>\
         </xenc:EncryptedData></saml:EncryptedAssertion>"
    );
    let mut keys = KeysManager::new();
    keys.add_key(
        bergshamra::keys::loader::load_x509_cert_pem(certificate_pem.as_bytes())
            .expect("the SP certificate, PEM"),
    );
    let context = bergshamra::EncContext::new(keys);
    let done = bergshamra::encrypt(&context, &template, assertion.as_bytes())
        .expect("the test IdP encrypts for the SP");
    match done.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").map_or(0, |end| end + 2)..].to_owned(),
        None => done,
    }
}

/// An enveloped signature template over the element `id`, with the IdP's certificate.
fn signature_template(idp: &IdpState, id: &str, sha1: bool) -> String {
    let (method, digest) = if sha1 {
        (
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        )
    } else {
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
        )
    };
    format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
         <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
         <ds:SignatureMethod Algorithm=\"{method}\"/><ds:Reference URI=\"#{id}\">\
         <ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
         <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
         <ds:DigestMethod Algorithm=\"{digest}\"/><ds:DigestValue></ds:DigestValue>\
         </ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>\
         <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>\
         </ds:X509Data></ds:KeyInfo></ds:Signature>",
        id = html_escape(id),
        cert = STANDARD.encode(&idp.certificate_der),
    )
}

/// A LogoutRequest the test IdP sends, by either binding.
#[derive(Debug)]
#[must_use]
pub struct SamlLogout<'a> {
    idp: &'a IdpState,
    name_id: String,
    session_index: Option<String>,
    destination: String,
    id: String,
    issued_at: DateTime<Utc>,
    signed: bool,
    relay_state: Option<String>,
}

impl SamlLogout<'_> {
    /// Sent without a signature.
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// With a `RelayState`, which the SP's answer carries back.
    pub fn relay_state(mut self, relay_state: impl Into<String>) -> Self {
        self.relay_state = Some(relay_state.into());
        self
    }

    /// Issued at another time.
    pub fn issued_at(mut self, at: DateTime<Utc>) -> Self {
        self.issued_at = at;
        self
    }

    /// The request's `ID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn xml(&self, signature: &str) -> String {
        let index = self
            .session_index
            .as_deref()
            .map(|s| {
                format!(
                    "<samlp:SessionIndex>{}</samlp:SessionIndex>",
                    html_escape(s)
                )
            })
            .unwrap_or_default();
        format!(
            "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" \
             ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{at}\" Destination=\"{destination}\">\
             <saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:NameID \
             Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\">{name_id}</saml:NameID>\
             {index}</samlp:LogoutRequest>",
            id = html_escape(&self.id),
            at = self.issued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            destination = html_escape(&self.destination),
            issuer = html_escape(&self.idp.entity_id),
            name_id = html_escape(&self.name_id),
        )
    }

    /// The SP's Single Logout URL carrying the request by the HTTP-Redirect binding, its
    /// query signed with RSA-SHA256 (unless [`unsigned`](Self::unsigned)).
    ///
    /// # Panics
    ///
    /// If compressing or signing fails (they do not).
    pub fn redirect_url(&self) -> String {
        use std::io::Write as _;
        let mut deflated =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflated
            .write_all(self.xml("").as_bytes())
            .expect("compressing in memory");
        let encoded = STANDARD.encode(deflated.finish().expect("compressing in memory"));
        let enc = |value: &str| {
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        };
        let mut query = format!("SAMLRequest={}", enc(&encoded));
        if let Some(relay_state) = &self.relay_state {
            query.push_str(&format!("&RelayState={}", enc(relay_state)));
        }
        if self.signed {
            query.push_str(&format!(
                "&SigAlg={}",
                enc("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
            ));
            let key = &self.idp.query_signer;
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                query.as_bytes(),
                &mut signature,
            )
            .expect("the IdP signs");
            query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(signature))));
        }
        format!("{}?{query}", self.destination)
    }

    /// The `SAMLRequest` form value of the HTTP-POST binding: the request with an enveloped
    /// XML signature (unless [`unsigned`](Self::unsigned)), base64.
    ///
    /// # Panics
    ///
    /// If signing fails (it does not).
    pub fn post_value(&self) -> String {
        let xml = if self.signed {
            let template = self.xml(&signature_template(self.idp, &self.id, false));
            bergshamra::sign(&self.idp.signer, &template).expect("the test IdP signs")
        } else {
            self.xml("")
        };
        STANDARD.encode(xml)
    }
}

/// The eight XML Signature Wrapping permutations of Somorovsky et al., applied to a response
/// the IdP signed, each smuggling an assertion about `evil_name_id` past the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Xsw {
    /// Response signed: a new Response with the evil assertion, the original Response moved
    /// into the signature.
    Xsw1,
    /// As 1, the original Response placed before the (now detached) signature.
    Xsw2,
    /// Assertion signed: the evil assertion inserted before the signed one.
    Xsw3,
    /// Assertion signed: the evil assertion first, the signed one wrapped inside it.
    Xsw4,
    /// Assertion signed: the evil assertion holds the signature, the original (unsigned)
    /// follows it.
    Xsw5,
    /// Assertion signed: the evil assertion holds the signature, with the original inside
    /// the signature's `Object`.
    Xsw6,
    /// Assertion signed: the original inside an `Extensions` element, the evil assertion in
    /// its place.
    Xsw7,
    /// Assertion signed: the evil assertion holds the signature, with the original, its
    /// signature removed, inside an `Object`.
    Xsw8,
}

impl Xsw {
    /// All eight.
    pub const ALL: [Self; 8] = [
        Self::Xsw1,
        Self::Xsw2,
        Self::Xsw3,
        Self::Xsw4,
        Self::Xsw5,
        Self::Xsw6,
        Self::Xsw7,
        Self::Xsw8,
    ];

    /// Whether the permutation starts from a response signed on the Response (1 and 2) rather
    /// than on the Assertion.
    pub fn wraps_response(self) -> bool {
        matches!(self, Self::Xsw1 | Self::Xsw2)
    }

    /// `signed` (a response the IdP signed as [`wraps_response`](Self::wraps_response) says)
    /// rewrapped so that its signature still verifies while an assertion about
    /// `evil_name_id` sits where a careless verifier reads.
    ///
    /// # Panics
    ///
    /// If `signed` is not a response of this IdP's making.
    pub fn apply(self, signed: &str, evil_name_id: &str) -> String {
        let parts = Parts::of(signed);
        let evil_assertion = evil(&parts.assertion, evil_name_id);
        match self {
            Self::Xsw1 => format!(
                "{open_evil}{issuer}{sig_open}{sig_body}<ds:Object>{original}</ds:Object>\
                 </ds:Signature>{status}{evil_assertion}</samlp:Response>",
                open_evil = parts.response_open.replace("ID=\"", "ID=\"evil"),
                issuer = parts.response_issuer,
                sig_open = "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">",
                sig_body = parts.response_signature_body(),
                original = parts.response_without_signature_of_response(),
                status = parts.status,
            ),
            Self::Xsw2 => format!(
                "{open_evil}{issuer}{original}{signature}{status}{evil_assertion}</samlp:Response>",
                open_evil = parts.response_open.replace("ID=\"", "ID=\"evil"),
                issuer = parts.response_issuer,
                original = parts.response_without_signature_of_response(),
                signature = parts.response_signature,
                status = parts.status,
            ),
            Self::Xsw3 => format!(
                "{open}{issuer}{status}{evil}{original}</samlp:Response>",
                open = parts.response_open,
                issuer = parts.response_issuer,
                status = parts.status,
                evil = strip_signature(&with_new_id(&evil_assertion)),
                original = parts.assertion,
            ),
            Self::Xsw4 => {
                let evil = strip_signature(&with_new_id(&evil_assertion));
                let wrapped = evil.replacen(
                    "</saml:Assertion>",
                    &format!("{}</saml:Assertion>", parts.assertion),
                    1,
                );
                format!(
                    "{}{}{}{wrapped}</samlp:Response>",
                    parts.response_open, parts.response_issuer, parts.status
                )
            }
            Self::Xsw5 => format!(
                "{open}{issuer}{status}{evil}{original}</samlp:Response>",
                open = parts.response_open,
                issuer = parts.response_issuer,
                status = parts.status,
                evil = with_new_id(&evil_assertion),
                original = strip_signature(&parts.assertion),
            ),
            Self::Xsw6 => parts.holding_original(&with_new_id(&evil_assertion)),
            Self::Xsw7 => format!(
                "{open}{issuer}<samlp:Extensions>{original}</samlp:Extensions>{status}{evil}\
                 </samlp:Response>",
                open = parts.response_open,
                issuer = parts.response_issuer,
                original = parts.assertion,
                status = parts.status,
                evil = strip_signature(&with_new_id(&evil_assertion)),
            ),
            Self::Xsw8 => parts.holding_original(&evil_assertion),
        }
    }
}

/// A response of this IdP's making, cut at its fixed seams.
struct Parts {
    response_open: String,
    response_issuer: String,
    response_signature: String,
    status: String,
    assertion: String,
}

impl Parts {
    fn of(xml: &str) -> Self {
        let cut = |from: &str, to: &str| -> String {
            let start = xml.find(from).expect("a response of the test IdP");
            let end = xml[start..].find(to).expect("a response of the test IdP") + start + to.len();
            xml[start..end].to_owned()
        };
        let response_open = cut("<samlp:Response", ">");
        let response_issuer = cut("<saml:Issuer>", "</saml:Issuer>");
        let status = cut("<samlp:Status>", "</samlp:Status>");
        let assertion = cut("<saml:Assertion", "</saml:Assertion>");
        let after_issuer = xml.find("</saml:Issuer>").expect("an issuer") + "</saml:Issuer>".len();
        let response_signature = if xml[after_issuer..].starts_with("<ds:Signature") {
            let end = xml[after_issuer..]
                .find("</ds:Signature>")
                .expect("a signature")
                + after_issuer
                + "</ds:Signature>".len();
            xml[after_issuer..end].to_owned()
        } else {
            String::new()
        };
        Self {
            response_open,
            response_issuer,
            response_signature,
            status,
            assertion,
        }
    }

    /// The response with `evil` as its assertion, the original (its signature removed) inside
    /// an `Object` of `evil`'s signature.
    fn holding_original(&self, evil: &str) -> String {
        let signature = signature_of(evil);
        let with_object = signature.replacen(
            "</ds:Signature>",
            &format!(
                "<ds:Object>{}</ds:Object></ds:Signature>",
                strip_signature(&self.assertion)
            ),
            1,
        );
        format!(
            "{}{}{}{}</samlp:Response>",
            self.response_open,
            self.response_issuer,
            self.status,
            evil.replacen(&signature, &with_object, 1)
        )
    }

    fn response_signature_body(&self) -> String {
        self.response_signature
            .trim_start_matches("<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">")
            .trim_end_matches("</ds:Signature>")
            .to_owned()
    }

    /// The original Response, as signed (its signature is enveloped, so left out).
    fn response_without_signature_of_response(&self) -> String {
        format!(
            "{}{}{}{}</samlp:Response>",
            self.response_open, self.response_issuer, self.status, self.assertion
        )
    }
}

fn evil(assertion: &str, evil_name_id: &str) -> String {
    let start = assertion.find("<saml:NameID").expect("a NameID");
    let open_end = assertion[start..].find('>').expect("a NameID") + start + 1;
    let close = assertion.find("</saml:NameID>").expect("a NameID");
    format!(
        "{}{}{}",
        &assertion[..open_end],
        html_escape(evil_name_id),
        &assertion[close..]
    )
}

fn with_new_id(assertion: &str) -> String {
    assertion.replacen(" ID=\"", " ID=\"evil", 1)
}

fn signature_of(xml: &str) -> String {
    let Some(start) = xml.find("<ds:Signature") else {
        return String::new();
    };
    let end = xml[start..]
        .find("</ds:Signature>")
        .expect("a closed signature")
        + start
        + "</ds:Signature>".len();
    xml[start..end].to_owned()
}

fn strip_signature(xml: &str) -> String {
    let signature = signature_of(xml);
    if signature.is_empty() {
        xml.to_owned()
    } else {
        xml.replacen(&signature, "", 1)
    }
}

async fn respond(
    state: Arc<IdpState>,
    request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let response = match (request.method().as_str(), request.uri().path()) {
        ("GET", "/metadata") => http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/samlmetadata+xml")
            .body(Full::from(state.metadata()))
            .expect("static response"),
        ("GET", "/sso") => sso(&state, &query),
        // Where SPs send their LogoutResponses: acknowledged, nothing more.
        ("GET", "/slo") => text(200, "signed out\n"),
        _ => text(404, "not found\n"),
    };
    Ok(response)
}

/// `GET /sso?SAMLRequest=…[&RelayState=…]`: the request read, the configured person signed
/// in, and a page that posts the signed response to the request's ACS.
fn sso(state: &IdpState, query: &str) -> Response {
    let params = params(query);
    let Some(request) = params.get("SAMLRequest").and_then(|r| inflate(r)) else {
        return text(400, "no readable SAMLRequest\n");
    };
    let Ok(doc) = dom::parse(&request) else {
        return text(400, "the SAMLRequest is not XML\n");
    };
    let Some(root) = doc.document_element() else {
        return text(400, "the SAMLRequest is empty\n");
    };
    if !dom::is(&doc, root, PROTOCOL, "AuthnRequest") {
        return text(400, "not an AuthnRequest\n");
    }
    let (Some(id), Some(acs_url)) = (
        dom::attr(&doc, root, "ID"),
        dom::attr(&doc, root, "AssertionConsumerServiceURL"),
    ) else {
        return text(400, "the AuthnRequest has no ID or ACS URL\n");
    };
    let issuer = dom::children(&doc, root, ASSERTION, "Issuer")
        .next()
        .and_then(|i| dom::text(&doc, i))
        .unwrap_or_default();
    let relay_state = params.get("RelayState").cloned();
    lock(&state.requests).push(ReceivedRequest {
        id: id.to_owned(),
        issuer: issuer.clone(),
        acs_url: acs_url.to_owned(),
        signed: params.contains_key("Signature"),
        relay_state: relay_state.clone(),
    });
    let user = lock(&state.user).clone();
    let encoded = SamlResponse::new(state, &user, &issuer, acs_url)
        .in_response_to(id)
        .encoded();
    let relay = relay_state
        .map(|r| {
            format!(
                "<input type=\"hidden\" name=\"RelayState\" value=\"{}\">",
                html_escape(&r)
            )
        })
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><title>Test SAML IdP</title></head>\
         <body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{acs}\">\
         <input type=\"hidden\" name=\"SAMLResponse\" value=\"{encoded}\">{relay}\
         <button type=\"submit\">Continue</button></form></body></html>",
        acs = html_escape(acs_url),
    );
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::from(page))
        .expect("static response")
}

/// An HTTP-Redirect binding message: base64 of raw DEFLATE.
fn inflate(encoded: &str) -> Option<String> {
    let compressed = STANDARD.decode(encoded).ok()?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&compressed[..])
        .take(256 * 1024)
        .read_to_string(&mut xml)
        .ok()?;
    Some(xml)
}
