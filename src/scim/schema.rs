//! What the published schemas (`/Schemas`, from `schemas.json`) declare, and a resource held
//! to it: what a client writes is kept only where a schema served here declares it, under the
//! schema's own spelling, so every resource answered is valid against what `/Schemas` says.
//!
//! Stage: SCIM. Works on SCIM JSON only; uses nothing else of the crate.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::error::ScimError;

/// The schemas served at `/Schemas`.
pub(crate) const SCHEMAS: &str = include_str!("schemas.json");

/// Attributes every resource has (RFC 7643 §3.1), declared by no schema.
const COMMON: [&str; 4] = ["schemas", "id", "externalId", "meta"];

/// One declared attribute: its name as the schema spells it, whether it holds a list, and its
/// sub-attributes (empty for a simple attribute).
#[derive(Debug)]
struct Attribute {
    name: String,
    multi_valued: bool,
    sub_attributes: Vec<String>,
}

#[derive(Debug)]
struct Schema {
    id: String,
    attributes: Vec<Attribute>,
}

static PUBLISHED: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    let documents: Vec<Value> =
        serde_json::from_str(SCHEMAS).expect("schemas.json is a JSON array");
    documents
        .iter()
        .map(|document| Schema {
            id: document["id"].as_str().unwrap_or_default().to_owned(),
            attributes: document["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|attribute| Attribute {
                    name: attribute["name"].as_str().unwrap_or_default().to_owned(),
                    multi_valued: attribute["multiValued"].as_bool().unwrap_or(false),
                    sub_attributes: attribute["subAttributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|sub| sub["name"].as_str().map(str::to_owned))
                        .collect(),
                })
                .collect(),
        })
        .collect()
});

fn schema(id: &str) -> Option<&'static Schema> {
    PUBLISHED.iter().find(|s| s.id.eq_ignore_ascii_case(id))
}

/// Holds `resource` (a resource of schema `core`, with the extensions `extensions`) to the
/// published schemas: attributes and sub-attributes no schema declares are dropped, and names
/// take the schema's spelling (`USERNAME` becomes `userName`). Common attributes pass as they
/// are.
pub(crate) fn keep_declared(resource: &mut Map<String, Value>, core: &str, extensions: &[&str]) {
    let Some(core) = schema(core) else {
        return;
    };
    let taken = std::mem::take(resource);
    for (key, value) in taken {
        if let Some(common) = COMMON.iter().find(|c| c.eq_ignore_ascii_case(&key)) {
            resource.insert((*common).to_owned(), value);
        } else if let Some(attribute) = find(core, &key) {
            if let Some(value) = declared_value(attribute, value) {
                resource.insert(attribute.name.clone(), value);
            }
        } else if let Some(extension) = extensions
            .iter()
            .filter(|e| e.eq_ignore_ascii_case(&key))
            .find_map(|e| schema(e))
            && let Value::Object(mut fields) = value
        {
            keep_declared_in(&mut fields, extension);
            if !fields.is_empty() {
                resource.insert(extension.id.clone(), Value::Object(fields));
            }
        }
    }
}

fn keep_declared_in(fields: &mut Map<String, Value>, schema: &Schema) {
    let taken = std::mem::take(fields);
    for (key, value) in taken {
        if let Some(attribute) = find(schema, &key)
            && let Some(value) = declared_value(attribute, value)
        {
            fields.insert(attribute.name.clone(), value);
        }
    }
}

fn find<'a>(schema: &'a Schema, name: &str) -> Option<&'a Attribute> {
    schema
        .attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// `value` with only the declared sub-attributes; `None` when nothing declared is left.
fn declared_value(attribute: &Attribute, value: Value) -> Option<Value> {
    if attribute.sub_attributes.is_empty() {
        return Some(value);
    }
    let keep = |item: Value| match item {
        Value::Object(fields) => {
            let mut kept = Map::new();
            for (key, value) in fields {
                if let Some(sub) = attribute
                    .sub_attributes
                    .iter()
                    .find(|s| s.eq_ignore_ascii_case(&key))
                {
                    kept.insert(sub.clone(), value);
                }
            }
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        // A bare value in a list of complex values is its `value` (clients send roles so).
        other if attribute.multi_valued && !other.is_null() => {
            let mut kept = Map::new();
            kept.insert("value".into(), other);
            Some(Value::Object(kept))
        }
        _ => None,
    };
    match value {
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(keep).collect())),
        Value::Null => None,
        single if attribute.multi_valued => keep(single).map(|item| Value::Array(vec![item])),
        single => keep(single),
    }
}

/// RFC 7643 §2.4: one value of a multi-valued attribute at most is `primary: true`, in the
/// core schema and in every extension.
pub(crate) fn one_primary_each(object: &Map<String, Value>) -> Result<(), ScimError> {
    for value in object.values() {
        match value {
            Value::Array(items) => {
                let primaries = items.iter().filter(|item| is_primary(item)).count();
                if primaries > 1 {
                    return Err(ScimError::invalid_value(
                        "a multi-valued attribute has more than one primary value",
                    ));
                }
            }
            Value::Object(inner) => one_primary_each(inner)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether a multi-valued attribute's element is marked `primary`.
pub(crate) fn is_primary(item: &Value) -> bool {
    item.get("primary").is_some_and(is_true)
}

/// `true`, or the string `"true"` in any case (Entra sends `"True"`).
pub(crate) fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn held(resource: Value) -> Value {
        let Value::Object(mut resource) = resource else {
            unreachable!()
        };
        keep_declared(&mut resource, USER, &[ENTERPRISE]);
        Value::Object(resource)
    }

    #[test]
    fn undeclared_attributes_go_and_names_take_the_schema_spelling() {
        let resource = held(json!({
            "USERNAME": "a",
            "externalid": "x",
            "favouriteColour": "blue",
            "name": {"givenName": "A", "nickname": "not a sub-attribute of name"},
            "roles": ["admin", {"value": "ops", "Display": "Ops", "colour": "red"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0": {"User": {"department": "x"}},
            ENTERPRISE: {"Department": "Sales", "shoeSize": 44, "manager": {"value": "m"}},
            "urn:example:custom": {"x": 1}
        }));
        assert_eq!(
            resource,
            json!({
                "userName": "a",
                "externalId": "x",
                "name": {"givenName": "A"},
                "roles": [{"value": "admin"}, {"value": "ops", "display": "Ops"}],
                ENTERPRISE: {"department": "Sales", "manager": {"value": "m"}}
            })
        );
    }

    #[test]
    fn two_primaries_are_refused_anywhere() {
        for resource in [
            json!({"emails": [{"value": "a", "primary": true}, {"value": "b", "primary": "True"}]}),
            json!({ENTERPRISE: {"x": [{"primary": true}, {"primary": true}]}}),
        ] {
            assert!(one_primary_each(resource.as_object().unwrap()).is_err());
        }
        let one =
            json!({"emails": [{"value": "a", "primary": true}, {"value": "b", "primary": false}]});
        assert!(one_primary_each(one.as_object().unwrap()).is_ok());
    }
}
