//! `IntegrationCredentialService`: third-party API keys in an AES-GCM envelope — a random data
//! key per credential encrypts the secret, the KEK seals the data key — returned to people only
//! as their last four characters, decrypted only for services, every access audited.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::{AsyncPgConnection, tenant};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::integration_credential_service_server::IntegrationCredentialService;
use crm_proto::identity_v1::{
    AccessIntegrationCredentialRequest, AccessIntegrationCredentialResponse,
    CreateIntegrationCredentialRequest, DeleteIntegrationCredentialRequest, IntegrationCredential,
    ListIntegrationCredentialsRequest, ListIntegrationCredentialsResponse,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::keys::Kek;
use crate::schema::integration_credentials as ic;
use crate::{IdentityState, audit};

const SERVICE: &str = "crm.identity.v1.IntegrationCredentialService";
const COLLECTION: &str = "integrationCredentials";
const RESOURCE: &str = "identity.crm/IntegrationCredential";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    let manage = Requirement::Permission(permission::CREDENTIALS_MANAGE);
    MethodPolicy::new()
        .with(SERVICE, "CreateIntegrationCredential", manage)
        .with(SERVICE, "ListIntegrationCredentials", manage)
        .with(SERVICE, "DeleteIntegrationCredential", manage)
        .with(
            SERVICE,
            "AccessIntegrationCredential",
            Requirement::Permission(permission::CREDENTIALS_USE),
        )
}

/// Encrypts `secret` in an envelope: (sealed data key, ciphertext).
fn seal(kek: &Kek, id: Uuid, secret: &str) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    let mut data_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut data_key);
    let label = format!("credential:{id}");
    let ciphertext = Kek::new(data_key)
        .seal_bytes(&label, secret.as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sealed_key = kek
        .seal_bytes(&format!("{label}:key"), &data_key)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((sealed_key, ciphertext))
}

fn open(kek: &Kek, id: Uuid, sealed_key: &[u8], ciphertext: &[u8]) -> Option<String> {
    let label = format!("credential:{id}");
    let data_key: [u8; 32] = kek
        .open_bytes(&format!("{label}:key"), sealed_key)?
        .try_into()
        .ok()?;
    String::from_utf8(Kek::new(data_key).open_bytes(&label, ciphertext)?).ok()
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = ic)]
struct Row {
    organization_id: Uuid,
    id: Uuid,
    display_name: String,
    provider: String,
    secret_last4: String,
    create_time: DateTime<Utc>,
    created_by: String,
}

impl From<Row> for IntegrationCredential {
    fn from(r: Row) -> Self {
        Self {
            name: names::child_name(r.organization_id, COLLECTION, r.id),
            display_name: r.display_name,
            provider: r.provider,
            secret: String::new(),
            secret_last4: r.secret_last4,
            create_time: Some(timestamp(r.create_time)),
            creator: r.created_by,
        }
    }
}

async fn find(conn: &AsyncPgConnection, org: Uuid, id: Uuid) -> QueryResult<Option<Row>> {
    ic::table
        .filter(ic::organization_id.eq(org))
        .filter(ic::id.eq(id))
        .filter(ic::delete_time.is_null())
        .select(Row::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct CredentialApi {
    state: IdentityState,
}

impl CredentialApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound {
        resource_type: RESOURCE,
        name: name.to_owned(),
    }
}

#[tonic::async_trait]
impl IntegrationCredentialService for CredentialApi {
    async fn create_integration_credential(
        &self,
        req: Request<CreateIntegrationCredentialRequest>,
    ) -> Result<Response<IntegrationCredential>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let c = body.integration_credential.clone().unwrap_or_default();
        validate::required_text(
            &mut v,
            "integration_credential.display_name",
            &c.display_name,
            200,
        );
        if c.provider.is_empty()
            || c.provider.len() > 40
            || !c
                .provider
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            v.push(
                "integration_credential.provider",
                "INVALID_PROVIDER",
                "1 to 40 lower-case letters, digits or '-'",
            );
        }
        if c.secret.chars().count() < 8 || c.secret.len() > 4096 {
            v.push(
                "integration_credential.secret",
                "INVALID_SECRET",
                "8 characters to 4 KiB",
            );
        }
        // The fingerprint hashes the secret too (same request, same secret); the stored reply never contains it.
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(
            &mut v,
            "CreateIntegrationCredential",
            &body.request_id,
            &fingerprint,
        );
        v.finish().map_err(status)?;
        let org =
            org.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let id = Uuid::now_v7();
        let (sealed_key, ciphertext) = seal(&self.state.kek, id, &c.secret).map_err(status)?;
        let chars: Vec<char> = c.secret.chars().collect();
        let last4: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        let actor = principal.subject.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                diesel::insert_into(ic::table)
                    .values((
                        ic::organization_id.eq(org),
                        ic::id.eq(id),
                        ic::display_name.eq(c.display_name.trim()),
                        ic::provider.eq(&c.provider),
                        ic::secret_last4.eq(&last4),
                        ic::sealed_data_key.eq(&sealed_key),
                        ic::ciphertext.eq(&ciphertext),
                        ic::created_by.eq(&actor),
                    ))
                    .execute(&mut { conn })
                    .await?;
                let name = names::child_name(org, COLLECTION, id);
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "integration_credential.created",
                        actor: &actor,
                        subject: &name,
                        detail: &c.provider,
                    },
                )
                .await?;
                let row = find(conn, org, id)
                    .await?
                    .ok_or_else(|| ApiError::Internal("credential vanished".into()))?;
                Ok(IntegrationCredential::from(row))
            })
        });
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_integration_credentials(
        &self,
        req: Request<ListIntegrationCredentialsRequest>,
    ) -> Result<Response<ListIntegrationCredentialsResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let listing =
            Listing::of(&principal, &self.state.page_tokens, &body, &[], 50).map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?;
        let limit = listing.limit();
        let mut rows: Vec<Row> = tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = ic::table
                    .filter(ic::organization_id.eq(org))
                    .filter(ic::delete_time.is_null())
                    .order(ic::id.asc())
                    .limit(limit)
                    .select(Row::as_select())
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(ic::id.gt(after));
                }
                q.load(&mut { conn }).await.map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |r| {
            vec![r.id.to_string()]
        });
        Ok(Response::new(ListIntegrationCredentialsResponse {
            integration_credentials: rows.into_iter().map(IntegrationCredential::from).collect(),
            next_page_token,
        }))
    }

    async fn delete_integration_credential(
        &self,
        req: Request<DeleteIntegrationCredentialRequest>,
    ) -> Result<Response<IntegrationCredential>, Status> {
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
            "DeleteIntegrationCredential",
            &body.request_id,
            &fingerprint,
        );
        v.finish().map_err(status)?;
        let (org, id) =
            parsed.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let actor = principal.subject.clone();
        let name = body.name.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let row = find(conn, org, id).await?.ok_or_else(|| not_found(&name))?;
                // Deleting also destroys the ciphertext: nothing decryptable stays behind.
                diesel::update(
                    ic::table
                        .filter(ic::organization_id.eq(org))
                        .filter(ic::id.eq(id)),
                )
                .set((
                    ic::delete_time.eq(diesel::dsl::now),
                    ic::sealed_data_key.eq(Vec::<u8>::new()),
                    ic::ciphertext.eq(Vec::<u8>::new()),
                ))
                .execute(&mut { conn })
                .await?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "integration_credential.deleted",
                        actor: &actor,
                        subject: &name,
                        detail: "",
                    },
                )
                .await?;
                Ok(IntegrationCredential::from(row))
            })
        });
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn access_integration_credential(
        &self,
        req: Request<AccessIntegrationCredentialRequest>,
    ) -> Result<Response<AccessIntegrationCredentialResponse>, Status> {
        let principal = principal_of(&req)?;
        let name = req.into_inner().name;
        let (org, id) = names::parse_child(&name, COLLECTION, "name").map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let actor = principal.subject.clone();
        let kek = self.state.kek.clone();
        let secret = tenant::transaction(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let sealed: Option<(Vec<u8>, Vec<u8>)> = ic::table
                    .filter(ic::organization_id.eq(org))
                    .filter(ic::id.eq(id))
                    .filter(ic::delete_time.is_null())
                    .select((ic::sealed_data_key, ic::ciphertext))
                    .first(&mut { conn })
                    .await
                    .optional()?;
                let (key, ciphertext) = sealed.ok_or_else(|| not_found(&name))?;
                let secret = open(&kek, id, &key, &ciphertext)
                    .ok_or_else(|| ApiError::Internal("credential cannot be decrypted".into()))?;
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "integration_credential.accessed",
                        actor: &actor,
                        subject: &name,
                        detail: "",
                    },
                )
                .await?;
                Ok::<_, ApiError>(secret)
            })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(AccessIntegrationCredentialResponse {
            secret,
        }))
    }
}
