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
use crate::token::claims::ClaimRules;
use crate::token::fetch::{UrlPolicy, UrlRefusal};
use crate::token::jwks::KeyTiming;
use crate::token::verify::IssuerRules;
use crate::token::{Algorithm, TokenKind};

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
    policy: IssuerPolicy,
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
            policy: IssuerPolicy::new(),
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
