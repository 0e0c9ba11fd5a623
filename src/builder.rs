//! Configuration: the trusted issuers and how the layer reads and answers requests.
//!
//! Nothing is checked while settings are given; [`ProvisioningLayerBuilder::build`] checks them
//! all and returns a [`ConfigError`] naming the first bad one. Building does no I/O: keys are
//! fetched on the first request that needs them (or by
//! [`ProvisioningLayer::fetch_keys`](crate::ProvisioningLayer::fetch_keys)).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::IssuerUrl;
use serde_json::Value;
use url::Url;

use crate::error::{ConfigError, DefaultErrorHandler};
use crate::layer::{ProvisioningLayer, Shared};
use crate::provision::policy::{Admission, DenyReason, DomainPattern, Predicate};
use crate::provision::{
    AttributeMapping, EmailTrust, IssuerProvisioning, Linking, Provisioner, ProvisionerConfig,
    RoleTrust,
};
use crate::store::{DynStore, UserStore};
use crate::token::VerifiedClaims;
use crate::token::claims::ClaimRules;
use crate::token::extract::TokenSource;
use crate::token::fetch::{self, Fetcher, UrlPolicy, UrlRefusal};
use crate::token::jwks::KeyTiming;
use crate::token::verify::{IssuerRules, IssuerVerifier, TokenVerifier};
use crate::token::{Algorithm, TokenKind};

/// Default bound on a token's length: 16 KiB.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest clock leeway accepted by [`Issuer::leeway`].
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default capacity of the verified-token cache.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;
const DEFAULT_USER_CACHE_CAPACITY: u64 = 10_000;
const DEFAULT_USER_CACHE_TTL: Duration = Duration::from_secs(300);
const DEFAULT_LOGIN_RECORD_INTERVAL: Duration = Duration::from_secs(300);
/// Largest discovery document or key set read from an issuer.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// One trusted identity provider and what is accepted from it.
///
/// ```
/// use std::time::Duration;
/// use tower_jit_provisioning::{Algorithm, Issuer, TokenKind};
///
/// let entra = Issuer::new("https://login.microsoftonline.com/7c3e…/v2.0")
///     .audience("api://orders")
///     .token_kinds([TokenKind::Access])
///     .algorithms([Algorithm::RS256])
///     .leeway(Duration::from_secs(30));
/// # drop(entra);
/// ```
///
/// Defaults: ID tokens and access tokens, every asymmetric [`Algorithm`], 60 s leeway, groups
/// from the `groups` claim, keys refreshed in the background after 10 minutes, no refresh
/// closer than 10 s to the previous one, and held keys trusted for at most 24 hours without a
/// successful refresh. There is no default audience: one is required.
#[derive(Clone, Debug)]
#[must_use]
pub struct Issuer {
    url: String,
    audiences: Vec<String>,
    kinds: Vec<TokenKind>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    allow_http_loopback: bool,
    accept_string_booleans: bool,
    authorized_parties: Option<Vec<String>>,
    groups_claim: String,
    max_token_age: Option<Duration>,
    timing: KeyTiming,
    allowed_domains: Vec<String>,
    required_claims: Vec<(String, Value)>,
    required_groups: Vec<String>,
    require_approval: bool,
    email_trust: EmailTrustSetting,
    role_trust: RoleTrust,
}

#[derive(Clone, Debug, Default)]
enum EmailTrustSetting {
    #[default]
    None,
    Any,
    Domains(Vec<String>),
}

impl Issuer {
    /// An issuer identified by `url`, exactly as its tokens' `iss` and its discovery document's
    /// `issuer` spell it (a trailing slash matters).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            audiences: Vec::new(),
            kinds: vec![TokenKind::Id, TokenKind::Access],
            algorithms: Algorithm::ALL.to_vec(),
            leeway: Duration::from_secs(60),
            allow_http_loopback: false,
            accept_string_booleans: false,
            authorized_parties: None,
            groups_claim: "groups".to_owned(),
            max_token_age: None,
            timing: KeyTiming {
                min_refresh_interval: Duration::from_secs(10),
                refresh_interval: Duration::from_secs(600),
                max_staleness: Duration::from_secs(24 * 3600),
            },
            allowed_domains: Vec::new(),
            required_claims: Vec::new(),
            required_groups: Vec::new(),
            require_approval: false,
            email_trust: EmailTrustSetting::None,
            role_trust: RoleTrust::All,
        }
    }

    /// The issuer as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds an accepted audience: this application's client ID for ID tokens, this resource
    /// server's identifier for access tokens. A token is accepted when its `aud` contains an
    /// accepted audience and every other audience it names is accepted too.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Replaces the accepted audiences.
    pub fn audiences<I, A>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Which kinds of token are accepted from this issuer.
    pub fn token_kinds(mut self, kinds: impl IntoIterator<Item = TokenKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self.kinds.dedup();
        self
    }

    /// The signature algorithms accepted from this issuer.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` alike. At most [`MAX_LEEWAY`].
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Allows a plain-http issuer URL when its host is a loopback address (`127.0.0.0/8`,
    /// `::1`, `localhost`): for tests and local development only.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }

    /// Counts `"email_verified": "true"` (a string) as verified. Off by default: only a JSON
    /// `true` counts. Turn it on only for an issuer known to send strings.
    pub fn accept_string_booleans(mut self, accept: bool) -> Self {
        self.accept_string_booleans = accept;
        self
    }

    /// The clients tokens may have been issued to (`azp`, and an access token's `client_id`).
    ///
    /// Without a list, an ID token's `azp` must be one of the accepted audiences and access
    /// tokens are accepted from any client of the issuer.
    pub fn authorized_parties<I, A>(mut self, parties: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.authorized_parties = Some(parties.into_iter().map(Into::into).collect());
        self
    }

    /// The claim that holds group names: a name or a dotted path (`realm_access.roles`).
    pub fn groups_claim(mut self, claim: impl Into<String>) -> Self {
        self.groups_claim = claim.into();
        self
    }

    /// Refuses tokens issued (`iat`) longer ago than this, whatever their `exp`.
    pub fn max_token_age(mut self, age: Duration) -> Self {
        self.max_token_age = Some(age);
        self
    }

    /// The cool-down between two key-set fetches: an unknown `kid` triggers at most one fetch
    /// per interval, however many requests carry it.
    pub fn min_key_refresh_interval(mut self, interval: Duration) -> Self {
        self.timing.min_refresh_interval = interval;
        self
    }

    /// The age after which keys are refreshed in the background, while still in use.
    pub fn key_refresh_interval(mut self, interval: Duration) -> Self {
        self.timing.refresh_interval = interval;
        self
    }

    /// The age after which held keys are no longer trusted if no refresh has succeeded since:
    /// requests are then answered 503 until the issuer can be reached again.
    pub fn max_key_staleness(mut self, staleness: Duration) -> Self {
        self.timing.max_staleness = staleness;
        self
    }

    /// Admits only people whose *verified* e-mail address is in one of these domains:
    /// `example.com` exactly, or `*.example.com` for its sub-domains (not `example.com` itself).
    /// Domains compare after lower-casing and removing a trailing dot. Needs a store.
    pub fn allowed_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.allowed_domains = domains.into_iter().map(Into::into).collect();
        self
    }

    /// Admits only tokens whose claim at `path` equals `value` exactly: a tenant pin for
    /// multi-tenant issuers, such as Entra's `tid`, Google's `hd`, or Entra's `xms_edov` =
    /// `true`. May be given several times; all must hold. Needs a store.
    pub fn require_claim(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.required_claims.push((path.into(), value.into()));
        self
    }

    /// Admits only members of every one of these groups (after mapping). Needs a store.
    pub fn required_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.required_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Holds new accounts from this issuer for approval (403 `pending_approval` until the
    /// application approves them through the store). Needs a store.
    pub fn require_approval(mut self, hold: bool) -> Self {
        self.require_approval = hold;
        self
    }

    /// Trusts this issuer's verified e-mail addresses in these domains (patterns as in
    /// [`allowed_domains`](Self::allowed_domains)) for linking by e-mail. Linking by e-mail
    /// must also be turned on in the builder.
    pub fn trust_email_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.email_trust =
            EmailTrustSetting::Domains(domains.into_iter().map(Into::into).collect());
        self
    }

    /// Trusts this issuer's verified e-mail addresses in every domain for linking by e-mail:
    /// only for an issuer that controls every address it vouches for.
    pub fn trust_any_email_domain(mut self) -> Self {
        self.email_trust = EmailTrustSetting::Any;
        self
    }

    /// Whether the mapping's role rules (group and claim rules, and roles the mapping hook
    /// grants) apply to this issuer's tokens; on by default. An issuer whose users can put
    /// themselves into groups (a social login, a customer's own tenant) should not be trusted
    /// for roles: a new account it signs in gets the default roles only, and its logins neither
    /// grant nor revoke roles (its groups are still recorded). Needs a store.
    pub fn trust_roles(mut self, trust: bool) -> Self {
        self.role_trust = if trust {
            RoleTrust::All
        } else {
            RoleTrust::None
        };
        self
    }

    /// Trusts this issuer for roles only in tokens whose claim at `path` equals `value`
    /// exactly: one tenant of a multi-tenant issuer, such as Entra's `tid`. Tokens of other
    /// tenants are treated as with [`trust_roles(false)`](Self::trust_roles). Needs a store.
    pub fn trust_roles_when(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.role_trust = RoleTrust::When(path.into(), value.into());
        self
    }

    fn has_provisioning_rules(&self) -> bool {
        !matches!(self.role_trust, RoleTrust::All)
            || !self.allowed_domains.is_empty()
            || !self.required_claims.is_empty()
            || !self.required_groups.is_empty()
            || self.require_approval
            || !matches!(self.email_trust, EmailTrustSetting::None)
    }

    fn provisioning(&self) -> Result<IssuerProvisioning, ConfigError> {
        let patterns = |name: &str, domains: &[String]| {
            domains
                .iter()
                .map(|d| {
                    DomainPattern::parse(d).ok_or_else(|| ConfigError::InvalidSetting {
                        setting: format!("issuer `{}`: {name} `{d}`", self.url),
                        reason: "not a domain or a `*.domain` pattern",
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(IssuerProvisioning {
            admission: Admission {
                allowed_domains: patterns("allowed_domains", &self.allowed_domains)?,
                required_claims: self.required_claims.clone(),
                required_groups: self.required_groups.clone(),
            },
            require_approval: self.require_approval,
            role_trust: self.role_trust.clone(),
            email_trust: match &self.email_trust {
                EmailTrustSetting::None => EmailTrust::None,
                EmailTrustSetting::Any => EmailTrust::Any,
                EmailTrustSetting::Domains(domains) => {
                    EmailTrust::Domains(patterns("trust_email_domains", domains)?)
                }
            },
        })
    }

    fn validate(self) -> Result<(IssuerRules, UrlPolicy, KeyTiming), ConfigError> {
        let issuer = || self.url.clone();
        let url = Url::parse(&self.url)
            .map_err(|_| ConfigError::InvalidIssuerUrl { issuer: issuer() })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::InvalidIssuerUrl { issuer: issuer() });
        }
        let policy = UrlPolicy {
            allow_http_loopback: self.allow_http_loopback,
        };
        policy.check(&url).map_err(|refusal| match refusal {
            UrlRefusal::NotAbsolute | UrlRefusal::Credentials => {
                ConfigError::InvalidIssuerUrl { issuer: issuer() }
            }
            UrlRefusal::NotHttps => ConfigError::InsecureIssuerUrl { issuer: issuer() },
            UrlRefusal::HttpNotLoopback => ConfigError::HttpIssuerNotLoopback { issuer: issuer() },
        })?;
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::NoAudience { issuer: issuer() });
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithm { issuer: issuer() });
        }
        if self.kinds.is_empty() {
            return Err(ConfigError::NoTokenKind { issuer: issuer() });
        }
        let setting = |name: &str| format!("issuer `{}`: {name}", self.url);
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::InvalidDuration {
                setting: setting("leeway"),
                reason: "must be at most 5 minutes",
            });
        }
        if self.timing.max_staleness < self.timing.refresh_interval {
            return Err(ConfigError::InvalidDuration {
                setting: setting("max_key_staleness"),
                reason: "must be at least the key refresh interval",
            });
        }
        if self.groups_claim.is_empty() {
            return Err(ConfigError::InvalidSetting {
                setting: setting("groups_claim"),
                reason: "must not be empty",
            });
        }
        let issuer_url = IssuerUrl::new(self.url.clone())
            .map_err(|_| ConfigError::InvalidIssuerUrl { issuer: issuer() })?;
        let rules = IssuerRules {
            issuer: Arc::from(self.url.as_str()),
            issuer_url,
            kinds: self.kinds,
            algorithms: self.algorithms,
            audiences: self.audiences.into(),
            authorized_parties: self.authorized_parties,
            leeway: self.leeway,
            max_token_age: self.max_token_age,
            claims: ClaimRules {
                groups_claim: self.groups_claim,
                accept_string_booleans: self.accept_string_booleans,
            },
        };
        Ok((rules, policy, self.timing))
    }
}

/// Builds a [`ProvisioningLayer`]. Start with [`ProvisioningLayer::builder`].
///
/// ```
/// use tower_jit_provisioning::{Issuer, ProvisioningLayer, TokenSource};
///
/// let layer = ProvisioningLayer::builder()
///     .issuer(Issuer::new("https://accounts.google.com").audience("1234.apps.googleusercontent.com"))
///     .issuer(Issuer::new("https://idp.example.com/realms/staff").audience("orders-api"))
///     .token_source(TokenSource::cookie("id_token"))
///     .optional(true)
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_jit_provisioning::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ProvisioningLayerBuilder<H = DefaultErrorHandler> {
    issuers: Vec<Issuer>,
    optional: bool,
    token_source: TokenSource,
    max_token_bytes: usize,
    http_timeout: Duration,
    token_cache_capacity: u64,
    provisioning: ProvisioningSettings,
    error_handler: H,
}

/// The builder's settings for the provisioning half.
#[derive(Clone, Default)]
struct ProvisioningSettings {
    store: Option<Arc<dyn DynStore>>,
    mapping: Option<AttributeMapping>,
    approval_domains: Vec<String>,
    linking: Linking,
    reactivate_on_login: bool,
    predicate: Option<Predicate>,
    cache_capacity: Option<u64>,
    cache_ttl: Option<Duration>,
    login_interval: Option<Duration>,
}

impl ProvisioningSettings {
    fn needs_store(&self) -> bool {
        self.mapping.is_some()
            || !self.approval_domains.is_empty()
            || self.linking.by_claim.is_some()
            || self.linking.by_verified_email
            || self.reactivate_on_login
            || self.predicate.is_some()
    }
}

impl std::fmt::Debug for ProvisioningSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningSettings")
            .field("store", &self.store.as_ref().map(|s| s.debug()))
            .field("mapping", &self.mapping)
            .field("approval_domains", &self.approval_domains)
            .field("linking", &self.linking)
            .field("reactivate_on_login", &self.reactivate_on_login)
            .field("predicate", &self.predicate)
            .finish_non_exhaustive()
    }
}

impl ProvisioningLayerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            issuers: Vec::new(),
            optional: false,
            token_source: TokenSource::default(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            http_timeout: Duration::from_secs(10),
            token_cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
            provisioning: ProvisioningSettings::default(),
            error_handler: DefaultErrorHandler,
        }
    }
}

impl<H> ProvisioningLayerBuilder<H> {
    /// Trusts one more issuer. Tokens are routed to an issuer by their `iss`.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// In optional mode a request without any token goes through with no claims (handlers
    /// extract `Option<VerifiedClaims>`); a request with a bad token is still refused.
    pub fn optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    /// Where the token is read from. Default: the `Authorization: Bearer` header.
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.token_source = source;
        self
    }

    /// Longest token accepted, in bytes; longer ones are refused before parsing.
    /// Default [`DEFAULT_MAX_TOKEN_BYTES`].
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Deadline for each discovery or key-set request to an issuer (connect and whole
    /// response). Default 10 s.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// How many verified tokens to remember (by SHA-256), so a repeated token costs a hash and
    /// a lookup instead of a signature check. Entries expire with their token. 0 turns the
    /// cache off. Default [`DEFAULT_TOKEN_CACHE_CAPACITY`].
    pub fn token_cache(mut self, capacity: u64) -> Self {
        self.token_cache_capacity = capacity;
        self
    }

    /// Provisions accounts in `store`: the first request of a person creates (or links) their
    /// account, and every request carries a [`ProvisionedUser`](crate::ProvisionedUser).
    /// Without a store the layer only verifies tokens.
    pub fn store<S: UserStore>(mut self, store: S) -> Self {
        self.provisioning.store = Some(Arc::new(store));
        self
    }

    /// How claims become profile fields, groups and roles. Default [`AttributeMapping::new`].
    pub fn mapping(mut self, mapping: AttributeMapping) -> Self {
        self.provisioning.mapping = Some(mapping);
        self
    }

    /// Holds new accounts whose e-mail is in these domains (patterns as in
    /// [`Issuer::allowed_domains`]) for approval, whatever the issuer.
    pub fn require_approval_for_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.provisioning.approval_domains = domains.into_iter().map(Into::into).collect();
        self
    }

    /// Links a first sign-in to the existing account whose `external_id` equals the value of
    /// `claim` (`sub`, Entra's `oid`, …), e.g. an account SCIM created ahead of time. Off by
    /// default.
    pub fn link_by_claim(mut self, claim: impl Into<String>) -> Self {
        self.provisioning.linking.by_claim = Some(claim.into());
        self
    }

    /// Links a first sign-in to the one existing account with the same *verified* e-mail
    /// address, when the issuer is trusted for that address's domain
    /// ([`Issuer::trust_email_domains`]) and the account has no identity at that issuer yet. An
    /// unverified address never links. Off by default.
    pub fn link_by_verified_email(mut self, link: bool) -> Self {
        self.provisioning.linking.by_verified_email = link;
        self
    }

    /// Lets a deactivated user's next sign-in reactivate the account. Off by default: a
    /// deactivated account stays refused whatever the user does.
    pub fn reactivate_on_login(mut self, reactivate: bool) -> Self {
        self.provisioning.reactivate_on_login = reactivate;
        self
    }

    /// An admission check of the application's: called once per token, after the issuer's
    /// rules and before anything is written; an `Err` refuses the sign-in with 403 and its
    /// code.
    ///
    /// ```
    /// use tower_jit_provisioning::{DenyReason, ProvisioningLayer, VerifiedClaims};
    ///
    /// let builder = ProvisioningLayer::builder().admit(|claims: VerifiedClaims| async move {
    ///     if claims.groups().iter().any(|g| g == "beta") {
    ///         Ok(())
    ///     } else {
    ///         Err(DenyReason::Policy("not_in_beta"))
    ///     }
    /// });
    /// # drop(builder);
    /// ```
    pub fn admit<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(VerifiedClaims) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), DenyReason>> + Send + 'static,
    {
        self.provisioning.predicate = Some(Predicate::new(check));
        self
    }

    /// Size and time-to-live of the user cache. A cached user is served without touching the
    /// store; changes made through the store drop it at once, and the time-to-live bounds how
    /// long a change made elsewhere can go unseen. Default 10 000 users, 5 minutes.
    pub fn user_cache(mut self, capacity: u64, ttl: Duration) -> Self {
        self.provisioning.cache_capacity = Some(capacity);
        self.provisioning.cache_ttl = Some(ttl);
        self
    }

    /// The least time between two recorded sign-ins (`last_login_at`) of one identity.
    /// Default 5 minutes.
    pub fn login_record_interval(mut self, interval: Duration) -> Self {
        self.provisioning.login_interval = Some(interval);
        self
    }

    /// Replaces the responses given to refused requests.
    pub fn error_handler<H2>(self, handler: H2) -> ProvisioningLayerBuilder<H2> {
        ProvisioningLayerBuilder {
            issuers: self.issuers,
            optional: self.optional,
            token_source: self.token_source,
            max_token_bytes: self.max_token_bytes,
            http_timeout: self.http_timeout,
            token_cache_capacity: self.token_cache_capacity,
            provisioning: self.provisioning,
            error_handler: handler,
        }
    }

    /// Checks every setting and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that cannot work.
    pub fn build(self) -> Result<ProvisioningLayer<H>, ConfigError> {
        if self.issuers.is_empty() {
            return Err(ConfigError::NoIssuer);
        }
        if let TokenSource::Cookie(name) = &self.token_source
            && !is_cookie_name(name)
        {
            return Err(ConfigError::InvalidSetting {
                setting: "token_source".to_owned(),
                reason: "cookie name must be a non-empty RFC 6265 token",
            });
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "max_token_size".to_owned(),
                reason: "must be positive",
            });
        }
        if self.http_timeout.is_zero() {
            return Err(ConfigError::InvalidDuration {
                setting: "http_timeout".to_owned(),
                reason: "must be positive",
            });
        }
        let needs_store = self.provisioning.needs_store()
            || self.issuers.iter().any(Issuer::has_provisioning_rules);
        if needs_store && self.provisioning.store.is_none() {
            return Err(ConfigError::InvalidSetting {
                setting: "store".to_owned(),
                reason: "admission, mapping, approval and linking settings need a store",
            });
        }
        let client = fetch::client(self.http_timeout)
            .map_err(|err| ConfigError::HttpClient(Box::new(err)))?;
        let mut issuers: Vec<IssuerVerifier> = Vec::with_capacity(self.issuers.len());
        let mut issuer_provisioning = Vec::with_capacity(self.issuers.len());
        for issuer in self.issuers {
            let provisioning = issuer.provisioning()?;
            let (rules, policy, timing) = issuer.validate()?;
            issuer_provisioning.push((Arc::clone(&rules.issuer), provisioning));
            if issuers.iter().any(|i| i.rules.issuer == rules.issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: rules.issuer.to_string(),
                });
            }
            let fetcher = Fetcher::new(client.clone(), policy, MAX_DOCUMENT_BYTES);
            issuers.push(IssuerVerifier::new(rules, fetcher, timing));
        }
        let settings = self.provisioning;
        let provisioner = match settings.store {
            None => None,
            Some(store) => {
                let approval_domains = settings
                    .approval_domains
                    .iter()
                    .map(|d| {
                        DomainPattern::parse(d).ok_or_else(|| ConfigError::InvalidSetting {
                            setting: format!("require_approval_for_domains `{d}`"),
                            reason: "not a domain or a `*.domain` pattern",
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let cache_ttl = settings.cache_ttl.unwrap_or(DEFAULT_USER_CACHE_TTL);
                if cache_ttl.is_zero() {
                    return Err(ConfigError::InvalidDuration {
                        setting: "user_cache".to_owned(),
                        reason: "time-to-live must be positive",
                    });
                }
                Some(Provisioner::new(ProvisionerConfig {
                    store,
                    mapping: settings.mapping.unwrap_or_default(),
                    issuers: issuer_provisioning,
                    approval_domains,
                    linking: settings.linking,
                    reactivate_on_login: settings.reactivate_on_login,
                    predicate: settings.predicate,
                    cache_capacity: settings
                        .cache_capacity
                        .unwrap_or(DEFAULT_USER_CACHE_CAPACITY),
                    cache_ttl,
                    login_interval: settings
                        .login_interval
                        .unwrap_or(DEFAULT_LOGIN_RECORD_INTERVAL),
                }))
            }
        };
        let shared = Shared {
            verifier: TokenVerifier::new(issuers, self.token_cache_capacity),
            provisioner,
            token_source: self.token_source,
            max_token_bytes: self.max_token_bytes,
            optional: self.optional,
        };
        Ok(ProvisioningLayer::from_parts(
            Arc::new(shared),
            self.error_handler,
        ))
    }
}

/// An RFC 6265 cookie name: an RFC 2616 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(issuer: Issuer) -> Result<(), String> {
        ProvisioningLayer::builder()
            .issuer(issuer)
            .build()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn build_names_the_bad_setting() {
        let ok = || Issuer::new("https://idp.example.com").audience("api");
        assert_eq!(build(ok()), Ok(()));
        let cases: Vec<(&str, Issuer, &str)> = vec![
            (
                "relative",
                Issuer::new("idp.example.com").audience("a"),
                "not an absolute URL",
            ),
            (
                "not a url",
                Issuer::new("https://").audience("a"),
                "not an absolute URL",
            ),
            (
                "query",
                Issuer::new("https://idp.example.com/?x=1").audience("a"),
                "not an absolute URL",
            ),
            (
                "fragment",
                Issuer::new("https://idp.example.com/#x").audience("a"),
                "not an absolute URL",
            ),
            (
                "credentials",
                Issuer::new("https://u:p@idp.example.com").audience("a"),
                "not an absolute URL",
            ),
            (
                "http",
                Issuer::new("http://idp.example.com").audience("a"),
                "must be https",
            ),
            (
                "http loopback not allowed",
                Issuer::new("http://127.0.0.1:8080").audience("a"),
                "must be https",
            ),
            (
                "http allowed but remote",
                Issuer::new("http://idp.example.com")
                    .audience("a")
                    .allow_http_loopback(true),
                "only allowed for loopback",
            ),
            (
                "no audience",
                Issuer::new("https://idp.example.com"),
                "no audience",
            ),
            (
                "empty audience",
                Issuer::new("https://idp.example.com").audience(""),
                "no audience",
            ),
            (
                "no algorithm",
                ok().algorithms([]),
                "algorithm list is empty",
            ),
            ("no kind", ok().token_kinds([]), "no token kind"),
            ("leeway", ok().leeway(Duration::from_secs(301)), "leeway"),
            (
                "staleness",
                ok().key_refresh_interval(Duration::from_secs(60))
                    .max_key_staleness(Duration::from_secs(30)),
                "max_key_staleness",
            ),
        ];
        for (name, issuer, expected) in cases {
            let err = build(issuer).unwrap_err();
            assert!(err.contains(expected), "{name}: {err}");
        }
        assert_eq!(
            build(
                Issuer::new("http://127.0.0.1:8080")
                    .audience("a")
                    .allow_http_loopback(true)
            ),
            Ok(())
        );
    }

    #[test]
    fn build_refuses_layer_wide_mistakes() {
        let err = ProvisioningLayer::builder().build().unwrap_err();
        assert!(matches!(err, ConfigError::NoIssuer));
        let issuer = || Issuer::new("https://idp.example.com").audience("api");
        let err = ProvisioningLayer::builder()
            .issuer(issuer())
            .issuer(issuer())
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateIssuer { .. }), "{err}");
        let err = ProvisioningLayer::builder()
            .issuer(issuer())
            .token_source(TokenSource::cookie("bad name"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("token_source"), "{err}");
    }
}
