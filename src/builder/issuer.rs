//! [`Issuer`]: one trusted OpenID Connect issuer, what the bearer-token source accepts from it,
//! and its [`IssuerPolicy`].

use std::sync::Arc;
use std::time::Duration;

use openidconnect::IssuerUrl;
use serde_json::Value;
use url::Url;

use super::policy::IssuerPolicy;
use crate::error::ConfigError;
use crate::provision::IssuerProvisioning;
use crate::token::answer::IntrospectionRules;
use crate::token::claims::ClaimRules;
use crate::token::fetch::{UrlPolicy, UrlRefusal};
use crate::token::jwks::KeyTiming;
use crate::token::verify::{IssuerRules, SignInClient};
use crate::token::{AccessTokenProfile, Algorithm, TokenKind};

/// Largest clock leeway accepted by [`Issuer::leeway`].
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// An [`Issuer`] whose settings were checked.
pub(crate) struct ValidIssuer {
    pub(crate) rules: IssuerRules,
    pub(crate) url_policy: UrlPolicy,
    pub(crate) timing: KeyTiming,
    pub(crate) provisioning: IssuerProvisioning,
    /// Whether the policy sets any rule (rules need a store).
    pub(crate) has_rules: bool,
}

/// An identity provider whose tokens this crate knows the documented shape of. See
/// [`Issuer::provider`] for what each one sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// Microsoft Entra ID (Azure AD).
    Entra,
    /// Okta, through a custom authorization server.
    Okta,
    /// Keycloak, one realm.
    Keycloak,
    /// Auth0, one tenant (or custom domain).
    Auth0,
    /// Google, ID tokens only.
    Google,
}

impl Provider {
    /// The provider's name as the reference server's `JIT_ISSUERS` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entra => "entra",
            Self::Okta => "okta",
            Self::Keycloak => "keycloak",
            Self::Auth0 => "auth0",
            Self::Google => "google",
        }
    }

    /// The provider named `name` ([`as_str`](Self::as_str)).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Entra,
            Self::Okta,
            Self::Keycloak,
            Self::Auth0,
            Self::Google,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

/// Google's issuer, as its ID tokens and discovery document spell it.
const GOOGLE: &str = "https://accounts.google.com";

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
    tolerated_audiences: Vec<String>,
    kinds: Vec<TokenKind>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    allow_http_loopback: bool,
    accept_string_booleans: bool,
    authorized_parties: Option<Vec<String>>,
    groups_claims: Vec<String>,
    max_token_age: Option<Duration>,
    timing: KeyTiming,
    policy: IssuerPolicy,
    profile: AccessTokenProfile,
    provider: Option<Provider>,
    discovery: Option<String>,
    browser: Option<SignInClient>,
    introspection: Option<IntrospectionSettings>,
}

/// What [`Issuer::introspection`] and its companions set.
#[derive(Clone)]
struct IntrospectionSettings {
    client_id: String,
    client_secret: String,
    endpoint: Option<String>,
    cache_bound: Duration,
    opaque_only: bool,
    token_prefix: Option<String>,
}

impl std::fmt::Debug for IntrospectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionSettings")
            .field("client_id", &self.client_id)
            .field("endpoint", &self.endpoint)
            .field("cache_bound", &self.cache_bound)
            .field("opaque_only", &self.opaque_only)
            .field("token_prefix", &self.token_prefix)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer identified by `url`, exactly as its tokens' `iss` and its discovery document's
    /// `issuer` spell it (a trailing slash matters).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            audiences: Vec::new(),
            tolerated_audiences: Vec::new(),
            kinds: vec![TokenKind::Id, TokenKind::Access],
            algorithms: Algorithm::ALL.to_vec(),
            leeway: Duration::from_secs(60),
            allow_http_loopback: false,
            accept_string_booleans: false,
            authorized_parties: None,
            groups_claims: vec!["groups".to_owned()],
            max_token_age: None,
            timing: KeyTiming {
                min_refresh_interval: Duration::from_secs(10),
                refresh_interval: Duration::from_secs(600),
                max_staleness: Duration::from_secs(24 * 3600),
            },
            policy: IssuerPolicy::new(),
            profile: AccessTokenProfile::Rfc9068,
            provider: None,
            discovery: None,
            browser: None,
            introspection: None,
        }
    }

    /// Microsoft Entra ID, one tenant, v2.0 tokens: issuer
    /// `https://login.microsoftonline.com/{tenant}/v2.0`, pinned to the tenant by `tid`, with
    /// [`Provider::Entra`]'s rules. Audiences still have to be given: for access tokens the API's
    /// client ID (v2.0 access tokens carry it) or its application ID URI (`api://…`); for ID
    /// tokens the client ID of the application.
    pub fn entra(tenant_id: &str) -> Self {
        Self::new(format!(
            "https://login.microsoftonline.com/{tenant_id}/v2.0"
        ))
        .provider(Provider::Entra)
        .require_claim("tid", tenant_id)
    }

    /// Microsoft Entra ID, one tenant, v1.0 access tokens (an API whose registration accepts
    /// version 1 tokens, the default for many): issuer `https://sts.windows.net/{tenant}/`,
    /// discovered at `https://login.microsoftonline.com/{tenant}/.well-known/openid-configuration`,
    /// pinned by `tid`, with [`Provider::Entra`]'s rules.
    pub fn entra_v1(tenant_id: &str) -> Self {
        Self::new(format!("https://sts.windows.net/{tenant_id}/"))
            .provider(Provider::Entra)
            .discovery_url(format!(
                "https://login.microsoftonline.com/{tenant_id}/.well-known/openid-configuration"
            ))
            .require_claim("tid", tenant_id)
    }

    /// Okta, through a custom authorization server: `url` is its issuer,
    /// `https://{org}.okta.com/oauth2/{server id}` (`…/oauth2/default` for the default one), with
    /// [`Provider::Okta`]'s rules.
    pub fn okta(url: impl Into<String>) -> Self {
        Self::new(url).provider(Provider::Okta)
    }

    /// Keycloak: `url` is the realm's issuer, `https://{host}/realms/{realm}`, with
    /// [`Provider::Keycloak`]'s rules.
    pub fn keycloak(url: impl Into<String>) -> Self {
        Self::new(url).provider(Provider::Keycloak)
    }

    /// Auth0: `url` is the tenant's issuer, `https://{tenant}.auth0.com/` (or the custom
    /// domain), with its trailing slash, with [`Provider::Auth0`]'s rules.
    pub fn auth0(url: impl Into<String>) -> Self {
        Self::new(url).provider(Provider::Auth0)
    }

    /// Google (`https://accounts.google.com`), ID tokens only, with [`Provider::Google`]'s
    /// rules. The audience is the application's OAuth client ID
    /// (`….apps.googleusercontent.com`).
    pub fn google() -> Self {
        Self::new(GOOGLE).provider(Provider::Google)
    }

    /// Applies `provider`'s documented token shape to this issuer, whatever its URL (a local
    /// test issuer included):
    ///
    /// | provider | access tokens ([`AccessTokenProfile`]) | groups | checked at `build()` |
    /// |---|---|---|---|
    /// | Entra | `typ: JWT`, told by `azpacr`/`appidacr`; client `azp`/`appid` | `groups` (object ids) | — |
    /// | Okta | `cid` and `scp`; client `cid`; the person is `uid` (`sub` is their login name) | `groups` | access tokens need a custom authorization server (`/oauth2/` in the URL) |
    /// | Keycloak | payload `typ: Bearer`; client `azp`; `account` tolerated beside the audience | `groups` and `realm_access.roles` | — |
    /// | Auth0 | `scope` or `gty`; client `azp`; `{issuer}userinfo` tolerated beside the audience | `groups` | the issuer ends with `/` |
    /// | Google | none: its access tokens are opaque | — | ID tokens only |
    ///
    /// Entra's app roles are in `roles`, its delegated scopes in `scp`; Keycloak's client roles
    /// in `resource_access.<client>.roles`; Auth0's custom claims are namespaced
    /// (`https://example.com/roles`): map them with
    /// [`AttributeMapping`](crate::AttributeMapping)'s `claim_role` or `groups_from`. Tokens
    /// typed `at+jwt` are RFC 9068 access tokens under every provider.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self.profile = match provider {
            Provider::Entra => AccessTokenProfile::Entra,
            Provider::Okta => AccessTokenProfile::Okta,
            Provider::Keycloak => AccessTokenProfile::Keycloak,
            Provider::Auth0 => AccessTokenProfile::Auth0,
            Provider::Google => AccessTokenProfile::Rfc9068,
        };
        match provider {
            Provider::Keycloak => {
                self.groups_claims = vec!["groups".to_owned(), "realm_access.roles".to_owned()];
                self = self.tolerate_audiences(["account"]);
            }
            Provider::Auth0 => {
                let userinfo = format!("{}userinfo", self.url);
                self = self.tolerate_audiences([userinfo]);
            }
            Provider::Google => self.kinds = vec![TokenKind::Id],
            Provider::Entra | Provider::Okta => {}
        }
        self
    }

    /// How this issuer's access tokens are told from its ID tokens; set by
    /// [`provider`](Self::provider), [`AccessTokenProfile::Rfc9068`] otherwise. Setting it back
    /// to `Rfc9068` accepts only `typ: at+jwt` access tokens, whatever the provider.
    pub fn access_token_profile(mut self, profile: AccessTokenProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Lets people sign in here with a browser (feature `login`), as the application's client
    /// `client_id` at this issuer, with the confidential client's `secret` (`None` for a public
    /// client, which PKCE alone protects). The ID tokens of those sign-ins are verified by this
    /// issuer's rules with `client_id` as their audience. See
    /// [`BrowserLogin`](crate::login::BrowserLogin).
    #[cfg(feature = "login")]
    #[cfg_attr(docsrs, doc(cfg(feature = "login")))]
    pub fn browser_client(mut self, client_id: impl Into<String>, secret: Option<String>) -> Self {
        self.browser = Some(SignInClient {
            id: client_id.into(),
            secret,
            scopes: Vec::new(),
        });
        self
    }

    /// Scopes to ask for at browser sign-in beside `openid email profile` (such as `groups`).
    #[cfg(feature = "login")]
    #[cfg_attr(docsrs, doc(cfg(feature = "login")))]
    pub fn browser_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Some(client) = &mut self.browser {
            client.scopes = scopes.into_iter().map(Into::into).collect();
        }
        self
    }

    /// Accepts the issuer's **opaque** access tokens, checked by RFC 7662 token introspection
    /// at its `introspection_endpoint` (from discovery, or
    /// [`introspection_endpoint`](Self::introspection_endpoint)), authenticated as this
    /// client (`client_secret_basic`). The answer must say `active`; `iss`, `aud`, `exp`, `nbf`,
    /// `client_id` and `token_type` are held to this issuer's rules when present, and the
    /// subject is `sub` (the preset's subject claim, such as Okta's `uid`, when it has one).
    ///
    /// Answers are cached by the token's SHA-256 until the earlier of its `exp` and
    /// [`introspection_cache`](Self::introspection_cache) (60 s by default, so a revocation
    /// takes effect within it); refusals for 5 s at most; concurrent requests with one new token
    /// make one call. While the endpoint is down, cached answers hold and new tokens get 503
    /// with `Retry-After`. JWTs from the issuer are still verified locally, unless
    /// [`opaque_tokens_only`](Self::opaque_tokens_only).
    ///
    /// An opaque token says nothing of its issuer: with several issuers that introspect, give
    /// each an [`introspection_token_prefix`](Self::introspection_token_prefix), or a token is
    /// asked of each in turn, and so shown to issuers it does not belong to.
    pub fn introspection(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let previous = self.introspection.take();
        self.introspection = Some(IntrospectionSettings {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            endpoint: previous.as_ref().and_then(|p| p.endpoint.clone()),
            cache_bound: previous
                .as_ref()
                .map_or(Duration::from_secs(60), |p| p.cache_bound),
            opaque_only: previous.as_ref().is_some_and(|p| p.opaque_only),
            token_prefix: previous.and_then(|p| p.token_prefix),
        });
        self
    }

    /// The introspection endpoint, for an issuer whose discovery document does not name one.
    /// Takes effect with [`introspection`](Self::introspection).
    pub fn introspection_endpoint(mut self, url: impl Into<String>) -> Self {
        if let Some(settings) = &mut self.introspection {
            settings.endpoint = Some(url.into());
        }
        self
    }

    /// The longest an introspection answer is trusted (never past the token's `exp`): how long
    /// a revoked token may still be accepted. Between 1 s and 1 h; default 60 s.
    pub fn introspection_cache(mut self, bound: Duration) -> Self {
        if let Some(settings) = &mut self.introspection {
            settings.cache_bound = bound;
        }
        self
    }

    /// The prefix this issuer's opaque tokens start with (Ory Hydra's `ory_at_`, say). An opaque
    /// token is sent for introspection only to the issuers whose prefix it has, or, when none
    /// has, to those without a prefix, in configuration order: with several issuers that
    /// introspect, give each its prefix, so that no issuer ever sees another's tokens.
    pub fn introspection_token_prefix(mut self, prefix: impl Into<String>) -> Self {
        if let Some(settings) = &mut self.introspection {
            settings.token_prefix = Some(prefix.into());
        }
        self
    }

    /// Accepts this issuer's tokens by introspection only: its JWTs are refused
    /// ([`TokenError::ExpectedOpaqueToken`](crate::TokenError::ExpectedOpaqueToken)).
    pub fn opaque_tokens_only(mut self) -> Self {
        if let Some(settings) = &mut self.introspection {
            settings.opaque_only = true;
        }
        self
    }

    /// Where the issuer's discovery document is, when not at
    /// `{issuer}/.well-known/openid-configuration`. The document's `issuer` must still equal
    /// this issuer exactly.
    pub fn discovery_url(mut self, url: impl Into<String>) -> Self {
        self.discovery = Some(url.into());
        self
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

    /// Audiences a token may name beside an accepted one, which never suffice on their own:
    /// the providers' own, such as Auth0's `{issuer}userinfo` (in every access token requested
    /// with `openid`) or Keycloak's `account`. [`provider`](Self::provider) sets them.
    pub fn tolerate_audiences<I, A>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.tolerated_audiences
            .extend(audiences.into_iter().map(Into::into));
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
        self.groups_claims = vec![claim.into()];
        self
    }

    /// Several claims that hold group names, read together.
    pub fn groups_claims<I, C>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<String>,
    {
        self.groups_claims = claims.into_iter().map(Into::into).collect();
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

    /// This issuer's provisioning rules, replacing those set so far. The setters below set one
    /// rule each. Every rule needs a store.
    pub fn policy(mut self, policy: IssuerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// See [`IssuerPolicy::allowed_domains`].
    pub fn allowed_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.policy = self.policy.allowed_domains(domains);
        self
    }

    /// See [`IssuerPolicy::require_claim`].
    pub fn require_claim(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.policy = self.policy.require_claim(path, value);
        self
    }

    /// See [`IssuerPolicy::required_groups`].
    pub fn required_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.policy = self.policy.required_groups(groups);
        self
    }

    /// See [`IssuerPolicy::group_resolver`].
    pub fn group_resolver(
        mut self,
        resolver: impl crate::provision::groups::GroupResolver,
    ) -> Self {
        self.policy = self.policy.group_resolver(resolver);
        self
    }

    /// See [`IssuerPolicy::create_accounts`].
    pub fn create_accounts(mut self, create: bool) -> Self {
        self.policy = self.policy.create_accounts(create);
        self
    }

    /// See [`IssuerPolicy::create_accounts_from`].
    pub fn create_accounts_from<I>(mut self, sources: I) -> Self
    where
        I: IntoIterator<Item = crate::SignInSource>,
    {
        self.policy = self.policy.create_accounts_from(sources);
        self
    }

    /// See [`IssuerPolicy::require_approval`].
    pub fn require_approval(mut self, hold: bool) -> Self {
        self.policy = self.policy.require_approval(hold);
        self
    }

    /// See [`IssuerPolicy::trust_email_domains`].
    pub fn trust_email_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.policy = self.policy.trust_email_domains(domains);
        self
    }

    /// See [`IssuerPolicy::trust_any_email_domain`].
    pub fn trust_any_email_domain(mut self) -> Self {
        self.policy = self.policy.trust_any_email_domain();
        self
    }

    /// See [`IssuerPolicy::trust_roles`].
    pub fn trust_roles(mut self, trust: bool) -> Self {
        self.policy = self.policy.trust_roles(trust);
        self
    }

    /// See [`IssuerPolicy::trust_roles_when`].
    pub fn trust_roles_when(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.policy = self.policy.trust_roles_when(path, value);
        self
    }

    /// The verification rules, the URL policy, the key timing and the provisioning policy,
    /// checked.
    pub(crate) fn validate(self) -> Result<ValidIssuer, ConfigError> {
        let provisioning = self.policy.validate(&self.url)?;
        let has_rules = self.policy.has_rules();
        let (rules, policy, timing) = self.validate_verification()?;
        Ok(ValidIssuer {
            rules,
            url_policy: policy,
            timing,
            provisioning,
            has_rules,
        })
    }

    fn validate_verification(self) -> Result<(IssuerRules, UrlPolicy, KeyTiming), ConfigError> {
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
        let setting = |name: &str| format!("issuer `{}`: {name}", self.url);
        // An issuer for browser sign-in alone accepts no bearer token: it needs no audience.
        if (self.audiences.is_empty() && self.browser.is_none())
            || self.audiences.iter().any(String::is_empty)
        {
            return Err(ConfigError::NoAudience { issuer: issuer() });
        }
        if let Some(client) = &self.browser
            && (client.id.is_empty() || client.secret.as_deref() == Some(""))
        {
            return Err(ConfigError::InvalidSetting {
                setting: setting("browser_client"),
                reason: "the client id and secret must not be empty",
            });
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithm { issuer: issuer() });
        }
        if self.kinds.is_empty() {
            return Err(ConfigError::NoTokenKind { issuer: issuer() });
        }
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
        if self.groups_claims.is_empty() || self.groups_claims.iter().any(String::is_empty) {
            return Err(ConfigError::InvalidSetting {
                setting: setting("groups_claim"),
                reason: "must not be empty",
            });
        }
        self.check_provider(&url)?;
        let discovery = self
            .discovery
            .as_deref()
            .map(|discovery| {
                let parsed = Url::parse(discovery)
                    .ok()
                    .filter(|u| policy.check(u).is_ok());
                parsed.ok_or_else(|| ConfigError::InvalidSetting {
                    setting: setting("discovery_url"),
                    reason: "not an https URL (plain http only on loopback, when allowed)",
                })
            })
            .transpose()?;
        let introspection = self
            .introspection
            .as_ref()
            .map(|settings| self.validate_introspection(settings, policy))
            .transpose()?;
        let issuer_url = IssuerUrl::new(self.url.clone())
            .map_err(|_| ConfigError::InvalidIssuerUrl { issuer: issuer() })?;
        let rules = IssuerRules {
            issuer: Arc::from(self.url.as_str()),
            issuer_url,
            kinds: self.kinds,
            algorithms: self.algorithms,
            audiences: self.audiences.into(),
            tolerated_audiences: self.tolerated_audiences.into(),
            authorized_parties: self.authorized_parties,
            leeway: self.leeway,
            max_token_age: self.max_token_age,
            claims: ClaimRules {
                groups_claims: self.groups_claims,
                accept_string_booleans: self.accept_string_booleans,
                connection: None,
            },
            profile: self.profile,
            discovery,
            browser: self.browser,
            introspection,
        };
        Ok((rules, policy, self.timing))
    }

    fn validate_introspection(
        &self,
        settings: &IntrospectionSettings,
        policy: UrlPolicy,
    ) -> Result<IntrospectionRules, ConfigError> {
        let setting = |name: &str| format!("issuer `{}`: {name}", self.url);
        if settings.client_id.is_empty() || settings.client_secret.is_empty() {
            return Err(ConfigError::InvalidSetting {
                setting: setting("introspection"),
                reason: "the client id and secret must not be empty",
            });
        }
        if !self.kinds.contains(&TokenKind::Access) {
            return Err(ConfigError::InvalidSetting {
                setting: setting("introspection"),
                reason: "introspection answers for access tokens: accept TokenKind::Access",
            });
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&settings.cache_bound) {
            return Err(ConfigError::InvalidDuration {
                setting: setting("introspection_cache"),
                reason: "must be between 1 second and 1 hour",
            });
        }
        let endpoint = settings
            .endpoint
            .as_deref()
            .map(|endpoint| {
                Url::parse(endpoint)
                    .ok()
                    .filter(|u| policy.check(u).is_ok())
                    .ok_or_else(|| ConfigError::InvalidSetting {
                        setting: setting("introspection_endpoint"),
                        reason: "not an https URL (plain http only on loopback, when allowed)",
                    })
            })
            .transpose()?;
        Ok(IntrospectionRules {
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            endpoint,
            cache_bound: settings.cache_bound,
            opaque_only: settings.opaque_only,
            token_prefix: settings.token_prefix.clone().filter(|p| !p.is_empty()),
        })
    }

    /// What the provider's documentation rules out, refused with a message that says why. A
    /// plain-http stand-in on loopback (a test issuer) is not held to the provider's URL shapes.
    fn check_provider(&self, url: &Url) -> Result<(), ConfigError> {
        let setting = || format!("issuer `{}`", self.url);
        let accepts_access = self.kinds.contains(&TokenKind::Access);
        match self.provider {
            Some(Provider::Okta)
                if accepts_access
                    && url.scheme() == "https"
                    && !url.path().contains("/oauth2/") =>
            {
                Err(ConfigError::InvalidSetting {
                    setting: setting(),
                    reason: "Okta's org authorization server issues access tokens only Okta \
                             itself can verify: use a custom authorization server \
                             (https://{org}.okta.com/oauth2/default), or accept ID tokens only",
                })
            }
            Some(Provider::Google) if accepts_access => Err(ConfigError::InvalidSetting {
                setting: setting(),
                reason: "Google's access tokens are opaque, not JWTs: accept Google ID tokens \
                         (token_kinds([TokenKind::Id])), or check access tokens by introspection",
            }),
            // A plain-http stand-in on loopback is spelt as its own tokens spell it.
            Some(Provider::Auth0) if url.scheme() == "https" && !self.url.ends_with('/') => {
                Err(ConfigError::InvalidSetting {
                    setting: setting(),
                    reason: "Auth0 issuers end with a slash (https://{tenant}.auth0.com/), \
                             exactly as its tokens' iss does",
                })
            }
            _ => Ok(()),
        }
    }
}
