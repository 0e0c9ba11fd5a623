//! Configuration, split by what it configures: [`Issuer`] (what the bearer-token source accepts
//! from one issuer), [`IssuerPolicy`] (one issuer's provisioning rules, whatever the source) and
//! [`ProvisioningLayerBuilder`] (the layer and its stages).
//!
//! Stage: assembly, above every other stage. Nothing is checked while settings are given;
//! [`ProvisioningLayerBuilder::build`] checks them all and returns a
//! [`ConfigError`](crate::ConfigError) naming the first bad one. Building does no I/O: keys are
//! fetched on the first request that needs them (or by
//! [`ProvisioningLayer::fetch_keys`](crate::ProvisioningLayer::fetch_keys)).

pub(crate) mod issuer;
mod layer;
mod policy;

pub use self::issuer::{Issuer, MAX_LEEWAY, Provider};
pub use self::layer::{
    DEFAULT_MAX_TOKEN_BYTES, DEFAULT_TOKEN_CACHE_CAPACITY, ProvisioningLayerBuilder,
};
pub use self::policy::IssuerPolicy;
