//! ETags (RFC 7644 §3.14): a resource's `meta.version` is its `ETag` header; `If-Match` makes
//! a write or a delete conditional on it (412 when the resource moved on), `If-None-Match`
//! answers a read whose version the client already holds with 304.
//!
//! Stage: SCIM. Works on headers only; uses nothing else of the crate.

use http::HeaderMap;
use http::header::{IF_MATCH, IF_NONE_MATCH};

use super::error::ScimError;

/// A resource version as an entity tag: weak, since the representation may vary with
/// `attributes` while the version stays.
pub(crate) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The conditions a request puts on the version of the resource it names.
#[derive(Debug, Default)]
pub(crate) struct Preconditions {
    if_match: Option<Vec<String>>,
    if_none_match: Option<Vec<String>>,
}

/// The entity tags of a header, opaque parts only (`W/"3"` and `"3"` are the same version).
fn tags(headers: &HeaderMap, name: http::HeaderName) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        for tag in value.to_str().unwrap_or_default().split(',') {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            if !tag.is_empty() {
                tags.push(tag.trim_matches('"').to_owned());
            }
        }
    }
    present.then_some(tags)
}

impl Preconditions {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            if_match: tags(headers, IF_MATCH),
            if_none_match: tags(headers, IF_NONE_MATCH),
        }
    }

    /// Whether the request names a version at all (a write then may not retry past it).
    pub(crate) fn pins_version(&self) -> bool {
        self.if_match
            .as_ref()
            .is_some_and(|tags| !tags.iter().any(|t| t == "*"))
    }

    /// `Ok` when a write or delete may go ahead on a resource at `version`.
    pub(crate) fn check_write(&self, version: i64) -> Result<(), ScimError> {
        match &self.if_match {
            Some(tags) if !tags.iter().any(|t| t == "*" || *t == version.to_string()) => {
                Err(ScimError::precondition_failed())
            }
            _ => Ok(()),
        }
    }

    /// Whether a read of a resource at `version` is answered 304.
    pub(crate) fn not_modified(&self, version: i64) -> bool {
        self.if_none_match
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| t == "*" || *t == version.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: http::HeaderName, value: &'static str) -> Preconditions {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        Preconditions::from_headers(&headers)
    }

    #[test]
    fn if_match_and_if_none_match() {
        assert!(with(IF_MATCH, "W/\"3\"").check_write(3).is_ok());
        assert!(with(IF_MATCH, "\"2\", W/\"3\"").check_write(3).is_ok());
        assert!(with(IF_MATCH, "*").check_write(9).is_ok());
        assert!(with(IF_MATCH, "W/\"2\"").check_write(3).is_err());
        assert!(Preconditions::default().check_write(3).is_ok());
        assert!(with(IF_NONE_MATCH, "W/\"3\"").not_modified(3));
        assert!(!with(IF_NONE_MATCH, "W/\"2\"").not_modified(3));
        assert!(!Preconditions::default().not_modified(3));
        assert_eq!(etag(7), "W/\"7\"");
    }
}
