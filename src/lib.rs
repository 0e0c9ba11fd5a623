//! Just-in-time user provisioning for tower and axum services.
//!
//! [`ProvisioningLayer`] verifies the OpenID Connect bearer token of each request against the
//! keys of the issuers you trust. With a [`UserStore`], it also gives the person behind the
//! token an account the first time they are seen, and hands every request's
//! [`ProvisionedUser`] to your handlers; without one, it hands over the [`VerifiedClaims`].
//!
//! ```text
//! request ──► extract token ──► verify ──► admit ──► resolve user ──► inner service
//!              (Bearer header     (issuer    (policy)   (cache ─► store ─► link or create,
//!               or cookie)         keys,                 one resolution per identity,
//!                                  claims)               attribute sync, audit event)
//! ```
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_jit_provisioning::{
//!     AttributeMapping, Issuer, ProvisionedUser, ProvisioningLayer, SqliteStore, TokenKind,
//! };
//!
//! async fn me(user: ProvisionedUser) -> String {
//!     format!("hello {}", user.user().email.as_deref().unwrap_or("stranger"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite://jit.db").await?;
//! store.migrate().await?;
//!
//! let layer = ProvisioningLayer::builder()
//!     .issuer(
//!         Issuer::new("https://login.example.com")
//!             .audience("orders-api")
//!             .token_kinds([TokenKind::Access])
//!             .allowed_domains(["example.com"]),
//!     )
//!     .store(store)
//!     .mapping(AttributeMapping::new().default_roles(["member"]))
//!     .build()?;
//!
//! let app: Router = Router::new().route("/me", get(me)).layer(layer);
//! # drop(app);
//! # std::fs::remove_file("jit.db").ok();
//! # Ok(())
//! # }
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
//! # What is provisioned
//!
//! Identity is `(issuer, subject)`: an [`IdentityKey`], never an e-mail address. Admission
//! ([`Issuer::allowed_domains`], [`Issuer::require_claim`], [`Issuer::required_groups`],
//! [`ProvisioningLayerBuilder::admit`]) is decided before anything is written. Accounts are
//! found in a cache, else in the store, else linked or created; see [`provision`] for the
//! pipeline, [`AttributeMapping`] for the mapping and sync rules, [`store`] for the storage
//! guarantees and [`audit`] for the audit trail.
//!
//! # Features
//!
//! - `sqlite` (default): [`SqliteStore`].
//! - `postgres`: [`PostgresStore`], for several servers sharing one database.
//! - `axum`: [`VerifiedClaims`], [`ProvisionedUser`] and their `Option`s as extractors.
//! - `scim`: [`scim::Scim`], a SCIM 2.0 service provider on the same store.
//! - `test-util`: [`testing::TestIssuer`], a real issuer on loopback that mints tokens.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod builder;
pub mod error;
mod layer;
pub mod provision;
pub mod store;
mod token;
mod user;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;

#[cfg(feature = "scim")]
#[cfg_attr(docsrs, doc(cfg(feature = "scim")))]
pub mod scim;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

#[cfg(feature = "__fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use crate::audit::{Actor, AuditEvent, AuditKind, AuditSink};
pub use crate::builder::{
    DEFAULT_MAX_TOKEN_BYTES, DEFAULT_TOKEN_CACHE_CAPACITY, Issuer, MAX_LEEWAY,
    ProvisioningLayerBuilder,
};
pub use crate::error::{
    ConfigError, DefaultErrorHandler, DenyReason, Error, ErrorHandler, RequestError, TokenError,
};
pub use crate::layer::{
    CacheSizes, ProvisioningLayer, ProvisioningService, ResponseFuture, UnreachableIssuers,
};
pub use crate::provision::{AttributeMapping, Field, MappedProfile, SyncPolicy};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteStore;
pub use crate::store::{MemoryStore, StoreError, UserStore};
pub use crate::token::{Algorithm, TokenKind, TokenSource, VerifiedClaims};
pub use crate::user::{
    Group, GroupUpdate, Identity, IdentityKey, NewGroup, NewUser, ProvisionedUser, RoleGrant,
    RoleSource, User, UserStatus, UserUpdate,
};
