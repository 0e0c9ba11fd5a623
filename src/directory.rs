//! The organisations' connections while the layer runs: read from the store, replaced when a
//! store change event says they changed (on every server sharing a PostgreSQL database), each
//! connection an issuer whose keys are discovered on first use.
//!
//! Stage: sign-in sources configured at runtime. Uses `crate::organization` (what is
//! configured), `crate::store` (where), `crate::builder`'s `Issuer` (the same validation and
//! verification rules as a configured issuer), and answers `crate::token::verify`'s
//! [`RuntimeIssuers`] and `crate::provision`'s [`ConnectionRules`].
//!
//! A change is read on the first request after its event, before that request's token is
//! verified: a removed connection signs nobody in from then on, and tokens it verified are no
//! longer served from the token cache. A connection that did not change keeps its verifier and
//! the keys it fetched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::IssuerPolicy;
use crate::builder::issuer::Issuer;
use crate::error::{Error, ErrorChain};
#[cfg(feature = "saml")]
use crate::login::saml::{
    self,
    connections::{ConnectionIdp, RuntimeIdps},
    idps::IdpSource,
    verify::TrustedIdp,
};
use crate::organization::{Connection, Organization, Protocol};
use crate::provision::{ConnectionProvisioning, ConnectionRules, IssuerProvisioning};
use crate::sign_in::ConnectionRef;
use crate::store::{DynStore, StoreEvent, Subscription};
use crate::token::fetch::Fetcher;
#[cfg(feature = "saml")]
use crate::token::fetch::UrlPolicy;
#[cfg(feature = "login")]
use crate::token::verify::DomainRoute;
use crate::token::verify::{IssuerVerifier, RuntimeIssuer, RuntimeIssuers};

/// How a layer signs in the people of the [organisations](crate::organization) in its store:
/// give it to [`ProvisioningLayerBuilder::organizations`](crate::ProvisioningLayerBuilder::organizations).
#[derive(Clone, Debug, Default)]
pub struct OrganizationDirectory {
    allow_http_loopback: bool,
}

impl OrganizationDirectory {
    /// Organisations' connections with `https` issuers only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accepts connections whose issuer is plain `http` on a loopback address (a test
    /// identity provider), as [`Issuer::allow_http_loopback`] does. Off by default.
    #[must_use]
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }
}

/// One connection, ready to verify and to provision.
struct Entry {
    organization: Uuid,
    connection: Connection,
    issuer: Arc<RuntimeIssuer>,
}

/// One SAML connection, ready for the service provider.
#[cfg(feature = "saml")]
struct SamlEntry {
    organization: Uuid,
    connection: Connection,
    idp: Arc<ConnectionIdp>,
}

/// The connections as last read.
#[derive(Default)]
struct Snapshot {
    /// SAML connections by their IdP's entity id.
    #[cfg(feature = "saml")]
    saml: HashMap<String, SamlEntry>,
    /// SAML connections' entity ids by connection id.
    #[cfg(feature = "saml")]
    saml_ids: HashMap<Uuid, String>,
    /// By issuer URL: every connection of that issuer (several tenants of a shared issuer).
    by_issuer: HashMap<String, Vec<Entry>>,
    rules: HashMap<Uuid, Arc<ConnectionProvisioning>>,
    /// Every organisation's domain, and the first of its connections with a browser client.
    #[cfg_attr(not(feature = "login"), allow(dead_code))]
    by_domain: HashMap<String, Option<Uuid>>,
    /// The connections with a browser client.
    #[cfg_attr(not(feature = "login"), allow(dead_code))]
    browser: HashMap<Uuid, Arc<RuntimeIssuer>>,
}

/// The organisations' connections of one layer.
pub(crate) struct Directory {
    store: Arc<dyn DynStore>,
    client: reqwest::Client,
    max_document_bytes: usize,
    settings: OrganizationDirectory,
    snapshot: ArcSwap<Snapshot>,
    /// Set by every organisation change event (and at start): read them again.
    stale: Arc<AtomicBool>,
    /// One reading at a time.
    reading: tokio::sync::Mutex<()>,
    _subscription: Subscription,
}

impl Directory {
    pub(crate) fn new(
        store: Arc<dyn DynStore>,
        client: reqwest::Client,
        max_document_bytes: usize,
        settings: OrganizationDirectory,
    ) -> Self {
        let stale = Arc::new(AtomicBool::new(true));
        let subscription = {
            let stale = Arc::clone(&stale);
            store.changes().subscribe(move |event| {
                if matches!(event, StoreEvent::OrganizationsChanged | StoreEvent::Reset) {
                    stale.store(true, Ordering::Release);
                }
            })
        };
        Self {
            store,
            client,
            max_document_bytes,
            settings,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            stale,
            reading: tokio::sync::Mutex::new(()),
            _subscription: subscription,
        }
    }

    /// Reads the organisations again if they changed since they were read.
    async fn current(&self) -> Result<Arc<Snapshot>, Error> {
        if !self.stale.load(Ordering::Acquire) {
            return Ok(self.snapshot.load_full());
        }
        let _turn = self.reading.lock().await;
        // Cleared before reading: an event arriving during the read marks it stale again.
        if self.stale.swap(false, Ordering::AcqRel) {
            match self.store.list_organizations().await {
                Ok(organizations) => {
                    let next = self.build(&organizations);
                    let previous = self.snapshot.swap(Arc::new(next));
                    self.retire_replaced(&previous);
                }
                Err(error) => {
                    self.stale.store(true, Ordering::Release);
                    tracing::warn!(
                        target: "tower_jit_provisioning::organizations",
                        error = %ErrorChain(&error),
                        "the organisations could not be read"
                    );
                    return Err(Error::StoreUnavailable {
                        retry_after: std::time::Duration::from_secs(5),
                    });
                }
            }
        }
        Ok(self.snapshot.load_full())
    }

    /// The connections of `organizations`, keeping the verifier of each that did not change.
    fn build(&self, organizations: &[Organization]) -> Snapshot {
        let previous = self.snapshot.load();
        let mut next = Snapshot::default();
        for organization in organizations {
            for domain in &organization.domains {
                next.by_domain.insert(domain.clone(), None);
            }
            for connection in &organization.connections {
                if connection.protocol == Protocol::Saml {
                    self.add_saml(&mut next, &previous, organization, connection);
                    continue;
                }
                let kept = previous
                    .by_issuer
                    .get(&connection.issuer)
                    .and_then(|entries| {
                        entries.iter().find(|e| {
                            e.organization == organization.id && e.connection == *connection
                        })
                    })
                    .map(|entry| Arc::clone(&entry.issuer));
                match self.connection_rules(organization, connection, kept) {
                    Ok((rules, issuer)) => {
                        next.rules.insert(connection.id, Arc::new(rules));
                        if connection.client_id.is_some() {
                            next.browser.insert(connection.id, Arc::clone(&issuer));
                            next.route_domains(organization, connection.id);
                        }
                        next.by_issuer
                            .entry(connection.issuer.clone())
                            .or_default()
                            .push(Entry {
                                organization: organization.id,
                                connection: connection.clone(),
                                issuer,
                            });
                    }
                    Err(reason) => unusable(organization, connection, &reason),
                }
            }
        }
        next
    }

    /// A SAML connection: its rules, and its IdP (kept from `previous` when the connection did
    /// not change, with the metadata it fetched).
    #[cfg(feature = "saml")]
    fn add_saml(
        &self,
        next: &mut Snapshot,
        previous: &Snapshot,
        organization: &Organization,
        connection: &Connection,
    ) {
        let kept = previous
            .saml
            .get(&connection.issuer)
            .filter(|e| e.organization == organization.id && e.connection == *connection)
            .map(|e| Arc::clone(&e.idp));
        let idp = match kept {
            Some(idp) => Ok(idp),
            None => self.saml_idp(organization, connection).map(Arc::new),
        };
        let built = idp.and_then(|idp| {
            let rules = connection_policy(organization, connection)
                .validate(&connection.issuer)
                .map_err(|e| e.to_string())?;
            Ok((idp, rules))
        });
        match built {
            Ok((idp, rules)) => {
                next.rules.insert(
                    connection.id,
                    Arc::new(provisioning(organization, connection, rules)),
                );
                next.saml_ids
                    .insert(connection.id, connection.issuer.clone());
                next.route_domains(organization, connection.id);
                next.saml.insert(
                    connection.issuer.clone(),
                    SamlEntry {
                        organization: organization.id,
                        connection: connection.clone(),
                        idp,
                    },
                );
            }
            Err(reason) => unusable(organization, connection, &reason),
        }
    }

    /// The IdP of a SAML connection, by its metadata or its metadata URL.
    #[cfg(feature = "saml")]
    fn saml_idp(
        &self,
        organization: &Organization,
        connection: &Connection,
    ) -> Result<ConnectionIdp, String> {
        let allow_http = self.settings.allow_http_loopback;
        let source = match (&connection.saml_metadata, &connection.saml_metadata_url) {
            (Some(xml), _) => IdpSource::Fixed(Arc::new(
                TrustedIdp::from_metadata(xml, &connection.issuer, allow_http)
                    .map_err(|reason| format!("its metadata {reason}"))?,
            )),
            (None, Some(url)) => {
                let url = saml::checked_url(url, allow_http)
                    .map_err(|_| "its metadata URL is not an https URL")?;
                let policy = UrlPolicy {
                    allow_http_loopback: allow_http,
                };
                let fetcher = Fetcher::new(self.client.clone(), policy, saml::MAX_METADATA_BYTES);
                IdpSource::remote(connection.issuer.clone(), url, fetcher, allow_http, None)
            }
            (None, None) => return Err("it has no metadata".to_owned()),
        };
        Ok(ConnectionIdp {
            source,
            connection: ConnectionRef {
                organization: organization.id,
                connection: connection.id,
            },
            subject_attribute: connection.subject_attribute.clone(),
        })
    }

    /// Without the `saml` feature a SAML connection signs nobody in.
    #[cfg(not(feature = "saml"))]
    fn add_saml(
        &self,
        _next: &mut Snapshot,
        _previous: &Snapshot,
        organization: &Organization,
        connection: &Connection,
    ) {
        unusable(
            organization,
            connection,
            &"SAML connections need the `saml` feature",
        );
    }

    /// Marks every verifier of `previous` that is not in the current snapshot as retired.
    fn retire_replaced(&self, previous: &Snapshot) {
        let current = self.snapshot.load();
        for entry in previous.by_issuer.values().flatten() {
            let kept = current
                .by_issuer
                .get(&entry.connection.issuer)
                .is_some_and(|entries| {
                    entries
                        .iter()
                        .any(|e| Arc::ptr_eq(&e.issuer, &entry.issuer))
                });
            if !kept {
                entry.issuer.retired.store(true, Ordering::Release);
            }
        }
    }

    /// A connection's provisioning rules and a verifier for its issuer, by the rules of a
    /// configured [`Issuer`]: `kept`, the verifier of the same connection unchanged (with the
    /// keys it fetched), or a new one. The rules are built anew either way: they depend on the
    /// organisation too.
    fn connection_rules(
        &self,
        organization: &Organization,
        connection: &Connection,
        kept: Option<Arc<RuntimeIssuer>>,
    ) -> Result<(ConnectionProvisioning, Arc<RuntimeIssuer>), crate::ConfigError> {
        let issuer = Issuer::new(&connection.issuer)
            .audiences(connection.audiences.iter().cloned())
            .allow_http_loopback(self.settings.allow_http_loopback)
            .policy(connection_policy(organization, connection));
        #[cfg(feature = "login")]
        let issuer = match &connection.client_id {
            Some(client_id) => issuer.browser_client(client_id, connection.client_secret.clone()),
            None => issuer,
        };
        let mut valid = issuer.validate()?;
        valid.rules.claims.connection = Some(ConnectionRef {
            organization: organization.id,
            connection: connection.id,
        });
        let rules = provisioning(organization, connection, valid.provisioning);
        let issuer = kept.unwrap_or_else(|| {
            let fetcher = Fetcher::new(
                self.client.clone(),
                valid.url_policy,
                self.max_document_bytes,
            );
            let verifier = IssuerVerifier::new(valid.rules, fetcher, valid.timing);
            Arc::new(RuntimeIssuer::new(verifier, Arc::clone(&self.stale)))
        });
        Ok((rules, issuer))
    }
}

/// The rules a connection's sign-ins come under, whatever its protocol: creation and approval
/// as it says, its tenant pinned, and e-mail addresses trusted in its organisation's domains.
fn connection_policy(organization: &Organization, connection: &Connection) -> IssuerPolicy {
    let mut policy = IssuerPolicy::new()
        .create_accounts(connection.create_accounts)
        .require_approval(connection.require_approval);
    if let Some(pin) = &connection.tenant {
        policy = policy.require_claim(&pin.claim, pin.value.as_str());
    }
    if !organization.domains.is_empty() {
        policy = policy.trust_email_domains(organization.domains.iter().cloned());
    }
    policy
}

/// A connection's provisioning, with its issuer's `rules`.
fn provisioning(
    organization: &Organization,
    connection: &Connection,
    rules: IssuerProvisioning,
) -> ConnectionProvisioning {
    ConnectionProvisioning {
        organization: organization.id,
        domains: organization.domains.clone(),
        rules,
        default_roles: connection.default_roles.clone(),
        group_roles: connection.group_roles.clone(),
        claims: connection.claims.clone(),
    }
}

/// Says that `connection` cannot work, and why.
fn unusable(organization: &Organization, connection: &Connection, reason: &dyn std::fmt::Display) {
    tracing::warn!(
        target: "tower_jit_provisioning::organizations",
        organization = %organization.id,
        connection = %connection.id,
        %reason,
        "a connection that cannot work signs nobody in"
    );
}

impl Snapshot {
    /// Sends the browsers of `organization`'s domains to `connection`, unless an earlier
    /// connection of it takes them.
    fn route_domains(&mut self, organization: &Organization, connection: Uuid) {
        for domain in &organization.domains {
            self.by_domain
                .entry(domain.clone())
                .or_default()
                .get_or_insert(connection);
        }
    }
}

impl RuntimeIssuers for Directory {
    fn find<'a>(
        &'a self,
        iss: &'a str,
        claims: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Option<Arc<RuntimeIssuer>>, Error>> {
        Box::pin(async move {
            let snapshot = self.current().await?;
            let Some(entries) = snapshot.by_issuer.get(iss) else {
                return Ok(None);
            };
            // A tenant's connection, by the tenant the token names; or the issuer's one
            // connection without a tenant. The verification that follows checks the claims,
            // and admission checks the pin again on the verified ones.
            let pinned = entries.iter().find(|entry| {
                entry.connection.tenant.as_ref().is_some_and(|pin| {
                    claims.get(&pin.claim).and_then(Value::as_str) == Some(pin.value.as_str())
                })
            });
            let unpinned = || entries.iter().find(|e| e.connection.tenant.is_none());
            Ok(pinned
                .or_else(unpinned)
                .map(|entry| Arc::clone(&entry.issuer)))
        })
    }

    #[cfg(feature = "login")]
    fn for_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<DomainRoute, Error>> {
        Box::pin(async move {
            let snapshot = self.current().await?;
            Ok(match snapshot.by_domain.get(domain) {
                None => DomainRoute::Unknown,
                Some(None) => DomainRoute::Closed,
                Some(Some(id)) => match snapshot.browser.get(id) {
                    Some(issuer) => DomainRoute::Connection(*id, Arc::clone(issuer)),
                    #[cfg(feature = "saml")]
                    None if snapshot.saml_ids.contains_key(id) => DomainRoute::Saml(*id),
                    None => DomainRoute::Closed,
                },
            })
        })
    }

    #[cfg(feature = "login")]
    fn browser_connection(
        &self,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<Arc<RuntimeIssuer>>, Error>> {
        Box::pin(async move { Ok(self.current().await?.browser.get(&id).cloned()) })
    }
}

#[cfg(feature = "saml")]
impl RuntimeIdps for Directory {
    fn by_entity<'a>(
        &'a self,
        entity_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ConnectionIdp>>, Error>> {
        Box::pin(async move {
            let snapshot = self.current().await?;
            Ok(snapshot.saml.get(entity_id).map(|e| Arc::clone(&e.idp)))
        })
    }

    fn by_connection(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Arc<ConnectionIdp>>, Error>> {
        Box::pin(async move {
            let snapshot = self.current().await?;
            Ok(snapshot
                .saml_ids
                .get(&id)
                .and_then(|entity_id| snapshot.saml.get(entity_id))
                .map(|e| Arc::clone(&e.idp)))
        })
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<Arc<ConnectionIdp>>, Error>> {
        Box::pin(async move {
            let snapshot = self.current().await?;
            Ok(snapshot.saml.values().map(|e| Arc::clone(&e.idp)).collect())
        })
    }
}

impl ConnectionRules for Directory {
    fn connection(&self, id: Uuid) -> Option<Arc<ConnectionProvisioning>> {
        self.snapshot.load().rules.get(&id).cloned()
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("connections", &self.snapshot.load().rules.len())
            .finish_non_exhaustive()
    }
}
