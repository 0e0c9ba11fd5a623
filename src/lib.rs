//! Just-in-time user provisioning for tower and axum services.
//!
//! [`ProvisioningLayer`] verifies the OpenID Connect bearer token of each request against the
//! keys of the issuers you trust and hands the verified claims to your handlers as
//! [`VerifiedClaims`].
//!
//! ```text
//! request ──► extract token ──► verify ──► inner service (claims in extensions)
//!              (Bearer header     (issuer keys,
//!               or cookie)         claims)
//! ```
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_jit_provisioning::{Issuer, ProvisioningLayer, TokenKind, VerifiedClaims};
//!
//! async fn me(claims: VerifiedClaims) -> String {
//!     format!("hello {}", claims.email().unwrap_or(claims.subject()))
//! }
//!
//! let layer = ProvisioningLayer::builder()
//!     .issuer(
//!         Issuer::new("https://login.example.com")
//!             .audience("orders-api")
//!             .token_kinds([TokenKind::Access]),
//!     )
//!     .build()?;
//!
//! let app: Router = Router::new().route("/me", get(me)).layer(layer);
//! # Ok::<(), tower_jit_provisioning::ConfigError>(())
//! ```
//!
//! # What is verified
//!
//! Tokens are routed to an issuer by their `iss`, compared exactly with the configured issuer
//! URLs; tokens of any other issuer are refused without a network request. Keys come from the
//! issuer's OpenID Connect discovery document and key set, cached and refreshed as described in
//! [`Issuer`]. Signature and registered claims are checked by the `openidconnect` crate's
//! verifier, with key types whose signature checks run on aws-lc-rs, the crate's one crypto
//! provider. ID tokens and RFC 9068 access tokens are each checked by their own rules. See
//! [`TokenError`] for every reason a token is refused and [`Error`] for the responses.
//!
//! # Features
//!
//! - `axum`: [`VerifiedClaims`] and `Option<VerifiedClaims>` as extractors.
//! - `test-util`: [`testing::TestIssuer`], a real issuer on loopback that mints tokens.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
pub mod error;
mod layer;
mod token;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use crate::builder::{DEFAULT_MAX_TOKEN_BYTES, Issuer, MAX_LEEWAY, ProvisioningLayerBuilder};
pub use crate::error::{
    ConfigError, DefaultErrorHandler, Error, ErrorHandler, RequestError, TokenError,
};
pub use crate::layer::{
    ProvisioningLayer, ProvisioningService, ResponseFuture, UnreachableIssuers,
};
pub use crate::token::{Algorithm, TokenKind, TokenSource, VerifiedClaims};
