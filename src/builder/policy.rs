//! [`IssuerPolicy`]: one issuer's provisioning rules (who is admitted, who waits for approval,
//! whose e-mail addresses and roles are trusted), validated into the provisioning stage's own
//! form at `build()`.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ConfigError;
use crate::provision::groups::GroupResolver;
use crate::provision::policy::{Admission, DomainPattern};
use crate::provision::{Creation, EmailTrust, IssuerProvisioning, RoleTrust};
use crate::sign_in::SignInSource;

/// The provisioning rules for one issuer's sign-ins, whatever their source: an OIDC issuer's
/// bearer tokens (set them on [`Issuer`](crate::Issuer), which carries one), or the sign-ins an
/// [`Authenticator`](crate::Authenticator) of the application's produces (give them to
/// [`ProvisioningLayerBuilder::policy`](crate::ProvisioningLayerBuilder::policy) under the
/// issuer its sign-ins name).
///
/// Every rule needs a store. Nothing is checked until the layer is built.
///
/// ```
/// use tower_jit_provisioning::IssuerPolicy;
///
/// let policy = IssuerPolicy::new()
///     .allowed_domains(["example.com"])
///     .require_claim("tid", "7c3e…")
///     .trust_email_domains(["example.com"]);
/// # drop(policy);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct IssuerPolicy {
    allowed_domains: Vec<String>,
    required_claims: Vec<(String, Value)>,
    required_groups: Vec<String>,
    group_resolver: Option<Arc<dyn GroupResolver>>,
    creation: Creation,
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

impl IssuerPolicy {
    /// No rules: everyone the issuer vouches for is admitted, nobody's e-mail is trusted for
    /// linking, and the mapping's role rules apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits only people whose *verified* e-mail address is in one of these domains:
    /// `example.com` exactly, or `*.example.com` for its sub-domains (not `example.com` itself).
    /// Domains compare after lower-casing and removing a trailing dot.
    pub fn allowed_domains<I, D>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        self.allowed_domains = domains.into_iter().map(Into::into).collect();
        self
    }

    /// Admits only sign-ins whose attribute at `path` equals `value` exactly: a tenant pin for
    /// multi-tenant issuers, such as Entra's `tid`, Google's `hd`, or Entra's `xms_edov` =
    /// `true`. May be given several times; all must hold.
    pub fn require_claim(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.required_claims.push((path.into(), value.into()));
        self
    }

    /// Admits only members of every one of these groups (after mapping).
    pub fn required_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.required_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Asks `resolver` for the groups of a sign-in whose token says its groups did not fit
    /// (Entra ID's `_claim_names`/`hasgroups`), such as
    /// [`MicrosoftGraph`](crate::provision::groups::MicrosoftGraph). Without an answer the
    /// groups stay unknown: nothing they grant is revoked.
    pub fn group_resolver(mut self, resolver: impl GroupResolver) -> Self {
        self.group_resolver = Some(Arc::new(resolver));
        self
    }

    /// Whether this issuer's first sign-ins may create accounts; on by default. Off, only
    /// accounts that already exist (created by SCIM or the application, or found by linking)
    /// sign in; anyone else is refused 403 `not_provisioned`, audited, and nothing is written.
    pub fn create_accounts(mut self, create: bool) -> Self {
        self.creation = if create {
            Creation::Any
        } else {
            Creation::Never
        };
        self
    }

    /// Lets only first sign-ins arriving through these sources create accounts (say, a browser
    /// sign-in but not a bearer token); others are refused as with
    /// [`create_accounts(false)`](Self::create_accounts).
    pub fn create_accounts_from<I>(mut self, sources: I) -> Self
    where
        I: IntoIterator<Item = SignInSource>,
    {
        self.creation = Creation::From(sources.into_iter().collect());
        self
    }

    /// Holds new accounts from this issuer for approval (403 `pending_approval` until the
    /// application approves them through the store).
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
    /// grants) apply to this issuer's sign-ins; on by default. An issuer whose users can put
    /// themselves into groups (a social login, a customer's own tenant) should not be trusted
    /// for roles: a new account it signs in gets the default roles only, and its logins neither
    /// grant nor revoke roles (its groups are still recorded).
    pub fn trust_roles(mut self, trust: bool) -> Self {
        self.role_trust = if trust {
            RoleTrust::All
        } else {
            RoleTrust::None
        };
        self
    }

    /// Trusts this issuer for roles only in sign-ins whose attribute at `path` equals `value`
    /// exactly: one tenant of a multi-tenant issuer, such as Entra's `tid`. Sign-ins of other
    /// tenants are treated as with [`trust_roles(false)`](Self::trust_roles).
    pub fn trust_roles_when(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.role_trust = RoleTrust::When(path.into(), value.into());
        self
    }

    /// Whether any rule is set (rules need a store).
    pub(crate) fn has_rules(&self) -> bool {
        !matches!(self.role_trust, RoleTrust::All)
            || !self.allowed_domains.is_empty()
            || !self.required_claims.is_empty()
            || !self.required_groups.is_empty()
            || self.require_approval
            || !matches!(self.creation, Creation::Any)
            || self.group_resolver.is_some()
            || !matches!(self.email_trust, EmailTrustSetting::None)
    }

    /// The rules in the provisioning stage's form; `issuer` names them in errors.
    pub(crate) fn validate(&self, issuer: &str) -> Result<IssuerProvisioning, ConfigError> {
        let patterns = |name: &str, domains: &[String]| {
            domains
                .iter()
                .map(|d| {
                    DomainPattern::parse(d).ok_or_else(|| ConfigError::InvalidSetting {
                        setting: format!("issuer `{issuer}`: {name} `{d}`"),
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
            group_resolver: self.group_resolver.clone(),
            creation: self.creation.clone(),
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
}
