//! SCIM errors (RFC 7644 §3.12): one status, an optional `scimType`, fixed text.
//!
//! Stage: SCIM. Uses `crate::store` (for its errors) and `crate::error`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::store::StoreError;

/// The SCIM media type every response carries.
pub(crate) const SCIM_JSON: &str = "application/scim+json";

/// A SCIM error response. The `detail` is fixed text chosen here: request values (which may
/// hold passwords or personal data) are never echoed.
#[derive(Debug)]
pub(crate) struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: &'static str,
    retry_after: Option<Duration>,
}

impl ScimError {
    pub(crate) fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: &'static str,
    ) -> Self {
        Self {
            status,
            scim_type,
            detail,
            retry_after: None,
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            None,
            "a valid bearer token is required",
        )
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, None, "resource not found")
    }

    /// 412: `If-Match` named a version the resource has moved on from.
    pub(crate) fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            "the resource changed since the version in If-Match",
        )
    }

    pub(crate) fn bad_request(scim_type: &'static str, detail: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    pub(crate) fn invalid_value(detail: &'static str) -> Self {
        Self::bad_request("invalidValue", detail)
    }

    pub(crate) fn invalid_syntax(detail: &'static str) -> Self {
        Self::bad_request("invalidSyntax", detail)
    }

    pub(crate) fn invalid_path(detail: &'static str) -> Self {
        Self::bad_request("invalidPath", detail)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "method not allowed on this endpoint",
        )
    }

    pub(crate) fn not_implemented(detail: &'static str) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, None, detail)
    }
}

impl From<StoreError> for ScimError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::not_found(),
            StoreError::Duplicate(_) => Self::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                "a resource with this unique value exists",
            ),
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                None,
                "the resource changed concurrently; retry",
            ),
            StoreError::IdentityDeleted => Self::not_found(),
            StoreError::Unavailable(source) => {
                tracing::warn!(
                    target: "tower_jit_provisioning::scim",
                    error = %crate::error::ErrorChain(source.as_ref()),
                    "store unavailable"
                );
                Self {
                    retry_after: Some(Duration::from_secs(5)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "the user store is unavailable",
                    )
                }
            }
            other => {
                tracing::error!(
                    target: "tower_jit_provisioning::scim",
                    error = %crate::error::ErrorChain(&other),
                    "store failure"
                );
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "the user store failed",
                )
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = scim_type.into();
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
        }
        response
    }
}
