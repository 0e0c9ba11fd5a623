//! [`TestIssuerBuilder`]: a test issuer on a port of one's choosing, and one that keeps its port
//! and signing keys in a file, so a development server restarted keeps accepting the tokens it
//! minted and keeps each development user's identity (`iss` and `sub`) and so their account.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::{FAMILIES, Pair, TestIssuer, TestKey};
use crate::token::Algorithm;

/// Configures a [`TestIssuer`] before it starts. See [`TestIssuer::builder`].
///
/// ```no_run
/// use tower_jit_provisioning::testing::TestIssuer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// // The same URL and keys after every restart: tokens minted before still verify.
/// let idp = TestIssuer::builder().persist("dev-issuer.json").start().await?;
/// # drop(idp);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TestIssuerBuilder {
    port: u16,
    persist: Option<PathBuf>,
}

/// What a persisted issuer keeps: its port and its private keys (a file only its owner reads).
#[derive(Serialize, Deserialize)]
struct Saved {
    port: u16,
    keys: Vec<SavedKey>,
}

#[derive(Serialize, Deserialize)]
struct SavedKey {
    family: String,
    kid: String,
    /// PKCS#8, base64.
    pkcs8: String,
}

impl TestIssuerBuilder {
    /// Listens on this loopback port (0, the default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Keeps the port and the signing keys in the file at `path`: read when it exists (its port
    /// is reused unless [`port`](Self::port) names another), written with owner-only permissions
    /// when it does not. Never for anything but development: the file holds private keys of an
    /// issuer that signs whatever it is asked to.
    pub fn persist(mut self, path: impl Into<PathBuf>) -> Self {
        self.persist = Some(path.into());
        self
    }

    /// Starts the issuer.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound (it may be taken), or the file cannot be read, parsed or
    /// written.
    pub async fn start(self) -> io::Result<TestIssuer> {
        let saved = match &self.persist {
            Some(path) if path.exists() => Some(read(path)?),
            _ => None,
        };
        let port = match (&saved, self.port) {
            (Some(saved), 0) => saved.port,
            (_, port) => port,
        };
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot listen on 127.0.0.1:{port} for the test issuer: {err}"),
                )
            })?;
        let keys = match &saved {
            Some(saved) => saved
                .keys
                .iter()
                .map(SavedKey::load)
                .collect::<io::Result<Vec<_>>>()?,
            None => FAMILIES
                .iter()
                .enumerate()
                .map(|(n, family)| TestKey::generate(*family, n))
                .collect(),
        };
        if let (Some(path), None) = (&self.persist, &saved) {
            let port = listener.local_addr()?.port();
            write(path, &Saved::of(port, &keys)?)?;
        }
        TestIssuer::serve_on(listener, keys)
    }
}

impl Saved {
    fn of(port: u16, keys: &[Arc<TestKey>]) -> io::Result<Self> {
        let keys = keys
            .iter()
            .map(|key| {
                let (family, der) = match &key.pair {
                    Pair::Rsa(pair) => {
                        (Algorithm::RS256, pair.as_der().map(|d| d.as_ref().to_vec()))
                    }
                    Pair::Ec(alg, pair) => (*alg, pair.to_pkcs8v1().map(|d| d.as_ref().to_vec())),
                    Pair::Ed(pair) => (
                        Algorithm::EdDSA,
                        pair.to_pkcs8().map(|d| d.as_ref().to_vec()),
                    ),
                };
                let der = der.map_err(|_| invalid("a key cannot be serialized"))?;
                Ok(SavedKey {
                    family: family.as_str().to_owned(),
                    kid: key.kid.clone(),
                    pkcs8: STANDARD.encode(der),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { port, keys })
    }
}

impl SavedKey {
    fn load(&self) -> io::Result<Arc<TestKey>> {
        let der = STANDARD
            .decode(&self.pkcs8)
            .map_err(|_| invalid("a key is not base64"))?;
        let rejected = |_| invalid("a key is not a valid PKCS#8 key of its family");
        let pair = match Algorithm::from_name(&self.family) {
            Some(Algorithm::RS256) => Pair::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(rejected)?),
            Some(alg @ Algorithm::ES256) => Pair::Ec(
                alg,
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(rejected)?,
            ),
            Some(alg @ Algorithm::ES384) => Pair::Ec(
                alg,
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &der)
                    .map_err(rejected)?,
            ),
            Some(alg @ Algorithm::ES512) => Pair::Ec(
                alg,
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P521_SHA512_FIXED_SIGNING, &der)
                    .map_err(rejected)?,
            ),
            Some(Algorithm::EdDSA) => Pair::Ed(Ed25519KeyPair::from_pkcs8(&der).map_err(rejected)?),
            _ => return Err(invalid("a key of an unknown family")),
        };
        Ok(TestKey::with(self.kid.clone(), pair))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("test issuer file: {what}"),
    )
}

fn read(path: &Path) -> io::Result<Saved> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a test issuer file: {err}", path.display()),
        )
    })
}

fn write(path: &Path, saved: &Saved) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(serde_json::to_string_pretty(saved)?.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_persisted_issuer_comes_back_with_its_port_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.json");
        let first = TestIssuer::builder().persist(&path).start().await.unwrap();
        let url = first.url().to_owned();
        let jwks = first.jwks();
        let token = first.id_token().subject("dev").sign();
        first.stop().await;
        drop(first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
        }
        let second = TestIssuer::builder().persist(&path).start().await.unwrap();
        assert_eq!(second.url(), url);
        assert_eq!(second.jwks(), jwks);
        let again = second.id_token().subject("dev").sign();
        assert_eq!(
            token.split('.').next(),
            again.split('.').next(),
            "the same key signs"
        );
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{}").unwrap();
        let err = TestIssuer::builder()
            .persist(&broken)
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a test issuer file"), "{err}");
    }
}
