//! `ApiClientService` and the `client_credentials` grant.
//!
//! A client's `client_id` is `c1.<organization>.<client>`, so a token request can be checked
//! inside that organization's transaction. Secrets are 256-bit random values shown once and
//! stored as HMAC-SHA-256 digests; rotation keeps the newest two valid.

pub mod store;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::{AsyncPgConnection, OrgId, tenant};
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
use rand::RngCore;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use self::store::{ClientRow, NewClient};
use crate::ids::ClientId;
use crate::secrets::TokenSecrets;
use crate::{IdentityState, audit, revocations, status};

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
    org: OrgId,
    client: &ApiClient,
    actor: &str,
    digest: Vec<u8>,
) -> Result<ApiClient, ApiError> {
    let id = ClientId(Uuid::now_v7());
    let new = NewClient {
        id,
        display_name: client.display_name.trim(),
        roles: &client.roles,
        redirect_uris: &client.redirect_uris,
        created_by: actor,
    };
    store::insert(conn, org, new).await?;
    store::add_secret(conn, org, id, digest).await?;
    let name = names::child_name(org.uuid(), COLLECTION, id.uuid());
    audit::append(
        conn,
        org.uuid(),
        audit::Entry {
            kind: "api_client.created",
            actor,
            subject: &name,
            detail: "",
        },
    )
    .await?;
    let row = store::find(conn, org, id)
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
        Box::pin(
            async move { insert_client(conn, OrgId(org), &client, "operators/cli", digest).await },
        )
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
    tenant::read(pool, org, move |conn| {
        Box::pin(async move {
            Ok::<_, ApiError>(
                store::find_live(conn, OrgId(org), ClientId(id))
                    .await?
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
        name: names::child_name(r.organization_id.uuid(), COLLECTION, r.id.uuid()),
        client_id: client_id(r.organization_id.uuid(), r.id.uuid()),
        display_name: r.display_name,
        roles: r.roles,
        create_time: Some(timestamp(r.create_time)),
        delete_time: optional_timestamp(r.delete_time),
        active_secrets: i32::try_from(active_secrets).unwrap_or(i32::MAX),
        redirect_uris: r.redirect_uris,
    }
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
    let roles = tenant::read(pool, org, move |conn| {
        Box::pin(async move {
            let (tenant, client) = (OrgId(org), ClientId(id));
            let Some(row) = store::find_live(conn, tenant, client).await? else {
                return Ok(None);
            };
            if !store::secret_matches(conn, tenant, client, digest).await? {
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
                    let created = insert_client(conn, OrgId(org), &client, &actor, digest).await?;
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
        let after = listing.after_uuid().map_err(status)?.map(ClientId);
        let limit = listing.limit();
        let mut rows = tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let tenant = OrgId(org);
                let rows = store::page(conn, tenant, after, limit).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let n = store::active_secrets(conn, tenant, r.id).await?;
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
        let (tenant, client) = (OrgId(org), ClientId(id));
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
                    let row = store::find_live(conn, tenant, client)
                        .await?
                        .ok_or_else(|| ApiError::NotFound {
                            resource_type: "identity.crm/ApiClient",
                            name: name.clone(),
                        })?;
                    store::add_secret(conn, tenant, client, digest).await?;
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
                    let n = store::active_secrets(conn, tenant, client).await?;
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
        let (tenant, client) = (OrgId(org), ClientId(id));
        let actor = principal.subject.clone();
        let name = body.name.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                store::find_live(conn, tenant, client)
                    .await?
                    .ok_or_else(|| ApiError::NotFound {
                        resource_type: "identity.crm/ApiClient",
                        name: name.clone(),
                    })?;
                store::delete(conn, tenant, client).await?;
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
                let row = store::find(conn, tenant, client)
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
