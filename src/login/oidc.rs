//! The OpenID Connect authorization code flow, on `openidconnect`'s client: the authorization
//! request (`response_type=code`, PKCE `S256`, `state`, `nonce`, `openid email profile` and the
//! issuer's extra scopes), and the callback's code exchange (`client_secret_basic` or
//! `client_secret_post`, whichever the issuer advertises), whose ID token the issuer's
//! verifier checks as it checks bearer tokens, with the flow's nonce.

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm, CoreResponseType, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenResponse,
};
use openidconnect::{
    AuthType, AuthenticationFlow, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyAdditionalClaims, EndpointNotSet, EndpointSet, JsonWebKeySet, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, TokenError};
use crate::token::VerifiedClaims;
use crate::token::fetch::Fetcher;
use crate::token::jwk::Jwk;
use crate::token::jwks::Endpoints;
use crate::token::verify::IssuerVerifier;

type OidcClient = Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    Jwk,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    CoreTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// What the flow keeps server-side between the redirect and the callback.
#[derive(Serialize, Deserialize)]
pub(crate) struct FlowData {
    pub(crate) issuer: String,
    /// The organisation's connection the issuer is, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<uuid::Uuid>,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    pub(crate) return_to: String,
}

/// Why a callback failed, in the terms the error page and the logs use. Never carries the
/// code, the state or a token.
#[derive(Debug)]
pub(crate) enum CallbackError {
    /// The issuer's token endpoint refused the code (reused, expired, wrong client).
    CodeRefused,
    /// The issuer could not be reached, or answered something that is not a token response.
    IssuerUnreachable,
    /// The token response carried no ID token.
    NoIdToken,
    /// The ID token failed verification.
    InvalidIdToken(Error),
    /// An OAuth2 provider's profile API refused the access token or named no usable user.
    ProfileUnusable,
}

/// The client for this issuer and sign-in client, with the issuer's discovered endpoints.
fn client(
    issuer: &IssuerVerifier,
    endpoints: &Endpoints,
    redirect_uri: &str,
) -> Option<OidcClient> {
    let rules = &issuer.rules;
    let credentials = rules.browser.as_ref()?;
    let token = endpoints.token.clone()?;
    let mut client = Client::new(
        ClientId::new(credentials.id.clone()),
        rules.issuer_url.clone(),
        JsonWebKeySet::<Jwk>::new(Vec::new()),
    )
    .set_auth_uri(endpoints.authorization.clone())
    .set_token_uri(token)
    .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).ok()?);
    if let Some(secret) = &credentials.secret {
        client = client.set_client_secret(ClientSecret::new(secret.clone()));
        // OpenID Connect Discovery §3: without a list, `client_secret_basic` is the default.
        let basic = endpoints.token_auth_methods.is_empty()
            || endpoints
                .token_auth_methods
                .contains(&CoreClientAuthMethod::ClientSecretBasic);
        client = client.set_auth_type(if basic {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        });
    }
    Some(client)
}

/// The authorization request's URL for a flow whose `state` is `key`, and the secrets the
/// callback will need.
pub(crate) fn authorization_request(
    issuer: &IssuerVerifier,
    endpoints: &Endpoints,
    redirect_uri: &str,
    key: &str,
    return_to: String,
    login_hint: Option<&str>,
) -> Option<(Url, FlowData)> {
    let client = client(issuer, endpoints, redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = super::session::random_token(32);
    let state = key.to_owned();
    let nonce_for_request = nonce.clone();
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce_for_request),
        )
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .set_pkce_challenge(challenge);
    for scope in issuer.rules.browser.iter().flat_map(|c| &c.scopes) {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if let Some(hint) = login_hint {
        request = request.add_extra_param("login_hint", hint.to_owned());
    }
    let (url, _, _) = request.url();
    Some((
        url,
        FlowData {
            issuer: issuer.rules.issuer.to_string(),
            connection: None,
            nonce,
            verifier: verifier.secret().clone(),
            return_to,
        },
    ))
}

/// Exchanges the callback's code and verifies the ID token it brings.
pub(crate) async fn finish(
    issuer: &IssuerVerifier,
    endpoints: &Endpoints,
    fetcher: &Fetcher,
    redirect_uri: &str,
    code: String,
    flow: &FlowData,
) -> Result<VerifiedClaims, CallbackError> {
    let client = client(issuer, endpoints, redirect_uri).ok_or(CallbackError::IssuerUnreachable)?;
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
        .request_async(fetcher)
        .await
        .map_err(|error| match error {
            openidconnect::RequestTokenError::ServerResponse(_) => CallbackError::CodeRefused,
            _ => CallbackError::IssuerUnreachable,
        })?;
    let id_token = response
        .id_token()
        .ok_or(CallbackError::NoIdToken)?
        .to_string();
    let access_token = response.access_token().secret();
    issuer
        .verify_sign_in(&id_token, Some(access_token), &flow.nonce)
        .await
        .map_err(|error| match error {
            Error::IssuerUnavailable { .. } => CallbackError::IssuerUnreachable,
            other => CallbackError::InvalidIdToken(other),
        })
}

impl CallbackError {
    /// A stable code for logs.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::CodeRefused => "code_refused",
            Self::IssuerUnreachable => "issuer_unreachable",
            Self::NoIdToken => "no_id_token",
            Self::ProfileUnusable => "profile_unusable",
            Self::InvalidIdToken(Error::InvalidToken(TokenError::BadAccessTokenHash)) => {
                "bad_access_token_hash"
            }
            Self::InvalidIdToken(error) => error.code(),
        }
    }
}
