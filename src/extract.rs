//! axum extractors (feature `axum`).
//!
//! [`VerifiedClaims`] and [`ProvisionedUser`], and their `Option`s, read what the layer put into
//! the request extensions:
//!
//! | layer | request | `T` | `Option<T>` |
//! |---|---|---|---|
//! | installed | valid token (and, for `ProvisionedUser`, a store) | the value | `Some(value)` |
//! | optional | no token | 401 `WWW-Authenticate: Bearer` | `None` |
//! | not installed (or no store, for `ProvisionedUser`) | any | 500, naming what is missing | `None` |
//!
//! (A request with a bad token never reaches the handler: the layer refuses it.)

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use std::convert::Infallible;

use crate::layer::NoCredentials;
use crate::token::VerifiedClaims;
use crate::user::ProvisionedUser;

/// Why an extractor found nothing to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimsRejection {
    /// An optional layer let the request through without a token, and the handler requires
    /// one: 401.
    Unauthenticated,
    /// No [`ProvisioningLayer`](crate::ProvisioningLayer) ran for this request: a
    /// misconfiguration, 500.
    MissingLayer,
    /// A `ProvisionedUser` was asked for, but the layer has no store: a misconfiguration, 500.
    MissingStore,
}

impl ClaimsRejection {
    /// The status of the rejection's response.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::MissingLayer | Self::MissingStore => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The fixed text of the rejection's response.
    pub fn body_text(self) -> &'static str {
        match self {
            Self::Unauthenticated => "a bearer token is required",
            Self::MissingLayer => {
                "no verified claims in the request: is ProvisioningLayer installed on this route?"
            }
            Self::MissingStore => {
                "no provisioned user in the request: was ProvisioningLayer built with a store?"
            }
        }
    }
}

impl std::fmt::Display for ClaimsRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for ClaimsRejection {}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        tracing::trace!(
            target: "tower_jit_provisioning::rejection",
            status = self.status().as_u16(),
            body = self.body_text(),
            rejection_type = "ClaimsRejection",
            "rejecting request"
        );
        let mut response = (self.status(), self.body_text()).into_response();
        if self == Self::Unauthenticated {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Self>() {
            return Ok(claims.clone());
        }
        if parts.extensions.get::<NoCredentials>().is_some() {
            Err(ClaimsRejection::Unauthenticated)
        } else {
            Err(ClaimsRejection::MissingLayer)
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedClaims {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ProvisionedUser {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<Self>() {
            return Ok(user.clone());
        }
        if parts.extensions.get::<NoCredentials>().is_some() {
            Err(ClaimsRejection::Unauthenticated)
        } else if parts.extensions.get::<VerifiedClaims>().is_some() {
            Err(ClaimsRejection::MissingStore)
        } else {
            Err(ClaimsRejection::MissingLayer)
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ProvisionedUser {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
