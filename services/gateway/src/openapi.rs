//! The OpenAPI 3.1 document of the transcoded API, generated from the same routes and
//! descriptors the gateway serves: one operation per route (its path with one parameter per
//! wildcard of a resource name, its query parameters, its body), a schema per message (proto3
//! JSON: camelCase properties, int64 as strings, enums by name, well-known types as their JSON
//! forms), the AIP-193 error schema and the bearer security scheme. `/docs` renders it as HTML.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{Route, Routes};

/// A path parameter: its OpenAPI name and the field it forms, with the pattern it fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParam {
    /// The OpenAPI parameter (`customer`).
    pub name: String,
    /// The request field the whole variable sets (`name`, `customer.name`).
    pub field: String,
}

/// The OpenAPI path of a template (`/v1/{name=organizations/*/customers/*}:undelete` →
/// `/v1/organizations/{organization}/customers/{customer}:undelete`) and its parameters.
#[must_use]
pub fn path_of(pattern: &str) -> (String, Vec<PathParam>) {
    let mut out = String::new();
    let mut params: Vec<PathParam> = Vec::new();
    let (path, verb) = match pattern.rfind(':') {
        Some(i) if !pattern[i..].contains('}') && !pattern[i..].contains('/') => {
            (&pattern[..i], Some(&pattern[i + 1..]))
        }
        _ => (pattern, None),
    };
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        let inner = &rest[open + 1..close];
        let (field, sub) = inner.split_once('=').unwrap_or((inner, "*"));
        let mut previous = "";
        let mut parts = Vec::new();
        for seg in sub.split('/') {
            if seg == "*" || seg == "**" {
                let mut name = singular(if previous.is_empty() {
                    field.rsplit('.').next().unwrap_or(field)
                } else {
                    previous
                });
                while params.iter().any(|p| p.name == name) {
                    name.push('_');
                }
                parts.push(format!("{{{name}}}"));
                params.push(PathParam {
                    name,
                    field: field.to_owned(),
                });
            } else {
                parts.push(seg.to_owned());
            }
            previous = seg;
        }
        out.push_str(&parts.join("/"));
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    if let Some(v) = verb {
        out.push(':');
        out.push_str(v);
    }
    (out, params)
}

fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = collection.strip_suffix("sses") {
        format!("{stem}ss")
    } else if let Some(stem) = collection.strip_suffix('s') {
        stem.to_owned()
    } else {
        collection.to_owned()
    }
}

/// Well-known messages and their JSON schema.
fn well_known(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "comma-separated camelCase field paths"})
        }
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}},
                                         "additionalProperties": true})
        }
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "int32"})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

/// Collects schemas of messages as they are referenced.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
    pending: Vec<MessageDescriptor>,
    seen: BTreeSet<String>,
}

impl Schemas {
    fn reference(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(v) = well_known(m.full_name()) {
            return v;
        }
        if self.seen.insert(m.full_name().to_owned()) {
            self.pending.push(m.clone());
        }
        json!({"$ref": format!("#/components/schemas/{}", m.full_name())})
    }

    fn scalar(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(m) => self.reference(&m),
        }
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({"type": "object"});
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.scalar(&value)});
        }
        let one = self.scalar(field);
        if field.is_list() {
            json!({"type": "array", "items": one})
        } else {
            one
        }
    }

    fn drain(&mut self) {
        while let Some(m) = self.pending.pop() {
            let mut properties = Map::new();
            for f in m.fields() {
                properties.insert(f.json_name().to_owned(), self.field(&f));
            }
            self.done.insert(
                m.full_name().to_owned(),
                json!({"type": "object", "properties": properties, "additionalProperties": false}),
            );
        }
    }
}

/// Query parameters of a route without a whole-input body: the top-level input fields bound
/// neither by the path nor by the body that a query string can carry.
fn query_params(route: &Route, bound: &[String], schemas: &mut Schemas) -> Vec<Value> {
    if route.body == "*" {
        return Vec::new();
    }
    let input = route.method.input();
    input
        .fields()
        .filter(|f| {
            let top = |b: &String| b.split('.').next() == Some(f.name());
            !bound.iter().any(top) && f.name() != route.body && !f.is_map()
        })
        .filter(|f| {
            if let Kind::Message(m) = f.kind() {
                well_known(m.full_name()).is_some() && !f.is_list()
            } else {
                true
            }
        })
        .map(|f| {
            json!({"name": f.json_name(), "in": "query", "required": false,
                   "schema": schemas.field(&f)})
        })
        .collect()
}

fn operation(route: &Route, schemas: &mut Schemas) -> (String, Value) {
    let (path, params) = path_of(&route.pattern);
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| {
            json!({"name": p.name, "in": "path", "required": true,
                   "description": format!("a segment of `{}`", p.field),
                   "schema": {"type": "string"}})
        })
        .collect();
    let bound: Vec<String> = params.iter().map(|p| p.field.clone()).collect();
    parameters.extend(query_params(route, &bound, schemas));
    let service = route.method.parent_service();
    let mut op = json!({
        "operationId": route.method.full_name(),
        "x-rpc": route.method.full_name(),
        "tags": [service.full_name()],
        "summary": format!("{}.{}", service.name(), route.method.name()),
        "parameters": parameters,
        "responses": {
            "200": {"description": if route.method.is_server_streaming() {
                        "newline-delimited JSON, one message a line"
                    } else { "OK" },
                    "content": {
                        if route.method.is_server_streaming() { "application/x-ndjson" }
                        else { "application/json" }:
                        {"schema": schemas.reference(&route.method.output())}}},
            "default": {"description": "an AIP-193 error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    });
    let body_schema = match route.body.as_str() {
        "" => None,
        "*" => Some(schemas.reference(&route.method.input())),
        field => route
            .method
            .input()
            .get_field_by_name(field)
            .map(|f| schemas.field(&f)),
    };
    if let Some(schema) = body_schema {
        op["requestBody"] = json!({"required": true,
                                   "content": {"application/json": {"schema": schema}}});
    }
    (path, op)
}

/// The whole document. Its server is `/`: relative to where the document is served (OpenAPI
/// 3.1 allows it), so one rendering serves every host name the gateway is reached by.
#[must_use]
pub fn document(routes: &Routes) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for route in routes.all() {
        let (path, mut op) = operation(route, &mut schemas);
        // An additional binding of an RPC is another operation of it.
        let id = route.method.full_name().to_owned();
        let mut unique = id.clone();
        let mut n = 1;
        while !ids.insert(unique.clone()) {
            n += 1;
            unique = format!("{id}.binding{n}");
        }
        op["operationId"] = json!(unique);
        let verb = route.verb.as_str().to_lowercase();
        paths.entry(path).or_default().entry(verb).or_insert(op);
    }
    schemas.drain();
    let mut components = Map::new();
    for (name, schema) in std::mem::take(&mut schemas.done) {
        components.insert(name, schema);
    }
    components.insert(
        "Error".to_owned(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "status"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "message": {"type": "string"},
                "status": {"type": "string", "description": "the google.rpc.Code name"},
                "details": {"type": "array", "items": {"type": "object",
                    "properties": {"@type": {"type": "string"}}, "additionalProperties": true}}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "CRM & field-service suite", "version": "v1",
                 "description": "Every RPC of the suite with a google.api.http rule, as HTTP/JSON (proto3 JSON)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The API reference page: every operation of `doc` by tag, with its parameters and schemas'
/// names, linking the document itself.
#[must_use]
pub fn page(doc: &Value) -> String {
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for (verb, op) in item.as_object().into_iter().flatten() {
                let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                let params: Vec<String> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "<code>{}</code> ({})",
                            escape(p["name"].as_str().unwrap_or("")),
                            escape(p["in"].as_str().unwrap_or(""))
                        )
                    })
                    .collect();
                let schema_name = |v: &Value| {
                    v["$ref"]
                        .as_str()
                        .and_then(|r| r.rsplit('/').next())
                        .map(escape)
                        .unwrap_or_default()
                };
                let body = schema_name(&op["requestBody"]["content"]["application/json"]["schema"]);
                let answer = op["responses"]["200"]["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|c| schema_name(&c["schema"]))
                    .unwrap_or_default();
                by_tag.entry(tag).or_default().push(format!(
                    "<li><b>{}</b> <code>{}</code> — {}<br>parameters: {}{}<br>answer: {}</li>",
                    verb.to_uppercase(),
                    escape(path),
                    escape(op["summary"].as_str().unwrap_or("")),
                    if params.is_empty() {
                        "none".to_owned()
                    } else {
                        params.join(", ")
                    },
                    if body.is_empty() {
                        String::new()
                    } else {
                        format!("<br>body: {body}")
                    },
                    answer
                ));
            }
        }
    }
    let sections: String = by_tag
        .iter()
        .map(|(tag, ops)| {
            format!(
                "<section><h2 id=\"{0}\">{0}</h2><ul>{1}</ul></section>",
                escape(tag),
                ops.join("")
            )
        })
        .collect();
    let index: String = by_tag
        .keys()
        .map(|t| format!("<li><a href=\"#{0}\">{0}</a></li>", escape(t)))
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>CRM API reference</title>\
         <style>body{{font-family:sans-serif;max-width:70em;margin:auto}}li{{margin:.4em 0}}</style>\
         </head><body><h1>CRM API reference</h1><p>Generated from the suite's descriptors; the \
         machine-readable document is <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1). \
         Send <code>Authorization: Bearer &lt;token&gt;</code>; get one at <code>POST /oauth/token</code> \
         or <code>POST /v1/auth:login</code>.</p><ul>{index}</ul>{sections}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_name_variables_become_one_parameter_per_segment() {
        let (path, params) = path_of("/v1/{name=organizations/*/customers/*}:undelete");
        assert_eq!(
            path,
            "/v1/organizations/{organization}/customers/{customer}:undelete"
        );
        assert_eq!(
            params
                .iter()
                .map(|p| (p.name.as_str(), p.field.as_str()))
                .collect::<Vec<_>>(),
            [("organization", "name"), ("customer", "name")]
        );
        let (path, _) = path_of("/v1/{parent=organizations/*/properties/*}/equipment");
        assert_eq!(
            path,
            "/v1/organizations/{organization}/properties/{property}/equipment"
        );
        let (path, params) = path_of("/v1/things/{thing_id}");
        assert_eq!(
            (path.as_str(), params[0].name.as_str()),
            ("/v1/things/{thing_id}", "thing_id")
        );
    }

    #[test]
    fn every_reference_resolves_and_every_operation_is_routable() {
        let pool = crm_proto::json::pool().unwrap();
        let routes = Routes::from_pool(pool).unwrap();
        let doc = document(&routes);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is referenced but missing"
            );
        }
        let mut ids = BTreeSet::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (verb, op) in item.as_object().unwrap() {
                operations += 1;
                assert!(
                    ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                    "{path}"
                );
                // The path with its parameters filled reaches the operation's RPC.
                let mut concrete = path.clone();
                for p in op["parameters"].as_array().unwrap() {
                    if p["in"] == "path" {
                        let n = p["name"].as_str().unwrap();
                        concrete = concrete.replace(&format!("{{{n}}}"), "x1");
                    }
                }
                let method = http::Method::from_bytes(verb.to_uppercase().as_bytes()).unwrap();
                let (found, _) = routes
                    .find(&method, &concrete)
                    .unwrap_or_else(|| panic!("{verb} {concrete} is not routable"));
                assert_eq!(found.method.full_name(), op["x-rpc"].as_str().unwrap());
            }
        }
        assert_eq!(operations, routes.all().len(), "one operation per route");
    }
}
