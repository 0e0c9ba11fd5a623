//! A verified assertion as a [`SignIn`]: the identity (a persistent NameID, or a configured
//! immutable attribute, never a transient or e-mail NameID) and the attributes, with the names
//! Entra ID, Okta, Google Workspace, ADFS and Shibboleth send mapped onto the claim names the
//! mapping reads (`email`, `given_name`, `family_name`, `name`, `preferred_username`, `groups`).

use serde_json::{Map, Value};

use super::verify::{PERSISTENT, VerifiedAssertion};
use crate::sign_in::{SignIn, SignInSource};

/// Where each claim name is found, in order of preference: attribute `Name`s (URIs, `urn:oid:`
/// names) and the `FriendlyName`s or plain names IdPs use.
const PRESETS: &[(&str, &[&str])] = &[
    (
        "email",
        &[
            // Entra ID, ADFS.
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            // Shibboleth and other eduPerson IdPs: `mail`.
            "urn:oid:0.9.2342.19200300.100.1.3",
            // Okta, Google Workspace (names the administrator types; these are the usual).
            "email",
            "mail",
            "emailAddress",
            "Email",
        ],
    ),
    (
        "given_name",
        &[
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
            "urn:oid:2.5.4.42",
            "givenName",
            "firstName",
            "first_name",
            "FirstName",
        ],
    ),
    (
        "family_name",
        &[
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
            "urn:oid:2.5.4.4",
            "sn",
            "surname",
            "lastName",
            "last_name",
            "LastName",
        ],
    ),
    (
        "name",
        &[
            "http://schemas.microsoft.com/identity/claims/displayname",
            "urn:oid:2.16.840.1.113730.3.1.241",
            "displayName",
            "display_name",
        ],
    ),
    (
        "preferred_username",
        &[
            // Entra ID's `name` claim is the user principal name.
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "urn:oid:0.9.2342.19200300.100.1.1",
            "uid",
            "username",
        ],
    ),
    (
        "groups",
        &[
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
            "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
            "isMemberOf",
            "memberOf",
            "groups",
            "Groups",
        ],
    ),
];

/// Why an assertion is no sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoIdentity {
    /// Only a transient, e-mail or unspecified NameID, and no subject attribute configured.
    NoPersistentNameId,
    /// The configured subject attribute is missing, empty or has several values.
    NoSubjectAttribute,
    /// The subject or issuer cannot be an identity (too long, control characters).
    Invalid,
}

/// The identity and attributes of `assertion`. `subject_attribute` names the attribute that
/// is the subject (by `Name`); `trust_email` says whether the IdP's e-mail counts as verified.
pub(crate) fn sign_in(
    assertion: &VerifiedAssertion,
    subject_attribute: Option<&str>,
    trust_email: bool,
) -> Result<SignIn, NoIdentity> {
    let subject = match subject_attribute {
        Some(name) => {
            let attribute = assertion
                .attributes
                .iter()
                .find(|a| a.name == name)
                .ok_or(NoIdentity::NoSubjectAttribute)?;
            match &attribute.values[..] {
                [only] if !only.is_empty() => only.clone(),
                _ => return Err(NoIdentity::NoSubjectAttribute),
            }
        }
        None => match &assertion.name_id {
            Some(name_id) if name_id.format.as_deref() == Some(PERSISTENT) => name_id.value.clone(),
            _ => return Err(NoIdentity::NoPersistentNameId),
        },
    };
    let mut attributes = Map::new();
    let value = |values: &[String]| match values {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    for attribute in &assertion.attributes {
        attributes
            .entry(attribute.name.clone())
            .or_insert_with(|| value(&attribute.values));
        if let Some(friendly) = &attribute.friendly_name {
            attributes
                .entry(friendly.clone())
                .or_insert_with(|| value(&attribute.values));
        }
    }
    if let Some(name_id) = &assertion.name_id {
        attributes.insert("name_id".to_owned(), Value::String(name_id.value.clone()));
    }
    for (claim, sources) in PRESETS {
        if attributes.contains_key(*claim) && !sources.contains(claim) {
            continue;
        }
        let found = sources.iter().find_map(|source| {
            assertion
                .attributes
                .iter()
                .find(|a| a.name == *source || a.friendly_name.as_deref() == Some(source))
        });
        if let Some(found) = found {
            let mapped = if *claim == "groups" {
                Value::Array(found.values.iter().cloned().map(Value::String).collect())
            } else {
                match found.values.first() {
                    Some(first) => Value::String(first.clone()),
                    None => continue,
                }
            };
            attributes.insert((*claim).to_owned(), mapped);
        }
    }
    let email = attributes
        .get("email")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut builder = SignIn::builder(SignInSource::Saml, assertion.idp.as_str(), subject)
        .expires_at(assertion.valid_until);
    if let Some(email) = email {
        builder = builder.email(email, trust_email);
    }
    builder
        .attributes(attributes)
        .build()
        .map_err(|_| NoIdentity::Invalid)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::login::saml::verify::{NameId, SamlAttribute};

    fn assertion(format: &str, attributes: &[(&str, Option<&str>, &[&str])]) -> VerifiedAssertion {
        VerifiedAssertion {
            idp: "https://sts.windows.net/tenant/".to_owned(),
            id: "_a".to_owned(),
            in_response_to: None,
            name_id: Some(NameId {
                value: "nameid-value".to_owned(),
                format: Some(format.to_owned()),
            }),
            session_index: None,
            attributes: attributes
                .iter()
                .map(|(name, friendly, values)| SamlAttribute {
                    name: (*name).to_owned(),
                    friendly_name: friendly.map(str::to_owned),
                    values: values.iter().map(|v| (*v).to_owned()).collect(),
                })
                .collect(),
            valid_until: Utc::now(),
        }
    }

    const ENTRA_OID: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";

    #[test]
    fn entra_attributes_map_onto_the_claim_names() {
        let a = assertion(
            "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
            &[
                (ENTRA_OID, None, &["3f2c-oid"]),
                (
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                    None,
                    &["alice@contoso.example"],
                ),
                (
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                    None,
                    &["Alice"],
                ),
                (
                    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                    None,
                    &["g-1", "g-2"],
                ),
            ],
        );
        let sign_in = sign_in(&a, Some(ENTRA_OID), false).unwrap();
        assert_eq!(sign_in.subject(), "3f2c-oid");
        assert_eq!(sign_in.issuer(), "https://sts.windows.net/tenant/");
        assert_eq!(sign_in.source(), SignInSource::Saml);
        assert_eq!(sign_in.email(), Some("alice@contoso.example"));
        assert!(!sign_in.email_verified());
        assert_eq!(sign_in.given_name(), Some("Alice"));
        assert_eq!(sign_in.groups(), ["g-1", "g-2"]);
        assert!(sign_in.claim(ENTRA_OID).is_some());
    }

    #[test]
    fn shibboleth_oid_names_and_friendly_names_map_too() {
        let a = assertion(
            PERSISTENT,
            &[
                (
                    "urn:oid:0.9.2342.19200300.100.1.3",
                    Some("mail"),
                    &["bob@uni.example"],
                ),
                ("urn:oid:2.5.4.4", Some("sn"), &["Builder"]),
                (
                    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                    Some("isMemberOf"),
                    &["staff"],
                ),
            ],
        );
        let sign_in = sign_in(&a, None, true).unwrap();
        assert_eq!(sign_in.subject(), "nameid-value");
        assert_eq!(sign_in.email(), Some("bob@uni.example"));
        assert!(sign_in.email_verified());
        assert_eq!(sign_in.family_name(), Some("Builder"));
        assert_eq!(sign_in.groups(), ["staff"]);
    }

    #[test]
    fn transient_email_and_unspecified_name_ids_are_never_an_identity() {
        for format in [
            "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
            "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
            "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
        ] {
            assert_eq!(
                sign_in(&assertion(format, &[]), None, false).err(),
                Some(NoIdentity::NoPersistentNameId),
                "{format}"
            );
        }
        let two = assertion(PERSISTENT, &[(ENTRA_OID, None, &["a", "b"])]);
        assert_eq!(
            sign_in(&two, Some(ENTRA_OID), false).err(),
            Some(NoIdentity::NoSubjectAttribute)
        );
        assert_eq!(
            sign_in(&assertion(PERSISTENT, &[]), Some(ENTRA_OID), false).err(),
            Some(NoIdentity::NoSubjectAttribute)
        );
    }
}
