//! `RoleService` and role expansion: an organization-defined role (`custom.*`) stands for a set
//! of catalog roles; tokens carry the catalog roles, so every service checks permissions from
//! the static catalog with no lookups.

use std::collections::BTreeSet;

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
use crm_proto::identity_v1::role_service_server::RoleService;
use crm_proto::identity_v1::{CreateRoleRequest, ListRolesRequest, ListRolesResponse, Role};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tonic::{Request, Response, Status};

use crate::status;
use uuid::Uuid;

use crate::schema::{memberships as m, org_roles as r};
use crate::{IdentityState, audit};

const SERVICE: &str = "crm.identity.v1.RoleService";
/// The prefix of organization-defined role ids.
pub const CUSTOM_PREFIX: &str = "custom.";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(
            SERVICE,
            "CreateRole",
            Requirement::Permission(permission::MEMBERS_WRITE),
        )
        .with(
            SERVICE,
            "ListRoles",
            Requirement::Permission(permission::MEMBERS_READ),
        )
}

/// Whether `id` is a well-formed custom role id.
#[must_use]
pub fn is_custom_id(id: &str) -> bool {
    id.strip_prefix(CUSTOM_PREFIX).is_some_and(|rest| {
        (1..=40).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// The catalog roles `roles` stand for in `org` (custom roles expanded, unknown ones dropped).
///
/// # Errors
/// The database error.
pub async fn expand(
    conn: &AsyncPgConnection,
    org: Uuid,
    roles: &[String],
) -> QueryResult<Vec<String>> {
    let mut out: BTreeSet<String> = roles
        .iter()
        .filter(|x| !x.starts_with(CUSTOM_PREFIX))
        .cloned()
        .collect();
    let custom: Vec<&String> = roles
        .iter()
        .filter(|x| x.starts_with(CUSTOM_PREFIX))
        .collect();
    if !custom.is_empty() {
        let bundles: Vec<Vec<String>> = r::table
            .filter(r::organization_id.eq(org))
            .filter(r::role_id.eq_any(custom))
            .select(r::catalog_roles)
            .load(&mut { conn })
            .await?;
        out.extend(bundles.into_iter().flatten());
    }
    Ok(out.into_iter().collect())
}

/// The custom roles among `roles` that `org` has not defined.
///
/// # Errors
/// The database error.
pub async fn undefined(
    conn: &AsyncPgConnection,
    org: Uuid,
    roles: &[String],
) -> QueryResult<Vec<String>> {
    let custom: Vec<String> = roles
        .iter()
        .filter(|x| x.starts_with(CUSTOM_PREFIX))
        .cloned()
        .collect();
    if custom.is_empty() {
        return Ok(Vec::new());
    }
    let defined: Vec<String> = r::table
        .filter(r::organization_id.eq(org))
        .filter(r::role_id.eq_any(&custom))
        .select(r::role_id)
        .load(&mut { conn })
        .await?;
    Ok(custom
        .into_iter()
        .filter(|c| !defined.contains(c))
        .collect())
}

/// The effective (catalog) roles of `user`'s active membership of `org`, if any.
///
/// # Errors
/// The database error.
pub async fn of_active_member(
    conn: &AsyncPgConnection,
    org: Uuid,
    user: Uuid,
) -> QueryResult<Option<Vec<String>>> {
    let roles: Option<Vec<String>> = m::table
        .filter(m::organization_id.eq(org))
        .filter(m::user_id.eq(user))
        .filter(m::status.eq(crate::members::ACTIVE))
        .select(m::roles)
        .first(&mut { conn })
        .await
        .optional()?;
    match roles {
        Some(roles) => Ok(Some(expand(conn, org, &roles).await?)),
        None => Ok(None),
    }
}

/// For signing in: the effective roles of `user`'s membership of `org` when it is active or
/// invited, and whether it is (still) an invitation.
///
/// # Errors
/// The database error.
pub async fn of_member_signing_in(
    conn: &AsyncPgConnection,
    org: Uuid,
    user: Uuid,
) -> QueryResult<Option<(Vec<String>, bool)>> {
    let found: Option<(Vec<String>, i16)> = m::table
        .filter(m::organization_id.eq(org))
        .filter(m::user_id.eq(user))
        .filter(m::status.eq_any([crate::members::INVITED, crate::members::ACTIVE]))
        .select((m::roles, m::status))
        .first(&mut { conn })
        .await
        .optional()?;
    match found {
        Some((roles, status)) => Ok(Some((expand(conn, org, &roles).await?, status == 1))),
        None => Ok(None),
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = r)]
struct RoleRow {
    organization_id: Uuid,
    role_id: String,
    display_name: String,
    catalog_roles: Vec<String>,
    create_time: DateTime<Utc>,
}

impl From<RoleRow> for Role {
    fn from(x: RoleRow) -> Self {
        Self {
            name: format!("organizations/{}/roles/{}", x.organization_id, x.role_id),
            role_id: x.role_id,
            display_name: x.display_name,
            catalog_roles: x.catalog_roles,
            create_time: Some(timestamp(x.create_time)),
        }
    }
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct RoleApi {
    state: IdentityState,
}

impl RoleApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl RoleService for RoleApi {
    async fn create_role(&self, req: Request<CreateRoleRequest>) -> Result<Response<Role>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let role = body.role.clone().unwrap_or_default();
        if !is_custom_id(&body.role_id) {
            v.push(
                "role_id",
                "INVALID_ROLE_ID",
                "must be `custom.` and 1 to 40 lower-case letters, digits or `-`",
            );
        }
        validate::required_text(&mut v, "role.display_name", &role.display_name, 200);
        if role
            .catalog_roles
            .iter()
            .any(|x| x.starts_with(CUSTOM_PREFIX))
        {
            v.push(
                "role.catalog_roles",
                "NESTED_ROLE",
                "a role bundles catalog roles, not other custom roles",
            );
        } else {
            crate::members::check_roles(&mut v, "role.catalog_roles", &role.catalog_roles);
        }
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "CreateRole", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let org =
            org.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let actor = principal.subject.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let inserted = diesel::insert_into(r::table)
                    .values((
                        r::organization_id.eq(org),
                        r::role_id.eq(&body.role_id),
                        r::display_name.eq(role.display_name.trim()),
                        r::catalog_roles.eq(&role.catalog_roles),
                        r::created_by.eq(&actor),
                    ))
                    .on_conflict_do_nothing()
                    .execute(&mut { conn })
                    .await?;
                if inserted == 0 {
                    return Err(ApiError::AlreadyExists {
                        resource_type: "identity.crm/Role",
                        detail: "role_id".into(),
                    });
                }
                let detail = role.catalog_roles.join(",");
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "role.created",
                        actor: &actor,
                        subject: &body.role_id,
                        detail: &detail,
                    },
                )
                .await?;
                let row: RoleRow = r::table
                    .filter(r::organization_id.eq(org))
                    .filter(r::role_id.eq(&body.role_id))
                    .select(RoleRow::as_select())
                    .first(&mut { conn })
                    .await?;
                Ok(Role::from(row))
            })
        });
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_roles(
        &self,
        req: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let listing =
            Listing::of(&principal, &self.state.page_tokens, &body, &[], 50).map_err(status)?;
        let org = listing.org;
        let after = listing.after.clone().and_then(|k| k.into_iter().next());
        let limit = listing.limit();
        let mut rows: Vec<RoleRow> = tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                let mut q = r::table
                    .filter(r::organization_id.eq(org))
                    .order(r::role_id.asc())
                    .limit(limit)
                    .select(RoleRow::as_select())
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(r::role_id.gt(after));
                }
                q.load(&mut { conn }).await.map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |x| {
            vec![x.role_id.clone()]
        });
        Ok(Response::new(ListRolesResponse {
            roles: rows.into_iter().map(Role::from).collect(),
            next_page_token,
        }))
    }
}
