//! Signing in at an OAuth2-only provider: the authorization request and the code exchange on
//! the `oauth2` crate's basic client, then the provider's profile API, read into a
//! [`SignIn`]. GitHub's API is read as GitHub documents it: the numeric `id` as the subject,
//! the e-mail address from `/user/emails` (primary and verified, or none), organisation and
//! team memberships as groups. The same profile read answers for GitHub access tokens sent as
//! bearer tokens.

use std::time::{Duration, Instant};

use ::oauth2::basic::{BasicClient, BasicRequestTokenError};
use ::oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use chrono::{TimeDelta, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::oidc::CallbackError;
use super::provider::{ProfileClaims, ValidProfile, ValidProvider};
use crate::sign_in::{SignIn, SignInSource, lookup, strings};
use crate::token::VerifiedClaims;
use crate::token::answer::{RETRY_AFTER, TokenAnswerer, Unanswered, Verdict};
use crate::token::fetch::Fetcher;

type ProviderClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The prefixes of GitHub's access tokens: OAuth apps, GitHub Apps acting for a user, classic
/// and fine-grained personal access tokens.
const GITHUB_TOKEN_PREFIXES: [&str; 4] = ["gho_", "ghu_", "ghp_", "github_pat_"];

/// What a provider flow keeps server-side between the redirect and the callback.
#[derive(Serialize, Deserialize)]
pub(crate) struct ProviderFlowData {
    pub(crate) provider: String,
    pub(crate) verifier: Option<String>,
    pub(crate) return_to: String,
}

/// A configured provider and the HTTP client it is reached with.
pub(crate) struct Provider {
    pub(crate) settings: ValidProvider,
    fetcher: Fetcher,
}

/// Why a profile could not be read.
#[derive(Debug)]
pub(crate) enum ProfileError {
    /// The provider refused the access token (revoked, expired, not its own).
    TokenRefused,
    /// The provider could not be reached or answered an error.
    Unavailable,
    /// The answer has no usable user id.
    Unusable,
}

impl Provider {
    pub(crate) fn new(settings: ValidProvider, fetcher: Fetcher) -> Self {
        Self { settings, fetcher }
    }

    fn client(&self, redirect_uri: &str) -> Option<ProviderClient> {
        let settings = &self.settings;
        let mut client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(settings.authorization.clone()))
            .set_token_uri(TokenUrl::from_url(settings.token.clone()))
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).ok()?)
            .set_auth_type(if settings.secret_in_body {
                AuthType::RequestBody
            } else {
                AuthType::BasicAuth
            });
        if let Some(secret) = &settings.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Some(client)
    }

    /// The authorization request's URL for a flow whose `state` is `key`.
    pub(crate) fn authorization_request(
        &self,
        redirect_uri: &str,
        key: &str,
        return_to: String,
        login_hint: Option<&str>,
    ) -> Option<(Url, ProviderFlowData)> {
        let client = self.client(redirect_uri)?;
        let state = key.to_owned();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        let verifier = if self.settings.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            Some(verifier.secret().clone())
        } else {
            None
        };
        if let Some(hint) = login_hint {
            // GitHub names its hint `login`; OpenID Connect's name is the common one elsewhere.
            let name = match self.settings.profile {
                ValidProfile::GitHub { .. } => "login",
                ValidProfile::Generic { .. } => "login_hint",
            };
            request = request.add_extra_param(name, hint.to_owned());
        }
        let (url, _) = request.url();
        Some((
            url,
            ProviderFlowData {
                provider: self.settings.id.clone(),
                verifier,
                return_to,
            },
        ))
    }

    /// Exchanges the callback's code and reads the profile the access token opens.
    pub(crate) async fn finish(
        &self,
        redirect_uri: &str,
        code: String,
        flow: &ProviderFlowData,
    ) -> Result<SignIn, CallbackError> {
        let client = self
            .client(redirect_uri)
            .ok_or(CallbackError::IssuerUnreachable)?;
        let mut exchange = client.exchange_code(AuthorizationCode::new(code));
        if let Some(verifier) = &flow.verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()));
        }
        let response = exchange
            .request_async(&self.fetcher)
            .await
            .map_err(exchange_error)?;
        let expires_at = response
            .expires_in()
            .and_then(|lifetime| TimeDelta::from_std(lifetime).ok())
            .map(|lifetime| Utc::now() + lifetime);
        self.sign_in(response.access_token().secret(), expires_at)
            .await
            .map_err(|error| match error {
                ProfileError::Unavailable => CallbackError::IssuerUnreachable,
                ProfileError::TokenRefused | ProfileError::Unusable => {
                    CallbackError::ProfileUnusable
                }
            })
    }

    /// The sign-in of the person `access_token` belongs to.
    pub(crate) async fn sign_in(
        &self,
        access_token: &str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<SignIn, ProfileError> {
        let mut builder = match &self.settings.profile {
            ValidProfile::GitHub { api } => self.github(api, access_token).await?,
            ValidProfile::Generic { url, claims } => {
                let profile = self.get(url, access_token, "application/json").await?;
                self.generic(profile, claims)?
            }
        };
        if let Some(at) = expires_at {
            builder = builder.expires_at(at);
        }
        builder.build().map_err(|_| ProfileError::Unusable)
    }

    async fn github(
        &self,
        api: &Url,
        access_token: &str,
    ) -> Result<crate::sign_in::SignInBuilder, ProfileError> {
        let endpoint = |path: &str| {
            let mut url = api.clone();
            let base = url.path().trim_end_matches('/').to_owned();
            url.set_path(&format!("{base}{path}"));
            url.set_query(Some("per_page=100"));
            url
        };
        let accept = "application/vnd.github+json";
        let Value::Object(mut user) = self.get(&endpoint("/user"), access_token, accept).await?
        else {
            return Err(ProfileError::Unusable);
        };
        let subject = match user.get("id") {
            Some(Value::Number(id)) if id.is_u64() => id.to_string(),
            _ => return Err(ProfileError::Unusable),
        };
        // The profile's `email` is whatever the person made public, verified or not: never
        // the account's address.
        user.remove("email");
        if let Some(avatar) = user.get("avatar_url").cloned() {
            user.insert("picture".into(), avatar);
        }
        if let Some(login) = user.get("login").cloned() {
            user.insert("preferred_username".into(), login);
        }
        let mut builder =
            SignIn::builder(SignInSource::OAuth2, self.settings.issuer.as_str(), subject);
        // Only an address GitHub verified, and only the primary one.
        if let Ok(Value::Array(emails)) = self
            .get(&endpoint("/user/emails"), access_token, accept)
            .await
        {
            let primary = emails.iter().find(|email| {
                email.get("primary") == Some(&Value::Bool(true))
                    && email.get("verified") == Some(&Value::Bool(true))
            });
            if let Some(address) = primary.and_then(|e| e.get("email")).and_then(Value::as_str) {
                builder = builder.email(address, true);
            }
        }
        // Memberships are asserted only when both lists were read: a partial answer must not
        // revoke roles the missing half would justify.
        let orgs = self
            .get_all(&endpoint("/user/orgs"), access_token, accept)
            .await;
        let teams = self
            .get_all(&endpoint("/user/teams"), access_token, accept)
            .await;
        match (orgs, teams) {
            (Ok(orgs), Ok(teams)) => {
                let mut groups: Vec<String> = orgs
                    .iter()
                    .filter_map(|org| org.get("login").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect();
                groups.extend(teams.iter().filter_map(|team| {
                    let org = team.pointer("/organization/login")?.as_str()?;
                    let slug = team.get("slug")?.as_str()?;
                    Some(format!("{org}/{slug}"))
                }));
                builder = builder.groups(groups);
            }
            _ => {
                user.remove("groups");
            }
        }
        Ok(builder.attributes(user))
    }

    fn generic(
        &self,
        profile: Value,
        claims: &ProfileClaims,
    ) -> Result<crate::sign_in::SignInBuilder, ProfileError> {
        let Value::Object(mut profile) = profile else {
            return Err(ProfileError::Unusable);
        };
        let subject = match lookup(&profile, &claims.id) {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => return Err(ProfileError::Unusable),
        };
        let text = |path: &Option<String>, profile: &Map<String, Value>| {
            path.as_deref()
                .and_then(|path| lookup(profile, path))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let email = text(&claims.email, &profile);
        let verified = claims
            .email_verified
            .as_deref()
            .and_then(|path| lookup(&profile, path))
            == Some(&Value::Bool(true));
        let groups = claims
            .groups
            .as_deref()
            .and_then(|path| lookup(&profile, path))
            .map(strings);
        for (name, value) in [
            ("name", text(&claims.name, &profile)),
            ("picture", text(&claims.picture, &profile)),
        ] {
            match value {
                Some(value) => profile.insert(name.into(), Value::String(value)),
                None => profile.remove(name),
            };
        }
        profile.remove("email");
        profile.remove("groups");
        let mut builder =
            SignIn::builder(SignInSource::OAuth2, self.settings.issuer.as_str(), subject);
        if let Some(email) = email {
            builder = builder.email(email, verified);
        }
        if let Some(groups) = groups {
            builder = builder.groups(groups);
        }
        Ok(builder.attributes(profile))
    }

    /// A GET of the provider's API with the person's access token; its JSON.
    async fn get(
        &self,
        url: &Url,
        access_token: &str,
        accept: &str,
    ) -> Result<Value, ProfileError> {
        self.fetch(url, access_token, accept)
            .await
            .map(|(_, body)| body)
    }

    /// Every page of a GitHub list, following `Link: <…>; rel="next"` within the API's own
    /// origin, for at most [`MAX_PAGES`] pages.
    async fn get_all(
        &self,
        url: &Url,
        access_token: &str,
        accept: &str,
    ) -> Result<Vec<Value>, ProfileError> {
        let mut items = Vec::new();
        let mut next = Some(url.clone());
        for _ in 0..MAX_PAGES {
            let Some(page) = next.take() else { break };
            let (headers, body) = self.fetch(&page, access_token, accept).await?;
            let Value::Array(page_items) = body else {
                return Err(ProfileError::Unusable);
            };
            items.extend(page_items);
            next = next_page(&headers).filter(|next| next.origin() == url.origin());
        }
        if next.is_some() {
            // More than the bound: a partial list must not be taken for the whole one.
            return Err(ProfileError::Unusable);
        }
        Ok(items)
    }

    async fn fetch(
        &self,
        url: &Url,
        access_token: &str,
        accept: &str,
    ) -> Result<(http::HeaderMap, Value), ProfileError> {
        use ::oauth2::AsyncHttpClient;
        let request = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, accept)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {access_token}"),
            )
            .header("x-github-api-version", "2022-11-28")
            .body(Vec::new())
            .map_err(|_| ProfileError::Unusable)?;
        let response = self.fetcher.call(request).await.map_err(|error| {
            tracing::warn!(
                target: "tower_jit_provisioning::login",
                provider = %self.settings.id,
                error = %crate::error::ErrorChain(&error),
                "profile API unreachable"
            );
            ProfileError::Unavailable
        })?;
        match response.status().as_u16() {
            200 => {
                let body =
                    serde_json::from_slice(response.body()).map_err(|_| ProfileError::Unusable)?;
                Ok((response.headers().clone(), body))
            }
            401 => Err(ProfileError::TokenRefused),
            status @ (403 | 404) => {
                tracing::debug!(
                    target: "tower_jit_provisioning::login",
                    provider = %self.settings.id,
                    status,
                    "profile API refused a request"
                );
                Err(ProfileError::TokenRefused)
            }
            status => {
                tracing::warn!(
                    target: "tower_jit_provisioning::login",
                    provider = %self.settings.id,
                    status,
                    "profile API failed"
                );
                Err(ProfileError::Unavailable)
            }
        }
    }
}

/// The most pages of one list read at sign-in: 1,000 organisations or teams at 100 a page.
const MAX_PAGES: usize = 10;

/// The `rel="next"` target of an RFC 8288 `Link` header, as GitHub paginates.
fn next_page(headers: &http::HeaderMap) -> Option<Url> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let next = params
                .split(';')
                .any(|param| matches!(param.trim(), "rel=\"next\"" | "rel=next"));
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            next.then(|| Url::parse(target).ok()).flatten()
        })
}

/// A refused code is the browser's problem (reused, expired); anything else is the provider's.
/// GitHub answers a refused code with `200` and an `error` member, which fails to parse as a
/// token response.
fn exchange_error(error: BasicRequestTokenError<crate::token::fetch::FetchError>) -> CallbackError {
    match error {
        ::oauth2::RequestTokenError::ServerResponse(_) => CallbackError::CodeRefused,
        ::oauth2::RequestTokenError::Parse(_, body) => {
            let refused = serde_json::from_slice::<Value>(&body)
                .ok()
                .is_some_and(|answer| answer.get("error").is_some_and(Value::is_string));
            if refused {
                CallbackError::CodeRefused
            } else {
                CallbackError::IssuerUnreachable
            }
        }
        _ => CallbackError::IssuerUnreachable,
    }
}

impl TokenAnswerer for Provider {
    fn recognizes(&self, token: &str) -> bool {
        matches!(self.settings.profile, ValidProfile::GitHub { .. })
            && self.settings.bearer_cache.is_some()
            && GITHUB_TOKEN_PREFIXES
                .iter()
                .any(|prefix| token.starts_with(prefix))
    }

    fn ask<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Verdict, Unanswered>> {
        Box::pin(async move {
            let bound = self
                .settings
                .bearer_cache
                .unwrap_or(Duration::from_secs(60));
            let now = Utc::now();
            let expires_at = now + TimeDelta::from_std(bound).unwrap_or_default();
            match self.sign_in(token, Some(expires_at)).await {
                Ok(sign_in) => match VerifiedClaims::from_answer(sign_in, now) {
                    Some(claims) => Ok(Verdict::Accepted {
                        claims,
                        valid_until: Instant::now() + bound,
                    }),
                    None => Ok(Verdict::Refused(crate::error::TokenError::Malformed)),
                },
                Err(ProfileError::TokenRefused) => Ok(Verdict::Inactive),
                Err(ProfileError::Unusable) => {
                    Ok(Verdict::Refused(crate::error::TokenError::InvalidSubject))
                }
                Err(ProfileError::Unavailable) => Err(Unanswered {
                    retry_after: RETRY_AFTER,
                }),
            }
        })
    }
}
