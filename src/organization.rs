//! Organisations: customers that bring their own identity provider, added while the
//! application runs. [`Organization`] holds its verified e-mail domains and its
//! [`Connection`]s; accounts created through a connection belong to its organisation
//! ([`User::organization_id`](crate::User::organization_id)).
//!
//! Stage: records shared by every stage; uses only `crate::user`'s time and nothing else of
//! the crate.
//!
//! Isolation is by construction: a connection creates, links and signs in accounts of its own
//! organisation only, an e-mail address outside the organisation's domains is never verified
//! for it, and each domain and each connection (an issuer, pinned to a tenant) belongs to one
//! organisation only, which the store enforces.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A customer organisation. Build one with [`Organization::new`]; stores give it its version
/// and times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Stable identifier, a UUID v7.
    pub id: Uuid,
    /// Its name, for people.
    pub name: String,
    /// Its verified e-mail domains, lower case: addresses in them are the organisation's, and
    /// each domain belongs to one organisation.
    pub domains: Vec<String>,
    /// The identity providers its people sign in with.
    pub connections: Vec<Connection>,
    /// Incremented by every write.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Organization {
    /// A new organisation called `name`, with no domains or connections yet.
    pub fn new(name: impl Into<String>) -> Self {
        let now = crate::user::now();
        Self {
            id: Uuid::now_v7(),
            name: name.into(),
            domains: Vec::new(),
            connections: Vec::new(),
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// Adds verified e-mail domains (`partner.example`; lower-cased when stored).
    #[must_use]
    pub fn domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.domains.extend(domains.into_iter().map(Into::into));
        self
    }

    /// Adds a connection.
    #[must_use]
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connections.push(connection);
        self
    }

    /// The connection with this id.
    pub fn find_connection(&self, id: Uuid) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    /// Whether `domain` (normalised, lower case) is one of its verified domains.
    pub fn owns_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    /// Checks what a store cannot: a name, domains that are domains, connections with an
    /// `https` issuer URL (or `http` on a loopback host, for tests), an audience, and a tenant
    /// pin with a claim and a value. Domains are normalised (lower case, no trailing dot).
    ///
    /// # Errors
    ///
    /// The first field that is wrong, and why.
    pub fn validate(mut self) -> Result<Self, InvalidOrganization> {
        let invalid = |field: String, reason: &'static str| InvalidOrganization { field, reason };
        if self.name.trim().is_empty() {
            return Err(invalid("name".into(), "must not be empty"));
        }
        let mut domains = Vec::with_capacity(self.domains.len());
        for (i, domain) in self.domains.iter().enumerate() {
            let normal = crate::provision::policy::normalize_domain(domain.trim())
                .ok_or_else(|| invalid(format!("domains[{i}]"), "not a domain"))?;
            if !domains.contains(&normal) {
                domains.push(normal);
            }
        }
        self.domains = domains;
        for (i, connection) in self.connections.iter().enumerate() {
            let field = |name: &str| format!("connections[{i}].{name}");
            match connection.protocol {
                Protocol::Oidc => {
                    if !is_https_or_loopback(&connection.issuer) {
                        return Err(invalid(field("issuer"), "must be an https URL"));
                    }
                    if connection.audiences.iter().all(|a| a.trim().is_empty()) {
                        return Err(invalid(field("audiences"), "name at least one audience"));
                    }
                    for (name, set) in [
                        ("saml_metadata", connection.saml_metadata.is_some()),
                        ("saml_metadata_url", connection.saml_metadata_url.is_some()),
                        ("subject_attribute", connection.subject_attribute.is_some()),
                    ] {
                        if set {
                            return Err(invalid(field(name), "only for a SAML connection"));
                        }
                    }
                }
                Protocol::Saml => validate_saml(connection)
                    .map_err(|(name, reason)| invalid(field(name), reason))?,
            }
            if let Some(pin) = &connection.tenant
                && (pin.claim.trim().is_empty() || pin.value.trim().is_empty())
            {
                return Err(invalid(field("tenant"), "needs a claim and a value"));
            }
            for (target, path) in &connection.claims {
                let known = CLAIM_TARGETS.contains(&target.as_str())
                    || target
                        .strip_prefix("attributes.")
                        .is_some_and(|name| !name.is_empty());
                if !known {
                    return Err(invalid(
                        field(&format!("claims.{target}")),
                        "not a field the mapping fills (`email` comes from `email` only)",
                    ));
                }
                if path.trim().is_empty() {
                    return Err(invalid(field(&format!("claims.{target}")), "name a claim"));
                }
            }
            if connection.client_secret.is_some()
                && connection
                    .client_id
                    .as_deref()
                    .is_none_or(|id| id.trim().is_empty())
            {
                return Err(invalid(
                    field("client_id"),
                    "a client secret needs a client id",
                ));
            }
            if self.connections[..i].iter().any(|c| c.id == connection.id) {
                return Err(invalid(field("id"), "another connection has this id"));
            }
        }
        Ok(self)
    }

    /// This organisation as first stored: version 1, created now.
    pub(crate) fn first_version(self) -> Self {
        let now = crate::user::now();
        Self {
            version: 1,
            created_at: now,
            updated_at: now,
            ..self.normalized()
        }
    }

    /// This organisation as the version after `current`; `None` when `current` moved on from
    /// `expected_version`.
    pub(crate) fn next_version_of(
        self,
        current: &Self,
        expected_version: Option<i64>,
    ) -> Option<Self> {
        if expected_version.is_some_and(|v| v != current.version) {
            return None;
        }
        Some(Self {
            version: current.version + 1,
            created_at: current.created_at,
            updated_at: crate::user::now(),
            ..self.normalized()
        })
    }

    /// The domains as stores keep them: trimmed, lower case, each once.
    fn normalized(mut self) -> Self {
        let mut domains: Vec<String> = Vec::with_capacity(self.domains.len());
        for domain in &self.domains {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        self.domains = domains;
        self
    }
}

/// Whether `url` is an `https` URL, or `http` on a loopback host (a test IdP).
fn is_https_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    url.scheme() == "https" || url.scheme() == "http" && crate::token::fetch::is_loopback(&url)
}

/// What a SAML connection needs: an entity id, its metadata (which must describe that entity
/// with a usable signing key, when the `saml` feature can read it) or a URL for it, and none of
/// the OpenID Connect settings.
fn validate_saml(connection: &Connection) -> Result<(), (&'static str, &'static str)> {
    let entity_id = connection.issuer.as_str();
    if entity_id.trim().is_empty()
        || entity_id.len() > 1024
        || entity_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(("issuer", "must be the IdP's entity id"));
    }
    if connection.audiences.iter().any(|a| !a.trim().is_empty()) {
        return Err((
            "audiences",
            "a SAML IdP's assertions are addressed to the service provider's entity id",
        ));
    }
    if connection.tenant.is_some() {
        return Err(("tenant", "only for an OpenID Connect connection"));
    }
    if connection.client_id.is_some() || connection.client_secret.is_some() {
        return Err(("client_id", "only for an OpenID Connect connection"));
    }
    if connection
        .subject_attribute
        .as_deref()
        .is_some_and(|name| name.trim().is_empty())
    {
        return Err(("subject_attribute", "name an attribute"));
    }
    match (&connection.saml_metadata, &connection.saml_metadata_url) {
        (None, None) => Err(("saml_metadata", "give the IdP's metadata or its URL")),
        (Some(_), Some(_)) => Err((
            "saml_metadata_url",
            "give the IdP's metadata or its URL, not both",
        )),
        (None, Some(url)) if !is_https_or_loopback(url) => {
            Err(("saml_metadata_url", "must be an https URL"))
        }
        (None, Some(_)) => Ok(()),
        #[cfg(feature = "saml")]
        (Some(xml), None) => crate::login::saml::verify::check_idp_metadata(xml, entity_id)
            .map_err(|reason| ("saml_metadata", reason)),
        #[cfg(not(feature = "saml"))]
        (Some(_), None) => Ok(()),
    }
}

/// Why an [`Organization`] cannot be stored: the field (`domains[2]`,
/// `connections[0].issuer`) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidOrganization {
    /// The field, as a path into the organisation's JSON.
    pub field: String,
    /// Why it is wrong.
    pub reason: &'static str,
}

/// An identity provider whose sign-ins are an organisation's people: an OpenID Connect issuer
/// ([`Connection::oidc`]) or a SAML 2.0 IdP ([`Connection::saml`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// Stable identifier, a UUID v7.
    pub id: Uuid,
    /// How the IdP signs people in.
    #[serde(default)]
    pub protocol: Protocol,
    /// OpenID Connect: the issuer URL, compared exactly with tokens' `iss`, its keys discovered
    /// from it on first use. SAML: the IdP's entity id, compared exactly with assertions'
    /// `Issuer`.
    pub issuer: String,
    /// OpenID Connect: the audiences its tokens may carry (the application's client id at that
    /// IdP). SAML: unused (assertions must name the service provider's entity id).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// SAML: the IdP's metadata document, whose signing certificates verify its assertions
    /// (never a key from the message itself). One of this and
    /// [`saml_metadata_url`](Self::saml_metadata_url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml_metadata: Option<String>,
    /// SAML: where the IdP publishes its metadata (`https`), fetched on first use and again
    /// when its `cacheDuration` runs out; a document naming another entity is never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml_metadata_url: Option<String>,
    /// SAML: the attribute (by `Name`) that identifies the person instead of the persistent
    /// NameID, such as Entra ID's `objectidentifier`. It must be immutable and single-valued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_attribute: Option<String>,
    /// For an issuer shared by many tenants: the claim and the value that pin it to this
    /// organisation's tenant (Entra ID `tid`, Google `hd`). Tokens of other tenants are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantPin>,
    /// Roles every account it creates gets.
    #[serde(default)]
    pub default_roles: Vec<String>,
    /// `(group, role)`: people in the group get the role.
    #[serde(default)]
    pub group_roles: Vec<(String, String)>,
    /// Whether its first sign-ins create accounts (off: only accounts that exist sign in).
    #[serde(default = "yes")]
    pub create_accounts: bool,
    /// Whether accounts it creates wait for approval.
    #[serde(default)]
    pub require_approval: bool,
    /// Where its tokens carry what the layer's mapping reads elsewhere: a profile field
    /// (`user_name`, `display_name`, `given_name`, `family_name`, `picture`, `locale`), more
    /// groups (`groups`), or an attribute (`attributes.<name>`), each from a claim path. The
    /// e-mail address is always the `email` claim, vouched for by `email_verified`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims: std::collections::BTreeMap<String, String>,
    /// The application's client at the issuer, for browser sign-in (home-realm discovery
    /// sends the organisation's people there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// That client's secret; `None` for a public client (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field(
                "saml_metadata",
                &self.saml_metadata.as_ref().map(String::len),
            )
            .field("saml_metadata_url", &self.saml_metadata_url)
            .field("subject_attribute", &self.subject_attribute)
            .field("tenant", &self.tenant)
            .field("default_roles", &self.default_roles)
            .field("group_roles", &self.group_roles)
            .field("create_accounts", &self.create_accounts)
            .field("require_approval", &self.require_approval)
            .field("claims", &self.claims)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The profile fields a connection's [`claims`](Connection::claims) may fill, besides
/// `attributes.<name>`.
const CLAIM_TARGETS: [&str; 7] = [
    "user_name",
    "display_name",
    "given_name",
    "family_name",
    "picture",
    "locale",
    "groups",
];

fn yes() -> bool {
    true
}

/// How a [`Connection`]'s identity provider signs people in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// OpenID Connect: bearer tokens and, with a browser client, the authorization code flow.
    #[default]
    Oidc,
    /// SAML 2.0 Web Browser SSO, at the layer's service provider (feature `saml`).
    Saml,
}

/// A claim whose value a token must carry: a tenant of a multi-tenant issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPin {
    /// The claim (`tid`).
    pub claim: String,
    /// Its value.
    pub value: String,
}

impl Connection {
    /// An OpenID Connect issuer, its tokens addressed to `audiences`.
    pub fn oidc<I, A>(issuer: impl Into<String>, audiences: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        Self {
            id: Uuid::now_v7(),
            protocol: Protocol::Oidc,
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            saml_metadata: None,
            saml_metadata_url: None,
            subject_attribute: None,
            tenant: None,
            default_roles: Vec::new(),
            group_roles: Vec::new(),
            create_accounts: true,
            require_approval: false,
            claims: std::collections::BTreeMap::new(),
            client_id: None,
            client_secret: None,
        }
    }

    /// A SAML 2.0 identity provider, `entity_id`, trusted by the signing certificates of its
    /// metadata: give it with [`saml_metadata`](Self::saml_metadata) or
    /// [`saml_metadata_url`](Self::saml_metadata_url). Its people sign in with a browser at the
    /// layer's service provider (`login::SamlLogin`, feature `saml`); the
    /// e-mail addresses it sends count as verified in the organisation's domains only.
    pub fn saml(entity_id: impl Into<String>) -> Self {
        Self {
            protocol: Protocol::Saml,
            ..Self::oidc(entity_id, std::iter::empty::<String>())
        }
    }

    /// SAML: the IdP's metadata document.
    #[must_use]
    pub fn saml_metadata(mut self, xml: impl Into<String>) -> Self {
        self.saml_metadata = Some(xml.into());
        self
    }

    /// SAML: the URL of the IdP's metadata, fetched on first use and kept fresh.
    #[must_use]
    pub fn saml_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.saml_metadata_url = Some(url.into());
        self
    }

    /// SAML: the attribute that identifies the person instead of the persistent NameID.
    #[must_use]
    pub fn subject_attribute(mut self, name: impl Into<String>) -> Self {
        self.subject_attribute = Some(name.into());
        self
    }

    /// Whether people sign in through it with a browser: a SAML IdP, or an OpenID Connect
    /// issuer with a [`browser_client`](Self::browser_client).
    pub fn signs_in_browsers(&self) -> bool {
        self.protocol == Protocol::Saml || self.client_id.is_some()
    }

    /// Lets the organisation's people sign in with a browser through this connection, as
    /// the application's client `client_id` at the issuer (`secret`: `None` for a public
    /// client, PKCE only). Its audiences should include the client id.
    #[must_use]
    pub fn browser_client(mut self, client_id: impl Into<String>, secret: Option<String>) -> Self {
        self.client_id = Some(client_id.into());
        self.client_secret = secret;
        self
    }

    /// Pins the issuer to one tenant: tokens must carry `claim` = `value`.
    #[must_use]
    pub fn tenant(mut self, claim: impl Into<String>, value: impl Into<String>) -> Self {
        self.tenant = Some(TenantPin {
            claim: claim.into(),
            value: value.into(),
        });
        self
    }

    /// Roles every account it creates gets.
    #[must_use]
    pub fn default_roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.default_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// People in `group` get `role`.
    #[must_use]
    pub fn group_role(mut self, group: impl Into<String>, role: impl Into<String>) -> Self {
        self.group_roles.push((group.into(), role.into()));
        self
    }

    /// Reads `target` (`display_name`, `groups`, `attributes.department`, …: see
    /// [`claims`](Self::claims)) from the claim at `path`.
    #[must_use]
    pub fn claim(mut self, target: impl Into<String>, path: impl Into<String>) -> Self {
        self.claims.insert(target.into(), path.into());
        self
    }

    /// Whether its first sign-ins create accounts.
    #[must_use]
    pub fn create_accounts(mut self, create: bool) -> Self {
        self.create_accounts = create;
        self
    }

    /// Whether accounts it creates wait for approval.
    #[must_use]
    pub fn require_approval(mut self, hold: bool) -> Self {
        self.require_approval = hold;
        self
    }

    /// The value a tenant pin is stored under for uniqueness: a connection is one issuer and
    /// one tenant of it.
    pub(crate) fn tenant_key(&self) -> &str {
        self.tenant.as_ref().map_or("", |pin| pin.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(organization: Organization) -> String {
        organization.validate().unwrap_err().field
    }

    #[test]
    fn validation_names_the_field_that_is_wrong() {
        let good = Connection::oidc("https://idp.partner.example", ["app"]);
        assert_eq!(field_of(Organization::new(" ")), "name");
        assert_eq!(
            field_of(Organization::new("P").domains(["partner.example", "not a domain"])),
            "domains[1]"
        );
        for (connection, field) in [
            (Connection::oidc("idp.partner.example", ["app"]), "issuer"),
            (
                Connection::oidc("http://idp.partner.example", ["app"]),
                "issuer",
            ),
            (
                Connection::oidc("https://idp.partner.example", [" "]),
                "audiences",
            ),
            (good.clone().tenant("tid", ""), "tenant"),
        ] {
            let organization = Organization::new("P")
                .connection(good.clone())
                .connection(connection);
            assert_eq!(field_of(organization), format!("connections[1].{field}"));
        }
        let twice = Organization::new("P")
            .connection(good.clone())
            .connection(good.clone());
        assert_eq!(field_of(twice), "connections[1].id");
        let valid = Organization::new("P")
            .domains(["Partner.Example.", "partner.example"])
            .connection(good)
            .connection(Connection::oidc("http://127.0.0.1:8080", ["app"]))
            .validate()
            .unwrap();
        assert_eq!(valid.domains, ["partner.example"]);
    }

    #[test]
    fn a_saml_connection_needs_metadata_and_no_oidc_settings() {
        let saml = || Connection::saml("https://idp.partner.example/saml");
        let by_url = || saml().saml_metadata_url("https://idp.partner.example/metadata");
        let cases = [
            (saml(), "saml_metadata"),
            (by_url().saml_metadata("<x/>"), "saml_metadata_url"),
            (
                saml().saml_metadata_url("http://idp.partner.example/metadata"),
                "saml_metadata_url",
            ),
            (
                Connection::saml(" ").saml_metadata_url("https://a.example/m"),
                "issuer",
            ),
            (by_url().tenant("tid", "t"), "tenant"),
            (by_url().browser_client("client", None), "client_id"),
            (by_url().subject_attribute(" "), "subject_attribute"),
            (
                Connection {
                    audiences: vec!["app".into()],
                    ..by_url()
                },
                "audiences",
            ),
            (
                Connection::oidc("https://idp.partner.example", ["app"])
                    .saml_metadata_url("https://idp.partner.example/metadata"),
                "saml_metadata_url",
            ),
            #[cfg(feature = "saml")]
            (saml().saml_metadata("<not-metadata/>"), "saml_metadata"),
        ];
        for (connection, field) in cases {
            let organization = Organization::new("P").connection(connection);
            assert_eq!(field_of(organization), format!("connections[0].{field}"));
        }
        assert!(
            Organization::new("P")
                .connection(by_url())
                .validate()
                .is_ok()
        );
    }
}
