//! PATCH (RFC 7644 §3.5.2) applied to a resource in its SCIM JSON form.
//!
//! Stage: SCIM. Works on SCIM JSON only; uses nothing else of the crate.
//!
//! Paths are parsed by the `scim_v2` crate (attribute, sub-attribute, value-filter and URN
//! paths); the operations are applied here, with what real clients send in mind:
//!
//! - `op` is case-insensitive (Entra sends `Replace`, `Add`, `Remove`).
//! - A path-less `add`/`replace` takes an object whose keys are themselves paths: plain names,
//!   dotted sub-attributes (`name.givenName`) or URN-prefixed names, or a whole extension object.
//! - `add`/`replace` on a complex single-valued attribute merges sub-attributes (those not given
//!   are left unchanged); on a multi-valued attribute `add` appends (without duplicates) and
//!   `replace` replaces the whole list.
//! - A value-filter path that matches nothing and whose filter is a conjunction of equalities
//!   (`emails[type eq "work"].value`) creates the element it describes: Entra adds a work
//!   e-mail that way.
//! - `remove` with a path and a list of values removes only those values (Entra's
//!   `{"op":"Remove","path":"members","value":[{"value":"<id>"}]}`).

use std::str::FromStr;

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{is_core_urn, matches_val};
use super::schema::is_primary;
use super::users::ENTERPRISE_USER;

/// The PatchOp message URN.
#[cfg(test)]
pub(crate) const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Replace,
    Remove,
}

/// What an operation's `path` names.
#[derive(Debug)]
enum Target {
    /// No path: the value is an object whose keys are paths.
    Resource,
    /// A whole schema by its URN (`urn:…:enterprise:2.0:User`): the extension object, or the
    /// core schema's attributes.
    Schema(String),
    /// An attribute, sub-attribute or value-filter path.
    Path(PatchPath),
}

#[derive(Debug)]
pub(crate) struct Operation {
    op: Op,
    target: Target,
    value: Option<Value>,
}

/// Reads a PatchOp request body.
pub(crate) fn parse(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let object = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a PatchOp body is a JSON object"))?;
    let operations = super::filter::get_ci(object, "Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| ScimError::invalid_syntax("`Operations` must be a non-empty array"))?;
    operations
        .iter()
        .map(|operation| {
            let operation = operation
                .as_object()
                .ok_or_else(|| ScimError::invalid_syntax("each operation is an object"))?;
            let op = match super::filter::get_ci(operation, "op").and_then(Value::as_str) {
                Some(op) if op.eq_ignore_ascii_case("add") => Op::Add,
                Some(op) if op.eq_ignore_ascii_case("replace") => Op::Replace,
                Some(op) if op.eq_ignore_ascii_case("remove") => Op::Remove,
                _ => {
                    return Err(ScimError::invalid_syntax(
                        "`op` must be add, replace or remove",
                    ));
                }
            };
            let target = match super::filter::get_ci(operation, "path") {
                None | Some(Value::Null) => Target::Resource,
                Some(Value::String(path)) if path.trim().is_empty() => Target::Resource,
                // The parser would read the URN's last segment as an attribute of a shorter URN.
                Some(Value::String(path)) if is_schema_urn(path.trim()) => {
                    Target::Schema(path.trim().to_owned())
                }
                Some(Value::String(path)) => Target::Path(
                    PatchPath::from_str(path)
                        .map_err(|_| ScimError::invalid_path("the path does not parse"))?,
                ),
                Some(_) => return Err(ScimError::invalid_path("`path` must be a string")),
            };
            let value = super::filter::get_ci(operation, "value").cloned();
            Ok(Operation { op, target, value })
        })
        .collect()
}

/// Applies `operations` in order to `resource`. Attributes named in `read_only` (top level)
/// cannot be targeted by a path; in a path-less value they (and `schemas`) are ignored, as in
/// a PUT body: Okta echoes `id`, `meta` and `schemas` there.
pub(crate) fn apply(
    resource: &mut Value,
    operations: &[Operation],
    read_only: &[&str],
) -> Result<(), ScimError> {
    let root = resource
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_syntax("resource is not an object"))?;
    for operation in operations {
        match (&operation.target, operation.op) {
            (Target::Resource, Op::Remove) => {
                return Err(ScimError::bad_request("noTarget", "remove needs a path"));
            }
            (Target::Resource, op) => {
                let value = operation
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        ScimError::invalid_value("a path-less operation needs an object value")
                    })?;
                for (key, value) in value {
                    if key.eq_ignore_ascii_case("schemas")
                        || read_only.iter().any(|r| r.eq_ignore_ascii_case(key))
                    {
                        continue;
                    }
                    apply_key(root, op, key, value.clone(), read_only)?;
                }
            }
            (Target::Schema(urn), Op::Remove) if !is_core_urn(urn) => {
                let key = existing_key(root, urn);
                root.remove(&key);
            }
            (Target::Schema(_), Op::Remove) => {
                return Err(ScimError::bad_request(
                    "noTarget",
                    "the core schema cannot be removed",
                ));
            }
            (Target::Schema(urn), op) => {
                let value = operation
                    .value
                    .clone()
                    .ok_or_else(|| ScimError::invalid_value("add and replace need a value"))?;
                apply_key(root, op, urn, value, read_only)?;
            }
            (Target::Path(path), op) => {
                let value = operation.value.clone();
                if op != Op::Remove && value.is_none() {
                    return Err(ScimError::invalid_value("add and replace need a value"));
                }
                apply_path(root, op, path, value.unwrap_or(Value::Null), read_only)?;
            }
        }
    }
    Ok(())
}

/// One key of a path-less operation's value.
fn apply_key(
    root: &mut Map<String, Value>,
    op: Op,
    key: &str,
    value: Value,
    read_only: &[&str],
) -> Result<(), ScimError> {
    if is_schema_urn(key) && !is_core_urn(key) {
        // A whole extension object: each of its attributes, by its own path.
        let Value::Object(attributes) = value else {
            return Err(ScimError::invalid_value(
                "an extension's value is an object",
            ));
        };
        for (name, value) in attributes {
            let path = PatchPath::Attr(AttrPath {
                uri: Some(key.to_owned()),
                name,
                sub_attr: None,
            });
            apply_path(root, op, &path, value, read_only)?;
        }
        return Ok(());
    }
    if is_core_urn(key) {
        let Value::Object(attributes) = value else {
            return Err(ScimError::invalid_value(
                "the core schema's value is an object",
            ));
        };
        for (name, value) in attributes {
            if name.eq_ignore_ascii_case("schemas")
                || read_only.iter().any(|r| r.eq_ignore_ascii_case(&name))
            {
                continue;
            }
            apply_key(root, op, &name, value, read_only)?;
        }
        return Ok(());
    }
    let path = PatchPath::from_str(key)
        .map_err(|_| ScimError::invalid_path("an attribute name does not parse"))?;
    apply_path(root, op, &path, value, read_only)
}

/// Whether `key` names a whole schema (a path-less value may carry an extension's attributes as
/// one object under its URN).
fn is_schema_urn(key: &str) -> bool {
    is_core_urn(key) || key.eq_ignore_ascii_case(ENTERPRISE_USER)
}

fn apply_path(
    root: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    value: Value,
    read_only: &[&str],
) -> Result<(), ScimError> {
    let attr = match path {
        PatchPath::Attr(attr) => attr,
        PatchPath::Value(value_path) => &value_path.attr,
    };
    let top_level = attr.uri.as_deref().is_none_or(is_core_urn);
    if top_level && read_only.iter().any(|r| r.eq_ignore_ascii_case(&attr.name)) {
        return Err(ScimError::bad_request(
            "mutability",
            "the attribute is read-only",
        ));
    }
    let Some(container) = container_mut(root, attr, op != Op::Remove)? else {
        return Ok(());
    };
    let key = existing_key(container, &attr.name);
    match path {
        PatchPath::Attr(AttrPath { sub_attr: None, .. }) => {
            apply_attribute(container, key, op, value);
            Ok(())
        }
        PatchPath::Attr(AttrPath {
            sub_attr: Some(sub),
            ..
        }) => apply_sub_attribute(container, key, sub, op, value),
        PatchPath::Value(value_path) => apply_filtered(
            container,
            &key,
            &value_path.filter,
            value_path.sub_attr.as_deref(),
            op,
            value,
        ),
    }
}

/// The object an attribute lives in: the resource, or its extension (created for writes).
fn container_mut<'a>(
    root: &'a mut Map<String, Value>,
    attr: &AttrPath,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(uri) = attr.uri.as_deref().filter(|u| !is_core_urn(u)) else {
        return Ok(Some(root));
    };
    let key = existing_key(root, uri);
    if !root.contains_key(&key) {
        if !create {
            return Ok(None);
        }
        root.insert(key.clone(), Value::Object(Map::new()));
    }
    match root.get_mut(&key) {
        Some(Value::Object(extension)) => Ok(Some(extension)),
        _ => Err(ScimError::invalid_value(
            "an extension's value is an object",
        )),
    }
}

/// The key `name` is stored under, matched case-insensitively, or `name` itself.
fn existing_key(object: &Map<String, Value>, name: &str) -> String {
    object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// RFC 7644 §3.5.2: a value added as primary takes the mark from every other value.
fn demote_others(items: &mut [Value], primary: usize) {
    for (i, item) in items.iter_mut().enumerate() {
        if i != primary
            && is_primary(item)
            && let Some(item) = item.as_object_mut()
        {
            item.insert("primary".into(), Value::Bool(false));
        }
    }
}

fn apply_attribute(container: &mut Map<String, Value>, key: String, op: Op, value: Value) {
    match op {
        Op::Add => match (container.get_mut(&key), value) {
            (Some(Value::Array(existing)), value) => {
                let new = match value {
                    Value::Array(items) => items,
                    single => vec![single],
                };
                for item in new {
                    match existing.iter().position(|e| same_element(e, &item)) {
                        // The same value again: its sub-attributes are updated in place.
                        Some(i) => {
                            if let (Some(old), Value::Object(fields)) =
                                (existing[i].as_object_mut(), item)
                            {
                                old.extend(fields);
                            }
                            if is_primary(&existing[i]) {
                                demote_others(existing, i);
                            }
                        }
                        None => {
                            let primary = is_primary(&item);
                            existing.push(item);
                            if primary {
                                let last = existing.len() - 1;
                                demote_others(existing, last);
                            }
                        }
                    }
                }
            }
            (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
            (_, value) => {
                container.insert(key, value);
            }
        },
        Op::Replace => match (container.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
            (_, value) => {
                container.insert(key, value);
            }
        },
        Op::Remove => {
            let listed = match &value {
                Value::Array(items) => Some(items.clone()),
                Value::Object(_) => Some(vec![value.clone()]),
                _ => None,
            };
            match (container.get_mut(&key), listed) {
                (Some(Value::Array(existing)), Some(listed)) => {
                    existing.retain(|e| !listed.iter().any(|l| same_element(e, l)));
                }
                _ => {
                    container.remove(&key);
                }
            }
        }
    }
}

fn apply_sub_attribute(
    container: &mut Map<String, Value>,
    key: String,
    sub: &str,
    op: Op,
    value: Value,
) -> Result<(), ScimError> {
    match (container.get_mut(&key), op) {
        (Some(Value::Object(object)), Op::Remove) => {
            let sub_key = existing_key(object, sub);
            object.remove(&sub_key);
            Ok(())
        }
        (Some(Value::Array(items)), Op::Remove) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                let sub_key = existing_key(item, sub);
                item.remove(&sub_key);
            }
            Ok(())
        }
        (None, Op::Remove) => Ok(()),
        (Some(Value::Object(object)), _) => {
            let sub_key = existing_key(object, sub);
            apply_attribute(object, sub_key, op, value);
            Ok(())
        }
        (None | Some(Value::Null), _) => {
            let mut object = Map::new();
            object.insert(sub.to_owned(), value);
            container.insert(key, Value::Object(object));
            Ok(())
        }
        _ => Err(ScimError::invalid_path(
            "a sub-attribute of a multi-valued attribute needs a value filter",
        )),
    }
}

fn apply_filtered(
    container: &mut Map<String, Value>,
    key: &str,
    filter: &ValFilter,
    sub: Option<&str>,
    op: Op,
    value: Value,
) -> Result<(), ScimError> {
    let items = match container.get_mut(key) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None if op == Op::Remove => return Ok(()),
        Some(Value::Null) | None => {
            container.insert(key.to_owned(), Value::Array(Vec::new()));
            match container.get_mut(key) {
                Some(Value::Array(items)) => items,
                _ => unreachable!("just inserted"),
            }
        }
        Some(_) => {
            return Err(ScimError::invalid_path(
                "a value filter needs a multi-valued attribute",
            ));
        }
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| matches_val(filter, item))
        .map(|(i, _)| i)
        .collect();
    match op {
        Op::Remove => {
            match sub {
                Some(sub) => {
                    for i in &matched {
                        if let Some(item) = items[*i].as_object_mut() {
                            let sub_key = existing_key(item, sub);
                            item.remove(&sub_key);
                        }
                    }
                }
                None => {
                    let mut index = 0;
                    items.retain(|_| {
                        let keep = !matched.contains(&index);
                        index += 1;
                        keep
                    });
                }
            }
            Ok(())
        }
        Op::Add | Op::Replace if matched.is_empty() => {
            // Nothing matches: create the element the filter describes, if it describes one.
            let mut element = equalities(filter)
                .ok_or_else(|| ScimError::bad_request("noTarget", "no value matches the filter"))?;
            match (sub, value) {
                (Some(sub), value) => {
                    element.insert(sub.to_owned(), value);
                }
                (None, Value::Object(fields)) => element.extend(fields),
                (None, _) => {
                    return Err(ScimError::invalid_value("the value must be an object"));
                }
            }
            let element = Value::Object(element);
            let primary = is_primary(&element);
            items.push(element);
            if primary {
                let last = items.len() - 1;
                demote_others(items, last);
            }
            Ok(())
        }
        Op::Add | Op::Replace => {
            for &i in &matched {
                match (sub, &mut items[i]) {
                    (Some(sub), Value::Object(item)) => {
                        let sub_key = existing_key(item, sub);
                        item.insert(sub_key, value.clone());
                    }
                    (None, Value::Object(item)) if op == Op::Add => {
                        if let Value::Object(fields) = &value {
                            item.extend(fields.clone());
                        }
                    }
                    (None, slot) => *slot = value.clone(),
                    (Some(_), _) => {
                        return Err(ScimError::invalid_path("the matched value is not complex"));
                    }
                }
            }
            if let [only] = matched[..]
                && is_primary(&items[only])
            {
                demote_others(items, only);
            }
            Ok(())
        }
    }
}

/// The element a filter of `eq` comparisons joined by `and` describes.
fn equalities(filter: &ValFilter) -> Option<Map<String, Value>> {
    let mut element = Map::new();
    collect_equalities(filter, &mut element).then_some(element)
}

fn collect_equalities(filter: &ValFilter, into: &mut Map<String, Value>) -> bool {
    match filter {
        ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, value))
            if path.sub_attr.is_none() && path.uri.is_none() =>
        {
            let value = match value {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::True => Value::Bool(true),
                CompValue::False => Value::Bool(false),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return false,
            };
            into.insert(path.name.clone(), value);
            true
        }
        ValFilter::And(operands) => operands.iter().all(|f| collect_equalities(f, into)),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(resource: Value, body: Value) -> Result<Value, ScimError> {
        let mut resource = resource;
        let operations = parse(&body)?;
        apply(&mut resource, &operations, &["id", "meta", "groups"])?;
        Ok(resource)
    }

    fn ops(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP], "Operations": operations})
    }

    #[test]
    fn entra_style_operations() {
        let user =
            json!({"userName": "a", "active": true, "name": {"givenName": "A", "familyName": "B"}});
        let patched = patch(
            user,
            ops(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Replace", "value": {
                    "name.givenName": "Ann",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops",
                    "displayName": "Ann B"
                }},
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ann@example.com"}
            ])),
        )
        .unwrap();
        assert_eq!(patched["active"], "False");
        assert_eq!(
            patched["name"],
            json!({"givenName": "Ann", "familyName": "B"})
        );
        assert_eq!(patched["displayName"], "Ann B");
        assert_eq!(
            patched["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Ops"
        );
        assert_eq!(
            patched["emails"],
            json!([{"type": "work", "value": "ann@example.com"}])
        );
    }

    #[test]
    fn value_filters_sub_attributes_and_removal() {
        let user = json!({
            "userName": "a",
            "emails": [
                {"type": "work", "value": "w@example.com", "primary": true},
                {"type": "home", "value": "h@example.com"}
            ],
            "members": [{"value": "1"}, {"value": "2"}, {"value": "3"}]
        });
        let patched = patch(
            user,
            ops(json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "Remove", "path": "members", "value": [{"value": "2"}]},
                {"op": "add", "path": "members", "value": [{"value": "3"}, {"value": "4"}]},
                {"op": "remove", "path": "members[value eq \"1\"]"}
            ])),
        )
        .unwrap();
        assert_eq!(
            patched["emails"],
            json!([{"type": "work", "value": "new@example.com", "primary": true}])
        );
        assert_eq!(patched["members"], json!([{"value": "3"}, {"value": "4"}]));
    }

    #[test]
    fn okta_style_and_errors() {
        let user = json!({"userName": "a", "active": true});
        let patched = patch(
            user.clone(),
            ops(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .unwrap();
        assert_eq!(patched["active"], false);

        let refusals = [
            json!([{"op": "remove"}]),
            json!([{"op": "frobnicate", "path": "userName"}]),
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            json!([{"op": "replace", "path": "meta.version", "value": "x"}]),
            json!([{"op": "replace", "path": "emails[", "value": "x"}]),
            json!([{"op": "add", "path": "userName"}]),
            json!([]),
        ];
        for operations in refusals {
            assert!(
                patch(user.clone(), ops(operations.clone())).is_err(),
                "{operations}"
            );
        }
        assert!(patch(user.clone(), json!({"schemas": [PATCH_OP]})).is_err());
    }
}
