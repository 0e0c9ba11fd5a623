//! Filters (RFC 7644 §3.4.2.2) evaluated against resources in their SCIM JSON form.
//!
//! Stage: SCIM. Works on SCIM JSON only; uses `super::schema` for what a primary value is.
//!
//! Parsing is the `scim_v2` crate's: a maintained grammar with bounds on nesting depth and term
//! count, so a hostile `filter=` cannot exhaust the stack or memory. Evaluation is here, on the
//! JSON representation the service returns, so a filter sees exactly what a `GET` shows:
//!
//! - attribute names and operators are case-insensitive; string comparisons are too, except for
//!   case-exact attributes (`id`, `externalId`, member and group `value`s, `$ref`);
//! - a multi-valued attribute matches when any of its values does; a complex multi-valued
//!   attribute compared without a sub-attribute compares its elements' `value`;
//! - `gt`/`ge`/`lt`/`le` order timestamps chronologically, numbers numerically, strings
//!   lexicographically; booleans only support `eq`/`ne`;
//! - `ne` is true for an absent attribute; `pr` needs a non-null, non-empty value.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::{Map, Value};

use super::schema::is_primary;

/// The URN of a resource's core schema; paths prefixed with it address the top level.
pub(crate) fn is_core_urn(uri: &str) -> bool {
    uri.eq_ignore_ascii_case("urn:ietf:params:scim:schemas:core:2.0:User")
        || uri.eq_ignore_ascii_case("urn:ietf:params:scim:schemas:core:2.0:Group")
}

/// The value under `name` in `object`, the key compared case-insensitively.
pub(crate) fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// The object an attribute path's URI prefix addresses: the resource itself, or an extension.
pub(crate) fn container<'a>(
    resource: &'a Value,
    path: &AttrPath,
) -> Option<&'a Map<String, Value>> {
    let root = resource.as_object()?;
    match &path.uri {
        None => Some(root),
        Some(uri) if is_core_urn(uri) => Some(root),
        Some(uri) => get_ci(root, uri)?.as_object(),
    }
}

/// Every value a path denotes in `resource`, flattened over multi-valued attributes.
fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(container) = container(resource, path) else {
        return Vec::new();
    };
    let Some(attribute) = get_ci(container, &path.name) else {
        return Vec::new();
    };
    let elements: Vec<&Value> = match attribute {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    match &path.sub_attr {
        Some(sub) => elements
            .into_iter()
            .filter_map(|el| el.as_object().and_then(|o| get_ci(o, sub)))
            .collect(),
        // A complex value compared as a whole compares its `value`.
        None => elements
            .into_iter()
            .map(|el| match el {
                Value::Object(o) => get_ci(o, "value").unwrap_or(el),
                _ => el,
            })
            .collect(),
    }
}

/// RFC 7644 §3.4.2.3: what a resource sorts by at `path`. A multi-valued attribute sorts by
/// its primary value (else its first); strings compare without case unless the attribute is
/// case-exact. `None`: the resource has no value there.
pub(crate) fn sort_key(resource: &Value, path: &AttrPath) -> Option<Value> {
    let container = container(resource, path)?;
    let attribute = get_ci(container, &path.name)?;
    let element = match attribute {
        Value::Array(items) => items
            .iter()
            .find(|item| is_primary(item))
            .or_else(|| items.first())?,
        other => other,
    };
    let value = match (&path.sub_attr, element) {
        (Some(sub), Value::Object(o)) => get_ci(o, sub)?,
        (None, Value::Object(o)) => get_ci(o, "value")?,
        (None, other) => other,
        (Some(_), _) => return None,
    };
    match value {
        Value::String(s) if !is_case_exact(path) => Some(Value::String(s.to_lowercase())),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

/// How two [`sort_key`]s compare in ascending order: a resource without the value sorts after
/// every one with it.
pub(crate) fn compare_sort_keys(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => match (x, y) {
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => Ordering::Equal,
        },
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn is_case_exact(path: &AttrPath) -> bool {
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
    matches!(name.as_str(), "id" | "externalid")
        || sub.as_deref() == Some("$ref")
        || (matches!(name.as_str(), "members" | "groups")
            && sub.as_deref().is_none_or(|s| s == "value"))
}

/// Whether `resource` matches `filter`.
pub(crate) fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::Attr(expression) => matches_attr(expression, resource),
        Filter::ValuePath(value_path) => {
            let Some(container) = container(resource, &value_path.attr) else {
                return false;
            };
            match get_ci(container, &value_path.attr.name) {
                Some(Value::Array(items)) => {
                    items.iter().any(|el| matches_val(&value_path.filter, el))
                }
                Some(single) => matches_val(&value_path.filter, single),
                None => false,
            }
        }
        Filter::Not(inner) => !matches(inner, resource),
        Filter::And(operands) => operands.iter().all(|f| matches(f, resource)),
        Filter::Or(operands) => operands.iter().any(|f| matches(f, resource)),
    }
}

/// Whether one element of a multi-valued attribute matches a value filter.
pub(crate) fn matches_val(filter: &ValFilter, element: &Value) -> bool {
    match filter {
        ValFilter::Attr(expression) => matches_attr(expression, element),
        ValFilter::Not(inner) => !matches_val(inner, element),
        ValFilter::And(operands) => operands.iter().all(|f| matches_val(f, element)),
        ValFilter::Or(operands) => operands.iter().any(|f| matches_val(f, element)),
    }
}

fn matches_attr(expression: &AttrExp, resource: &Value) -> bool {
    match expression {
        AttrExp::Present(path) => values(resource, path).into_iter().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }),
        AttrExp::Comparison(path, CompareOp::Ne, value) => !values(resource, path)
            .into_iter()
            .any(|v| compare(v, &CompareOp::Eq, value, is_case_exact(path))),
        AttrExp::Comparison(path, op, value) => values(resource, path)
            .into_iter()
            .any(|v| compare(v, op, value, is_case_exact(path))),
    }
}

fn compare(actual: &Value, op: &CompareOp, expected: &CompValue, case_exact: bool) -> bool {
    match (actual, expected) {
        (Value::String(actual), CompValue::Str(expected)) => {
            compare_strings(actual, op, expected, case_exact)
        }
        (Value::Number(actual), CompValue::Number(expected)) => {
            match (actual.as_f64(), expected.as_f64()) {
                (Some(a), Some(e)) => ordered(a.partial_cmp(&e), op),
                _ => false,
            }
        }
        (Value::Bool(actual), CompValue::True) => bool_compare(*actual, true, op),
        (Value::Bool(actual), CompValue::False) => bool_compare(*actual, false, op),
        (Value::Null, CompValue::Null) => matches!(op, CompareOp::Eq),
        _ => false,
    }
}

fn bool_compare(actual: bool, expected: bool, op: &CompareOp) -> bool {
    match op {
        CompareOp::Eq => actual == expected,
        CompareOp::Ne => actual != expected,
        _ => false,
    }
}

fn compare_strings(actual: &str, op: &CompareOp, expected: &str, case_exact: bool) -> bool {
    if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
        && let (Ok(a), Ok(e)) = (
            DateTime::<FixedOffset>::parse_from_rfc3339(actual),
            DateTime::<FixedOffset>::parse_from_rfc3339(expected),
        )
    {
        return ordered(Some(a.cmp(&e)), op);
    }
    let (a, e) = if case_exact {
        (actual.to_owned(), expected.to_owned())
    } else {
        (actual.to_lowercase(), expected.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&e),
        CompareOp::Sw => a.starts_with(&e),
        CompareOp::Ew => a.ends_with(&e),
        _ => ordered(Some(a.cmp(&e)), op),
    }
}

fn ordered(ordering: Option<Ordering>, op: &CompareOp) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// A filter that is a lookup of one exact value, which a store can answer without a scan.
pub(crate) enum Lookup<'a> {
    Id(&'a str),
    UserName(&'a str),
    ExternalId(&'a str),
}

/// The lookup `filter` amounts to, if it is `id`, `userName` or `externalId` `eq` a string.
pub(crate) fn as_lookup(filter: &Filter) -> Option<Lookup<'_>> {
    let Filter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(value))) = filter
    else {
        return None;
    };
    if path.sub_attr.is_some() || path.uri.as_deref().is_some_and(|u| !is_core_urn(u)) {
        return None;
    }
    match path.name.to_ascii_lowercase().as_str() {
        "id" => Some(Lookup::Id(value)),
        "username" => Some(Lookup::UserName(value)),
        "externalid" => Some(Lookup::ExternalId(value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(filter: &str, resource: &Value) -> bool {
        let filter: Filter = filter.parse().unwrap_or_else(|e| panic!("{filter}: {e}"));
        matches(&filter, resource)
    }

    #[test]
    fn operators_paths_and_case() {
        let user = json!({
            "id": "0190-ABC",
            "userName": "Bjensen@Example.com",
            "externalId": "Ext-1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@home.example", "type": "home"}
            ],
            "active": true,
            "meta": {"created": "2026-01-02T03:04:05.000Z", "lastModified": "2026-02-01T00:00:00Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "employeeNumber": "701"}
        });
        let cases = [
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#, true),
            (r#"externalId eq "ext-1""#, false),
            (r#"externalId eq "Ext-1""#, true),
            (r#"id eq "0190-abc""#, false),
            (r#"name.familyName co "ense""#, true),
            (r#"name.givenName sw "bar""#, true),
            (r#"userName ew "example.com""#, true),
            (r#"userName ne "someone""#, true),
            (r#"title ne "x""#, true),
            (r#"title pr"#, false),
            (r#"emails pr"#, true),
            (
                r#"emails[type eq "work" and value co "@example.com"]"#,
                true,
            ),
            (r#"emails[type eq "other"]"#, false),
            (r#"emails.value eq "babs@home.example""#, true),
            (r#"emails eq "babs@home.example""#, true),
            (r#"emails.type eq "home" and not (active eq false)"#, true),
            (r#"active eq true"#, true),
            (r#"active eq false or userName eq "x""#, false),
            (r#"meta.created gt "2026-01-02T03:04:05Z""#, false),
            (r#"meta.created ge "2026-01-02T03:04:05Z""#, true),
            (r#"meta.lastModified lt "2026-03-01T00:00:00+01:00""#, true),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d""#,
                true,
            ),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#,
                true,
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(check(filter, &user), expected, "{filter}");
        }
    }

    #[test]
    fn hostile_filters_are_refused_by_the_parser() {
        let deep = format!("{}userName pr{}", "not (".repeat(200), ")".repeat(200));
        assert!(deep.parse::<Filter>().is_err());
        let wide = vec!["userName pr"; 5000].join(" or ");
        assert!(wide.parse::<Filter>().is_err());
        assert!("userName eq".parse::<Filter>().is_err());
        assert!(r#"userName xx "a""#.parse::<Filter>().is_err());
    }
}
