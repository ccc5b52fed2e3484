//! `MemberService`: adding people to an organization and changing their roles or status.
//! A change of roles or status revokes the person's earlier tokens everywhere, so it takes
//! effect within about a second rather than at the next token expiry.

pub mod store;

use chrono::Utc;
use crm_auth::layer::principal_of;
use crm_auth::password::HashError;
use crm_auth::principal::catalog_roles;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::api::{mask, names};
use crm_platform::error::etag_error;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::identity_v1::member_service_server::MemberService;
use crm_proto::identity_v1::{
    CreateMemberRequest, GetMemberRequest, ListMembersRequest, ListMembersResponse, Member,
    MemberStatus, UpdateMemberRequest,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use self::store::{ACTIVE, INVITED, MemberState};
use self::store::{MemberRow, NewUser};
use crate::ids::UserId;
use crate::{IdentityState, audit, revocations, status};

const SERVICE: &str = "crm.identity.v1.MemberService";
const COLLECTION: &str = "members";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(
            SERVICE,
            "CreateMember",
            Requirement::Permission(permission::MEMBERS_WRITE),
        )
        .with(
            SERVICE,
            "GetMember",
            Requirement::Permission(permission::MEMBERS_READ),
        )
        .with(
            SERVICE,
            "ListMembers",
            Requirement::Permission(permission::MEMBERS_READ),
        )
        .with(
            SERVICE,
            "UpdateMember",
            Requirement::Permission(permission::MEMBERS_WRITE),
        )
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        // Until the person accepts, the organization sees only the address it invited: the
        // account's own name would tell whether the address already had one.
        let display_name = if r.status == INVITED {
            r.email.clone()
        } else {
            r.display_name
        };
        Self {
            name: names::child_name(r.organization_id.uuid(), COLLECTION, r.user_id.uuid()),
            email: r.email,
            display_name,
            roles: r.roles,
            status: i32::from(r.status),
            create_time: Some(timestamp(r.create_time)),
            update_time: Some(timestamp(r.update_time)),
            etag: crm_db::etag::from_revision(r.revision),
        }
    }
}

/// Adds a violation on `field` unless `roles` is a non-empty list of catalog roles.
pub(crate) fn check_roles(v: &mut Violations, field: &str, roles: &[String]) {
    if roles.is_empty() {
        v.push(field, "REQUIRED", "at least one role is required");
    }
    let catalog = catalog_roles();
    for r in roles {
        if crm_auth::principal::is_service_role(r) {
            // Service roles decrypt credentials and mint delegated tokens: granting them is for
            // the operator (`crm service-client`), never for an organization's administrator.
            v.push(
                field,
                "SERVICE_ROLE_NOT_GRANTABLE",
                format!("{r:?} is a service role; only an operator grants it"),
            );
            continue;
        }
        // Organization-defined roles are checked for existence in the write's transaction.
        if !catalog.contains(&r.as_str()) && !crate::roles::is_custom_id(r) {
            v.push(
                field,
                "UNKNOWN_ROLE",
                format!("{r:?} is not a role; roles: {}", catalog.join(", ")),
            );
        }
    }
}

/// The status an update asks for (unspecified meaning active).
fn requested_status(v: &mut Violations, field: &str, status: i32) -> MemberState {
    match MemberStatus::try_from(status) {
        Ok(MemberStatus::Unspecified) => ACTIVE,
        Ok(s) => MemberState(s),
        Err(_) => {
            let message = format!("{status} is not a MemberStatus");
            v.push(field, "UNKNOWN_ENUM_VALUE", message);
            ACTIVE
        }
    }
}

/// Turns `user`'s invitation to `org` into an active membership (audited). Called when the
/// person signs in to `org` with their own credentials.
///
/// # Errors
/// The database error.
pub(crate) async fn accept_invitation(
    pool: &crm_db::DbPool,
    org: Uuid,
    user: Uuid,
) -> Result<(), ApiError> {
    let (org, user) = (OrgId(org), UserId(user));
    crm_db::tenant::transaction(pool, org.uuid(), move |conn| {
        Box::pin(async move {
            if store::accept(conn, org, user).await? {
                let subject = names::child_name(org.uuid(), COLLECTION, user.uuid());
                audit::append(
                    conn,
                    org.uuid(),
                    audit::Entry {
                        kind: "membership.accepted",
                        actor: &format!("users/{user}"),
                        subject: &subject,
                        detail: "",
                    },
                )
                .await?;
            }
            Ok::<_, ApiError>(())
        })
    })
    .await
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct MemberApi {
    state: IdentityState,
}

impl MemberApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: IdentityState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl MemberService for MemberApi {
    async fn create_member(
        &self,
        req: Request<CreateMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let member = body.member.clone().unwrap_or_default();
        if body.member.is_none() {
            v.push("member", "REQUIRED", "the member to add is required");
        }
        if !validate::is_email(member.email.trim()) {
            v.push(
                "member.email",
                "INVALID_EMAIL",
                "must be an email address such as name@example.com",
            );
        }
        validate::optional_text(&mut v, "member.display_name", &member.display_name, 200);
        check_roles(&mut v, "member.roles", &member.roles);
        // Everyone starts invited: the person accepts by signing in to this organization.
        match MemberStatus::try_from(member.status) {
            Ok(MemberStatus::Unspecified | MemberStatus::Invited) => {}
            Ok(_) | Err(_) => v.push(
                "member.status",
                "INVITATION_REQUIRED",
                "a new member is invited; they become active when they sign in",
            ),
        }
        let password = body.initial_password.clone();
        if !password.is_empty() && !(12..=1024).contains(&password.chars().count()) {
            v.push(
                "initial_password",
                "WEAK_PASSWORD",
                "must be 12 to 1024 characters",
            );
        }
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "CreateMember", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let org =
            org.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;

        let phc = if password.is_empty() {
            None
        } else {
            Some(self.state.hasher.hash(password).await.map_err(|e| {
                status(match e {
                    HashError::Busy => ApiError::ResourceExhausted {
                        reason: "HASHING_CAPACITY",
                        message: "too many password operations at once; retry shortly".into(),
                        retry_after: Some(std::time::Duration::from_millis(200)),
                    },
                    HashError::Internal(d) => ApiError::Internal(d),
                })
            })?)
        };
        let email = member.email.trim().to_lowercase();
        let display_name = if member.display_name.trim().is_empty() {
            email.clone()
        } else {
            member.display_name.trim().to_owned()
        };
        let roles = member.roles.clone();
        let actor = principal.subject.clone();
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                // The answer is the same whether the email belongs to someone already or not:
                // an existing person's account is never touched (their password stays theirs);
                // a new one gets the initial password, or none (they set one by password reset).
                let user = match store::user_by_email(conn, &email).await? {
                    Some(id) => id,
                    None => {
                        let id = UserId(Uuid::now_v7());
                        let new = NewUser {
                            id,
                            email: &email,
                            display_name: &display_name,
                            password_hash: phc.as_deref(),
                        };
                        store::insert_user(conn, new).await?;
                        id
                    }
                };
                let undefined = crate::roles::undefined(conn, org, &roles).await?;
                if !undefined.is_empty() {
                    return Err(ApiError::invalid(
                        "member.roles",
                        "UNKNOWN_ROLE",
                        format!("not defined in this organization: {}", undefined.join(", ")),
                    ));
                }
                let org = OrgId(org);
                let inserted = store::insert_membership(conn, org, user, &roles, INVITED).await?;
                if !inserted {
                    return Err(ApiError::AlreadyExists {
                        resource_type: "identity.crm/Member",
                        detail: "email".into(),
                    });
                }
                let subject = names::child_name(org.uuid(), COLLECTION, user.uuid());
                let detail = format!("roles {}", roles.join(","));
                audit::append(
                    conn,
                    org.uuid(),
                    audit::Entry {
                        kind: "membership.created",
                        actor: &actor,
                        subject: &subject,
                        detail: &detail,
                    },
                )
                .await?;
                let row = store::load(conn, org, user)
                    .await?
                    .ok_or_else(|| ApiError::Internal("member vanished".into()))?;
                Ok(Member::from(row))
            })
        });
        mutation::detached(None, write)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_member(&self, req: Request<GetMemberRequest>) -> Result<Response<Member>, Status> {
        let principal = principal_of(&req)?;
        let name = req.into_inner().name;
        let (org, user) = names::parse_child(&name, COLLECTION, "name").map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let row = crm_db::tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                Ok::<_, ApiError>(store::load(conn, OrgId(org), UserId(user)).await?)
            })
        })
        .await
        .map_err(status)?
        .ok_or_else(|| {
            status(ApiError::NotFound {
                resource_type: "identity.crm/Member",
                name: name.clone(),
            })
        })?;
        Ok(Response::new(Member::from(row)))
    }

    async fn list_members(
        &self,
        req: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let listing =
            Listing::of(&principal, &self.state.page_tokens, &body, &[], 50).map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?.map(UserId);
        let limit = listing.limit();
        let mut rows: Vec<MemberRow> = crm_db::tenant::read(&self.state.pool, org, move |conn| {
            Box::pin(async move {
                Ok::<_, ApiError>(store::page(conn, OrgId(org), after, limit).await?)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.page_tokens, &mut rows, |r| {
            vec![r.user_id.to_string()]
        });
        Ok(Response::new(ListMembersResponse {
            members: rows.into_iter().map(Member::from).collect(),
            next_page_token,
        }))
    }

    async fn update_member(
        &self,
        req: Request<UpdateMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let member = body.member.clone().unwrap_or_default();
        let parsed = names::parse_child(&member.name, COLLECTION, "member.name")
            .map_err(|e| v.absorb(e))
            .ok();
        let paths = mask::resolve(
            body.update_mask.as_ref(),
            &["roles", "status"],
            &[
                "name",
                "email",
                "display_name",
                "create_time",
                "update_time",
                "etag",
            ],
        )
        .map_err(|e| v.absorb(e))
        .unwrap_or_default();
        if paths.contains(&"roles") {
            check_roles(&mut v, "member.roles", &member.roles);
        }
        let requested = requested_status(&mut v, "member.status", member.status);
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "UpdateMember", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let (org, user) =
            parsed.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let user = UserId(user);
        let actor = principal.subject.clone();
        let revoked = std::sync::Arc::clone(&self.state.revoked);
        let write = mutation::idempotent(self.state.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let current = store::load(conn, OrgId(org), user).await?.ok_or_else(|| {
                    ApiError::NotFound {
                        resource_type: "identity.crm/Member",
                        name: member.name.clone(),
                    }
                })?;
                crm_db::etag::check(&member.etag, current.revision)
                    .map_err(|e| etag_error("member.etag", e))?;
                if paths.is_empty() {
                    return Ok(Member::from(current));
                }
                let roles = if paths.contains(&"roles") {
                    member.roles.clone()
                } else {
                    current.roles.clone()
                };
                let undefined = crate::roles::undefined(conn, org, &roles).await?;
                if !undefined.is_empty() {
                    return Err(ApiError::invalid(
                        "member.roles",
                        "UNKNOWN_ROLE",
                        format!("not defined in this organization: {}", undefined.join(", ")),
                    ));
                }
                let new_status = if paths.contains(&"status") {
                    requested
                } else {
                    current.status
                };
                if current.status == INVITED && new_status == ACTIVE {
                    return Err(ApiError::FailedPrecondition {
                        reason: "INVITATION_NOT_ACCEPTED",
                        message: "an invited person becomes active by signing in themselves".into(),
                    });
                }
                store::update_membership(conn, OrgId(org), user, &roles, new_status).await?;
                // Tokens carry roles: revoke the earlier ones so the change applies now.
                // Only this organization's tokens, and only when something they carry changed.
                if roles != current.roles || new_status != current.status {
                    revocations::record_subject(
                        conn,
                        &format!("users/{user}"),
                        Some(org),
                        Utc::now(),
                    )
                    .await?;
                }
                let subject = member.name.clone();
                let detail = format!("roles {} status {}", roles.join(","), i32::from(new_status));
                audit::append(
                    conn,
                    org,
                    audit::Entry {
                        kind: "membership.updated",
                        actor: &actor,
                        subject: &subject,
                        detail: &detail,
                    },
                )
                .await?;
                let row = store::load(conn, OrgId(org), user)
                    .await?
                    .ok_or_else(|| ApiError::Internal("member vanished".into()))?;
                Ok(Member::from(row))
            })
        });
        let out = mutation::detached(None, write).await.map_err(status)?;
        revoked.notify_waiters();
        Ok(Response::new(out))
    }
}
