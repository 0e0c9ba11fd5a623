//! [`SignIn`]: who signed in, through which source, with what attributes. The one record
//! between the sign-in sources and the provisioning pipeline.
//!
//! Stage: the seam between the sources (`token/` for bearer tokens, and any
//! [`Authenticator`] of the application's) and the pipeline (`provision/`). Uses only
//! [`crate::error`] and [`crate::user`]'s identity key; neither sources nor the pipeline are
//! known here.
//!
//! A source verifies a credential its own way and says what it proved as a `SignIn`: the
//! issuer (or provider id) and the subject, which together are the person's identity; the
//! attributes, as one JSON object read by the same claim paths whatever the source; the e-mail
//! address and whether the source vouches for it; the groups; when the credential expires.
//! Admission, mapping, linking, approval and audit read nothing else, so a rule written once
//! holds for every source.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::user::IdentityKey;

/// Through which door a person signed in. Named in audit events (`source`) and on
/// [`ProvisionedUser`](crate::ProvisionedUser).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignInSource {
    /// An OpenID Connect ID token or an RFC 9068 access token, sent as a bearer token:
    /// `bearer_jwt`.
    BearerToken,
    /// A browser sign-in by the OpenID Connect authorization code flow: `browser_oidc`.
    BrowserOidc,
    /// A SAML 2.0 assertion: `saml`.
    Saml,
    /// An OAuth 2.0 provider's user profile (GitHub, Facebook, …): `oauth2`.
    OAuth2,
    /// An opaque access token answered by RFC 7662 introspection: `introspection`.
    Introspection,
    /// A source the application defines, by its name: lower-case ASCII letters, digits and
    /// `_`, at most 32 characters, and none of the names above.
    Custom(&'static str),
}

impl SignInSource {
    const BUILT_IN: [Self; 5] = [
        Self::BearerToken,
        Self::BrowserOidc,
        Self::Saml,
        Self::OAuth2,
        Self::Introspection,
    ];

    /// The stable name used in audit events and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BearerToken => "bearer_jwt",
            Self::BrowserOidc => "browser_oidc",
            Self::Saml => "saml",
            Self::OAuth2 => "oauth2",
            Self::Introspection => "introspection",
            Self::Custom(name) => name,
        }
    }

    /// The built-in source named `name` ([`as_str`](Self::as_str)); `None` for any other
    /// name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::BUILT_IN.into_iter().find(|s| s.as_str() == name)
    }

    fn is_valid(&self) -> bool {
        match self {
            Self::Custom(name) => {
                !name.is_empty()
                    && name.len() <= 32
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !Self::BUILT_IN.iter().any(|s| s.as_str() == *name)
            }
            _ => true,
        }
    }
}

impl fmt::Display for SignInSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a [`SignIn`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignInError {
    /// The issuer is empty, longer than 2048 bytes or contains control characters.
    #[error("invalid issuer")]
    InvalidIssuer,
    /// The subject is empty, longer than 255 bytes or contains control characters.
    #[error("invalid subject")]
    InvalidSubject,
    /// A [`SignInSource::Custom`] name that is not a valid name, or is a built-in one.
    #[error("invalid sign-in source name")]
    InvalidSource,
}

/// Longest subject accepted, in bytes. OpenID Connect Core §2 caps `sub` at 255 ASCII
/// characters; other sources' stable ids are far shorter.
pub const MAX_SUBJECT_BYTES: usize = 255;
const MAX_ISSUER_BYTES: usize = 2048;

/// A non-empty subject of at most [`MAX_SUBJECT_BYTES`] with no control characters.
pub(crate) fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_BYTES
        && !subject.chars().any(char::is_control)
}

fn is_valid_issuer(issuer: &str) -> bool {
    !issuer.is_empty() && issuer.len() <= MAX_ISSUER_BYTES && !issuer.chars().any(char::is_control)
}

/// One verified sign-in, from any source: the record every stage of provisioning reads.
///
/// Identity is [`issuer`](Self::issuer) and [`subject`](Self::subject) together, never the
/// e-mail address. Cheap to clone: the record sits behind an [`Arc`].
///
/// Sources inside this crate build it as they verify; an application's own source builds it
/// with [`SignIn::builder`] (see the crate docs, "Adding a sign-in source"):
///
/// ```
/// use tower_jit_provisioning::{SignIn, SignInSource};
///
/// let sign_in = SignIn::builder(SignInSource::Custom("trusted_proxy"), "https://proxy.internal", "u-42")
///     .attribute("name", "Ada Lovelace")
///     .attribute("department", "Engines")
///     .email("ada@example.com", true)
///     .groups(["engineering"])
///     .build()?;
/// assert_eq!(sign_in.source().as_str(), "trusted_proxy");
/// assert_eq!(sign_in.name(), Some("Ada Lovelace"));
/// assert_eq!(sign_in.claim("department").and_then(|v| v.as_str()), Some("Engines"));
/// # Ok::<(), tower_jit_provisioning::SignInError>(())
/// ```
///
/// The layer puts a `SignIn` into the request extensions of every request it lets through with
/// a credential; with the `axum` feature it is also an extractor.
#[derive(Clone)]
pub struct SignIn(Arc<Inner>);

struct Inner {
    source: SignInSource,
    /// The organisation's connection that vouched for it, if one did.
    connection: Option<ConnectionRef>,
    issuer: Arc<str>,
    /// The subject, the e-mail address and the profile.
    texts: Texts,
    email_verified: bool,
    groups: Vec<String>,
    groups_asserted: bool,
    expires_at: Option<DateTime<Utc>>,
    attributes: Attributes,
}

/// The attributes: given as an object, or kept as JSON text and parsed on first use (a token's
/// payload, which a cached token keeps for a few hundred bytes instead of a parsed tree).
enum Attributes {
    Object(Map<String, Value>),
    Text {
        json: Box<str>,
        parsed: OnceLock<Map<String, Value>>,
    },
}

/// The subject, the e-mail address and the standard profile attributes (when they are strings),
/// end to end in one buffer: a cached sign-in holds one allocation for them instead of up to
/// eight.
struct Texts {
    buffer: Box<str>,
    /// Where each field ends in `buffer`; a field starts where the one before it ends.
    ends: [u32; TEXT_FIELDS],
    /// Bit `i` set: field `i` is present.
    present: u8,
}

/// How many fields [`Texts`] holds.
const TEXT_FIELDS: usize = 8;

impl Texts {
    const SUBJECT: usize = 0;
    const EMAIL: usize = 1;
    const NAME: usize = 2;
    const GIVEN_NAME: usize = 3;
    const FAMILY_NAME: usize = 4;
    const PREFERRED_USERNAME: usize = 5;
    const PICTURE: usize = 6;
    const LOCALE: usize = 7;

    /// The fields of a sign-in: its subject and e-mail address, and the profile attributes read
    /// from `attributes`.
    fn new(subject: &str, email: Option<&str>, attributes: &Map<String, Value>) -> Self {
        let text = |name: &str| attributes.get(name).and_then(Value::as_str);
        let fields: [Option<&str>; TEXT_FIELDS] = [
            Some(subject),
            email,
            text("name"),
            text("given_name"),
            text("family_name"),
            text("preferred_username"),
            text("picture"),
            text("locale"),
        ];
        let mut buffer = String::with_capacity(fields.iter().flatten().map(|f| f.len()).sum());
        let mut ends = [0; TEXT_FIELDS];
        let mut present = 0;
        for (index, field) in fields.into_iter().enumerate() {
            // Offsets are 32-bit: a field that would end past 4 GiB is left out, not cut.
            if let Some(value) = field
                && u32::try_from(buffer.len() + value.len()).is_ok()
            {
                buffer.push_str(value);
                present |= 1 << index;
            }
            ends[index] = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        }
        Self {
            buffer: buffer.into_boxed_str(),
            ends,
            present,
        }
    }

    fn get(&self, field: usize) -> Option<&str> {
        if self.present & (1 << field) == 0 {
            return None;
        }
        let start = match field {
            0 => 0,
            _ => self.ends[field - 1] as usize,
        };
        self.buffer.get(start..self.ends[field] as usize)
    }
}

/// Builds a [`SignIn`]; see [`SignIn::builder`].
#[derive(Debug)]
#[must_use]
pub struct SignInBuilder {
    source: SignInSource,
    issuer: Arc<str>,
    subject: String,
    attributes: Map<String, Value>,
    email: Option<(String, bool)>,
    groups: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
    connection: Option<ConnectionRef>,
}

impl SignInBuilder {
    /// The organisation's connection that vouched for it: a sign-in source the layer runs for
    /// organisations (an application's own sign-ins name none).
    #[cfg_attr(not(feature = "saml"), allow(dead_code))]
    pub(crate) fn connection(mut self, connection: Option<ConnectionRef>) -> Self {
        self.connection = connection;
        self
    }

    /// Replaces the attributes: the source's claims, assertion attributes or profile fields,
    /// as one JSON object. Mapping reads them by name or dotted path; `name`, `given_name`,
    /// `family_name`, `preferred_username`, `picture` and `locale` fill the profile.
    pub fn attributes(mut self, attributes: Map<String, Value>) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets one attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The person's e-mail address, and whether this source vouches that it is theirs. Only a
    /// vouched address counts for domain rules and linking. Without this call the `email`
    /// attribute is the address, never vouched for: an `email_verified` attribute is not read.
    pub fn email(mut self, address: impl Into<String>, verified: bool) -> Self {
        self.email = Some((address.into(), verified));
        self
    }

    /// The person's groups, as the source asserts them (an empty list asserts "no groups").
    /// Without this call, the `groups` attribute's strings, if it has one.
    pub fn groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.groups = Some(groups.into_iter().map(Into::into).collect());
        self
    }

    /// When the credential stops being valid.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Checks the identity and builds the sign-in.
    ///
    /// # Errors
    ///
    /// [`SignInError`] for an issuer, subject or source name that cannot be an identity.
    pub fn build(self) -> Result<SignIn, SignInError> {
        if !self.source.is_valid() {
            return Err(SignInError::InvalidSource);
        }
        if !is_valid_issuer(&self.issuer) {
            return Err(SignInError::InvalidIssuer);
        }
        if !is_valid_subject(&self.subject) {
            return Err(SignInError::InvalidSubject);
        }
        let (email, email_verified) = match self.email {
            Some((address, verified)) => (Some(address), verified),
            None => (
                self.attributes
                    .get("email")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                false,
            ),
        };
        let (groups, groups_asserted) = match self.groups {
            Some(groups) => (groups, true),
            None => match self.attributes.get("groups") {
                Some(value) => (strings(value), true),
                None => (Vec::new(), false),
            },
        };
        Ok(SignIn(Arc::new(Inner {
            source: self.source,
            connection: self.connection,
            texts: Texts::new(&self.subject, email.as_deref(), &self.attributes),
            issuer: self.issuer,
            email_verified,
            groups,
            groups_asserted,
            expires_at: self.expires_at,
            attributes: Attributes::Object(self.attributes),
        })))
    }
}

/// What a bearer token's verification established, for [`SignIn::from_token`].
pub(crate) struct TokenSignIn<'a> {
    /// A bearer token, or the ID token of a browser sign-in.
    pub(crate) source: SignInSource,
    pub(crate) issuer: Arc<str>,
    pub(crate) subject: &'a str,
    /// The payload, parsed, to read the profile from.
    pub(crate) claims: &'a Map<String, Value>,
    /// The payload as signed, kept instead of the parsed object.
    pub(crate) json: String,
    pub(crate) email_verified: bool,
    pub(crate) groups: Vec<String>,
    pub(crate) groups_asserted: bool,
    pub(crate) expires_at: DateTime<Utc>,
    /// The organisation's connection whose issuer verified it.
    pub(crate) connection: Option<ConnectionRef>,
}

/// An organisation's connection, as a sign-in names the one that vouched for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConnectionRef {
    pub(crate) organization: uuid::Uuid,
    pub(crate) connection: uuid::Uuid,
}

impl SignIn {
    /// Starts a sign-in by `subject` at `issuer` (an issuer URL, a SAML entity ID, a provider
    /// id such as `github`), through `source`.
    pub fn builder(
        source: SignInSource,
        issuer: impl Into<Arc<str>>,
        subject: impl Into<String>,
    ) -> SignInBuilder {
        SignInBuilder {
            source,
            issuer: issuer.into(),
            subject: subject.into(),
            attributes: Map::new(),
            email: None,
            groups: None,
            expires_at: None,
            connection: None,
        }
    }

    /// A token's sign-in, from what its verification established. The subject was checked by
    /// the verifier.
    pub(crate) fn from_token(token: TokenSignIn<'_>) -> Self {
        let email = token.claims.get("email").and_then(Value::as_str);
        Self(Arc::new(Inner {
            source: token.source,
            connection: token.connection,
            issuer: token.issuer,
            texts: Texts::new(token.subject, email, token.claims),
            email_verified: token.email_verified,
            groups: token.groups,
            groups_asserted: token.groups_asserted,
            expires_at: Some(token.expires_at),
            attributes: Attributes::Text {
                json: token.json.into_boxed_str(),
                parsed: OnceLock::new(),
            },
        }))
    }

    /// Through which source the person signed in.
    pub fn source(&self) -> SignInSource {
        self.0.source
    }

    /// The [organisation](crate::organization) whose connection vouched for this sign-in; its
    /// account is that organisation's. `None` for the layer's own issuers and other sources.
    pub fn organization_id(&self) -> Option<uuid::Uuid> {
        self.0.connection.map(|c| c.organization)
    }

    /// The organisation's connection that vouched for this sign-in.
    pub fn connection_id(&self) -> Option<uuid::Uuid> {
        self.0.connection.map(|c| c.connection)
    }

    /// The issuer or provider the subject belongs to.
    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }

    /// The source's stable identifier for the person.
    pub fn subject(&self) -> &str {
        // Always present: the subject is the buffer's first field and at most
        // `MAX_SUBJECT_BYTES`, so the 32-bit offsets never leave it out.
        self.0.texts.get(Texts::SUBJECT).unwrap_or_default()
    }

    /// The identity: `(issuer, subject)`.
    pub fn identity(&self) -> IdentityKey {
        IdentityKey::new(Arc::clone(&self.0.issuer), self.subject())
    }

    /// The e-mail address, as the source gave it. Not an identity, and not proof of anything
    /// unless [`email_verified`](Self::email_verified) is true.
    pub fn email(&self) -> Option<&str> {
        self.0.texts.get(Texts::EMAIL)
    }

    /// Whether the source vouches that [`email`](Self::email) is the person's.
    pub fn email_verified(&self) -> bool {
        self.0.email_verified && self.email().is_some()
    }

    /// The `name` attribute.
    pub fn name(&self) -> Option<&str> {
        self.0.texts.get(Texts::NAME)
    }

    /// The `given_name` attribute.
    pub fn given_name(&self) -> Option<&str> {
        self.0.texts.get(Texts::GIVEN_NAME)
    }

    /// The `family_name` attribute.
    pub fn family_name(&self) -> Option<&str> {
        self.0.texts.get(Texts::FAMILY_NAME)
    }

    /// The `preferred_username` attribute. Informational only: sources let people change it.
    pub fn preferred_username(&self) -> Option<&str> {
        self.0.texts.get(Texts::PREFERRED_USERNAME)
    }

    /// The `picture` attribute.
    pub fn picture(&self) -> Option<&str> {
        self.0.texts.get(Texts::PICTURE)
    }

    /// The `locale` attribute.
    pub fn locale(&self) -> Option<&str> {
        self.0.texts.get(Texts::LOCALE)
    }

    /// Whether the source asserted the person's groups at all (an empty list included).
    pub fn groups_asserted(&self) -> bool {
        self.0.groups_asserted
    }

    /// The person's groups, as the source asserted them.
    pub fn groups(&self) -> &[String] {
        &self.0.groups
    }

    /// When the credential stops being valid, when the source says.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// Every attribute, as one JSON object (a token's claims are parsed on the first call).
    pub fn attributes(&self) -> &Map<String, Value> {
        match &self.0.attributes {
            Attributes::Object(map) => map,
            // The token's payload passed the strict parser at verification; a plain parse of
            // the same text gives the same object.
            Attributes::Text { json, parsed } => {
                parsed.get_or_init(|| serde_json::from_str(json).unwrap_or_default())
            }
        }
    }

    /// An attribute by name or by dotted path into nested objects (`realm_access.roles`). An
    /// attribute whose name itself contains dots (such as Auth0's
    /// `https://example.com/roles`) is found by its full name first.
    pub fn claim(&self, path: &str) -> Option<&Value> {
        lookup(self.attributes(), path)
    }

    /// A string attribute by name or path, answered from the fields read when the sign-in was
    /// built when it is a standard one, so that the usual mapping parses nothing.
    pub(crate) fn claim_str(&self, path: &str) -> Option<&str> {
        match path {
            "iss" => Some(self.issuer()),
            "sub" => Some(self.subject()),
            "email" => self.email(),
            "name" => self.name(),
            "given_name" => self.given_name(),
            "family_name" => self.family_name(),
            "preferred_username" => self.preferred_username(),
            "picture" => self.picture(),
            "locale" => self.locale(),
            _ => self.claim(path).and_then(Value::as_str),
        }
    }
}

impl fmt::Debug for SignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignIn")
            .field("source", &self.source())
            .field("issuer", &self.issuer())
            .field("subject", &self.subject())
            .field("email", &self.email())
            .field("email_verified", &self.email_verified())
            .field("groups", &self.groups())
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

/// Strings from an attribute value: an array's string members, or a single string.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Finds an attribute by its full name, else by walking a dotted path through nested objects.
pub(crate) fn lookup<'a>(attributes: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = attributes.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = attributes.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// A sign-in source of the application's: reads one kind of credential from a request and
/// verifies it into a [`SignIn`]. Registered with
/// [`ProvisioningLayerBuilder::authenticator`](crate::ProvisioningLayerBuilder::authenticator);
/// the layer asks each in turn when a request carries no bearer token, and provisions the first
/// sign-in one returns through the same pipeline as a token's.
///
/// See the crate docs, "Adding a sign-in source", for an example.
pub trait Authenticator: Send + Sync + 'static {
    /// The source this authenticator's sign-ins come from.
    fn source(&self) -> SignInSource;

    /// The sign-in this request's credential proves; `Ok(None)` when the request carries no
    /// credential of this kind (the next authenticator is asked), an error when it carries one
    /// that is not acceptable (the request is refused with it, usually
    /// [`Error::InvalidCredentials`]).
    fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> impl Future<Output = Result<Option<SignIn>, Error>> + Send;
}

type AuthenticateFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<SignIn>, Error>> + Send + 'a>>;

/// [`Authenticator`], object-safe, so the layer holds any number of them.
pub(crate) trait DynAuthenticator: Send + Sync + 'static {
    fn source(&self) -> SignInSource;
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a>;
}

impl<A: Authenticator> DynAuthenticator for A {
    fn source(&self) -> SignInSource {
        Authenticator::source(self)
    }

    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        Box::pin(Authenticator::authenticate(self, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(source: SignInSource, issuer: &str, subject: &str) -> Result<SignIn, SignInError> {
        SignIn::builder(source, issuer, subject).build()
    }

    #[test]
    fn profile_fields_read_back_as_given_present_empty_or_absent() {
        let sign_in = SignIn::builder(SignInSource::Custom("proxy"), "https://proxy", "u-1")
            .attribute("name", "Ada Lovelace")
            .attribute("given_name", "")
            .attribute("family_name", 42)
            .attribute("picture", "https://example.com/ada.png")
            .attribute("locale", "en-GB")
            .email("ada@example.com", true)
            .build()
            .unwrap();
        assert_eq!(sign_in.subject(), "u-1");
        assert_eq!(sign_in.email(), Some("ada@example.com"));
        assert!(sign_in.email_verified());
        assert_eq!(sign_in.name(), Some("Ada Lovelace"));
        // Present but empty is not absent; a number is not a string.
        assert_eq!(sign_in.given_name(), Some(""));
        assert_eq!(sign_in.family_name(), None);
        assert_eq!(sign_in.preferred_username(), None);
        assert_eq!(sign_in.picture(), Some("https://example.com/ada.png"));
        assert_eq!(sign_in.locale(), Some("en-GB"));

        let bare = build(SignInSource::Custom("proxy"), "https://proxy", "u-2").unwrap();
        assert_eq!(bare.subject(), "u-2");
        assert_eq!(
            (bare.email(), bare.name(), bare.locale()),
            (None, None, None)
        );
        assert!(!bare.email_verified());
    }

    #[test]
    fn identities_are_checked() {
        let custom = SignInSource::Custom("proxy");
        assert!(build(custom, "https://proxy", "42").is_ok());
        let cases = [
            (custom, "", "42", SignInError::InvalidIssuer),
            (custom, "a\nb", "42", SignInError::InvalidIssuer),
            (custom, "https://proxy", "", SignInError::InvalidSubject),
            (
                custom,
                "https://proxy",
                "a\u{0}b",
                SignInError::InvalidSubject,
            ),
            (
                SignInSource::Custom("Proxy"),
                "i",
                "s",
                SignInError::InvalidSource,
            ),
            (
                SignInSource::Custom(""),
                "i",
                "s",
                SignInError::InvalidSource,
            ),
            (
                SignInSource::Custom("saml"),
                "i",
                "s",
                SignInError::InvalidSource,
            ),
        ];
        for (source, issuer, subject, expected) in cases {
            assert_eq!(
                build(source, issuer, subject).unwrap_err(),
                expected,
                "{issuer:?} {subject:?}"
            );
        }
        let long = "x".repeat(MAX_SUBJECT_BYTES + 1);
        assert_eq!(
            build(custom, "i", &long).unwrap_err(),
            SignInError::InvalidSubject
        );
    }

    #[test]
    fn email_is_vouched_only_by_the_source() {
        let claimed = SignIn::builder(SignInSource::Custom("proxy"), "i", "s")
            .attribute("email", "a@example.com")
            .attribute("email_verified", true)
            .build()
            .unwrap();
        assert_eq!(claimed.email(), Some("a@example.com"));
        assert!(!claimed.email_verified(), "an attribute does not vouch");
        let vouched = SignIn::builder(SignInSource::Custom("proxy"), "i", "s")
            .email("a@example.com", true)
            .build()
            .unwrap();
        assert!(vouched.email_verified());
        assert_eq!(vouched.claim_str("email"), Some("a@example.com"));
    }

    #[test]
    fn groups_and_paths() {
        let sign_in = SignIn::builder(SignInSource::Custom("proxy"), "i", "s")
            .attribute("groups", serde_json::json!(["a", 1, "b"]))
            .attribute("realm_access", serde_json::json!({"roles": ["admin"]}))
            .attribute("https://example.com/roles", serde_json::json!(["owner"]))
            .build()
            .unwrap();
        assert!(sign_in.groups_asserted());
        assert_eq!(sign_in.groups(), ["a", "b"]);
        assert_eq!(sign_in.claim("realm_access.roles").unwrap()[0], "admin");
        assert_eq!(
            sign_in.claim("https://example.com/roles").unwrap()[0],
            "owner"
        );
        assert!(sign_in.claim("realm_access.missing").is_none());
        let none = build(SignInSource::Saml, "i", "s").unwrap();
        assert!(!none.groups_asserted());
    }
}
