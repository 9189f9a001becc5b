//! The OpenAPI 3.1 document at `/api/openapi.json`.
//!
//! Schemas come from the protocol crate's types through `schemars`; this file lists the
//! operations. A test checks that every route in the router appears here and vice versa.

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;
use tidings_proto::rest::*;

/// One operation: method, path, summary, request body schema, success status and schema.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: bool,
    request: Option<Value>,
    form: Option<Value>,
    status: u16,
    response: Option<Value>,
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}})
}

/// Builds the document (once; it never changes while the process runs).
pub fn openapi_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn serve() -> Json<Value> {
    Json(openapi_document().clone())
}

fn build() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let g = &mut generator;
    let token_form = json!({
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "refresh_token": {"type": "string"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "device_name": {"type": "string", "description": "Name shown in the device list."}
        }
    });
    let revoke_form = json!({
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}
    });
    let ops = vec![
        Op {
            method: "get",
            path: "/healthz",
            summary: "Liveness: the process answers.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Health>(g)),
        },
        Op {
            method: "get",
            path: "/readyz",
            summary: "Readiness: storage answers (503 otherwise).",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Health>(g)),
        },
        Op {
            method: "post",
            path: "/oauth/token",
            summary: "RFC 6749 token endpoint: password and refresh_token grants.",
            auth: false,
            request: None,
            form: Some(token_form),
            status: 200,
            response: Some(schema::<TokenResponse>(g)),
        },
        Op {
            method: "post",
            path: "/oauth/revoke",
            summary: "RFC 7009 revocation; signs the token's device out.",
            auth: false,
            request: None,
            form: Some(revoke_form),
            status: 200,
            response: None,
        },
        Op {
            method: "get",
            path: "/.well-known/oauth-authorization-server",
            summary: "RFC 8414 authorization server metadata.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(json!({"type": "object"})),
        },
        Op {
            method: "get",
            path: "/.well-known/jwks.json",
            summary: "The public keys that sign access tokens.",
            auth: false,
            request: None,
            form: None,
            status: 200,
            response: Some(json!({"type": "object"})),
        },
        Op {
            method: "post",
            path: "/api/v1/accounts",
            summary: "Register an account.",
            auth: false,
            request: Some(schema::<RegisterRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<Account>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/account",
            summary: "The caller's account.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Account>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/account/password",
            summary: "Change the password; signs out every other device.",
            auth: true,
            request: Some(schema::<ChangePasswordRequest>(g)),
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/profile",
            summary: "The caller's profile.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "patch",
            path: "/api/v1/profile",
            summary: "Change the caller's display name or status text.",
            auth: true,
            request: Some(schema::<UpdateProfileRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/users",
            summary: "Directory search: users whose username or display name starts with `q` (2 to 64 characters); `limit` up to 50, default 20.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<UserSearchResults>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/users/{user_id}",
            summary: "A user's profile.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Profile>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/blocks",
            summary: "The caller's block list.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<BlockList>(g)),
        },
        Op {
            method: "put",
            path: "/api/v1/blocks/{user_id}",
            summary: "Block a user: no direct messages either way; they stop seeing the caller's presence and typing.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "delete",
            path: "/api/v1/blocks/{user_id}",
            summary: "Lift a block.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/devices",
            summary: "The caller's signed-in devices.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<DeviceList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/devices/{device_id}",
            summary: "Sign a device out.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/conversations",
            summary: "The caller's conversations, newest activity first.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<ConversationList>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations",
            summary: "Create a group owned by the caller.",
            auth: true,
            request: Some(schema::<CreateGroupRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/direct",
            summary: "The direct conversation with a user, created on first use.",
            auth: true,
            request: Some(schema::<CreateDirectRequest>(g)),
            form: None,
            status: 200,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}",
            summary: "One conversation.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Conversation>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}/members",
            summary: "Members and their markers.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<Vec<Member>>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/{id}/members",
            summary: "Add members to a group (owner only); returns those added.",
            auth: true,
            request: Some(schema::<AddMembersRequest>(g)),
            form: None,
            status: 200,
            response: Some(json!({"type": "array", "items": {"type": "integer"}})),
        },
        Op {
            method: "delete",
            path: "/api/v1/conversations/{id}/members/{user_id}",
            summary: "Remove a member (owner) or leave (oneself).",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "get",
            path: "/api/v1/conversations/{id}/messages",
            summary: "A page of history before `before` (query), oldest first.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<HistoryPage>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/conversations/{id}/messages",
            summary: "Send a message (201; 200 for a retried client_msg_id).",
            auth: true,
            request: Some(schema::<SendMessageRequest>(g)),
            form: None,
            status: 201,
            response: Some(schema::<SendAck>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/users",
            summary: "Administrators: accounts in id order, optionally by username prefix `q`; page with `after` and `limit` (up to 500).",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUserList>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/admin/users/{user_id}",
            summary: "Administrators: delete an account (devices signed out, removed from its conversations, messages kept or tombstoned per accounts.deleted_user_messages).",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/suspend",
            summary: "Administrators: suspend an account; every device is signed out at once.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/reactivate",
            summary: "Administrators: let a suspended account sign in again.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "post",
            path: "/api/v1/admin/users/{user_id}/sign-out",
            summary: "Administrators: sign out every device of an account.",
            auth: true,
            request: None,
            form: None,
            status: 204,
            response: None,
        },
        Op {
            method: "put",
            path: "/api/v1/admin/users/{user_id}/admin",
            summary: "Administrators: grant the server administrator role.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "delete",
            path: "/api/v1/admin/users/{user_id}/admin",
            summary: "Administrators: revoke the server administrator role (not one's own).",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AdminUser>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/audit",
            summary: "Administrators: a page of the audit log in id order, filtered by actor, target, kind and time range.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: Some(schema::<AuditPage>(g)),
        },
        Op {
            method: "get",
            path: "/api/v1/admin/audit/export",
            summary: "Administrators: the audit log as JSON Lines (application/jsonl, one AuditEntry per line), with the same filters.",
            auth: true,
            request: None,
            form: None,
            status: 200,
            response: None,
        },
        Op {
            method: "get",
            path: "/ws",
            summary: "Upgrade to the native WebSocket protocol (subprotocol tidings.v1); see docs/protocol.md.",
            auth: false,
            request: None,
            form: None,
            status: 101,
            response: None,
        },
    ];
    let problem = schema::<Problem>(g);
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(op.summary));
        let mut params = Vec::new();
        for name in ["id", "user_id", "device_id"] {
            if op.path.contains(&format!("{{{name}}}")) {
                params.push(id_param(name));
            }
        }
        if op.path == "/api/v1/users" {
            params.push(json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string", "minLength": 2, "maxLength": 64}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 50}}));
        }
        if op.path.ends_with("/messages") && op.method == "get" {
            params.push(json!({"name": "before", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}}));
        }
        if op.path == "/api/v1/admin/users" {
            params.push(json!({"name": "q", "in": "query", "required": false, "schema": {"type": "string"}}));
            params.push(json!({"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "format": "int64"}}));
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 500}}));
        }
        if op.path.starts_with("/api/v1/admin/audit") {
            for (name, kind) in [
                ("actor", "integer"),
                ("target", "integer"),
                ("kind", "string"),
                ("since", "integer"),
                ("until", "integer"),
                ("after", "integer"),
                ("limit", "integer"),
            ] {
                params.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}}));
            }
        }
        if !params.is_empty() {
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = op.request {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": body}}}),
            );
        }
        if let Some(form) = op.form {
            operation.insert("requestBody".into(), json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": form}}}));
        }
        if op.auth {
            operation.insert("security".into(), json!([{"bearer": []}]));
        }
        let success = match op.response {
            Some(s) => {
                json!({"description": "Success", "content": {"application/json": {"schema": s}}})
            }
            None => json!({"description": "Success"}),
        };
        operation.insert(
            "responses".into(),
            json!({
                op.status.to_string(): success,
                "default": {"description": "An RFC 9457 problem", "content": {"application/problem+json": {"schema": problem.clone()}}}
            }),
        );
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = Value::Object(operation);
    }
    let schemas = Value::Object(generator.take_definitions(true).into_iter().collect());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tidings",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of Tidings. Real-time traffic uses the WebSocket protocol at /ws (docs/protocol.md)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = openapi_document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        assert!(schemas.contains_key("Problem"));
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
