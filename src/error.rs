//! Every way a request can be refused, and the one response each maps to.
//!
//! Stage: shared by every stage; uses nothing else of the crate.
//!
//! | [`Error`] | status | headers |
//! |---|---|---|
//! | [`MissingToken`](Error::MissingToken) | 401 | `WWW-Authenticate: Bearer` |
//! | [`InvalidRequest`](Error::InvalidRequest) | 400 | `WWW-Authenticate: Bearer error="invalid_request", …` |
//! | [`InvalidToken`](Error::InvalidToken) | 401 | `WWW-Authenticate: Bearer error="invalid_token", …` |
//! | [`InvalidCredentials`](Error::InvalidCredentials) | 401 | |
//! | [`IssuerUnavailable`](Error::IssuerUnavailable) | 503 | `Retry-After` |
//! | [`Denied`](Error::Denied) | 403 | |
//! | [`StoreUnavailable`](Error::StoreUnavailable) | 503 | `Retry-After` |
//! | [`StoreFailure`](Error::StoreFailure) | 500 | |
//!
//! Bodies are RFC 9457 problem documents (`application/problem+json`) with fixed text: no body,
//! header or log line ever contains the token or any other text the client sent.
//!
//! A missing token gets no `error` attribute, as RFC 6750 §3.1 asks for requests that carry no
//! authentication at all; a malformed request (two credentials, a token in the query string)
//! is `invalid_request` with 400; everything wrong with the token itself is `invalid_token`.
//!
//! The [`DefaultErrorHandler`] builds these responses; an [`ErrorHandler`] of your own can
//! replace it. Whichever builds the response, the layer adds the [`Error`] to its extensions as
//! an `Arc<Error>`, so outer layers can log or count refusals by kind.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

/// Why the layer refused a request. Each variant maps to exactly one response; see the
/// [module docs](crate::error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request carried no token.
    #[error("no bearer token")]
    MissingToken,
    /// The request's credentials were framed wrongly (RFC 6750 `invalid_request`).
    #[error("malformed request: {0}")]
    InvalidRequest(RequestError),
    /// A token was present but is not acceptable (RFC 6750 `invalid_token`).
    #[error("invalid token: {0}")]
    InvalidToken(TokenError),
    /// A credential of an application-defined sign-in source (an
    /// [`Authenticator`](crate::Authenticator)) was present but is not acceptable. The code is
    /// the source's own stable snake-case reason; the response is 401 with fixed text.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    /// No usable signing keys could be obtained for the token's issuer, and none were held.
    #[error("identity provider unavailable")]
    IssuerUnavailable {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The token is valid but its holder may not have (or use) an account.
    #[error("access denied: {0}")]
    Denied(DenyReason),
    /// The user store could not be reached, and the user was not cached.
    #[error("user store unavailable")]
    StoreUnavailable {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The user store failed in a way retrying will not fix (see the logs).
    #[error("user store failed")]
    StoreFailure,
}

/// Why a sign-in was refused (403). The [`code`](Self::code) is the problem document's `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// The e-mail domain is not on the issuer's allow-list (or the address is malformed).
    #[error("e-mail domain not allowed")]
    DomainNotAllowed,
    /// The issuer has a domain allow-list and did not assert the address was verified.
    #[error("e-mail address not verified")]
    EmailNotVerified,
    /// A pinned claim (tenant, hosted domain, …) does not have the required value.
    #[error("tenant not allowed")]
    ClaimMismatch,
    /// The person is not in a group the issuer requires.
    #[error("required group missing")]
    MissingGroup,
    /// Strict role mapping is on and no role rule matched.
    #[error("no role mapping matched")]
    NoMatchingRole,
    /// No account exists for this person, and their sign-in may not create one (accounts
    /// are pre-provisioned only, for the issuer or the source).
    #[error("no account provisioned")]
    NotProvisioned,
    /// The account is waiting for approval.
    #[error("account pending approval")]
    PendingApproval,
    /// The account is deactivated.
    #[error("account deactivated")]
    Deactivated,
    /// The account was deleted; its identities are never provisioned again.
    #[error("account deleted")]
    Deleted,
    /// The application's admission predicate refused, with its own code.
    #[error("refused by policy")]
    Policy(&'static str),
    /// The legacy account this first sign-in would adopt was adopted by another identity: a
    /// legacy account goes to one person only.
    #[error("legacy account already adopted")]
    LegacyAccountClaimed,
    /// The account belongs to another organisation than the connection the sign-in came
    /// through: no connection signs in to another organisation's accounts.
    #[error("account of another organisation")]
    OtherOrganization,
}

impl DenyReason {
    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Self::DomainNotAllowed => "domain_not_allowed",
            Self::EmailNotVerified => "email_not_verified",
            Self::ClaimMismatch => "claim_mismatch",
            Self::MissingGroup => "missing_group",
            Self::NoMatchingRole => "no_matching_role",
            Self::NotProvisioned => "not_provisioned",
            Self::PendingApproval => "pending_approval",
            Self::Deactivated => "deactivated",
            Self::Deleted => "deleted",
            Self::Policy(code) => code,
            Self::LegacyAccountClaimed => "legacy_account_claimed",
            Self::OtherOrganization => "other_organization",
        }
    }

    /// Fixed text for the problem document's `detail`.
    pub fn description(self) -> &'static str {
        match self {
            Self::DomainNotAllowed => "sign-ins from this e-mail domain are not allowed",
            Self::EmailNotVerified => "a verified e-mail address is required",
            Self::ClaimMismatch => "sign-ins from this tenant are not allowed",
            Self::MissingGroup => "a required group membership is missing",
            Self::NoMatchingRole => "no role is granted to this account",
            Self::NotProvisioned => {
                "no account exists for this person, and sign-in cannot create one"
            }
            Self::PendingApproval => "the account is waiting for approval",
            Self::Deactivated => "the account is deactivated",
            Self::Deleted => "the account was deleted",
            Self::Policy(_) => "sign-in refused by policy",
            Self::LegacyAccountClaimed => {
                "the existing account this sign-in matches belongs to another sign-in"
            }
            Self::OtherOrganization => "the account belongs to another organization",
        }
    }
}

/// How a request's credentials were framed wrongly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// More than one `Authorization` header, or a token in more than one place.
    #[error("more than one credential")]
    MultipleCredentials,
    /// A `Bearer` authorization header without a single well-formed token after it.
    #[error("malformed authorization header")]
    MalformedAuthorization,
    /// An `access_token` query parameter: refused, because URLs end up in logs and histories.
    #[error("token in query string")]
    TokenInQuery,
    /// More than one cookie with the configured token cookie's name.
    #[error("ambiguous token cookie")]
    AmbiguousCookie,
}

impl RequestError {
    /// The fixed text used as `error_description` and problem `detail`.
    pub fn description(self) -> &'static str {
        match self {
            Self::MultipleCredentials => "more than one credential in the request",
            Self::MalformedAuthorization => "malformed authorization header",
            Self::TokenInQuery => "tokens are not accepted in the query string",
            Self::AmbiguousCookie => "more than one token cookie",
        }
    }
}

/// What is wrong with a token. The description of each is fixed text, safe to show a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a compact JWS with three canonical base64url segments and strict JSON.
    #[error("malformed token")]
    Malformed,
    /// Longer than the configured bound; refused before any parsing.
    #[error("token too large")]
    TooLarge,
    /// `alg` is not in the issuer's allow-list (this includes `none` and every HMAC).
    #[error("unsupported signing algorithm")]
    UnsupportedAlgorithm,
    /// A `crit`, `cty`, `zip` or `enc` header: extensions, nesting or encryption.
    #[error("unsupported token header")]
    UnsupportedHeader,
    /// `iss` is missing or names an issuer that is not configured.
    #[error("untrusted issuer")]
    UntrustedIssuer,
    /// `aud` names none of the accepted audiences, or names an audience not trusted.
    #[error("wrong audience")]
    WrongAudience,
    /// `azp` (or an access token's `client_id`) is not an allowed client.
    #[error("client not allowed")]
    UnauthorizedParty,
    /// The `typ` header (or, under a provider's access-token profile, the provider's own
    /// marker) names no kind of token this crate knows.
    #[error("unsupported token type: typ must be JWT, at+jwt or absent")]
    WrongTokenType,
    /// An ID token where the issuer is accepted for access tokens only.
    #[error(
        "expected an access token: typ at+jwt (RFC 9068), or the provider's own access tokens \
         when the issuer is configured with its preset; this is an ID token"
    )]
    ExpectedAccessToken,
    /// An access token where the issuer is accepted for ID tokens only.
    #[error("expected an ID token; this is an access token")]
    ExpectedIdToken,
    /// `exp` has passed (beyond the clock leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the clock leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the clock leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iat` is older than the issuer's maximum token age.
    #[error("token too old")]
    TooOld,
    /// No key of the issuer's key set matches `kid` and `alg`, even after a refresh.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `sub` is missing, empty, longer than 255 bytes or contains control characters.
    #[error("invalid subject")]
    InvalidSubject,
    /// A claim the token's kind requires is missing or has the wrong type.
    #[error("missing required claim")]
    MissingClaim,
    /// A sign-in's ID token carries an `at_hash` that is not the hash of the access token it
    /// came with.
    #[error("access token hash mismatch")]
    BadAccessTokenHash,
    /// An opaque token its issuer's introspection endpoint says is not active: expired,
    /// revoked, or never issued.
    #[error("token not active")]
    Inactive,
    /// An opaque token introspected as something other than an access token (a refresh token,
    /// a sender-constrained token whose proof this crate does not check).
    #[error("not a bearer access token")]
    NotAnAccessToken,
    /// A JWT from an issuer whose tokens are accepted by introspection only.
    #[error("this issuer's tokens are checked by introspection; send its opaque access token")]
    ExpectedOpaqueToken,
}

impl TokenError {
    /// The fixed text used as `error_description` and problem `detail`.
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::TooLarge => "token too large",
            Self::UnsupportedAlgorithm => "unsupported signing algorithm",
            Self::UnsupportedHeader => "unsupported token header",
            Self::UntrustedIssuer => "untrusted issuer",
            Self::WrongAudience => "wrong audience",
            Self::UnauthorizedParty => "client not allowed",
            Self::WrongTokenType => "unsupported token type: typ must be JWT, at+jwt or absent",
            Self::ExpectedAccessToken => {
                "expected an access token: typ at+jwt (RFC 9068), or the provider's own access \
                 tokens when the issuer is configured with its preset; this is an ID token"
            }
            Self::ExpectedIdToken => "expected an ID token; this is an access token",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::IssuedInFuture => "token issued in the future",
            Self::TooOld => "token too old",
            Self::UnknownKey => "unknown signing key",
            Self::BadSignature => "invalid signature",
            Self::InvalidSubject => "invalid subject",
            Self::MissingClaim => "missing required claim",
            Self::BadAccessTokenHash => "access token hash mismatch",
            Self::Inactive => "token not active",
            Self::NotAnAccessToken => "not a bearer access token",
            Self::ExpectedOpaqueToken => {
                "this issuer's tokens are checked by introspection; send its opaque access token"
            }
        }
    }

    /// A stable snake-case code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnsupportedHeader => "unsupported_header",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::UnauthorizedParty => "unauthorized_party",
            Self::WrongTokenType => "wrong_token_type",
            Self::ExpectedAccessToken => "expected_access_token",
            Self::ExpectedIdToken => "expected_id_token",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::TooOld => "too_old",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::InvalidSubject => "invalid_subject",
            Self::MissingClaim => "missing_claim",
            Self::BadAccessTokenHash => "bad_access_token_hash",
            Self::Inactive => "inactive",
            Self::NotAnAccessToken => "not_an_access_token",
            Self::ExpectedOpaqueToken => "expected_opaque_token",
        }
    }
}

impl Error {
    /// The status code of this error's response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken(_) | Self::InvalidCredentials(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::IssuerUnavailable { .. } | Self::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::StoreFailure => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable snake-case code naming the reason; the problem document's `code` member.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidToken(err) => err.code(),
            Self::InvalidCredentials(code) => code,
            Self::IssuerUnavailable { .. } => "issuer_unavailable",
            Self::Denied(reason) => reason.code(),
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::StoreFailure => "store_failure",
        }
    }

    /// Fixed, client-safe text describing the error.
    pub fn description(&self) -> &'static str {
        match self {
            Self::MissingToken => "a bearer token is required",
            Self::InvalidRequest(err) => err.description(),
            Self::InvalidToken(err) => err.description(),
            Self::InvalidCredentials(_) => "the credentials are not acceptable",
            Self::IssuerUnavailable { .. } => "the identity provider's keys are unavailable",
            Self::Denied(reason) => reason.description(),
            Self::StoreUnavailable { .. } => "the user store is unavailable",
            Self::StoreFailure => "the user store failed",
        }
    }

    /// The `WWW-Authenticate` challenge for a 400 or 401, per RFC 6750 §3.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let (code, description) = match self {
            Self::MissingToken => return Some(HeaderValue::from_static("Bearer")),
            Self::InvalidRequest(err) => ("invalid_request", err.description()),
            Self::InvalidToken(err) => ("invalid_token", err.description()),
            _ => return None,
        };
        // Descriptions are fixed ASCII without quotes or backslashes (RFC 6750 §3).
        let value = format!(r#"Bearer error="{code}", error_description="{description}""#);
        HeaderValue::from_str(&value).ok()
    }

    /// Seconds for `Retry-After`, for errors a client should retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::IssuerUnavailable { retry_after } | Self::StoreUnavailable { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// Turns a refusal into the response the client gets.
///
/// Implemented by [`DefaultErrorHandler`] and by every
/// `Fn(&Error) -> Response<B> + Clone + Send + Sync + 'static`.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_jit_provisioning::{Error, ProvisioningLayer};
///
/// let handler = |err: &Error| {
///     Response::builder()
///         .status(err.status())
///         .body(axum::body::Body::from(format!("refused: {}", err.code())))
///         .unwrap()
/// };
/// let builder = ProvisioningLayer::builder().error_handler(handler);
/// # drop(builder);
/// ```
pub trait ErrorHandler<B>: Clone + Send + Sync + 'static {
    /// The response for `error`.
    fn response(&self, error: &Error) -> Response<B>;
}

impl<B, F> ErrorHandler<B> for F
where
    F: Fn(&Error) -> Response<B> + Clone + Send + Sync + 'static,
{
    fn response(&self, error: &Error) -> Response<B> {
        self(error)
    }
}

/// The built-in responses: RFC 6750 challenges, `Retry-After`, and an RFC 9457 problem
/// document with fixed text.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DefaultErrorHandler;

impl<B> ErrorHandler<B> for DefaultErrorHandler
where
    B: From<Bytes>,
{
    fn response(&self, error: &Error) -> Response<B> {
        let status = error.status();
        let body = problem_document(status, error.code(), error.description());
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = error.www_authenticate() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(retry_after) = error.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
        }
        response
    }
}

/// An RFC 9457 problem document. Every member is fixed text chosen by this crate.
pub(crate) fn problem_document(status: StatusCode, code: &str, detail: &str) -> Bytes {
    let doc = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    Bytes::from(doc.to_string())
}

/// A setting given to [`ProvisioningLayerBuilder`](crate::ProvisioningLayerBuilder) that
/// cannot work. The message names the setting and, for issuer settings, the issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No sign-in source was configured: no issuer, authenticator or issuer policy.
    #[error(
        "no sign-in source configured: add an issuer with `.issuer(Issuer::new(..))` or a source \
         with `.authenticator(..)`"
    )]
    NoIssuer,
    /// The issuer URL does not parse as an absolute URL with a host, or carries a query,
    /// fragment or credentials.
    #[error("issuer `{issuer}`: not an absolute URL without query, fragment or credentials")]
    InvalidIssuerUrl {
        /// The issuer as configured.
        issuer: String,
    },
    /// The issuer URL is not `https`, and plain http was not allowed for it.
    #[error(
        "issuer `{issuer}`: must be https (plain http needs `allow_http_loopback` and a loopback host)"
    )]
    InsecureIssuerUrl {
        /// The issuer as configured.
        issuer: String,
    },
    /// Plain http was allowed but the issuer's host is not a loopback address.
    #[error("issuer `{issuer}`: plain http is only allowed for loopback hosts")]
    HttpIssuerNotLoopback {
        /// The issuer as configured.
        issuer: String,
    },
    /// The same issuer URL was configured twice.
    #[error("issuer `{issuer}` configured twice")]
    DuplicateIssuer {
        /// The issuer as configured.
        issuer: String,
    },
    /// The issuer has no accepted audience.
    #[error("issuer `{issuer}`: no audience configured")]
    NoAudience {
        /// The issuer as configured.
        issuer: String,
    },
    /// The issuer's algorithm allow-list is empty.
    #[error("issuer `{issuer}`: algorithm list is empty")]
    NoAlgorithm {
        /// The issuer as configured.
        issuer: String,
    },
    /// The issuer accepts neither ID tokens nor access tokens.
    #[error("issuer `{issuer}`: no token kind accepted")]
    NoTokenKind {
        /// The issuer as configured.
        issuer: String,
    },
    /// A duration setting is out of its allowed range.
    #[error("{setting}: {reason}")]
    InvalidDuration {
        /// The setting, e.g. `issuer `https://…`: leeway`.
        setting: String,
        /// What the allowed range is.
        reason: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: String,
        /// Why it cannot work.
        reason: &'static str,
    },
    /// SAML sign-in cannot work as configured: unreadable IdP metadata, an IdP without a
    /// signing key, an unusable SP key, …; the text says which and what to fix.
    #[error("saml: {0}")]
    Saml(String),
    /// The HTTP client for discovery and key sets could not be built (TLS roots, …).
    #[error("HTTP client for the identity providers could not be built")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Displays an error with its sources, `a: b: c`, for logs.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(error: &Error) -> Response<Bytes> {
        DefaultErrorHandler.response(error)
    }

    #[test]
    fn each_error_maps_to_its_response() {
        struct Case {
            error: Error,
            status: u16,
            challenge: Option<&'static str>,
            retry_after: Option<&'static str>,
        }
        let cases = [
            Case {
                error: Error::MissingToken,
                status: 401,
                challenge: Some("Bearer"),
                retry_after: None,
            },
            Case {
                error: Error::InvalidRequest(RequestError::MultipleCredentials),
                status: 400,
                challenge: Some(
                    r#"Bearer error="invalid_request", error_description="more than one credential in the request""#,
                ),
                retry_after: None,
            },
            Case {
                error: Error::InvalidToken(TokenError::Expired),
                status: 401,
                challenge: Some(
                    r#"Bearer error="invalid_token", error_description="token expired""#,
                ),
                retry_after: None,
            },
            Case {
                error: Error::InvalidCredentials("bad_proxy_signature"),
                status: 401,
                challenge: None,
                retry_after: None,
            },
            Case {
                error: Error::IssuerUnavailable {
                    retry_after: Duration::from_millis(200),
                },
                status: 503,
                challenge: None,
                retry_after: Some("1"),
            },
            Case {
                error: Error::Denied(DenyReason::DomainNotAllowed),
                status: 403,
                challenge: None,
                retry_after: None,
            },
            Case {
                error: Error::StoreUnavailable {
                    retry_after: Duration::from_secs(5),
                },
                status: 503,
                challenge: None,
                retry_after: Some("5"),
            },
            Case {
                error: Error::StoreFailure,
                status: 500,
                challenge: None,
                retry_after: None,
            },
        ];
        for case in cases {
            let name = case.error.to_string();
            let res = response(&case.error);
            assert_eq!(res.status().as_u16(), case.status, "{name}");
            let header = |h| res.headers().get(h).map(|v| v.to_str().unwrap());
            assert_eq!(header(WWW_AUTHENTICATE), case.challenge, "{name}");
            assert_eq!(header(RETRY_AFTER), case.retry_after, "{name}");
            assert_eq!(header(CONTENT_TYPE), Some("application/problem+json"));
            let doc: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
            assert_eq!(doc["status"], case.status, "{name}");
        }
    }

    #[test]
    fn every_token_error_has_a_valid_challenge() {
        use TokenError::*;
        for err in [
            Malformed,
            TooLarge,
            UnsupportedAlgorithm,
            UnsupportedHeader,
            UntrustedIssuer,
            WrongAudience,
            UnauthorizedParty,
            WrongTokenType,
            ExpectedAccessToken,
            ExpectedIdToken,
            Expired,
            NotYetValid,
            IssuedInFuture,
            TooOld,
            UnknownKey,
            BadSignature,
            InvalidSubject,
            MissingClaim,
            BadAccessTokenHash,
        ] {
            let description = err.description();
            assert!(
                description
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{description}"
            );
            assert!(Error::InvalidToken(err).www_authenticate().is_some());
            assert_eq!(err.to_string(), description);
        }
    }
}
