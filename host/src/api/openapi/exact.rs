//! What the handlers' annotations cannot say and the server checks: each catalog
//! type's payload in the event request, the bounds of every integer, and the shape
//! of every field and query parameter the server parses. With these, a request the
//! document allows is one the server accepts, and one it does not allow is refused;
//! `tests/run.sh` holds the two together with schemathesis. What no schema can say
//! (a URL that resolves to an allowed address, a pattern that is not a typo of a
//! catalog type) is answered 422.

use serde_json::{Value, json};

use crate::event::Catalog;

/// RFC 3339 as the server reads it. Days stop at 28 so that every date the pattern
/// allows exists; digits are ASCII (`\d` in some engines is any script's digit).
pub const TIME: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
/// A custom event type: `[a-z0-9_]` segments joined by dots (`is_custom_type_name`).
const CUSTOM_TYPE: &str = "^[a-z0-9_]+(\\.[a-z0-9_]+)+$";
/// One type pattern: `*`, a type, or a family (`TypePattern::parse`).
const TYPE_PATTERN: &str = "(\\*|[a-z0-9_]+(\\.[a-z0-9_]+)*(\\.\\*)?)";
/// Printable text (no control characters, as `char::is_control`).
fn printable(min: usize, max: usize) -> String {
    format!("^[^\\x00-\\x1f\\x7f-\\x9f]{{{min},{max}}}$")
}
/// A label of a host name or a domain.
const LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const PORT: &str =
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// A webhook URL: http or https, an IPv4 address or a host name whose last label
/// starts with a letter (a numeric one would be read as an address), an optional
/// port and path, no credentials, query or fragment.
fn url_pattern() -> String {
    format!(
        "^https?://({OCTET}(\\.{OCTET}){{3}}|({LABEL}\\.)*[A-Za-z]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?)(:{PORT})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
    )
}

/// Tightens the generated document for this daemon's catalog and batch limit.
pub fn tighten(doc: &mut Value, catalog: &Catalog, max_batch_events: usize) {
    let schemas = &mut doc["components"]["schemas"];
    let request = event_request(schemas, catalog);
    schemas["EventRequest"] = request;
    endpoint_fields(&mut schemas["NewEndpoint"]);
    endpoint_fields(&mut schemas["EndpointPatch"]);
    if let Some(batch) = doc
        .pointer_mut("/paths/~1v1~1events~1batch/post/requestBody/content/application~1json/schema")
    {
        // At least one event (an empty batch is refused 400 `empty_batch`), at most
        // `events.max_batch_events`.
        batch["minItems"] = json!(1);
        batch["maxItems"] = json!(max_batch_events);
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for operation in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                unique_id(operation);
                let parameters = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut);
                for parameter in parameters.into_iter().flatten() {
                    parameter_schema(path, parameter);
                }
            }
        }
    }
    links(doc);
    bound_integers(doc);
}

/// OpenAPI links from the answers that make a resource to the operations on it, so
/// that clients and stateful testers can follow them.
fn links(doc: &mut Value) {
    let follow = |from: &str, status: &str, to: &[&str], parameter: &str| {
        let links: serde_json::Map<String, Value> = to
            .iter()
            .map(|id| {
                let parameters = json!({ parameter: "$response.body#/id" });
                (
                    id.to_string(),
                    json!({ "operationId": id, "parameters": parameters }),
                )
            })
            .collect();
        (from.to_string(), status.to_string(), Value::Object(links))
    };
    let webhook = [
        "webhooks_get",
        "webhooks_update",
        "webhooks_delete",
        "webhooks_enable",
        "webhooks_disable",
        "webhooks_rotate_secret",
        "webhooks_test",
        "webhooks_deliveries",
        "webhooks_replay",
    ];
    let all = [
        follow("webhooks_create", "201", &webhook, "id"),
        follow(
            "webhooks_test",
            "200",
            &["webhooks_delivery", "webhooks_retry"],
            "id",
        ),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        for (from, status, links) in &all {
            if operation["operationId"] == from.as_str()
                && let Some(response) = operation.pointer_mut(&format!("/responses/{status}"))
            {
                response["links"] = links.clone();
            }
        }
    }
}

/// One branch per catalog type (its payload schema under `data`), and one for
/// custom types when they are allowed. Each branch and each payload is a named
/// component (`MessageReceivedEvent`, `MessageReceived`), so generated clients get
/// a class for each.
fn event_request(schemas: &mut Value, catalog: &Catalog) -> Value {
    let mut branches = Vec::new();
    for info in catalog.types() {
        let name = pascal(info.name);
        let mut data = info.schema.clone();
        if let Some(map) = data.as_object_mut() {
            map.remove("$schema");
            map.insert("title".into(), json!(name));
        }
        schemas[&name] = data;
        let data = json!({ "$ref": format!("#/components/schemas/{name}") });
        let event = format!("{name}Event");
        schemas[&event] = event_branch(&event, json!({ "const": info.name }), data);
        branches.push(json!({ "$ref": format!("#/components/schemas/{event}") }));
    }
    if catalog.allows_custom_types() {
        let known: Vec<&str> = catalog.types().iter().map(|t| t.name).collect();
        schemas["CustomEvent"] = event_branch(
            "CustomEvent",
            json!({ "type": "string", "maxLength": 128, "pattern": CUSTOM_TYPE, "not": { "enum": known } }),
            json!({ "title": "CustomEventData", "description": "Any JSON value." }),
        );
        branches.push(json!({ "$ref": "#/components/schemas/CustomEvent" }));
    }
    json!({
        "description": "One event in evhost's JSON shape: a catalog type (`GET /v1/event-types`) with its payload, or a custom `a.b` type with any object. CloudEvents 1.0 is accepted too.",
        "oneOf": branches,
    })
}

/// `message.received` → `MessageReceived`.
fn pascal(name: &str) -> String {
    heck::ToUpperCamelCase::to_upper_camel_case(name)
}

fn event_branch(title: &str, kind: Value, data: Value) -> Value {
    // The optional fields may be null, which counts as absent.
    let text = |pattern: String, description: &str| json!({ "type": ["string", "null"], "pattern": pattern, "description": description });
    let time = |description: &str| json!({ "type": ["string", "null"], "format": "date-time", "pattern": TIME, "description": description });
    json!({
        "title": title,
        "type": "object",
        "properties": {
            "type": kind,
            "data": data,
            "id": text("^[A-Za-z0-9._:-]{1,128}$".into(), "Your id; a resend within the dedup window is not processed twice. A UUID v7 is made when absent."),
            "source": text(printable(1, 256), "Where the event comes from; `/publishers/<token name>` when absent."),
            // The plan's `timestamp` is accepted for `time` but left out here: the
            // rule "one of the two" would need a `not`, which generators handle badly.
            "time": time("RFC 3339; now when absent. (`timestamp`, the platform plan's name, is read too.)"),
            "on_behalf_of": text(printable(1, 256), "The user a trusted publisher acts for."),
        },
        "required": ["type", "data"],
        "additionalProperties": false,
    })
}

/// The fields of a new endpoint and of a change to one.
fn endpoint_fields(schema: &mut Value) {
    let Some(properties) = schema["properties"].as_object_mut() else {
        return;
    };
    let nullable = |v: &Value| {
        v["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("null")))
    };
    let mut set = |name: &str, mut rule: Value| {
        if let Some(field) = properties.get_mut(name) {
            if nullable(field) {
                rule = json!({ "oneOf": [{ "type": "null" }, rule] });
            }
            let description = field.get("description").cloned();
            *field = rule;
            if let Some(d) = description {
                field["description"] = d;
            }
        }
    };
    // Trimmed by the server, so it must not start with a space.
    set(
        "name",
        json!({ "type": "string", "pattern": "^[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]{0,199}$" }),
    );
    set(
        "url",
        json!({ "type": "string", "format": "uri", "maxLength": crate::webhooks::egress::MAX_URL_LEN, "pattern": url_pattern() }),
    );
    set(
        "events",
        json!({ "type": "array", "minItems": 1, "maxItems": crate::webhooks::endpoint::MAX_PATTERNS,
                "items": { "type": "string", "pattern": format!("^{TYPE_PATTERN}$") } }),
    );
    set(
        "domain",
        json!({ "type": "string", "maxLength": 253, "pattern": format!("^{LABEL}(\\.{LABEL})*$") }),
    );
}

/// Handlers in different modules share names (`list`, `get`); an operation id must
/// be unique, so it is the handler's name after its tag (`webhooks_list`).
fn unique_id(operation: &mut Value) {
    let tag = operation["tags"][0]
        .as_str()
        .unwrap_or("evhost")
        .replace('-', "_");
    if let Some(id) = operation["operationId"].as_str()
        && !id.starts_with(&format!("{tag}_"))
    {
        operation["operationId"] = json!(format!("{tag}_{id}"));
    }
}

/// Query and path parameters by name: what the server parses them as.
fn parameter_schema(path: &str, parameter: &mut Value) {
    let name = parameter["name"].as_str().unwrap_or_default().to_string();
    let schema = match (parameter["in"].as_str(), name.as_str()) {
        (Some("query"), "limit") => json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
        (Some("query"), "cursor") if path.contains("/deliveries") => {
            json!({ "type": "string", "format": "uuid", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" })
        }
        (Some("query"), "cursor") => json!({ "type": "string", "pattern": "^[0-9]{1,18}$" }),
        (Some("query"), "since" | "until") => {
            json!({ "type": "string", "format": "date-time", "pattern": TIME })
        }
        (Some("query"), "types") => {
            // Empty: every type.
            json!({ "type": "string", "pattern": format!("^({TYPE_PATTERN}(,{TYPE_PATTERN})*)?$") })
        }
        (Some("query"), "kind") => {
            json!({ "type": "string", "enum": ["event", "record", "delivery"] })
        }
        (Some("query"), "order") => json!({ "type": "string", "enum": ["newest", "oldest"] }),
        (Some("query"), "status") => {
            json!({ "type": "string", "enum": ["pending", "succeeded", "failed"] })
        }
        _ => return,
    };
    parameter["schema"] = schema;
    if path.ends_with("/replay") && name == "since" {
        parameter["required"] = json!(true);
    }
}

/// Gives every integer with a machine format the range of that format, so that no
/// generated value overflows the server's type.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.contains(&json!("integer")),
                _ => false,
            };
            let range: Option<(i128, i128)> = match map.get("format").and_then(Value::as_str) {
                _ if !integer => None,
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64") => Some((0, u64::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = range {
                let min = map
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .map_or(min, |m| min.max(m.into()));
                map.insert("minimum".into(), bound(min));
                let max = map
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .map_or(max, |m| max.min(m.into()));
                map.insert("maximum".into(), bound(max));
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn bound(n: i128) -> Value {
    match (i64::try_from(n), u64::try_from(n)) {
        (Ok(n), _) => json!(n),
        (_, Ok(n)) => json!(n),
        _ => Value::Null,
    }
}
