//! `OrganizationService`: creating a tenant (the creator becomes its first administrator),
//! reading and renaming it.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::tenant;
use crm_platform::ApiError;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::api::{mask, names};
use crm_platform::error::etag_error;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::organization_service_server::OrganizationService;
use crm_proto::identity_v1::{
    CreateOrganizationRequest, GetOrganizationRequest, Organization, UpdateOrganizationRequest,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::{memberships as m, organizations as o};
use crate::{IdentityState, audit};

const SERVICE: &str = "crm.identity.v1.OrganizationService";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "CreateOrganization", Requirement::Authenticated)
        .with(SERVICE, "GetOrganization", Requirement::Authenticated)
        .with(
            SERVICE,
            "UpdateOrganization",
            Requirement::Permission(permission::ORGANIZATION_WRITE),
        )
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = o)]
struct Row {
    id: Uuid,
    display_name: String,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    revision: i64,
}

impl From<Row> for Organization {
    fn from(r: Row) -> Self {
        Self {
            name: format!("organizations/{}", r.id),
            display_name: r.display_name,
            create_time: Some(timestamp(r.create_time)),
            update_time: Some(timestamp(r.update_time)),
            etag: crm_db::etag::from_revision(r.revision),
        }
    }
}

async fn load(conn: &crm_db::AsyncPgConnection, id: Uuid) -> QueryResult<Option<Row>> {
    o::table
        .filter(o::id.eq(id))
        .select(Row::as_select())
        .first(&mut { conn })
        .await
        .optional()
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct OrganizationApi {
    state: IdentityState,
}

impl OrganizationApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl OrganizationService for OrganizationApi {
    async fn create_organization(
        &self,
        req: Request<CreateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let user = crate::ids::UserId::of_subject(&principal.subject)
            .map(crate::ids::UserId::uuid)
            .ok_or_else(|| {
                status(ApiError::FailedPrecondition {
                    reason: "NOT_A_USER",
                    message: "only people create organizations".into(),
                })
            })?;
        let mut v = Violations::new();
        let org = body.organization.clone().unwrap_or_default();
        validate::required_text(&mut v, "organization.display_name", &org.display_name, 200);
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(
            &mut v,
            "CreateOrganization",
            &body.request_id,
            &fingerprint,
        );
        v.finish().map_err(status)?;
        let id = Uuid::now_v7();
        let actor = principal.subject.clone();
        // The idempotency key lives with the creator's current organization: a retry from the
        // same token finds it there.
        let write = mutation::idempotent(
            self.state.pool.clone(),
            principal.organization,
            key,
            move |conn| {
                Box::pin(async move {
                    diesel::insert_into(o::table)
                        .values((o::id.eq(id), o::display_name.eq(org.display_name.trim())))
                        .execute(&mut { conn })
                        .await?;
                    let row = load(conn, id)
                        .await?
                        .ok_or_else(|| ApiError::Internal("organization vanished".into()))?;
                    Ok(Organization::from(row))
                })
            },
        );
        let created = mutation::detached(None, write).await.map_err(status)?;
        let new_org = names::parse_organization(&created.name, "name").map_err(status)?;
        // The first administrator, in the new tenant's own transaction.
        let detail = format!("created by {actor}");
        tenant::transaction(&self.state.pool, new_org, move |conn| {
            Box::pin(async move {
                diesel::insert_into(m::table)
                    .values((
                        m::organization_id.eq(new_org),
                        m::user_id.eq(user),
                        m::roles.eq(vec!["org.admin".to_owned()]),
                        m::status.eq(crate::members::ACTIVE),
                    ))
                    .on_conflict_do_nothing()
                    .execute(&mut { conn })
                    .await?;
                let subject = format!("organizations/{new_org}");
                audit::append(
                    conn,
                    new_org,
                    audit::Entry {
                        kind: "organization.created",
                        actor: &actor,
                        subject: &subject,
                        detail: &detail,
                    },
                )
                .await?;
                Ok::<_, ApiError>(())
            })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(created))
    }

    async fn get_organization(
        &self,
        req: Request<GetOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let principal = principal_of(&req)?;
        let id = names::parse_organization(&req.get_ref().name, "name").map_err(status)?;
        names::require_same_organization(&principal, id).map_err(status)?;
        let row = tenant::read(&self.state.pool, id, move |conn| {
            Box::pin(async move { load(conn, id).await.map_err(ApiError::from) })
        })
        .await
        .map_err(status)?
        .ok_or_else(|| {
            status(ApiError::NotFound {
                resource_type: "identity.crm/Organization",
                name: req.get_ref().name.clone(),
            })
        })?;
        Ok(Response::new(row.into()))
    }

    async fn update_organization(
        &self,
        req: Request<UpdateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = body.organization.clone().unwrap_or_default();
        let id = names::parse_organization(&org.name, "organization.name")
            .map_err(|e| v.absorb(e))
            .ok();
        let paths = mask::resolve(
            body.update_mask.as_ref(),
            &["display_name"],
            &["name", "create_time", "update_time", "etag"],
        )
        .map_err(|e| v.absorb(e))
        .unwrap_or_default();
        if paths.contains(&"display_name") {
            validate::required_text(&mut v, "organization.display_name", &org.display_name, 200);
        }
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key = IdempotencyKey::from_request(
            &mut v,
            "UpdateOrganization",
            &body.request_id,
            &fingerprint,
        );
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, id).map_err(status)?;
        let actor = principal.subject.clone();
        let write = mutation::idempotent(self.state.pool.clone(), id, key, move |conn| {
            Box::pin(async move {
                let current = load(conn, id).await?.ok_or_else(|| ApiError::NotFound {
                    resource_type: "identity.crm/Organization",
                    name: org.name.clone(),
                })?;
                crm_db::etag::check(&org.etag, current.revision)
                    .map_err(|e| etag_error("organization.etag", e))?;
                if paths.is_empty() {
                    return Ok(Organization::from(current));
                }
                diesel::update(o::table.filter(o::id.eq(id)))
                    .set((
                        o::display_name.eq(org.display_name.trim()),
                        o::revision.eq(o::revision + 1),
                        o::update_time.eq(diesel::dsl::now),
                    ))
                    .execute(&mut { conn })
                    .await?;
                audit::append(
                    conn,
                    id,
                    audit::Entry {
                        kind: "organization.updated",
                        actor: &actor,
                        subject: &org.name,
                        detail: org.display_name.trim(),
                    },
                )
                .await?;
                let row = load(conn, id)
                    .await?
                    .ok_or_else(|| ApiError::Internal("organization vanished".into()))?;
                Ok(Organization::from(row))
            })
        });
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }
}
