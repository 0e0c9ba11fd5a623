//! OAuth2-only providers (GitHub, Facebook, any provider with an authorization code flow and a
//! profile API): what the application configures, and its validation. Identity is the
//! provider's id and the provider's stable user id, never a login name or an address.

use std::time::Duration;

use url::Url;

use crate::builder::IssuerPolicy;
use crate::error::ConfigError;
use crate::token::fetch::UrlPolicy;

/// The scopes GitHub sign-in asks for by default: the profile, the e-mail addresses (with
/// whether each is verified), and organisation and team memberships.
pub const GITHUB_SCOPES: [&str; 3] = ["read:user", "user:email", "read:org"];

/// A provider people sign in at with OAuth2 alone: no ID token, identity from a profile API
/// called with the access token. Given to
/// [`ProvisioningLayerBuilder::oauth2_provider`](crate::ProvisioningLayerBuilder::oauth2_provider);
/// people start at `/login?provider=<id>`.
///
/// The sign-in's issuer is the provider's id (`github`), or for GitHub Enterprise Server its URL,
/// and its subject the provider's stable user id (GitHub's numeric `id`, never the `login`,
/// which people can change). The e-mail address counts as verified only where the provider
/// says so.
///
/// ```
/// use tower_jit_provisioning::IssuerPolicy;
/// use tower_jit_provisioning::login::OAuth2Provider;
///
/// let github = OAuth2Provider::github("Iv1.8a61f9b3a7aba766", "the client secret")
///     .policy(IssuerPolicy::new().required_groups(["acme"])); // members of the acme org
/// # drop(github);
/// ```
#[derive(Clone)]
#[must_use]
pub struct OAuth2Provider {
    pub(crate) id: String,
    /// The sign-in's issuer; `None`: the id.
    issuer: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    profile: ProfileSettings,
    pub(crate) scopes: Vec<String>,
    pub(crate) pkce: bool,
    pub(crate) secret_in_body: bool,
    pub(crate) policy: IssuerPolicy,
    allow_http_loopback: bool,
    bearer_tokens: bool,
    bearer_cache: Duration,
}

#[derive(Clone, Debug)]
enum ProfileSettings {
    /// GitHub's REST API at this base URL.
    GitHub { api: String },
    /// A profile endpoint answering a JSON object, read by claim paths.
    Generic { url: String, claims: ProfileClaims },
}

/// Where a generic provider's profile answer keeps each attribute, as dotted paths
/// (`picture.data.url`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ProfileClaims {
    pub(crate) id: String,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) picture: Option<String>,
    pub(crate) groups: Option<String>,
}

impl ProfileClaims {
    /// The user id at `id` (a string or a number), and nothing else yet.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            email: None,
            email_verified: None,
            name: None,
            picture: None,
            groups: None,
        }
    }

    /// The e-mail address. Never verified unless [`email_verified`](Self::email_verified)
    /// names a boolean that says so.
    pub fn email(mut self, path: impl Into<String>) -> Self {
        self.email = Some(path.into());
        self
    }

    /// A boolean saying the provider verified the address.
    pub fn email_verified(mut self, path: impl Into<String>) -> Self {
        self.email_verified = Some(path.into());
        self
    }

    /// The display name.
    pub fn name(mut self, path: impl Into<String>) -> Self {
        self.name = Some(path.into());
        self
    }

    /// The picture's URL.
    pub fn picture(mut self, path: impl Into<String>) -> Self {
        self.picture = Some(path.into());
        self
    }

    /// A list of group names.
    pub fn groups(mut self, path: impl Into<String>) -> Self {
        self.groups = Some(path.into());
        self
    }
}

impl OAuth2Provider {
    /// A provider with id `id` (the sign-in's issuer: short, stable, such as `gitlab`), the
    /// application's client there, and its endpoints; the profile is read with `claims`. PKCE
    /// is on; the client secret goes in an `Authorization: Basic` header.
    pub fn new(
        id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
        authorization_endpoint: impl Into<String>,
        token_endpoint: impl Into<String>,
        profile_endpoint: impl Into<String>,
        claims: ProfileClaims,
    ) -> Self {
        Self {
            id: id.into(),
            issuer: None,
            client_id: client_id.into(),
            client_secret,
            authorization_endpoint: authorization_endpoint.into(),
            token_endpoint: token_endpoint.into(),
            profile: ProfileSettings::Generic {
                url: profile_endpoint.into(),
                claims,
            },
            scopes: Vec::new(),
            pkce: true,
            secret_in_body: false,
            policy: IssuerPolicy::new(),
            allow_http_loopback: false,
            bearer_tokens: false,
            bearer_cache: Duration::from_secs(60),
        }
    }

    /// GitHub (`github.com`), as an OAuth app or a GitHub App's user authorization: id
    /// `github`, scopes [`GITHUB_SCOPES`], the profile from `/user`, the e-mail address from
    /// `/user/emails` (the primary one, and only when GitHub verified it), organisation
    /// memberships as groups `<org>` and team memberships as `<org>/<team slug>`.
    pub fn github(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::github_at(
            "github",
            "https://github.com",
            "https://api.github.com",
            client_id,
            client_secret,
        )
    }

    /// GitHub Enterprise Server at `base_url` (`https://github.example.com`): its API at
    /// `<base_url>/api/v3`. Its id is still `github`; the sign-in's issuer is `base_url`, so
    /// its user ids never meet github.com's.
    pub fn github_enterprise(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let base = base_url.into().trim_end_matches('/').to_owned();
        let api = format!("{base}/api/v3");
        Self::github_at("github", &base, &api, client_id, client_secret).issuer(base.clone())
    }

    /// GitHub's rules with its web and API base URLs elsewhere (a test double); the sign-in's
    /// issuer stays `github` unless [`id`](Self::id) changes it.
    pub fn github_urls(mut self, web: impl Into<String>, api: impl Into<String>) -> Self {
        let web = web.into().trim_end_matches('/').to_owned();
        self.authorization_endpoint = format!("{web}/login/oauth/authorize");
        self.token_endpoint = format!("{web}/login/oauth/access_token");
        self.profile = ProfileSettings::GitHub {
            api: api.into().trim_end_matches('/').to_owned(),
        };
        self
    }

    fn github_at(
        id: &str,
        web: &str,
        api: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let mut provider = Self::new(
            id,
            client_id,
            Some(client_secret.into()),
            "",
            "",
            "",
            ProfileClaims::new("id"),
        )
        .github_urls(web, api)
        .scopes(GITHUB_SCOPES);
        // GitHub's token endpoint takes the client's credentials as form fields.
        provider.secret_in_body = true;
        provider
    }

    /// Facebook Login: id `facebook`, the Graph API's `/me` with explicit fields. Facebook does
    /// not say whether an address is verified, so it never counts as verified.
    pub fn facebook(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        let mut provider = Self::new(
            "facebook",
            client_id,
            Some(client_secret.into()),
            "https://www.facebook.com/v19.0/dialog/oauth",
            "https://graph.facebook.com/v19.0/oauth/access_token",
            "https://graph.facebook.com/v19.0/me?fields=id,name,email,picture",
            ProfileClaims::new("id")
                .email("email")
                .name("name")
                .picture("picture.data.url"),
        )
        .scopes(["email", "public_profile"]);
        provider.secret_in_body = true;
        provider
    }

    /// The provider's id, as `/login?provider=<id>` names it; also the sign-in's issuer unless
    /// [`issuer`](Self::issuer) says otherwise.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The sign-in's issuer, when it is not the id (an Enterprise server's URL): the
    /// namespace the provider's user ids live in.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The scopes to ask for (replacing the preset's).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether to send a PKCE challenge (on by default; turn off only for a provider that
    /// refuses one).
    pub fn pkce(mut self, pkce: bool) -> Self {
        self.pkce = pkce;
        self
    }

    /// Sends the client secret as form fields (`client_secret_post`) instead of a Basic header.
    pub fn client_secret_in_body(mut self, in_body: bool) -> Self {
        self.secret_in_body = in_body;
        self
    }

    /// The provisioning rules for people signing in here (allowed domains, required groups,
    /// approval, e-mail and role trust).
    pub fn policy(mut self, policy: IssuerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Allows plain-http endpoints on loopback addresses (a local test double). Off by default.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }

    /// Also accepts the provider's access tokens as bearer tokens (GitHub only: the tokens
    /// CLIs and CI jobs send, `gho_`, `ghu_`, `ghp_`, `github_pat_`), resolved through the
    /// profile API and cached by the token's SHA-256 for at most `cache` (a revoked token may be
    /// accepted that long), so a person finds the same account by browser and by API.
    ///
    /// GitHub's API says whose token it is, not which application it was issued to: any token
    /// the person holds (a personal access token, another app's) is accepted. Turn this on
    /// only where that is what the API wants, as CLIs and CI jobs do.
    pub fn accept_bearer_tokens(mut self, cache: Duration) -> Self {
        self.bearer_tokens = true;
        self.bearer_cache = cache;
        self
    }

    /// The settings checked.
    pub(crate) fn validate(&self) -> Result<ValidProvider, ConfigError> {
        let setting = |name: &str| format!("oauth2_provider `{}`: {name}", self.id);
        let bad = |name: &str, reason: &'static str| ConfigError::InvalidSetting {
            setting: setting(name),
            reason,
        };
        let issuer = self.issuer.clone().unwrap_or_else(|| self.id.clone());
        let printable = |text: &str| {
            !text.is_empty() && text.len() <= 255 && !text.chars().any(char::is_control)
        };
        if !printable(&self.id) || !printable(&issuer) {
            return Err(bad(
                "id",
                "the id and issuer must be 1 to 255 printable characters",
            ));
        }
        if self.client_id.is_empty() || self.client_secret.as_deref() == Some("") {
            return Err(bad("client", "the client id and secret must not be empty"));
        }
        let policy = UrlPolicy {
            allow_http_loopback: self.allow_http_loopback,
        };
        let url = |name: &str, value: &str| {
            Url::parse(value)
                .ok()
                .filter(|u| policy.check(u).is_ok())
                .ok_or_else(|| {
                    bad(
                        name,
                        "not an https URL (plain http only on loopback, when allowed)",
                    )
                })
        };
        let authorization = url("authorization endpoint", &self.authorization_endpoint)?;
        let token = url("token endpoint", &self.token_endpoint)?;
        let profile = match &self.profile {
            ProfileSettings::GitHub { api } => ValidProfile::GitHub {
                api: url("API URL", api)?,
            },
            ProfileSettings::Generic {
                url: profile,
                claims,
            } => {
                if claims.id.is_empty() {
                    return Err(bad("claims", "the id path must not be empty"));
                }
                ValidProfile::Generic {
                    url: url("profile endpoint", profile)?,
                    claims: claims.clone(),
                }
            }
        };
        if self.bearer_tokens && !matches!(profile, ValidProfile::GitHub { .. }) {
            return Err(bad(
                "accept_bearer_tokens",
                "only GitHub's tokens can be told apart from other bearer tokens",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.bearer_cache) {
            return Err(ConfigError::InvalidDuration {
                setting: setting("accept_bearer_tokens"),
                reason: "the cache bound must be between 1 second and 1 hour",
            });
        }
        Ok(ValidProvider {
            id: self.id.clone(),
            issuer,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            authorization,
            token,
            profile,
            scopes: self.scopes.clone(),
            pkce: self.pkce,
            secret_in_body: self.secret_in_body,
            url_policy: policy,
            bearer_cache: self.bearer_tokens.then_some(self.bearer_cache),
        })
    }
}

impl std::fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("profile", &self.profile)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A provider's settings, checked.
#[derive(Clone)]
pub(crate) struct ValidProvider {
    pub(crate) id: String,
    /// The sign-ins' issuer: the id, or the namespace the id stands for.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    pub(crate) authorization: Url,
    pub(crate) token: Url,
    pub(crate) profile: ValidProfile,
    pub(crate) scopes: Vec<String>,
    pub(crate) pkce: bool,
    pub(crate) secret_in_body: bool,
    pub(crate) url_policy: UrlPolicy,
    /// Bearer tokens accepted, with this cache bound.
    pub(crate) bearer_cache: Option<Duration>,
}

/// Where a provider's profile comes from.
#[derive(Clone, Debug)]
pub(crate) enum ValidProfile {
    GitHub { api: Url },
    Generic { url: Url, claims: ProfileClaims },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_their_endpoints_and_identity() {
        let github = OAuth2Provider::github("id", "secret").validate().unwrap();
        assert_eq!(github.id, "github");
        assert_eq!(github.issuer, "github");
        assert_eq!(
            github.authorization.as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            github.token.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert!(
            matches!(&github.profile, ValidProfile::GitHub { api } if api.as_str() == "https://api.github.com/")
        );
        assert_eq!(github.scopes, GITHUB_SCOPES);
        assert!(github.secret_in_body && github.pkce);

        let enterprise =
            OAuth2Provider::github_enterprise("https://git.example.com/", "id", "secret")
                .validate()
                .unwrap();
        assert_eq!(enterprise.id, "github");
        assert_eq!(enterprise.issuer, "https://git.example.com");
        assert!(
            matches!(&enterprise.profile, ValidProfile::GitHub { api } if api.as_str() == "https://git.example.com/api/v3")
        );

        let facebook = OAuth2Provider::facebook("id", "secret").validate().unwrap();
        assert_eq!(facebook.issuer, "facebook");
        match &facebook.profile {
            ValidProfile::Generic { url, claims } => {
                assert_eq!(url.query(), Some("fields=id,name,email,picture"));
                assert_eq!(claims.email_verified, None, "never verified");
                assert_eq!(claims.picture.as_deref(), Some("picture.data.url"));
            }
            ValidProfile::GitHub { .. } => panic!("Facebook is read by claim paths"),
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let error = |provider: OAuth2Provider| provider.validate().err().unwrap().to_string();
        assert!(error(OAuth2Provider::github("", "secret")).contains("client"));
        assert!(error(OAuth2Provider::github("id", "")).contains("client"));
        assert!(
            error(
                OAuth2Provider::github("id", "s")
                    .github_urls("http://github.example", "https://api.example")
            )
            .contains("authorization endpoint")
        );
        assert!(
            error(
                OAuth2Provider::facebook("id", "s").accept_bearer_tokens(Duration::from_secs(60))
            )
            .contains("accept_bearer_tokens")
        );
        assert!(
            error(OAuth2Provider::github("id", "s").accept_bearer_tokens(Duration::ZERO))
                .contains("accept_bearer_tokens")
        );
        // Plain http on loopback only when allowed.
        let local = OAuth2Provider::github("id", "s")
            .github_urls("http://127.0.0.1:9", "http://127.0.0.1:9");
        assert!(local.clone().validate().is_err());
        assert!(local.allow_http_loopback(true).validate().is_ok());
    }
}
