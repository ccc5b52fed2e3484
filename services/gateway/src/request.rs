//! One HTTP request as the method's input message: the body (the whole input, one field of it,
//! or nothing), the query parameters (fields by dotted path, repeated fields by repetition,
//! enums by name), then the path variables over both, read as canonical proto3 JSON.

use http::Method;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::routes::Route;

/// Messages written as one JSON string (so a query parameter can hold them).
const STRING_MESSAGES: &[&str] = &[
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.BytesValue",
];

/// The input of `route` from the bound path variables, the query string and the body.
///
/// # Errors
/// A message for the caller: a body that is not JSON or not allowed, an unknown query
/// parameter, or what the proto3 JSON reader refused (an unknown field, a wrong type).
pub fn build(
    route: &Route,
    bound: Vec<(String, String)>,
    query: &str,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    let input = route.method.input();
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let mut obj = Map::new();
    match route.body.as_str() {
        "" if !empty => return Err("this method takes no request body".to_owned()),
        "" => {}
        field => {
            let value: Value = if empty {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?
            };
            if field == "*" {
                let Value::Object(m) = value else {
                    return Err("the body must be a JSON object".to_owned());
                };
                obj = m;
            } else {
                obj.insert(field.to_owned(), value);
            }
        }
    }
    if route.body != "*" {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            // `$`-parameters (such as `$alt`) are the transport's, not the message's.
            if key.starts_with('$') {
                continue;
            }
            let (path, field) =
                resolve(&input, &key).ok_or_else(|| format!("unknown query parameter {key}"))?;
            let v = scalar(&field, &value).ok_or_else(|| {
                format!("query parameter {key}: {value:?} is not a {}", kind(&field))
            })?;
            insert(&mut obj, &path, v, field.is_list())?;
        }
    }
    if route.verb == Method::PATCH {
        derive_mask(route, &input, &mut obj);
    }
    for (path, value) in bound {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        insert(&mut obj, &path, Value::String(value), false)?;
    }
    DynamicMessage::deserialize(input, Value::Object(obj)).map_err(|e| e.to_string())
}

/// The field path of a dotted query key, and its last field (a scalar, an enum or a message
/// written as a string).
fn resolve(input: &MessageDescriptor, key: &str) -> Option<(Vec<String>, FieldDescriptor)> {
    let mut message = input.clone();
    let parts: Vec<&str> = key.split('.').collect();
    let mut path = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let field = message
            .get_field_by_name(part)
            .or_else(|| message.get_field_by_json_name(part))?;
        path.push(field.name().to_owned());
        let last = n + 1 == parts.len();
        if let Kind::Message(m) = field.kind() {
            if STRING_MESSAGES.contains(&m.full_name()) && last {
                return Some((path, field));
            }
            if last || field.is_list() || field.is_map() {
                return None;
            }
            message = m;
        } else {
            return (last && !field.is_map()).then_some((path, field));
        }
    }
    None
}

fn kind(field: &FieldDescriptor) -> String {
    if let Kind::Message(m) = field.kind() {
        m.full_name().to_owned()
    } else if let Kind::Enum(e) = field.kind() {
        e.full_name().to_owned()
    } else {
        format!("{:?}", field.kind()).to_lowercase()
    }
}

/// A query value as the JSON the reader expects: booleans as JSON booleans, the rest as
/// strings (proto3 JSON takes numbers as strings too; enums by name).
fn scalar(field: &FieldDescriptor, value: &str) -> Option<Value> {
    if field.kind() != Kind::Bool {
        return Some(Value::String(value.to_owned()));
    }
    match value {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ => None,
    }
}

/// Sets `path` in `obj` to `value` (appended when `list`), making the objects on the way.
fn insert(
    obj: &mut Map<String, Value>,
    path: &[String],
    value: Value,
    list: bool,
) -> Result<(), String> {
    let Some((last, on_the_way)) = path.split_last() else {
        return Ok(());
    };
    let mut at = obj;
    for part in on_the_way {
        // The body may have named the field in camelCase.
        let key = if at.contains_key(part) {
            part.clone()
        } else {
            let c = camel(part);
            if at.contains_key(&c) { c } else { part.clone() }
        };
        let next = at.entry(key).or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(m) = next else {
            return Err(format!("{} is not a message", path.join(".")));
        };
        at = m;
    }
    if list {
        let Value::Array(items) = at
            .entry(last.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        else {
            return Err(format!("{} is given twice", path.join(".")));
        };
        items.push(value);
    } else {
        at.insert(last.clone(), value);
    }
    Ok(())
}

/// A PATCH without an `update_mask` changes the fields its body names (not `name`, which says
/// which resource, nor `etag`, which is a precondition).
fn derive_mask(route: &Route, input: &MessageDescriptor, obj: &mut Map<String, Value>) {
    if route.body.is_empty() || route.body == "*" {
        return;
    }
    let Some(mask) = input.get_field_by_name("update_mask") else {
        return;
    };
    if obj.contains_key(mask.name()) || obj.contains_key(mask.json_name()) {
        return;
    }
    let Some(Value::Object(fields)) = obj.get(&route.body) else {
        return;
    };
    let paths: Vec<String> = fields
        .keys()
        .map(|k| camel(k))
        .filter(|k| k != "name" && k != "etag")
        .collect();
    obj.insert(mask.json_name().to_owned(), Value::String(paths.join(",")));
}

fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
