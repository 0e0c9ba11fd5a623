//! [`ProvisioningLayerBuilder`]: the layer's own settings (where credentials are read from,
//! which sources are asked, caches, the store and the layer-wide provisioning settings), and
//! `build()`, which checks everything and assembles the stages.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::issuer::Issuer;
use super::policy::IssuerPolicy;
use crate::error::{ConfigError, DefaultErrorHandler};
use crate::layer::{ProvisioningLayer, Shared};
use crate::provision::migration::{LegacyAccounts, SharedLegacyAccounts};
use crate::provision::policy::{DenyReason, DomainPattern, PendingHook, Predicate};
use crate::provision::{AttributeMapping, Linking, Provisioner, ProvisionerConfig};
use crate::sign_in::{Authenticator, DynAuthenticator, SignIn};
use crate::store::{DynStore, UserStore};
use crate::token::extract::TokenSource;
use crate::token::fetch::{self, Fetcher};
use crate::token::verify::{IssuerVerifier, TokenVerifier};
use crate::user::User;

/// Default bound on a token's length: 16 KiB.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default capacity of the verified-token cache.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;
const DEFAULT_USER_CACHE_CAPACITY: u64 = 10_000;
const DEFAULT_USER_CACHE_TTL: Duration = Duration::from_secs(300);
const DEFAULT_LOGIN_RECORD_INTERVAL: Duration = Duration::from_secs(300);
/// Largest discovery document or key set read from an issuer.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

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
    #[cfg(feature = "login")]
    browser_login: Option<crate::login::BrowserLogin>,
    #[cfg(feature = "login")]
    providers: Vec<crate::login::OAuth2Provider>,
    #[cfg(feature = "saml")]
    saml: Option<crate::login::SamlLogin>,
    #[cfg(feature = "organizations")]
    organizations: Option<crate::directory::OrganizationDirectory>,
    authenticators: Authenticators,
    policies: Vec<(String, IssuerPolicy)>,
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
    /// `None`: on.
    create_accounts: Option<bool>,
    require_approval: bool,
    on_pending: Option<PendingHook>,
    linking: Linking,
    legacy: Option<SharedLegacyAccounts>,
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
            || self.create_accounts.is_some()
            || self.require_approval
            || self.on_pending.is_some()
            || self.linking.by_claim.is_some()
            || self.linking.by_verified_email
            || self.legacy.is_some()
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
            .field("legacy", &self.legacy)
            .field("reactivate_on_login", &self.reactivate_on_login)
            .field("predicate", &self.predicate)
            .finish_non_exhaustive()
    }
}

impl ProvisioningLayer {
    /// Starts configuring a layer.
    pub fn builder() -> ProvisioningLayerBuilder {
        ProvisioningLayerBuilder::new()
    }
}

/// The application's sign-in sources, in the order they are asked.
#[derive(Clone, Default)]
struct Authenticators(Vec<Arc<dyn DynAuthenticator>>);

impl std::fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|a| a.source()))
            .finish()
    }
}

impl ProvisioningLayerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            issuers: Vec::new(),
            #[cfg(feature = "login")]
            browser_login: None,
            #[cfg(feature = "login")]
            providers: Vec::new(),
            #[cfg(feature = "saml")]
            saml: None,
            #[cfg(feature = "organizations")]
            organizations: None,
            authenticators: Authenticators::default(),
            policies: Vec::new(),
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
    /// Signs in the people of the [organisations](crate::organization) in the store: each
    /// connection's issuer is trusted for its organisation's accounts, as the store says while
    /// the layer runs (a change is read on the next request after the store's change event,
    /// on every server sharing the database). A token naming an `iss` no configured issuer has
    /// is routed to the connection of that issuer (and of its tenant, for a shared issuer).
    /// Needs a store.
    #[cfg(feature = "organizations")]
    #[cfg_attr(docsrs, doc(cfg(feature = "organizations")))]
    pub fn organizations(mut self, directory: crate::directory::OrganizationDirectory) -> Self {
        self.organizations = Some(directory);
        self
    }

    /// Trusts one more issuer. Tokens are routed to an issuer by their `iss`.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Adds a sign-in source of the application's: asked, after every source added before
    /// it, for each request that carries no bearer token. The first [`SignIn`] one returns is
    /// admitted, mapped, linked or created and audited exactly as a token's. See the crate docs,
    /// "Adding a sign-in source".
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticators.0.push(Arc::new(authenticator));
        self
    }

    /// Turns on browser sign-in (feature `login`): sessions in the store, the routes of
    /// [`ProvisioningLayer::login_router`], and requests signed in by their session cookie. The
    /// issuers people sign in at are those given a
    /// [`browser_client`](crate::Issuer::browser_client). Needs a store.
    #[cfg(feature = "login")]
    #[cfg_attr(docsrs, doc(cfg(feature = "login")))]
    pub fn browser_login(mut self, login: crate::login::BrowserLogin) -> Self {
        self.browser_login = Some(login);
        self
    }

    /// Lets people sign in at an OAuth2-only provider (feature `login`): GitHub, Facebook, or
    /// any provider with a code flow and a profile API, at `/login?provider=<id>`. Needs a store
    /// and [`browser_login`](Self::browser_login), unless the provider only
    /// [accepts bearer tokens](crate::login::OAuth2Provider::accept_bearer_tokens).
    #[cfg(feature = "login")]
    #[cfg_attr(docsrs, doc(cfg(feature = "login")))]
    pub fn oauth2_provider(mut self, provider: crate::login::OAuth2Provider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Lets people sign in at SAML 2.0 identity providers (feature `saml`): SP metadata at
    /// `/saml/metadata`, sign-in at `/saml/login`, the assertion consumer service at
    /// `/saml/acs`, Single Logout at `/saml/slo`, all in
    /// [`ProvisioningLayer::login_router`]. Needs
    /// [`browser_login`](Self::browser_login), whose public URL, flows and sessions it shares.
    #[cfg(feature = "saml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "saml")))]
    pub fn saml(mut self, saml: crate::login::SamlLogin) -> Self {
        self.saml = Some(saml);
        self
    }

    /// The provisioning rules for sign-ins whose issuer is `issuer`, for sources other than
    /// bearer tokens (an [`Issuer`]'s own rules are set on it). Needs a store.
    pub fn policy(mut self, issuer: impl Into<String>, policy: IssuerPolicy) -> Self {
        self.policies.push((issuer.into(), policy));
        self
    }

    /// In optional mode a request without any credential goes through with no claims
    /// (handlers extract `Option<VerifiedClaims>`); a request with a bad one is still refused.
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
    ///
    /// A JWT is remembered from its second request on: one seen once (a token per request, a
    /// flood of distinct tokens) costs no entry and pushes no useful one out, and a token in
    /// use costs one more signature check in all. Introspected tokens are remembered at once.
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

    /// Whether first sign-ins may create accounts, whatever the issuer; on by default. Off,
    /// only accounts that already exist sign in (see [`IssuerPolicy::create_accounts`] for one
    /// issuer, or one source).
    pub fn create_accounts(mut self, create: bool) -> Self {
        self.provisioning.create_accounts = Some(create);
        self
    }

    /// Holds every new account for approval, whatever the issuer (403 `pending_approval`
    /// until approved through [`Approvals`](crate::approval::Approvals)).
    pub fn require_approval(mut self, hold: bool) -> Self {
        self.provisioning.require_approval = hold;
        self
    }

    /// Calls `hook` with each account that starts pending approval, once, right after it is
    /// written: to tell the people who approve. Keep it quick (it runs on the sign-in's
    /// request); spawn a task for anything slow.
    pub fn on_pending(mut self, hook: impl Fn(&User) + Send + Sync + 'static) -> Self {
        self.provisioning.on_pending = Some(PendingHook::new(hook));
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
    /// `claim` (`sub`, Entra's `oid`, …), e.g. an account SCIM created ahead of time. An
    /// account has one identity per issuer, so a second subject at the same issuer never
    /// joins it; people of other issuers carrying the same value do, unless
    /// [`link_by_claim_unused_only`](Self::link_by_claim_unused_only). Off by default.
    pub fn link_by_claim(mut self, claim: impl Into<String>) -> Self {
        self.provisioning.linking.by_claim = Some(claim.into());
        self
    }

    /// Restricts [`link_by_claim`](Self::link_by_claim) to accounts nobody has signed in to
    /// yet (created ahead of time by SCIM or the application): once someone signs in to an
    /// account, a token from any issuer carrying the same value gets an account of its own.
    /// Use it when the claim is not one identifier shared by every issuer you trust. Off by
    /// default.
    pub fn link_by_claim_unused_only(mut self, unused_only: bool) -> Self {
        self.provisioning.linking.by_claim_unused_only = unused_only;
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

    /// Migration from another system: at a person's first sign-in, after admission let them
    /// in and linking found no account, asks `hook` for their account in the old system and
    /// adopts it instead of creating a new one (see [`migration`](crate::provision::migration)
    /// and `SqlLegacyAccounts`, with a SQL store feature). Each legacy
    /// account is adopted at most once; a second identity the hook names it for is refused 403
    /// `legacy_account_claimed`. Adoption is a link, so it happens even where
    /// [`create_accounts(false)`](Self::create_accounts) lets nobody else in. The store must
    /// implement [`UserStore::adopt_legacy_account`](crate::UserStore::adopt_legacy_account)
    /// (every store of this crate does).
    pub fn legacy_accounts(mut self, hook: impl LegacyAccounts) -> Self {
        self.provisioning.legacy = Some(Arc::new(hook));
        self
    }

    /// Lets a deactivated user's next sign-in reactivate the account. Off by default: a
    /// deactivated account stays refused whatever the user does.
    pub fn reactivate_on_login(mut self, reactivate: bool) -> Self {
        self.provisioning.reactivate_on_login = reactivate;
        self
    }

    /// An admission check of the application's: called once per sign-in (once per token for
    /// bearer tokens), after the issuer's rules and before anything is written; an `Err`
    /// refuses the sign-in with 403 and its code.
    ///
    /// ```
    /// use tower_jit_provisioning::{DenyReason, ProvisioningLayer, SignIn};
    ///
    /// let builder = ProvisioningLayer::builder().admit(|sign_in: SignIn| async move {
    ///     if sign_in.groups().iter().any(|g| g == "beta") {
    ///         Ok(())
    ///     } else {
    ///         Err(DenyReason::Policy("not_in_beta"))
    ///     }
    /// });
    /// # drop(builder);
    /// ```
    pub fn admit<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(SignIn) -> Fut + Send + Sync + 'static,
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
            #[cfg(feature = "login")]
            browser_login: self.browser_login,
            #[cfg(feature = "login")]
            providers: self.providers,
            #[cfg(feature = "saml")]
            saml: self.saml,
            #[cfg(feature = "organizations")]
            organizations: self.organizations,
            authenticators: self.authenticators,
            policies: self.policies,
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
        #[cfg(all(feature = "login", not(feature = "saml")))]
        let has_providers = !self.providers.is_empty();
        #[cfg(feature = "saml")]
        let has_providers = !self.providers.is_empty() || self.saml.is_some();
        #[cfg(not(feature = "login"))]
        let has_providers = false;
        #[cfg(feature = "organizations")]
        let has_organizations = self.organizations.is_some();
        #[cfg(not(feature = "organizations"))]
        let has_organizations = false;
        if self.issuers.is_empty()
            && self.authenticators.0.is_empty()
            && self.policies.is_empty()
            && !has_providers
            && !has_organizations
        {
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
        let client = fetch::client(self.http_timeout)
            .map_err(|err| ConfigError::HttpClient(Box::new(err)))?;
        let mut needs_store = self.provisioning.needs_store();
        let mut issuers: Vec<IssuerVerifier> = Vec::with_capacity(self.issuers.len());
        let mut issuer_provisioning = Vec::with_capacity(self.issuers.len());
        for issuer in self.issuers {
            let valid = issuer.validate()?;
            needs_store |= valid.has_rules;
            if issuers.iter().any(|i| i.rules.issuer == valid.rules.issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: valid.rules.issuer.to_string(),
                });
            }
            issuer_provisioning.push((Arc::clone(&valid.rules.issuer), valid.provisioning));
            let fetcher = Fetcher::new(client.clone(), valid.url_policy, MAX_DOCUMENT_BYTES);
            issuers.push(IssuerVerifier::new(valid.rules, fetcher, valid.timing));
        }
        for (issuer, policy) in &self.policies {
            if issuer_provisioning.iter().any(|(i, _)| **i == **issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: issuer.clone(),
                });
            }
            needs_store |= policy.has_rules();
            issuer_provisioning.push((Arc::from(issuer.as_str()), policy.validate(issuer)?));
        }
        #[cfg(feature = "login")]
        let mut providers = Vec::with_capacity(self.providers.len());
        #[cfg(feature = "login")]
        for provider in &self.providers {
            let valid = provider.validate()?;
            if issuer_provisioning
                .iter()
                .any(|(i, _)| **i == *valid.issuer)
                || providers
                    .iter()
                    .any(|p: &Arc<crate::login::provider_flow::Provider>| p.settings.id == valid.id)
            {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: valid.issuer,
                });
            }
            needs_store = true;
            issuer_provisioning.push((
                Arc::from(valid.issuer.as_str()),
                provider.policy.validate(&valid.issuer)?,
            ));
            let fetcher = Fetcher::new(client.clone(), valid.url_policy, MAX_DOCUMENT_BYTES);
            providers.push(Arc::new(crate::login::provider_flow::Provider::new(
                valid, fetcher,
            )));
        }
        #[cfg(feature = "login")]
        let answerers: Vec<Arc<dyn crate::token::answer::TokenAnswerer>> = providers
            .iter()
            .filter(|p| p.settings.bearer_cache.is_some())
            .map(|p| Arc::clone(p) as Arc<dyn crate::token::answer::TokenAnswerer>)
            .collect();
        #[cfg(not(feature = "login"))]
        let answerers = Vec::new();
        needs_store |= has_organizations;
        if needs_store && self.provisioning.store.is_none() {
            return Err(ConfigError::InvalidSetting {
                setting: "store".to_owned(),
                reason: "admission, mapping, approval and linking settings need a store",
            });
        }
        let settings = self.provisioning;
        #[cfg(feature = "login")]
        let browser_providers = providers.iter().any(|p| p.settings.bearer_cache.is_none());
        #[cfg(feature = "saml")]
        let has_saml = self.saml.is_some();
        #[cfg(all(feature = "login", not(feature = "saml")))]
        let has_saml = false;
        #[cfg(feature = "login")]
        let login = match (self.browser_login, &settings.store) {
            (None, _) if browser_providers => {
                return Err(ConfigError::InvalidSetting {
                    setting: "oauth2_provider".to_owned(),
                    reason: "people sign in at a provider with a browser: add `browser_login`",
                });
            }
            (None, _) => None,
            (Some(_), None) => {
                return Err(ConfigError::InvalidSetting {
                    setting: "browser_login".to_owned(),
                    reason: "sessions live in the store: browser sign-in needs a store",
                });
            }
            (Some(_), Some(_))
                if providers.is_empty()
                    && !issuers.iter().any(|i| i.rules.browser.is_some())
                    && !has_saml
                    && !has_organizations =>
            {
                return Err(ConfigError::InvalidSetting {
                    setting: "browser_login".to_owned(),
                    reason: "no issuer has a browser client, no OAuth2 provider, no SAML IdP and \
                             no organisations are set: add `Issuer::browser_client`, \
                             `oauth2_provider`, `saml` or `organizations`",
                });
            }
            (Some(login), Some(store)) => Some(login.validate(Arc::clone(store), providers)?),
        };
        // The organisations' connections, read from the store while the layer runs.
        #[cfg(feature = "organizations")]
        let directory = match (self.organizations, &settings.store) {
            (Some(directory), Some(store)) => Some(Arc::new(crate::directory::Directory::new(
                Arc::clone(store),
                client.clone(),
                MAX_DOCUMENT_BYTES,
                directory,
            ))),
            _ => None,
        };
        #[cfg(feature = "saml")]
        let login = match (login, &self.saml) {
            (Some(mut login), Some(saml)) => {
                #[cfg(feature = "organizations")]
                let runtime_idps = directory.is_some();
                #[cfg(not(feature = "organizations"))]
                let runtime_idps = false;
                #[allow(unused_mut)]
                let mut validated = saml.validate(login.base(), &client, runtime_idps)?;
                #[cfg(feature = "organizations")]
                {
                    validated.runtime = directory
                        .clone()
                        .map(|d| d as Arc<dyn crate::login::saml::connections::RuntimeIdps>);
                }
                for entity_id in validated.entity_ids() {
                    if issuer_provisioning.iter().any(|(i, _)| **i == *entity_id) {
                        return Err(ConfigError::DuplicateIssuer {
                            issuer: entity_id.to_owned(),
                        });
                    }
                    issuer_provisioning.push((
                        Arc::from(entity_id),
                        saml.issuer_policy().validate(entity_id)?,
                    ));
                }
                login.saml = Some(validated);
                Some(login)
            }
            (None, Some(_)) => {
                return Err(ConfigError::InvalidSetting {
                    setting: "saml".to_owned(),
                    reason: "SAML sign-in shares the browser sign-in's sessions: add `browser_login`",
                });
            }
            (login, None) => login,
        };
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
                    create_accounts: settings.create_accounts.unwrap_or(true),
                    require_approval: settings.require_approval,
                    on_pending: settings.on_pending,
                    linking: settings.linking,
                    legacy: settings.legacy,
                    #[cfg(feature = "organizations")]
                    connections: directory
                        .clone()
                        .map(|d| d as Arc<dyn crate::provision::ConnectionRules>),
                    #[cfg(not(feature = "organizations"))]
                    connections: None,
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
        let tokens = TokenVerifier::new(issuers, answerers, self.token_cache_capacity);
        #[cfg(feature = "organizations")]
        let tokens = match directory {
            Some(directory) => tokens.with_runtime_issuers(directory),
            None => tokens,
        };
        let shared = Shared {
            tokens,
            authenticators: self.authenticators.0,
            provisioner,
            token_source: self.token_source,
            max_token_bytes: self.max_token_bytes,
            optional: self.optional,
            #[cfg(feature = "login")]
            login,
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
