//! axum extractors (feature `axum`).
//!
//! Stage: injection, after the layer. Reads what the layer put into the extensions; uses
//! `provision`, `sign_in` and `token` for the types only.
//!
//! [`ProvisionedUser`], [`SignIn`] and [`VerifiedClaims`] (bearer tokens only), and their
//! `Option`s, read what the layer put into the request extensions:
//!
//! | layer | request | `T` | `Option<T>` |
//! |---|---|---|---|
//! | installed | valid credential (and, for `ProvisionedUser`, a store) | the value | `Some(value)` |
//! | optional | no credential | 401 `WWW-Authenticate: Bearer` | `None` |
//! | not installed (or no store, for `ProvisionedUser`) | any | 500, naming what is missing | `None` |
//!
//! (A request with a bad token never reaches the handler: the layer refuses it.)

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use std::any::TypeId;
use std::convert::Infallible;

use crate::layer::NoCredentials;
use crate::provision::ProvisionedUser;
use crate::sign_in::SignIn;
use crate::token::VerifiedClaims;

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
            Self::Unauthenticated => "sign-in required: a bearer token or a session cookie",
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

/// The value of type `T` the layer put into the request, or why there is none.
fn from_layer<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, ClaimsRejection> {
    if let Some(value) = parts.extensions.get::<T>() {
        return Ok(value.clone());
    }
    if parts.extensions.get::<NoCredentials>().is_some() {
        Err(ClaimsRejection::Unauthenticated)
    } else if TypeId::of::<T>() == TypeId::of::<ProvisionedUser>()
        && parts.extensions.get::<SignIn>().is_some()
    {
        Err(ClaimsRejection::MissingStore)
    } else {
        Err(ClaimsRejection::MissingLayer)
    }
}

/// `T` and `Option<T>` as extractors of what the layer put into the request.
macro_rules! extractor {
    ($type:ty) => {
        impl<S: Send + Sync> FromRequestParts<S> for $type {
            type Rejection = ClaimsRejection;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Self, Self::Rejection> {
                from_layer(parts)
            }
        }

        impl<S: Send + Sync> OptionalFromRequestParts<S> for $type {
            type Rejection = Infallible;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Option<Self>, Self::Rejection> {
                Ok(parts.extensions.get::<Self>().cloned())
            }
        }
    };
}

extractor!(ProvisionedUser);
extractor!(SignIn);
extractor!(VerifiedClaims);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::SignInSource;

    fn parts(fill: impl FnOnce(&mut http::Extensions)) -> Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        fill(&mut parts.extensions);
        parts
    }

    #[test]
    fn each_extractor_says_what_is_missing() {
        let sign_in = SignIn::builder(SignInSource::Custom("test"), "https://idp", "s")
            .build()
            .unwrap();
        let nothing = parts(|_| {});
        let anonymous = parts(|e| {
            e.insert(NoCredentials);
        });
        let no_store = parts(|e| {
            e.insert(sign_in.clone());
        });
        let missing = |parts: &Parts| from_layer::<ProvisionedUser>(parts).unwrap_err();
        assert_eq!(missing(&nothing), ClaimsRejection::MissingLayer);
        assert_eq!(missing(&anonymous), ClaimsRejection::Unauthenticated);
        assert_eq!(missing(&no_store), ClaimsRejection::MissingStore);
        assert_eq!(
            from_layer::<VerifiedClaims>(&nothing).unwrap_err(),
            ClaimsRejection::MissingLayer
        );
        assert_eq!(
            from_layer::<SignIn>(&anonymous).unwrap_err(),
            ClaimsRejection::Unauthenticated
        );
        assert_eq!(from_layer::<SignIn>(&no_store).unwrap().subject(), "s");
        for rejection in [
            ClaimsRejection::MissingLayer,
            ClaimsRejection::MissingStore,
            ClaimsRejection::Unauthenticated,
        ] {
            let response = rejection.into_response();
            assert_eq!(response.status(), rejection.status());
            assert_eq!(
                response.headers().contains_key(WWW_AUTHENTICATE),
                rejection == ClaimsRejection::Unauthenticated
            );
        }
    }
}
