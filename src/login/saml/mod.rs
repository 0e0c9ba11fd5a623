//! SAML 2.0 sign-in (feature `saml`): a service provider on the browser sign-in's flows and
//! sessions.
//!
//! Stage: a sign-in source (browsers). `metadata` reads IdP metadata and writes the SP's;
//! `idps` keeps the trusted IdPs (and fetches metadata URLs); `request` makes AuthnRequests
//! and LogoutResponses; `verify` turns a posted response into the one assertion its IdP
//! signed; `attributes` turns that into a [`SignIn`](crate::SignIn); `logout` verifies an
//! IdP's LogoutRequest; `routes` are the HTTP endpoints. Nothing here knows the provisioning
//! pipeline.
//!
//! ```text
//! GET  /saml/login ─► flow kept (its key is the AuthnRequest ID) ─► 303 to the IdP
//! POST /saml/acs ───► verified ─► assertion id spent ─► parked under a one-use key
//!                    ─► 303 to GET /saml/acs?finish=KEY (same site: the flow's cookie is sent)
//! GET  /saml/acs ───► parked taken ─► flow taken, bound to this browser ─► session ─► 303
//! GET|POST /saml/slo ► LogoutRequest verified, once ─► sessions ended ─► LogoutResponse
//! ```

mod attributes;
#[cfg(feature = "organizations")]
pub(crate) mod connections;
pub(crate) mod dom;
pub(crate) mod idps;
mod logout;
pub(crate) mod metadata;
mod request;
mod routes;
pub(crate) mod verify;

#[cfg(all(test, feature = "test-util"))]
mod tests;

use std::path::PathBuf;
#[cfg(feature = "organizations")]
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::RsaKeyPair;
use chrono::{TimeDelta, Utc};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[cfg(feature = "__fuzzing")]
pub(crate) use self::attributes::sign_in as sign_in_of;
use self::idps::Idps;
use self::metadata::parse_idp_metadata;
pub(crate) use self::routes::routes;
use self::verify::TrustedIdp;
use crate::IssuerPolicy;
use crate::error::ConfigError;
use crate::token::fetch::{Fetcher, UrlPolicy};

/// The largest IdP metadata document fetched.
pub(crate) const MAX_METADATA_BYTES: usize = 4 * 1024 * 1024;

/// SAML 2.0 sign-in settings (feature `saml`): the identity providers people sign in at, by
/// their metadata, and how their assertions are read. Given to
/// [`ProvisioningLayerBuilder::saml`](crate::ProvisioningLayerBuilder::saml), beside
/// [`browser_login`](crate::ProvisioningLayerBuilder::browser_login), whose public URL,
/// flows and sessions it shares.
///
/// Defaults: the SP's entity id is the public URL + `/saml/metadata`; identity is the
/// persistent NameID; a signature on the Response or on the Assertion suffices when it covers
/// the assertion; e-mail addresses are not taken as verified; unsolicited (IdP-initiated)
/// responses and SHA-1 are refused; clocks may differ by 60 seconds.
///
/// ```
/// use tower_jit_provisioning::login::SamlLogin;
///
/// let saml = SamlLogin::new()
///     .idp_metadata_file("/etc/app/entra-metadata.xml")
///     .subject_attribute("http://schemas.microsoft.com/identity/claims/objectidentifier")
///     .trust_email(true);
/// # drop(saml);
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct SamlLogin {
    metadata: Vec<MetadataSource>,
    entity_id: Option<String>,
    sp_key: Option<(String, String)>,
    subject_attribute: Option<String>,
    trust_email: bool,
    require_signed_assertion: bool,
    allow_idp_initiated: bool,
    allow_sha1: bool,
    allow_http: bool,
    leeway: Option<Duration>,
    policy: Option<IssuerPolicy>,
}

/// Everything but the SP key, which never reaches a log.
impl std::fmt::Debug for SamlLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlLogin")
            .field("metadata", &self.metadata)
            .field("entity_id", &self.entity_id)
            .field("sp_key", &self.sp_key.as_ref().map(|_| "<redacted>"))
            .field("subject_attribute", &self.subject_attribute)
            .field("trust_email", &self.trust_email)
            .field("require_signed_assertion", &self.require_signed_assertion)
            .field("allow_idp_initiated", &self.allow_idp_initiated)
            .field("allow_sha1", &self.allow_sha1)
            .field("allow_http", &self.allow_http)
            .field("leeway", &self.leeway)
            .field("policy", &self.policy)
            .finish()
    }
}

#[derive(Clone, Debug)]
enum MetadataSource {
    File(PathBuf),
    Xml(String),
    Url {
        entity_id: String,
        url: String,
        /// The document as fetched when the settings were made, if they fetched it.
        fetched: Option<String>,
    },
}

impl SamlLogin {
    /// No identity provider yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the identity providers described by the metadata file at `path` (read when the
    /// layer is built): their entity ids, signing certificates and endpoints. Keys are never
    /// taken from the messages themselves.
    pub fn idp_metadata_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.metadata.push(MetadataSource::File(path.into()));
        self
    }

    /// Trusts the identity providers described by this metadata document (as fetched from
    /// the IdP's metadata URL, for example).
    pub fn idp_metadata(mut self, xml: impl Into<String>) -> Self {
        self.metadata.push(MetadataSource::Xml(xml.into()));
        self
    }

    /// Trusts the identity provider `entity_id` by the metadata at `url` (https; plain http
    /// only on loopback with [`allow_http_endpoints`](Self::allow_http_endpoints)), fetched on
    /// first use and again when its `cacheDuration` runs out (at least daily, at most every
    /// minute, hourly without one) or its `validUntil` passes. While a fetch fails, the last
    /// good metadata is kept until its `validUntil`. A document describing another entity is
    /// never used for this one.
    pub fn idp_metadata_url(
        mut self,
        entity_id: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        self.metadata.push(MetadataSource::Url {
            entity_id: entity_id.into(),
            url: url.into(),
            fetched: None,
        });
        self
    }

    /// Fetches the metadata at `url` now, trusts every identity provider it describes, and
    /// keeps each fresh from `url` as [`idp_metadata_url`](Self::idp_metadata_url) does: for a
    /// metadata URL whose entity ids are not known beforehand. Call
    /// [`allow_http_endpoints`](Self::allow_http_endpoints) first for plain http on loopback.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Saml`] when the URL is not allowed, cannot be fetched, or holds no usable
    /// IdP metadata.
    pub async fn idp_metadata_from_url(
        mut self,
        url: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let url = url.into();
        let bad = |reason: String| ConfigError::Saml(reason);
        let parsed = checked_url(&url, self.allow_http)?;
        let client = crate::token::fetch::client(Duration::from_secs(10))
            .map_err(|err| ConfigError::HttpClient(Box::new(err)))?;
        let fetcher = Fetcher::new(
            client,
            UrlPolicy {
                allow_http_loopback: self.allow_http,
            },
            MAX_METADATA_BYTES,
        );
        let xml = idps::fetch_text(&fetcher, &parsed)
            .await
            .map_err(|reason| {
                bad(format!(
                    "the IdP metadata at {url} cannot be fetched: {reason}"
                ))
            })?;
        for metadata in
            parse_idp_metadata(&xml, self.allow_http, Utc::now()).map_err(|e| bad(e.to_string()))?
        {
            self.metadata.push(MetadataSource::Url {
                entity_id: metadata.entity_id,
                url: url.clone(),
                fetched: Some(xml.clone()),
            });
        }
        Ok(self)
    }

    /// The SP's entity id, instead of the public URL + `/saml/metadata`.
    pub fn entity_id(mut self, entity_id: impl Into<String>) -> Self {
        self.entity_id = Some(entity_id.into());
        self
    }

    /// The SP's RSA key and certificate, PEM: AuthnRequests and LogoutResponses are signed
    /// with it, encrypted assertions (RSA-OAEP key transport, AES-GCM or AES-CBC content) are
    /// decrypted with it, and the SP metadata lists the certificate for both. Without it
    /// requests go unsigned and encrypted assertions are refused.
    pub fn sp_key_pem(
        mut self,
        key_pem: impl Into<String>,
        certificate_pem: impl Into<String>,
    ) -> Self {
        self.sp_key = Some((key_pem.into(), certificate_pem.into()));
        self
    }

    /// The person's identity is this attribute's value (by its `Name`, e.g. Entra ID's
    /// `http://schemas.microsoft.com/identity/claims/objectidentifier`), not the NameID. The
    /// attribute must be immutable and have exactly one value.
    pub fn subject_attribute(mut self, name: impl Into<String>) -> Self {
        self.subject_attribute = Some(name.into());
        self
    }

    /// Whether the e-mail address these IdPs send counts as verified (default: no).
    pub fn trust_email(mut self, trust: bool) -> Self {
        self.trust_email = trust;
        self
    }

    /// Whether the assertion itself must be signed; by default a signature on the Response
    /// covering it suffices.
    pub fn require_signed_assertion(mut self, require: bool) -> Self {
        self.require_signed_assertion = require;
        self
    }

    /// Whether responses that answer no AuthnRequest of this SP (IdP-initiated sign-in) are
    /// accepted. Off by default: such a response cannot be bound to the browser it arrives in,
    /// so anyone holding one can sign a victim's browser into their account (login CSRF).
    pub fn allow_idp_initiated(mut self, allow: bool) -> Self {
        self.allow_idp_initiated = allow;
        self
    }

    /// Whether RSA-SHA1 signatures and SHA-1 digests are accepted (default: no).
    pub fn allow_sha1(mut self, allow: bool) -> Self {
        self.allow_sha1 = allow;
        self
    }

    /// Whether IdP endpoints may be plain http (tests on loopback).
    pub fn allow_http_endpoints(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// How far clocks may differ when times are checked (default 60 s, at most 5 minutes).
    pub fn clock_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }

    /// The provisioning rules for people from these IdPs (allowed domains, required groups,
    /// creation, approval, e-mail trust for linking).
    pub fn policy(mut self, policy: IssuerPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The policy for the builder to register under each IdP's entity id.
    pub(crate) fn issuer_policy(&self) -> IssuerPolicy {
        self.policy.clone().unwrap_or_default()
    }

    /// The settings checked and the metadata files and documents read, with the browser
    /// sign-in's public base URL and the HTTP client for metadata URLs. `runtime_idps`: IdPs
    /// come from organisations' connections too, so the settings may name none.
    pub(crate) fn validate(
        &self,
        base: &str,
        client: &reqwest::Client,
        runtime_idps: bool,
    ) -> Result<Saml, ConfigError> {
        let bad = |reason: String| ConfigError::Saml(reason);
        if self.metadata.is_empty() && !runtime_idps {
            return Err(bad(
                "no IdP metadata: add `idp_metadata_file`, `idp_metadata` or `idp_metadata_url` \
                 (or organisations, whose SAML connections bring their own)"
                    .into(),
            ));
        }
        let mut idps = Idps::new();
        let mut seen: Vec<String> = Vec::new();
        let mut first_use = |entity_id: &str| {
            if seen.iter().any(|e| e == entity_id) {
                return Err(bad(format!("the IdP {entity_id} is configured twice")));
            }
            seen.push(entity_id.to_owned());
            Ok(())
        };
        let policy = UrlPolicy {
            allow_http_loopback: self.allow_http,
        };
        for source in &self.metadata {
            let xml = match source {
                MetadataSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                    bad(format!(
                        "the IdP metadata file {} cannot be read: {e}",
                        path.display()
                    ))
                })?,
                MetadataSource::Xml(xml) => xml.clone(),
                MetadataSource::Url {
                    entity_id,
                    url,
                    fetched,
                } => {
                    let parsed = checked_url(url, self.allow_http)?;
                    first_use(entity_id)?;
                    let fetched = match fetched {
                        Some(xml) => parse_idp_metadata(xml, self.allow_http, Utc::now())
                            .map_err(|e| bad(e.to_string()))?
                            .into_iter()
                            .find(|m| m.entity_id == *entity_id)
                            .and_then(TrustedIdp::new),
                        None => None,
                    };
                    let fetcher = Fetcher::new(client.clone(), policy, MAX_METADATA_BYTES);
                    idps.add_remote(entity_id.clone(), parsed, fetcher, self.allow_http, fetched);
                    continue;
                }
            };
            for metadata in parse_idp_metadata(&xml, self.allow_http, Utc::now())
                .map_err(|e| bad(e.to_string()))?
            {
                first_use(&metadata.entity_id)?;
                let entity_id = metadata.entity_id.clone();
                idps.add_fixed(TrustedIdp::new(metadata).ok_or_else(|| {
                    bad(format!(
                        "the IdP metadata for {entity_id} has no certificate with a usable key"
                    ))
                })?);
            }
        }
        let (signing_key, certificate, decryptor) = match &self.sp_key {
            None => (None, None, None),
            Some((key_pem, cert_pem)) => {
                let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
                    Ok(PrivateKeyDer::Pkcs8(der)) => {
                        RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok()
                    }
                    Ok(PrivateKeyDer::Pkcs1(der)) => {
                        RsaKeyPair::from_der(der.secret_pkcs1_der()).ok()
                    }
                    _ => None,
                }
                .ok_or_else(|| bad("the SP key is not an RSA private key in PEM".into()))?;
                let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                    .map_err(|_| bad("the SP certificate is not a PEM certificate".into()))?;
                let mut keys = bergshamra::KeysManager::new();
                keys.add_key(
                    bergshamra::keys::loader::load_pem_auto(key_pem.as_bytes(), None)
                        .map_err(|_| bad("the SP key cannot decrypt assertions".into()))?,
                );
                let mut decryptor = bergshamra::EncContext::new(keys);
                // Ciphertext only from the message itself, never fetched from a reference.
                decryptor.disable_cipher_reference = true;
                (Some(key), Some(cert.to_vec()), Some(decryptor))
            }
        };
        let leeway = self.leeway.unwrap_or(Duration::from_secs(60));
        if leeway > Duration::from_secs(300) {
            return Err(bad("the clock leeway is at most 5 minutes".into()));
        }
        if self
            .subject_attribute
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            return Err(bad("the subject attribute name is empty".into()));
        }
        Ok(Saml {
            entity_id: self
                .entity_id
                .clone()
                .unwrap_or_else(|| format!("{base}/saml/metadata")),
            acs_url: format!("{base}/saml/acs"),
            slo_url: format!("{base}/saml/slo"),
            idps,
            signing_key,
            certificate,
            decryptor,
            subject_attribute: self.subject_attribute.clone(),
            trust_email: self.trust_email,
            require_signed_assertion: self.require_signed_assertion,
            allow_idp_initiated: self.allow_idp_initiated,
            allow_sha1: self.allow_sha1,
            leeway: TimeDelta::from_std(leeway).unwrap_or(TimeDelta::seconds(60)),
            #[cfg(feature = "organizations")]
            runtime: None,
        })
    }
}

/// `url` if metadata may be fetched from it: https, or plain http on loopback when allowed.
pub(crate) fn checked_url(url: &str, allow_http: bool) -> Result<url::Url, ConfigError> {
    url::Url::parse(url)
        .ok()
        .filter(|u| {
            UrlPolicy {
                allow_http_loopback: allow_http,
            }
            .check(u)
            .is_ok()
        })
        .ok_or_else(|| {
            ConfigError::Saml(format!(
                "the metadata URL {url} is not an https URL (plain http only on loopback, when \
                 allowed)"
            ))
        })
}

/// SAML sign-in as the layer runs it.
pub(crate) struct Saml {
    pub(crate) entity_id: String,
    pub(crate) acs_url: String,
    pub(crate) slo_url: String,
    pub(crate) idps: Idps,
    signing_key: Option<RsaKeyPair>,
    certificate: Option<Vec<u8>>,
    /// The SP key, for encrypted assertions.
    decryptor: Option<bergshamra::EncContext>,
    subject_attribute: Option<String>,
    trust_email: bool,
    require_signed_assertion: bool,
    allow_idp_initiated: bool,
    allow_sha1: bool,
    leeway: TimeDelta,
    /// Organisations' SAML connections, when organisations are on.
    #[cfg(feature = "organizations")]
    pub(crate) runtime: Option<Arc<dyn connections::RuntimeIdps>>,
}

impl Saml {
    /// The entity ids of the trusted IdPs, for the builder's policies.
    pub(crate) fn entity_ids(&self) -> impl Iterator<Item = &str> {
        self.idps.entity_ids()
    }
}

impl std::fmt::Debug for Saml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saml")
            .field("entity_id", &self.entity_id)
            .field("idps", &self.idps)
            .finish_non_exhaustive()
    }
}

impl<H> crate::ProvisioningLayer<H> {
    /// The entity ids of the SAML identity providers people sign in at (feature `saml`), in
    /// configuration order: for a sign-in page's links to `/saml/login?idp=…`. Empty without
    /// SAML sign-in.
    pub fn saml_idps(&self) -> Vec<&str> {
        self.shared()
            .login
            .as_ref()
            .and_then(|login| login.saml.as_ref())
            .map(|saml| saml.entity_ids().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::SamlLogin;

    #[test]
    fn the_sp_key_never_reaches_a_debug_print() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIsecretkeymaterial\n-----END PRIVATE KEY-----";
        let printed = format!("{:?}", SamlLogin::new().sp_key_pem(key, "cert"));
        assert!(!printed.contains("secretkeymaterial"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
