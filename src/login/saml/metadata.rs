//! SAML metadata: what an identity provider's metadata says (its entity id, its signing
//! certificates, where to send people and logout messages), and this service provider's own,
//! for the IdP's administrator.
//!
//! An IdP's keys come from here and nowhere else: never from a message's `KeyInfo`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use super::dom::{self, DSIG, METADATA, PROTOCOL};

pub(crate) const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub(crate) const POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// One identity provider, as its metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdpMetadata {
    pub(crate) entity_id: String,
    /// The certificates (DER) whose keys may sign its messages.
    pub(crate) signing_certificates: Vec<Vec<u8>>,
    /// Where AuthnRequests go, by the HTTP-Redirect binding.
    pub(crate) sso_redirect: String,
    /// Where LogoutResponses go, by the HTTP-Redirect binding, if it takes Single Logout.
    pub(crate) slo_redirect: Option<String>,
    /// Until when the metadata may be used (`validUntil`), if it says.
    pub(crate) valid_until: Option<DateTime<Utc>>,
    /// How long it may be cached before it is fetched again (`cacheDuration`), if it says.
    pub(crate) cache_duration: Option<Duration>,
}

/// Why metadata cannot be used. Each says what to fix, for a configuration error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error("the IdP metadata is not well-formed XML, or holds a DTD or processing instruction")]
    Unreadable,
    #[error("the IdP metadata has no EntityDescriptor with an IDPSSODescriptor for SAML 2.0")]
    NoIdp,
    #[error(
        "the IdP metadata for {0} has no signing certificate: its responses could not be verified"
    )]
    NoSigningKey(String),
    #[error("the IdP metadata for {0} has an X509Certificate that is not base64 DER")]
    BadCertificate(String),
    #[error("the IdP metadata for {0} has no SingleSignOnService with the HTTP-Redirect binding")]
    NoRedirectSso(String),
    #[error("the IdP metadata for {0} names an endpoint that is not an absolute https URL")]
    BadEndpoint(String),
    #[error("the IdP metadata for {0} expired (validUntil is past)")]
    Expired(String),
}

/// Reads the identity providers an `EntityDescriptor` or `EntitiesDescriptor` describes.
/// `allow_http` admits plain http endpoints (loopback tests).
pub(crate) fn parse_idp_metadata(
    xml: &str,
    allow_http: bool,
    now: DateTime<Utc>,
) -> Result<Vec<IdpMetadata>, MetadataError> {
    let doc = dom::parse(xml).map_err(|_| MetadataError::Unreadable)?;
    let root = doc.document_element().ok_or(MetadataError::Unreadable)?;
    let descriptors = if dom::is(&doc, root, METADATA, "EntitiesDescriptor") {
        dom::all(&doc, METADATA, "EntityDescriptor")
    } else if dom::is(&doc, root, METADATA, "EntityDescriptor") {
        vec![root]
    } else {
        return Err(MetadataError::NoIdp);
    };
    let outer_valid_until = dom::attr(&doc, root, "validUntil").and_then(parse_time);
    let outer_cache = dom::attr(&doc, root, "cacheDuration").and_then(parse_duration);
    let mut idps = Vec::new();
    for descriptor in descriptors {
        let Some(entity_id) = dom::attr(&doc, descriptor, "entityID") else {
            continue;
        };
        let entity_id = entity_id.to_owned();
        let Some(idp) = dom::children(&doc, descriptor, METADATA, "IDPSSODescriptor").find(|&d| {
            dom::attr(&doc, d, "protocolSupportEnumeration")
                .is_some_and(|p| p.split_ascii_whitespace().any(|p| p == PROTOCOL))
        }) else {
            continue;
        };
        let valid_until = [
            outer_valid_until,
            dom::attr(&doc, descriptor, "validUntil").and_then(parse_time),
            dom::attr(&doc, idp, "validUntil").and_then(parse_time),
        ]
        .into_iter()
        .flatten()
        .min();
        if valid_until.is_some_and(|until| until <= now) {
            return Err(MetadataError::Expired(entity_id));
        }
        let cache_duration = [
            outer_cache,
            dom::attr(&doc, descriptor, "cacheDuration").and_then(parse_duration),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut signing_certificates = Vec::new();
        for key in dom::children(&doc, idp, METADATA, "KeyDescriptor") {
            if dom::attr(&doc, key, "use").is_some_and(|u| u != "signing") {
                continue;
            }
            for info in dom::children(&doc, key, DSIG, "KeyInfo") {
                for data in dom::children(&doc, info, DSIG, "X509Data") {
                    for cert in dom::children(&doc, data, DSIG, "X509Certificate") {
                        let der = dom::text(&doc, cert)
                            .map(|b64| b64.split_ascii_whitespace().collect::<String>())
                            .and_then(|b64| STANDARD.decode(b64).ok())
                            .filter(|der| !der.is_empty())
                            .ok_or_else(|| MetadataError::BadCertificate(entity_id.clone()))?;
                        if !signing_certificates.contains(&der) {
                            signing_certificates.push(der);
                        }
                    }
                }
            }
        }
        if signing_certificates.is_empty() {
            return Err(MetadataError::NoSigningKey(entity_id));
        }
        let endpoint = |kind: &str| {
            dom::children(&doc, idp, METADATA, kind)
                .find(|&s| dom::attr(&doc, s, "Binding") == Some(REDIRECT_BINDING))
                .and_then(|s| dom::attr(&doc, s, "Location"))
                .map(str::to_owned)
        };
        let sso_redirect = endpoint("SingleSignOnService")
            .ok_or_else(|| MetadataError::NoRedirectSso(entity_id.clone()))?;
        let slo_redirect = endpoint("SingleLogoutService");
        for url in std::iter::once(&sso_redirect).chain(slo_redirect.as_ref()) {
            if !is_endpoint(url, allow_http) {
                return Err(MetadataError::BadEndpoint(entity_id));
            }
        }
        idps.push(IdpMetadata {
            entity_id,
            signing_certificates,
            sso_redirect,
            slo_redirect,
            valid_until,
            cache_duration,
        });
    }
    if idps.is_empty() {
        return Err(MetadataError::NoIdp);
    }
    Ok(idps)
}

fn is_endpoint(url: &str, allow_http: bool) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.host_str().is_some() && (u.scheme() == "https" || (allow_http && u.scheme() == "http"))
    })
}

/// An `xs:dateTime` as SAML writes it (UTC, `Z` or an offset).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An `xs:duration` of days, hours, minutes and seconds (`P1D`, `PT6H`, `PT30M`, `PT1.5S`);
/// years and months, having no fixed length, are not read.
fn parse_duration(text: &str) -> Option<Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, time),
        None => (rest, ""),
    };
    let mut seconds = 0f64;
    let mut take = |mut part: &str, units: &[(char, f64)]| -> Option<()> {
        for &(unit, scale) in units {
            if let Some((number, after)) = part.split_once(unit) {
                seconds += number.parse::<f64>().ok()? * scale;
                part = after;
            }
        }
        part.is_empty().then_some(())
    };
    take(days, &[('D', 86_400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// What a service provider tells its IdPs about itself.
#[derive(Debug)]
pub(crate) struct SpDescription<'a> {
    pub(crate) entity_id: &'a str,
    pub(crate) acs_url: &'a str,
    pub(crate) slo_url: &'a str,
    /// The SP certificate (DER), when it signs requests and decrypts assertions.
    pub(crate) certificate: Option<&'a [u8]>,
    pub(crate) want_assertions_signed: bool,
}

/// The SP's metadata document.
pub(crate) fn sp_metadata(sp: &SpDescription<'_>) -> String {
    let mut keys = String::new();
    if let Some(der) = sp.certificate {
        let cert = STANDARD.encode(der);
        for usage in ["signing", "encryption"] {
            keys.push_str(&format!(
                "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}\
                 </ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            ));
            if usage == "encryption" {
                for algorithm in [
                    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
                    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
                    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
                    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
                    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
                ] {
                    keys.push_str(&format!("<md:EncryptionMethod Algorithm=\"{algorithm}\"/>"));
                }
            }
            keys.push_str("</md:KeyDescriptor>");
        }
    }
    let slo = escape(sp.slo_url);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <md:EntityDescriptor xmlns:md=\"{METADATA}\" xmlns:ds=\"{DSIG}\" entityID=\"{entity}\">\
         <md:SPSSODescriptor AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"{want}\" \
         protocolSupportEnumeration=\"{PROTOCOL}\">{keys}\
         <md:SingleLogoutService Binding=\"{REDIRECT_BINDING}\" Location=\"{slo}\"/>\
         <md:SingleLogoutService Binding=\"{POST_BINDING}\" Location=\"{slo}\"/>\
         <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>\
         <md:AssertionConsumerService Binding=\"{POST_BINDING}\" Location=\"{acs}\" index=\"0\" \
         isDefault=\"true\"/></md:SPSSODescriptor></md:EntityDescriptor>",
        entity = escape(sp.entity_id),
        signed = sp.certificate.is_some(),
        want = sp.want_assertions_signed,
        acs = escape(sp.acs_url),
    )
}

/// `text` safe inside an XML attribute value or element.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDP: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example/saml" cacheDuration="PT6H">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>AAEC</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
      AQID
      BAU=
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/slo"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;

    #[test]
    fn an_idp_is_read_with_its_signing_keys_only() {
        let idps = parse_idp_metadata(IDP, false, Utc::now()).unwrap();
        assert_eq!(idps.len(), 1);
        let idp = &idps[0];
        assert_eq!(idp.entity_id, "https://idp.example/saml");
        assert_eq!(idp.signing_certificates, vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(idp.sso_redirect, "https://idp.example/sso");
        assert_eq!(idp.slo_redirect.as_deref(), Some("https://idp.example/slo"));
        assert_eq!(idp.cache_duration, Some(Duration::from_secs(6 * 3600)));
    }

    #[test]
    fn metadata_without_a_signing_key_is_an_error_never_unsigned_acceptance() {
        let unsigned = IDP.replace(
            "<md:KeyDescriptor><ds:KeyInfo>",
            "<md:KeyDescriptor use=\"encryption\"><ds:KeyInfo>",
        );
        assert_eq!(
            parse_idp_metadata(&unsigned, false, Utc::now()),
            Err(MetadataError::NoSigningKey(
                "https://idp.example/saml".into()
            ))
        );
    }

    #[test]
    fn plain_http_endpoints_and_expired_metadata_are_refused() {
        let http = IDP.replace("https://idp.example/sso", "http://idp.example/sso");
        assert!(matches!(
            parse_idp_metadata(&http, false, Utc::now()),
            Err(MetadataError::BadEndpoint(_))
        ));
        assert!(parse_idp_metadata(&http, true, Utc::now()).is_ok());
        let expired = IDP.replace(
            "cacheDuration=\"PT6H\"",
            "validUntil=\"2001-01-01T00:00:00Z\"",
        );
        assert!(matches!(
            parse_idp_metadata(&expired, false, Utc::now()),
            Err(MetadataError::Expired(_))
        ));
    }

    #[test]
    fn durations_read_as_saml_writes_them() {
        assert_eq!(parse_duration("P1D"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("PT30M"), Some(Duration::from_secs(1800)));
        assert_eq!(
            parse_duration("P1DT1H1M1S"),
            Some(Duration::from_secs(90_061))
        );
        assert_eq!(parse_duration("P1Y"), None);
        assert_eq!(parse_duration("junk"), None);
    }
}
