//! The verifier against the SAML test IdP: what a real IdP signs is accepted, and every way of
//! bending a response that peers have been broken by is refused, each with its own reason.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};

use super::metadata::parse_idp_metadata;
use super::verify::{
    Expectations, Refusal, TrustedIdp, VerifiedAssertion, decode, verify_response,
};
use crate::testing::{SamlResponse, SamlUser, TestSamlIdp, Xsw};

const SP: &str = "https://app.example/saml/metadata";
const ACS: &str = "https://app.example/saml/acs";
const REQUEST: &str = "_req-1";

fn trusted(idp: &TestSamlIdp) -> Vec<Arc<TrustedIdp>> {
    parse_idp_metadata(&idp.metadata(), true, Utc::now())
        .unwrap()
        .into_iter()
        .map(|m| Arc::new(TrustedIdp::new(m).unwrap()))
        .collect()
}

fn expected() -> Expectations<'static> {
    Expectations {
        sp_entity_id: SP,
        acs_url: ACS,
        now: Utc::now(),
        leeway: TimeDelta::seconds(60),
        require_signed_assertion: false,
        allow_sha1: false,
        allow_unsolicited: false,
    }
}

fn alice() -> SamlUser {
    SamlUser::persistent("saml-alice").attribute("mail", ["alice@example.com"])
}

/// A response of `idp` about alice, answering the request.
fn answer(idp: &TestSamlIdp) -> SamlResponse<'_> {
    idp.response(&alice(), SP, ACS).in_response_to(REQUEST)
}

fn check(idp: &TestSamlIdp, xml: &str) -> Result<VerifiedAssertion, Refusal> {
    verify_response(xml, &trusted(idp), &expected(), None)
}

#[tokio::test]
async fn a_signed_assertion_is_read_whole() {
    let idp = TestSamlIdp::start().await;
    let xml = answer(&idp).xml();
    let verified = check(&idp, &xml).unwrap();
    assert_eq!(verified.idp, idp.entity_id());
    let name_id = verified.name_id.unwrap();
    assert_eq!(name_id.value, "saml-alice");
    assert_eq!(name_id.format.as_deref(), Some(super::verify::PERSISTENT));
    assert_eq!(verified.in_response_to.as_deref(), Some(REQUEST));
    assert!(verified.session_index.is_some());
    assert_eq!(verified.attributes[0].name, "mail");
    assert_eq!(verified.attributes[0].values, ["alice@example.com"]);
    assert!(verified.valid_until > Utc::now());
    // The form field as posted, with the line breaks some IdPs add, decodes to the same.
    let posted = answer(&idp).encoded();
    let wrapped: String = posted
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    assert!(check(&idp, &decode(&wrapped).unwrap()).is_ok());
}

#[tokio::test]
async fn either_signature_covers_the_assertion_unless_the_assertion_must_carry_it() {
    let idp = TestSamlIdp::start().await;
    let response_only = answer(&idp).signed(false, true).xml();
    assert!(check(&idp, &response_only).is_ok());
    let both = answer(&idp).signed(true, true).xml();
    assert!(check(&idp, &both).is_ok());
    let strict = Expectations {
        require_signed_assertion: true,
        ..expected()
    };
    assert_eq!(
        verify_response(&response_only, &trusted(&idp), &strict, None).err(),
        Some(Refusal::Unsigned)
    );
    assert!(verify_response(&both, &trusted(&idp), &strict, None).is_ok());
}

#[tokio::test]
async fn unsigned_forged_and_tampered_responses_are_refused() {
    let idp = TestSamlIdp::start().await;
    let unsigned = answer(&idp).signed(false, false).xml();
    assert_eq!(check(&idp, &unsigned).err(), Some(Refusal::Unsigned));

    // Signed by another key that claims to be this IdP (and embeds its own certificate in
    // KeyInfo, which is never read).
    let impostor = TestSamlIdp::start().await;
    let forged = impostor
        .response(&alice(), SP, ACS)
        .issuer(idp.entity_id())
        .in_response_to(REQUEST)
        .xml();
    assert_eq!(check(&idp, &forged).err(), Some(Refusal::BadSignature));

    let signed = answer(&idp).xml();
    let tampered = signed.replace(">saml-alice<", ">saml-mallory<");
    assert_ne!(tampered, signed);
    assert_eq!(check(&idp, &tampered).err(), Some(Refusal::BadSignature));

    // A broken signature on the Response is not outvoted by a good one on the Assertion.
    let both = answer(&idp).signed(true, true).xml();
    let broken = both.replacen("IssueInstant=\"", "IssueInstant=\"1", 1);
    assert_eq!(check(&idp, &broken).err(), Some(Refusal::BadSignature));

    let other = TestSamlIdp::start().await;
    let unknown = other
        .response(&alice(), SP, ACS)
        .in_response_to(REQUEST)
        .xml();
    assert_eq!(check(&idp, &unknown).err(), Some(Refusal::UnknownIdp));
}

#[tokio::test]
async fn every_condition_of_the_assertion_is_checked() {
    let idp = TestSamlIdp::start().await;
    let now = Utc::now();
    let base = || answer(&idp);
    let cases = [
        (
            base().valid(now - TimeDelta::minutes(10), now - TimeDelta::minutes(2)),
            Refusal::Expired,
        ),
        (
            base().valid(now + TimeDelta::minutes(5), now + TimeDelta::minutes(10)),
            Refusal::NotYetValid,
        ),
        (
            base().audience("https://other.example/sp"),
            Refusal::WrongAudience,
        ),
        (
            base().destination(Some("https://other.example/acs".into())),
            Refusal::WrongDestination,
        ),
        (
            base().recipient("https://other.example/acs"),
            Refusal::WrongRecipient,
        ),
        (
            base().status("urn:oasis:names:tc:SAML:2.0:status:Responder"),
            Refusal::Status,
        ),
    ];
    for (response, refusal) in cases {
        assert_eq!(
            check(&idp, &response.xml()).err(),
            Some(refusal),
            "{refusal:?}"
        );
    }
    // An assertion that says nothing about an authentication signs nobody in.
    let no_statement = base().without_authn_statement().xml();
    assert_eq!(
        check(&idp, &no_statement).err(),
        Some(Refusal::NoAuthnStatement)
    );
    // Within the leeway, time is on the IdP's side.
    let slightly_early = base().valid(now + TimeDelta::seconds(30), now + TimeDelta::minutes(5));
    assert!(check(&idp, &slightly_early.xml()).is_ok());
}

#[tokio::test]
async fn an_unsolicited_response_is_refused_unless_allowed() {
    let idp = TestSamlIdp::start().await;
    let unsolicited = idp.response(&alice(), SP, ACS).xml();
    assert_eq!(check(&idp, &unsolicited).err(), Some(Refusal::Unsolicited));
    let allowing = Expectations {
        allow_unsolicited: true,
        ..expected()
    };
    let verified = verify_response(&unsolicited, &trusted(&idp), &allowing, None).unwrap();
    assert_eq!(verified.in_response_to, None);
}

#[tokio::test]
async fn sha1_is_refused_before_any_cryptography() {
    let idp = TestSamlIdp::start().await;
    let template = answer(&idp).sha1().template();
    assert_eq!(check(&idp, &template).err(), Some(Refusal::Algorithm));
}

/// aws-lc cannot sign with RSA-SHA1, so the real signature is `xmlsec1`'s.
#[tokio::test]
#[cfg_attr(
    not(jit_test_xmlsec1),
    ignore = "needs xmlsec1: set JIT_TEST_XMLSEC1 (bash .ci/run installs it and does)"
)]
async fn a_real_sha1_signature_is_refused_unless_allowed() {
    let idp = TestSamlIdp::start().await;
    let template = answer(&idp).sha1().template();
    let sha1 = Xmlsec1::new().sign(&template, &idp.private_key_pem());
    assert_eq!(check(&idp, &sha1).err(), Some(Refusal::Algorithm));
    let allowing = Expectations {
        allow_sha1: true,
        ..expected()
    };
    assert!(verify_response(&sha1, &trusted(&idp), &allowing, None).is_ok());
}

/// The `xmlsec1` command-line tool, where it is installed.
struct Xmlsec1 {
    program: String,
    dir: tempfile::TempDir,
}

impl Xmlsec1 {
    fn new() -> Self {
        let program = std::env::var("JIT_TEST_XMLSEC1").unwrap_or_else(|_| "xmlsec1".to_owned());
        let found = std::process::Command::new(&program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(found, "xmlsec1 does not run: {program}");
        Self {
            program,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn sign(&self, template: &str, key_pem: &str) -> String {
        let key = self.write("key.pem", key_pem);
        let file = self.write("template.xml", template);
        let out = std::process::Command::new(&self.program)
            .args(["--sign", "--privkey-pem"])
            .arg(&key)
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `xml` with its assertion encrypted by `xmlsec1` for the holder of `cert_pem`:
    /// `cipher` content (`aes256-gcm`, `aes256-cbc`, …) under a session key wrapped with
    /// RSA-OAEP, inside an `EncryptedAssertion`.
    fn encrypt_assertion(&self, xml: &str, cert_pem: &str, cipher: &str) -> String {
        let start = xml.find("<saml:Assertion").unwrap();
        let end = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
        let wrapped = format!(
            "{}<saml:EncryptedAssertion>{}</saml:EncryptedAssertion>{}",
            &xml[..start],
            &xml[start..end],
            &xml[end..]
        );
        let namespace = if cipher.ends_with("gcm") {
            "http://www.w3.org/2009/xmlenc11#"
        } else {
            "http://www.w3.org/2001/04/xmlenc#"
        };
        let template = format!(
            "<xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" \
             Type=\"http://www.w3.org/2001/04/xmlenc#Element\"><xenc:EncryptionMethod \
             Algorithm=\"{namespace}{cipher}\"/><ds:KeyInfo \
             xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><xenc:EncryptedKey>\
             <xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"/>\
             <xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedKey>\
             </ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData>\
             </xenc:EncryptedData>"
        );
        let cert = self.write("sp.pem", cert_pem);
        let data = self.write("data.xml", &wrapped);
        let template = self.write("template.xml", &template);
        let session = if cipher.starts_with("aes128") {
            "aes-128"
        } else {
            "aes-256"
        };
        let out = std::process::Command::new(&self.program)
            .args(["--encrypt", "--pubkey-cert-pem"])
            .arg(&cert)
            .args(["--session-key", session, "--xml-data"])
            .arg(&data)
            .args(["--node-xpath", "//*[local-name()='Assertion']"])
            .arg(&template)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Whether the signature inside element `node` (`namespace:Local`) verifies with the
    /// certificate `cert_pem`.
    fn verifies(&self, xml: &str, node: &str, cert_pem: &str) -> bool {
        let cert = self.write("cert.pem", cert_pem);
        let file = self.write("response.xml", xml);
        let local = node.rsplit(':').next().unwrap();
        std::process::Command::new(&self.program)
            .args(["--verify", "--pubkey-cert-pem"])
            .arg(&cert)
            .args(["--id-attr:ID", node, "--node-xpath"])
            .arg(format!(
                "//*[local-name()='{local}']/*[local-name()='Signature']"
            ))
            .arg(&file)
            .output()
            .unwrap()
            .status
            .success()
    }
}

#[tokio::test]
async fn signature_wrapping_permutations_are_all_refused() {
    let idp = TestSamlIdp::start().await;
    for xsw in Xsw::ALL {
        let signed = answer(&idp)
            .signed(!xsw.wraps_response(), xsw.wraps_response())
            .xml();
        assert!(
            check(&idp, &signed).is_ok(),
            "{xsw:?}: the original is good"
        );
        let wrapped = xsw.apply(&signed, "saml-mallory");
        assert!(wrapped.contains("saml-mallory"), "{xsw:?}");
        let refused = check(&idp, &wrapped);
        assert!(refused.is_err(), "{xsw:?} accepted: {refused:?}");
    }
}

#[tokio::test]
async fn comments_and_markup_inside_values_are_refused() {
    let idp = TestSamlIdp::start().await;
    let user = SamlUser::persistent("alice@example.com.evil.example");
    let signed = idp.response(&user, SP, ACS).in_response_to(REQUEST).xml();
    // Exclusive c14n drops comments, so the signature still holds (CVE-2017-11427).
    let commented = signed.replace(
        ">alice@example.com.evil.example<",
        ">alice@example.com<!---->.evil.example<",
    );
    assert_eq!(check(&idp, &commented).err(), Some(Refusal::MixedContent));
}

#[tokio::test]
async fn declarations_entities_and_a_second_assertion_are_refused() {
    let idp = TestSamlIdp::start().await;
    let signed = answer(&idp).xml();
    for hostile in [
        format!("<!DOCTYPE r [<!ENTITY e \"x\">]>{signed}"),
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE samlp:Response SYSTEM \"http://127.0.0.1:9/x\">{signed}"
        ),
        signed.replacen("<samlp:Status>", "<?pi x?><samlp:Status>", 1),
    ] {
        assert_eq!(check(&idp, &hostile).err(), Some(Refusal::ForbiddenMarkup));
    }
    let assertion_start = signed.find("<saml:Assertion").unwrap();
    let assertion_end = signed.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let assertion = &signed[assertion_start..assertion_end];
    let twice = signed.replacen(
        assertion,
        &format!("{assertion}{}", assertion.replace(" ID=\"", " ID=\"x")),
        1,
    );
    assert_eq!(check(&idp, &twice).err(), Some(Refusal::AssertionCount));
    assert_eq!(
        decode(&"A".repeat(super::verify::MAX_RESPONSE_BYTES + 4)).err(),
        Some(Refusal::TooLarge)
    );
}

/// Where `xmlsec1` is installed, its verdict on the signatures is the verifier's: what it
/// finds valid the verifier accepts (unless the structure is wrapped, which `xmlsec1` does not
/// look at), and what it finds broken the verifier refuses.
#[tokio::test]
#[cfg_attr(
    not(jit_test_xmlsec1),
    ignore = "needs xmlsec1: set JIT_TEST_XMLSEC1 (bash .ci/run installs it and does)"
)]
async fn signature_verdicts_agree_with_xmlsec1() {
    let xmlsec = Xmlsec1::new();
    let idp = TestSamlIdp::start().await;
    let cert = idp.certificate_pem();
    let assertion = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";
    let response = "urn:oasis:names:tc:SAML:2.0:protocol:Response";
    let good = answer(&idp).xml();
    assert!(xmlsec.verifies(&good, assertion, &cert));
    assert!(check(&idp, &good).is_ok());
    let good_response = answer(&idp).signed(false, true).xml();
    assert!(xmlsec.verifies(&good_response, response, &cert));
    assert!(check(&idp, &good_response).is_ok());
    let tampered = good.replace(">saml-alice<", ">saml-mallory<");
    assert!(!xmlsec.verifies(&tampered, assertion, &cert));
    assert!(check(&idp, &tampered).is_err());
    let impostor = TestSamlIdp::start().await;
    let forged = impostor
        .response(&alice(), SP, ACS)
        .issuer(idp.entity_id())
        .in_response_to(REQUEST)
        .xml();
    assert!(!xmlsec.verifies(&forged, assertion, &cert));
    assert!(check(&idp, &forged).is_err());
    // Wrapping keeps the signature itself intact: xmlsec1 still says valid, and only the
    // verifier's structural rules refuse it.
    for xsw in [Xsw::Xsw3, Xsw::Xsw4, Xsw::Xsw7] {
        let wrapped = xsw.apply(&good, "saml-mallory");
        assert!(xmlsec.verifies(&wrapped, assertion, &cert), "{xsw:?}");
        assert!(check(&idp, &wrapped).is_err(), "{xsw:?}");
    }
}

/// The HTTP-Redirect binding's signature over an AuthnRequest verifies with the SP's public
/// key, over exactly `SAMLRequest=…&SigAlg=…` as sent.
#[tokio::test]
async fn a_signed_authn_request_verifies_over_its_encoded_query() {
    use aws_lc_rs::signature::{
        KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey,
    };
    use base64::Engine as _;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;

    let keys = TestSamlIdp::start().await;
    let PrivateKeyDer::Pkcs8(der) =
        PrivateKeyDer::from_pem_slice(keys.private_key_pem().as_bytes()).unwrap()
    else {
        panic!("PKCS#8");
    };
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let url = super::request::AuthnRequest {
        id: "_abc",
        sp_entity_id: SP,
        acs_url: ACS,
        destination: "https://idp.example/sso?tenant=1",
        persistent_name_id: true,
        issued_at: Utc::now(),
    }
    .redirect_url(Some(&key))
    .unwrap();
    let query = url
        .strip_prefix("https://idp.example/sso?tenant=1&")
        .unwrap();
    let (signed, signature) = query.split_once("&Signature=").unwrap();
    assert!(signed.starts_with("SAMLRequest=") && signed.contains("&SigAlg="));
    let signature: String = url::form_urlencoded::parse(format!("s={signature}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
        .verify(signed.as_bytes(), &signature)
        .unwrap();
}

/// The SP's decryption key: another test IdP's key stands in for it.
fn decryptor(sp: &TestSamlIdp) -> bergshamra::EncContext {
    let mut keys = bergshamra::KeysManager::new();
    keys.add_key(
        bergshamra::keys::loader::load_pem_auto(sp.private_key_pem().as_bytes(), None).unwrap(),
    );
    let mut context = bergshamra::EncContext::new(keys);
    context.disable_cipher_reference = true;
    context
}

#[tokio::test]
async fn an_encrypted_assertion_is_decrypted_with_the_sp_key_and_read_whole() {
    use crate::testing::SamlCipher;
    let idp = TestSamlIdp::start().await;
    let sp = TestSamlIdp::start().await;
    let key = decryptor(&sp);
    let verify = |xml: &str, expected: &Expectations<'_>| {
        verify_response(xml, &trusted(&idp), expected, Some(&key))
    };
    for cipher in [
        SamlCipher::Aes256Gcm,
        SamlCipher::Aes128Cbc,
        SamlCipher::Aes256Cbc,
    ] {
        for (assertion_signed, response_signed) in [(true, false), (false, true), (true, true)] {
            let xml = answer(&idp)
                .signed(assertion_signed, response_signed)
                .encrypt_for(sp.certificate_pem(), cipher)
                .xml();
            assert!(xml.contains("EncryptedAssertion"), "{cipher:?}");
            assert!(!xml.contains("saml-alice"), "{cipher:?}: in clear");
            let verified = verify(&xml, &expected()).unwrap_or_else(|e| {
                panic!("{cipher:?} {assertion_signed} {response_signed}: {e:?}")
            });
            assert_eq!(verified.name_id.unwrap().value, "saml-alice");
            assert_eq!(verified.attributes[0].values, ["alice@example.com"]);
            assert_eq!(verified.in_response_to.as_deref(), Some(REQUEST));
        }
    }
    let gcm = |response: SamlResponse<'_>| {
        response
            .encrypt_for(sp.certificate_pem(), SamlCipher::Aes256Gcm)
            .xml()
    };
    // Signed only outside the ciphertext, when the assertion must carry its own signature.
    let strict = Expectations {
        require_signed_assertion: true,
        ..expected()
    };
    let response_only = gcm(answer(&idp).signed(false, true));
    assert_eq!(
        verify(&response_only, &strict).err(),
        Some(Refusal::Unsigned)
    );
    // Signed nowhere.
    let unsigned = gcm(answer(&idp).signed(false, false));
    assert_eq!(
        verify(&unsigned, &expected()).err(),
        Some(Refusal::Unsigned)
    );
    // Without an SP key, or for another SP's key.
    let signed = gcm(answer(&idp));
    assert_eq!(
        verify_response(&signed, &trusted(&idp), &expected(), None).err(),
        Some(Refusal::Encrypted)
    );
    let other = decryptor(&idp);
    assert_eq!(
        verify_response(&signed, &trusted(&idp), &expected(), Some(&other)).err(),
        Some(Refusal::Undecryptable)
    );
    // The ciphertext changed: under a Response signature the signature fails first; alone,
    // the decryption does.
    let value_at = |xml: &str| {
        let start = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
        start + 8
    };
    let flip = |xml: &str| {
        let at = value_at(xml);
        let mut bytes = xml.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(
        verify(&flip(&response_only), &expected()).err(),
        Some(Refusal::BadSignature)
    );
    assert_eq!(
        verify(&flip(&signed), &expected()).err(),
        Some(Refusal::Undecryptable)
    );
    // An encrypted assertion beside a plain one.
    let plain = answer(&idp).xml();
    let start = plain.find("<saml:Assertion").unwrap();
    let end = plain.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let envelope_start = signed.find("<saml:EncryptedAssertion").unwrap();
    let envelope_end =
        signed.find("</saml:EncryptedAssertion>").unwrap() + "</saml:EncryptedAssertion>".len();
    let both = plain.replacen(
        &plain[start..end],
        &format!(
            "{}{}",
            &plain[start..end],
            &signed[envelope_start..envelope_end]
        ),
        1,
    );
    assert_eq!(
        verify(&both, &expected()).err(),
        Some(Refusal::AssertionCount)
    );
}

/// What another implementation encrypts, the verifier decrypts: `xmlsec1` (libxmlsec1 on
/// OpenSSL) encrypts the IdP's signed assertion for the SP with AES-256-GCM, AES-128-GCM,
/// AES-256-CBC and AES-128-CBC.
#[tokio::test]
#[cfg_attr(
    not(jit_test_xmlsec1),
    ignore = "needs xmlsec1: set JIT_TEST_XMLSEC1 (bash .ci/run installs it and does)"
)]
async fn assertions_encrypted_by_xmlsec1_are_decrypted() {
    let xmlsec = Xmlsec1::new();
    let idp = TestSamlIdp::start().await;
    let sp = TestSamlIdp::start().await;
    let key = decryptor(&sp);
    let signed = answer(&idp).xml();
    for cipher in ["aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"] {
        let encrypted = xmlsec.encrypt_assertion(&signed, &sp.certificate_pem(), cipher);
        assert!(
            encrypted.contains("EncryptedData") && !encrypted.contains("saml-alice"),
            "{cipher}"
        );
        let verified = verify_response(&encrypted, &trusted(&idp), &expected(), Some(&key))
            .unwrap_or_else(|e| panic!("{cipher}: {e:?}"));
        assert_eq!(verified.name_id.unwrap().value, "saml-alice", "{cipher}");
    }
}
