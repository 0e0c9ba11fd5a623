//! Organisations' SAML connections as the service provider meets them: IdPs added while the
//! application runs, each bound to its organisation's connection, found by the entity id a
//! response names (and trusted only once that IdP's own key verified it) or by the connection
//! a sign-in starts at.
//!
//! The layer's own IdPs come first: a connection naming the entity id of one of them is never
//! consulted.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::Saml;
use super::idps::IdpSource;
use super::verify::TrustedIdp;
use crate::error::Error;
use crate::sign_in::ConnectionRef;

/// An organisation's SAML connection, ready for the SP.
pub(crate) struct ConnectionIdp {
    /// Its metadata, read once or kept fresh from its URL.
    pub(crate) source: IdpSource,
    /// The organisation and connection its sign-ins belong to.
    pub(crate) connection: ConnectionRef,
    /// The attribute that identifies a person instead of the persistent NameID.
    pub(crate) subject_attribute: Option<String>,
}

impl ConnectionIdp {
    /// The IdP's metadata now, if it can be had.
    pub(crate) async fn current(&self) -> Option<Arc<TrustedIdp>> {
        self.source.current().await
    }
}

impl std::fmt::Debug for ConnectionIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionIdp")
            .field("entity_id", &self.source.entity_id())
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Where the SP finds organisations' SAML connections while the layer runs.
pub(crate) trait RuntimeIdps: Send + Sync + 'static {
    /// The connection whose IdP is `entity_id`.
    fn by_entity<'a>(
        &'a self,
        entity_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ConnectionIdp>>, Error>>;

    /// The SAML connection `id`.
    fn by_connection(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Arc<ConnectionIdp>>, Error>>;

    /// Every SAML connection.
    fn all(&self) -> BoxFuture<'_, Result<Vec<Arc<ConnectionIdp>>, Error>>;
}

/// The organisations' SAML connections the service provider may use: never one whose entity
/// id is one of the layer's own IdPs.
impl Saml {
    fn is_own(&self, entity_id: &str) -> bool {
        self.entity_ids().any(|own| own == entity_id)
    }

    /// The SAML connection `id`.
    pub(crate) async fn connection(&self, id: Uuid) -> Result<Option<Arc<ConnectionIdp>>, Error> {
        let Some(runtime) = &self.runtime else {
            return Ok(None);
        };
        Ok(runtime
            .by_connection(id)
            .await?
            .filter(|c| !self.is_own(c.source.entity_id())))
    }

    /// The SAML connection whose IdP is `entity_id`.
    pub(crate) async fn connection_of(
        &self,
        entity_id: &str,
    ) -> Result<Option<Arc<ConnectionIdp>>, Error> {
        match &self.runtime {
            Some(runtime) if !self.is_own(entity_id) => runtime.by_entity(entity_id).await,
            _ => Ok(None),
        }
    }

    /// Every SAML connection.
    pub(crate) async fn connections(&self) -> Result<Vec<Arc<ConnectionIdp>>, Error> {
        let Some(runtime) = &self.runtime else {
            return Ok(Vec::new());
        };
        let mut all = runtime.all().await?;
        all.retain(|c| !self.is_own(c.source.entity_id()));
        Ok(all)
    }
}
