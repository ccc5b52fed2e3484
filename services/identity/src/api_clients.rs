//! `ApiClientService` and the `client_credentials` grant.
//!
//! A client's `client_id` is `c1.<organization>.<client>`, so a token request can be checked
//! inside that organization's transaction. Secrets are 256-bit random values shown once and
//! stored as HMAC-SHA-256 digests; rotation keeps the newest two valid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::{AsyncPgConnection, tenant};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::api_client_service_server::ApiClientService;
use crm_proto::identity_v1::{
    ApiClient, ApiClientWithSecret, CreateApiClientRequest, DeleteApiClientRequest,
    ListApiClientsRequest, ListApiClientsResponse, RevocationKind, RotateApiClientSecretRequest,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::{api_client_secrets as cs, api_clients as c};
use crate::secrets::TokenSecrets;
use crate::{IdentityState, audit, revocations};

const SERVICE: &str = "crm.identity.v1.ApiClientService";
const COLLECTION: &str = "apiClients";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    let manage = Requirement::Permission(permission::CLIENTS_MANAGE);
    MethodPolicy::new()
        .with(SERVICE, "CreateApiClient", manage)
        .with(SERVICE, "ListApiClients", manage)
        .with(SERVICE, "RotateApiClientSecret", manage)
        .with(SERVICE, "DeleteApiClient", manage)
}

/// The `client_id` of client `id` of `org`.
#[must_use]
pub fn client_id(org: Uuid, id: Uuid) -> String {
    format!("c1.{org}.{id}")
}

/// Splits a `client_id` into organization and client.
#[must_use]
pub fn parse_client_id(s: &str) -> Option<(Uuid, Uuid)> {
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("c1"), Some(org), Some(id), None) => {
            Some((Uuid::parse_str(org).ok()?, Uuid::parse_str(id).ok()?))
        }
        _ => None,
    }
}

/// Inserts a client with its first secret and audits it, in the caller's transaction.
async fn insert_client(
    conn: &AsyncPgConnection,
    org: Uuid,
    client: &ApiClient,
    actor: &str,
    digest: Vec<u8>,
) -> Result<ApiClient, ApiError> {
    let id = Uuid::now_v7();
    diesel::insert_into(c::table)
        .values((
            c::organization_id.eq(org),
            c::id.eq(id),
            c::display_name.eq(client.display_name.trim()),
            c::roles.eq(&client.roles),
            c::redirect_uris.eq(&client.redirect_uris),
            c::created_by.eq(actor),
        ))
        .execute(&mut { conn })
        .await?;
    add_secret(conn, org, id, digest).await?;
    let name = names::child_name(org, COLLECTION, id);
    audit::append(
        conn,
        org,
        audit::Entry {
            kind: "api_client.created",
            actor,
            subject: &name,
            detail: "",
        },
    )
    .await?;
    let row = find(conn, org, id)
        .await?
        .ok_or_else(|| ApiError::Internal("client vanished".into()))?;
    Ok(to_proto(row, 1))
}

/// The operator's path to a service client (`crm service-client`): an API client of `org`
/// holding service roles (`service.integrations`, `service.delegate`, `service.reader`), which
/// no organization administrator can grant. Returns the client and its one-time secret;
/// audited with the actor `operators/cli`.
///
/// # Errors
/// INVALID_ARGUMENT for a missing name or a role outside the catalog; database errors.
pub async fn register_service_client(
    pool: &crm_db::DbPool,
    secrets: &TokenSecrets,
    org: Uuid,
    display_name: &str,
    roles: &[String],
) -> Result<ApiClientWithSecret, ApiError> {
    let mut v = Violations::new();
    validate::required_text(&mut v, "display_name", display_name, 200);
    if roles.is_empty() {
        v.push("roles", "REQUIRED", "at least one role is required");
    }
    let catalog = crm_auth::principal::catalog_roles();
    for r in roles {
        if !catalog.contains(&r.as_str()) {
            v.push(
                "roles",
                "UNKNOWN_ROLE",
                format!("{r:?} is not a catalog role"),
            );
        }
    }
    v.finish()?;
    let secret = new_secret();
    let digest = secrets.digest(&secret);
    let client = ApiClient {
        display_name: display_name.to_owned(),
        roles: roles.to_vec(),
        ..ApiClient::default()
    };
    let created = tenant::transaction(pool, org, move |conn| {
        Box::pin(async move { insert_client(conn, org, &client, "operators/cli", digest).await })
    })
    .await?;
    Ok(ApiClientWithSecret {
        api_client: Some(created),
        client_secret: secret,
    })
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("cs1_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = c)]
struct ClientRow {
    organization_id: Uuid,
    id: Uuid,
    display_name: String,
    roles: Vec<String>,
    create_time: DateTime<Utc>,
    delete_time: Option<DateTime<Utc>>,
    redirect_uris: Vec<String>,
}

/// A client as the authorization-code flow needs it.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// Its organization.
    pub organization: Uuid,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
}

/// The live client behind `client_id`, if any.
///
/// # Errors
/// Database failures.
pub async fn registered(
    pool: &crm_db::DbPool,
    client: &str,
) -> Result<Option<RegisteredClient>, ApiError> {
    let Some((org, id)) = parse_client_id(client) else {
        return Ok(None);
    };
    tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            Ok::<_, ApiError>(
                find(conn, org, id)
                    .await?
                    .filter(|r| r.delete_time.is_none())
                    .map(|r| RegisteredClient {
                        organization: org,
                        redirect_uris: r.redirect_uris,
                    }),
            )
        })
    })
    .await
}

/// Whether `uri` may be registered: https, or http on the loopback for native apps; no fragment.
fn acceptable_redirect(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    (u.scheme() == "https" || (u.scheme() == "http" && loopback))
        && u.fragment().is_none()
        && u.host_str().is_some()
}

fn to_proto(r: ClientRow, active_secrets: i64) -> ApiClient {
    ApiClient {
        name: names::child_name(r.organization_id, COLLECTION, r.id),
        client_id: client_id(r.organization_id, r.id),
        display_name: r.display_name,
        roles: r.roles,
        create_time: Some(timestamp(r.create_time)),
        delete_time: optional_timestamp(r.delete_time),
        active_secrets: i32::try_from(active_secrets).unwrap_or(i32::MAX),
        redirect_uris: r.redirect_uris,
    }
}

async fn active_secrets(conn: &AsyncPgConnection, org: Uuid, id: Uuid) -> QueryResult<i64> {
    cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::client_id.eq(id))
        .filter(cs::revoke_time.is_null())
        .count()
        .get_result(&mut { conn })
        .await
}

async fn find(conn: &AsyncPgConnection, org: Uuid, id: Uuid) -> QueryResult<Option<ClientRow>> {
    c::table
        .filter(c::organization_id.eq(org))
        .filter(c::id.eq(id))
        .select(ClientRow::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// Adds a secret and keeps only the newest two valid.
async fn add_secret(
    conn: &AsyncPgConnection,
    org: Uuid,
    id: Uuid,
    digest: Vec<u8>,
) -> QueryResult<()> {
    diesel::insert_into(cs::table)
        .values((
            cs::organization_id.eq(org),
            cs::client_id.eq(id),
            cs::id.eq(Uuid::now_v7()),
            cs::digest.eq(digest),
        ))
        .execute(&mut { conn })
        .await?;
    let keep: Vec<Uuid> = cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::client_id.eq(id))
        .filter(cs::revoke_time.is_null())
        .order(cs::id.desc())
        .limit(2)
        .select(cs::id)
        .load(&mut { conn })
        .await?;
    diesel::update(
        cs::table
            .filter(cs::organization_id.eq(org))
            .filter(cs::client_id.eq(id))
            .filter(cs::revoke_time.is_null())
            .filter(cs::id.ne_all(keep)),
    )
    .set(cs::revoke_time.eq(diesel::dsl::now))
    .execute(&mut { conn })
    .await?;
    Ok(())
}

/// Checks a `client_credentials` request; returns the client's organization, subject id and roles.
///
/// # Errors
/// UNAUTHENTICATED `INVALID_CLIENT` for anything wrong, whatever it was.
pub async fn authenticate(
    pool: &crm_db::DbPool,
    secrets: &TokenSecrets,
    client: &str,
    secret: &str,
) -> Result<(Uuid, Uuid, Vec<String>), ApiError> {
    let invalid = || ApiError::Unauthenticated {
        reason: "INVALID_CLIENT",
        message: "the client id or secret is not right".into(),
    };
    let (org, id) = parse_client_id(client).ok_or_else(invalid)?;
    if secret.is_empty() || secret.len() > 200 {
        return Err(invalid());
    }
    let digest = secrets.digest(secret);
    let roles = tenant::transaction(pool, org, move |conn| {
        Box::pin(async move {
            let row = find(conn, org, id).await?;
            let Some(row) = row.filter(|r| r.delete_time.is_none()) else {
                return Ok(None);
            };
            let matches: i64 = cs::table
                .filter(cs::organization_id.eq(org))
                .filter(cs::client_id.eq(id))
                .filter(cs::revoke_time.is_null())
                .filter(cs::digest.eq(digest))
                .count()
                .get_result(&mut { conn })
                .await?;
            if matches != 1 {
                return Ok(None);
            }
            Ok::<_, ApiError>(Some(crate::roles::expand(conn, org, &row.roles).await?))
        })
    })
    .await?
    .ok_or_else(invalid)?;
    Ok((org, id, roles))
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct ApiClientApi {
    state: IdentityState,
}

impl ApiClientApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

fn without_secret(r: &ApiClientWithSecret) -> ApiClientWithSecret {
    ApiClientWithSecret {
        api_client: r.api_client.clone(),
        client_secret: String::new(),
    }
}

#[tonic::async_trait]
impl ApiClientService for ApiClientApi {
    async fn create_api_client(
        &self,
        req: Request<CreateApiClientRequest>,
    ) -> Result<Response<ApiClientWithSecret>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let client = body.api_client.clone().unwrap_or_default();
        validate::required_text(&mut v, "api_client.display_name", &client.display_name, 200);
        crate::members::check_roles(&mut v, "api_client.roles", &client.roles);
        if client.redirect_uris.len() > 10 {
            v.push(
                "api_client.redirect_uris",
                "TOO_MANY",
                "at most 10 redirect URIs",
            );
        }
        for uri in &client.redirect_uris {
            if !acceptable_redirect(uri) {
                v.push(
                    "api_client.redirect_uris",
                    "INVALID_REDIRECT_URI",
                    format!("{uri:?} must be https (or http on the loopback) without a fragment"),
                );
            }
        }
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "CreateApiClient", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let org =
            org.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let secret = new_secret();
        let digest = self.state.secrets.digest(&secret);
        let actor = principal.subject.clone();
        let write = mutation::idempotent_redacted(
            self.state.pool.clone(),
            org,
            key,
            move |conn| {
                Box::pin(async move {
                    let undefined = crate::roles::undefined(conn, org, &client.roles).await?;
                    if !undefined.is_empty() {
                        return Err(ApiError::invalid(
                            "api_client.roles",
                            "UNKNOWN_ROLE",
                            format!("not defined in this organization: {}", undefined.join(", ")),
                        ));
                    }
                    let created = insert_client(conn, org, &client, &actor, digest).await?;
                    Ok(ApiClientWithSecret {
                        api_client: Some(created),
                        client_secret: secret,
                    })
                })
            },
            without_secret,
        );
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_api_clients(
        &self,
        req: Request<ListApiClientsRequest>,
    ) -> Result<Response<ListApiClientsResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let listing =
            Listing::of(&principal, &self.state.page_tokens, &body, &[], 50).map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?;
        let limit = listing.limit();
        let mut rows = tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = c::table
                    .filter(c::organization_id.eq(org))
                    .filter(c::delete_time.is_null())
                    .order(c::id.asc())
                    .limit(limit)
                    .select(ClientRow::as_select())
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(c::id.gt(after));
                }
                let rows: Vec<ClientRow> = q.load(&mut { conn }).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let n = active_secrets(conn, org, r.id).await?;
                    out.push((r, n));
                }
                Ok::<_, ApiError>(out)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |(r, _)| {
            vec![r.id.to_string()]
        });
        Ok(Response::new(ListApiClientsResponse {
            api_clients: rows.into_iter().map(|(r, n)| to_proto(r, n)).collect(),
            next_page_token,
        }))
    }

    async fn rotate_api_client_secret(
        &self,
        req: Request<RotateApiClientSecretRequest>,
    ) -> Result<Response<ApiClientWithSecret>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let parsed = names::parse_child(&body.name, COLLECTION, "name")
            .map_err(|e| v.absorb(e))
            .ok();
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(
            &mut v,
            "RotateApiClientSecret",
            &body.request_id,
            &fingerprint,
        );
        v.finish().map_err(status)?;
        let (org, id) =
            parsed.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let secret = new_secret();
        let digest = self.state.secrets.digest(&secret);
        let actor = principal.subject.clone();
        let name = body.name.clone();
        let write = mutation::idempotent_redacted(
            self.state.pool.clone(),
            org,
            key,
            move |conn| {
                Box::pin(async move {
                    let row = find(conn, org, id)
                        .await?
                        .filter(|r| r.delete_time.is_none())
                        .ok_or_else(|| ApiError::NotFound {
                            resource_type: "identity.crm/ApiClient",
                            name: name.clone(),
                        })?;
                    add_secret(conn, org, id, digest).await?;
                    audit::append(
                        conn,
                        org,
                        audit::Entry {
                            kind: "api_client.secret_rotated",
                            actor: &actor,
                            subject: &name,
                            detail: "",
                        },
                    )
                    .await?;
                    let n = active_secrets(conn, org, id).await?;
                    Ok(ApiClientWithSecret {
                        api_client: Some(to_proto(row, n)),
                        client_secret: secret,
                    })
                })
            },
            without_secret,
        );
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete_api_client(
        &self,
        req: Request<DeleteApiClientRequest>,
    ) -> Result<Response<ApiClient>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let parsed = names::parse_child(&body.name, COLLECTION, "name")
            .map_err(|e| v.absorb(e))
            .ok();
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "DeleteApiClient", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let (org, id) =
            parsed.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let actor = principal.subject.clone();
        let name = body.name.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                find(conn, org, id)
                    .await?
                    .filter(|r| r.delete_time.is_none())
                    .ok_or_else(|| ApiError::NotFound {
                        resource_type: "identity.crm/ApiClient",
                        name: name.clone(),
                    })?;
                diesel::update(
                    c::table
                        .filter(c::organization_id.eq(org))
                        .filter(c::id.eq(id)),
                )
                .set(c::delete_time.eq(diesel::dsl::now))
                .execute(&mut { conn })
                .await?;
                diesel::update(
                    cs::table
                        .filter(cs::organization_id.eq(org))
                        .filter(cs::client_id.eq(id))
                        .filter(cs::revoke_time.is_null()),
                )
                .set(cs::revoke_time.eq(diesel::dsl::now))
                .execute(&mut { conn })
                .await?;
                revocations::record(conn, RevocationKind::Client, &client_id(org, id), None)
                    .await?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "api_client.deleted",
                        actor: &actor,
                        subject: &name,
                        detail: "",
                    },
                )
                .await?;
                let row = find(conn, org, id)
                    .await?
                    .ok_or_else(|| ApiError::Internal("client vanished".into()))?;
                Ok(to_proto(row, 0))
            })
        });
        let out = mutation::detached(None, write).await.map_err(status)?;
        self.state.revoked.notify_waiters();
        Ok(Response::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip() {
        let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_client_id(&client_id(org, id)), Some((org, id)));
        assert_eq!(parse_client_id("c1.x.y"), None);
        assert_eq!(parse_client_id(&format!("c2.{org}.{id}")), None);
        assert!(new_secret().len() > 40);
    }
}
