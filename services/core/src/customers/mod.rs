//! `crm.core.v1.CustomerService`: the template every core resource follows.
//!
//! Each handler: principal → validate everything (all violations at once) → check the name's
//! organization against the token → one tenant transaction (idempotent for writes, run detached
//! from the client) → events to the outbox in that transaction → response.

pub mod lifecycle;
pub mod model;
pub mod store;

pub use self::store::require_live;

use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Principal, Requirement, permission};
use crm_db::outbox::{self, NewEvent};
use crm_db::page;
use crm_platform::ApiError;
use crm_platform::api::validate::{self, Violations};
use crm_platform::api::{mask, names};
use crm_platform::error::etag_error;
use crm_platform::layers::Deadline;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::customer_service_server::CustomerService;
use crm_proto::core_v1::{
    CreateCustomerRequest, Customer, CustomerCreated, CustomerDeleted, CustomerKind,
    CustomerUndeleted, CustomerUpdated, DeleteCustomerRequest, GetCustomerRequest, LifecycleStage,
    ListCustomersRequest, ListCustomersResponse, UndeleteCustomerRequest, UpdateCustomerRequest,
};
use diesel_async::AsyncPgConnection;
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use self::model::{COLLECTION, CustomerChanges, CustomerRow, NewCustomer, RESOURCE_TYPE};
use self::store::{After, ListQuery, Order};
use crate::{CoreState, DOMAIN};
use crm_resource::Call;
use crm_resource::audit::{self, Action};

const SERVICE: &str = "crm.core.v1.CustomerService";
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 1000;
/// How long a soft-deleted customer can be undeleted.
const RETENTION_DAYS: i64 = 30;

const UPDATABLE: &[&str] = &[
    "display_name",
    "email",
    "phone",
    "kind",
    "notes",
    "lifecycle_stage",
    "source",
    "tier",
    "tags",
    "time_zone",
];
const OUTPUT_ONLY: &[&str] = &[
    "name",
    "create_time",
    "update_time",
    "delete_time",
    "purge_time",
    "etag",
    "creator",
    "last_modifier",
];

/// The permission of every RPC of this service.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(
            SERVICE,
            "CreateCustomer",
            Requirement::Permission(permission::CUSTOMERS_WRITE),
        )
        .with(
            SERVICE,
            "GetCustomer",
            Requirement::Permission(permission::CUSTOMERS_READ),
        )
        .with(
            SERVICE,
            "ListCustomers",
            Requirement::Permission(permission::CUSTOMERS_READ),
        )
        .with(
            SERVICE,
            "UpdateCustomer",
            Requirement::Permission(permission::CUSTOMERS_WRITE),
        )
        .with(
            SERVICE,
            "DeleteCustomer",
            Requirement::Permission(permission::CUSTOMERS_DELETE),
        )
        .with(
            SERVICE,
            "UndeleteCustomer",
            Requirement::Permission(permission::CUSTOMERS_DELETE),
        )
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    state: CoreState,
}

impl CustomerApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self { state }
    }
}

fn status(e: ApiError) -> Status {
    e.into_status(DOMAIN)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound {
        resource_type: RESOURCE_TYPE,
        name: name.to_owned(),
    }
}

/// Validates the writable fields of `c` named in `paths` (all of them on create).
fn validate_fields(v: &mut Violations, c: &Customer, prefix: &str, paths: &[&str]) {
    for path in paths {
        let field = format!("{prefix}.{path}");
        match *path {
            "display_name" => validate::required_text(v, &field, &c.display_name, 200),
            "email" => validate::optional_email(v, &field, &c.email),
            "phone" => validate::optional_phone(v, &field, &c.phone),
            "notes" => validate::optional_text(v, &field, &c.notes, 10_000),
            "kind" if CustomerKind::try_from(c.kind).is_err() => {
                v.push(
                    field,
                    "UNKNOWN_ENUM_VALUE",
                    format!("{} is not a CustomerKind", c.kind),
                );
            }
            "lifecycle_stage" if LifecycleStage::try_from(c.lifecycle_stage).is_err() => {
                v.push(
                    field,
                    "UNKNOWN_ENUM_VALUE",
                    format!("{} is not a LifecycleStage", c.lifecycle_stage),
                );
            }
            "source" | "tier" => {
                let value = if *path == "source" {
                    &c.source
                } else {
                    &c.tier
                };
                if !value.is_empty() && !validate::is_slug(value) {
                    v.push(
                        field,
                        "INVALID_SLUG",
                        "lower-case letters, digits and '-', at most 40 characters",
                    );
                }
            }
            "tags" => {
                if c.tags.len() > 20 {
                    v.push(field.clone(), "TOO_MANY_TAGS", "at most 20 tags");
                }
                if c.tags.iter().any(|t| !validate::is_slug(t)) {
                    v.push(
                        field.clone(),
                        "INVALID_TAG",
                        "tags are lower-case letters, digits and '-', at most 40 characters",
                    );
                }
                let mut unique = c.tags.clone();
                unique.sort();
                unique.dedup();
                if unique.len() != c.tags.len() {
                    v.push(field, "DUPLICATE_TAG", "each tag once");
                }
            }
            "time_zone"
                if !c.time_zone.is_empty() && c.time_zone.parse::<chrono_tz::Tz>().is_err() =>
            {
                v.push(
                    field,
                    "UNKNOWN_TIME_ZONE",
                    "an IANA time zone such as America/Chicago",
                );
            }
            _ => {}
        }
    }
}

async fn emit<M: Message + prost::Name>(
    conn: &AsyncPgConnection,
    org: Uuid,
    resource: &str,
    actor: &str,
    request_id: &str,
    event: &M,
) -> Result<(), ApiError> {
    outbox::append(
        conn,
        org,
        NewEvent {
            event_type: &M::full_name(),
            resource,
            actor,
            request_id,
            payload: event.encode_to_vec(),
        },
    )
    .await?;
    Ok(())
}

fn deadline<T>(req: &Request<T>) -> Option<Deadline> {
    req.extensions().get::<Deadline>().copied()
}

/// Which state change a delete/undelete makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    Delete,
    Undelete,
}

impl CustomerApi {
    async fn set_deleted(
        &self,
        principal: &Principal,
        call: Call,
        dl: Option<Deadline>,
        (name, etag, request_id): (String, String, String),
        which: Deletion,
    ) -> Result<Customer, ApiError> {
        let mut v = Violations::new();
        let parsed = names::parse_child(&name, COLLECTION, "name")
            .map_err(|e| v.absorb(e))
            .ok();
        let method = match which {
            Deletion::Delete => "DeleteCustomer",
            Deletion::Undelete => "UndeleteCustomer",
        };
        let fingerprint = DeleteCustomerRequest {
            name: name.clone(),
            etag: etag.clone(),
            request_id: String::new(),
        };
        let key = IdempotencyKey::from_request(&mut v, method, &request_id, &fingerprint);
        v.finish()?;
        let Some((org, id)) = parsed else {
            return Err(ApiError::Internal("name parsed without violation".into()));
        };
        names::require_same_organization(principal, org)?;
        let actor = principal.subject.clone();
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let row = store::find(conn, org, id, true)
                    .await?
                    .ok_or_else(|| not_found(&name))?;
                crm_db::etag::check(&etag, row.revision).map_err(|e| etag_error("etag", e))?;
                let before = Customer::from(row.clone());
                let row = match (which, row.delete_time.is_some()) {
                    (Deletion::Delete, false) => {
                        store::set_deleted(
                            conn,
                            org,
                            id,
                            Some(chrono::Duration::days(RETENTION_DAYS)),
                            &actor,
                        )
                        .await?
                    }
                    (Deletion::Undelete, true) => {
                        store::set_deleted(conn, org, id, None, &actor).await?
                    }
                    (Deletion::Delete, true) => {
                        return Err(ApiError::FailedPrecondition {
                            reason: "ALREADY_DELETED",
                            message: "the customer is already deleted".into(),
                        });
                    }
                    (Deletion::Undelete, false) => {
                        return Err(ApiError::FailedPrecondition {
                            reason: "NOT_DELETED",
                            message: "the customer is not deleted".into(),
                        });
                    }
                };
                let customer = Customer::from(row);
                let action = match which {
                    Deletion::Delete => Action::Delete,
                    Deletion::Undelete => Action::Undelete,
                };
                audit::record_diff(
                    conn,
                    org,
                    audit::Entry {
                        call: &call,
                        request_id: &request_id,
                        resource: &name,
                        action,
                    },
                    Some(&before),
                    &customer,
                    &["delete_time", "purge_time"],
                    &[],
                )
                .await?;
                match which {
                    Deletion::Delete => {
                        emit(
                            conn,
                            org,
                            &name,
                            &actor,
                            &request_id,
                            &CustomerDeleted {
                                customer: Some(customer.clone()),
                            },
                        )
                        .await?;
                    }
                    Deletion::Undelete => {
                        emit(
                            conn,
                            org,
                            &name,
                            &actor,
                            &request_id,
                            &CustomerUndeleted {
                                customer: Some(customer.clone()),
                            },
                        )
                        .await?;
                    }
                }
                Ok(customer)
            })
        });
        let out = mutation::detached(dl, write).await?;
        self.state.ctx.events_written.notify_waiters();
        Ok(out)
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn create_customer(
        &self,
        req: Request<CreateCustomerRequest>,
    ) -> Result<Response<Customer>, Status> {
        let principal = principal_of(&req)?;
        let call = Call::of(&req, SERVICE, "create_customer")?;
        let dl = deadline(&req);
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let customer = body.customer.clone().unwrap_or_default();
        if body.customer.is_none() {
            v.push("customer", "REQUIRED", "the customer to create is required");
        } else {
            validate_fields(&mut v, &customer, "customer", UPDATABLE);
            let initial = LifecycleStage::try_from(customer.lifecycle_stage)
                .unwrap_or(LifecycleStage::Unspecified);
            if initial != LifecycleStage::Unspecified && !lifecycle::allowed_initially(initial) {
                v.push(
                    "customer.lifecycle_stage",
                    "INVALID_INITIAL_STAGE",
                    "a new customer is a lead, a prospect or active",
                );
            }
        }
        let id = validate::optional_uuid(&mut v, "customer_id", &body.customer_id);
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "CreateCustomer", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let org = org
            .ok_or_else(|| status(ApiError::Internal("parent parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;

        let id = id.unwrap_or_else(Uuid::now_v7);
        let actor = principal.subject.clone();
        let request_id = body.request_id;
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let row: CustomerRow =
                    store::insert(conn, &NewCustomer::from_proto(org, id, &customer, &actor))
                        .await
                        .map_err(|e| {
                            let error = ApiError::from(e);
                            if matches!(error, ApiError::AlreadyExists { .. }) {
                                ApiError::AlreadyExists {
                                    resource_type: RESOURCE_TYPE,
                                    detail: "customer_id".into(),
                                }
                            } else {
                                error
                            }
                        })?;
                let created = Customer::from(row);
                emit(
                    conn,
                    org,
                    &created.name,
                    &actor,
                    &request_id,
                    &CustomerCreated {
                        customer: Some(created.clone()),
                    },
                )
                .await?;
                audit::record_diff(
                    conn,
                    org,
                    audit::Entry {
                        call: &call,
                        request_id: &request_id,
                        resource: &created.name,
                        action: Action::Create,
                    },
                    None,
                    &created,
                    UPDATABLE,
                    &[],
                )
                .await?;
                Ok(created)
            })
        });
        let created = mutation::detached(dl, write).await.map_err(status)?;
        self.state.ctx.events_written.notify_waiters();
        Ok(Response::new(created))
    }

    async fn get_customer(
        &self,
        req: Request<GetCustomerRequest>,
    ) -> Result<Response<Customer>, Status> {
        let principal = principal_of(&req)?;
        let name = req.into_inner().name;
        let (org, id) = names::parse_child(&name, COLLECTION, "name").map_err(status)?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let row = crm_db::tenant::transaction(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move {
                store::find(conn, org, id, false)
                    .await
                    .map_err(ApiError::from)
            })
        })
        .await
        .map_err(status)?
        .ok_or_else(|| status(not_found(&name)))?;
        Ok(Response::new(row.into()))
    }

    async fn list_customers(
        &self,
        req: Request<ListCustomersRequest>,
    ) -> Result<Response<ListCustomersResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&body.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let size = page::page_size(body.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            .map_err(|e| v.absorb(e.into()))
            .ok();
        let order = Order::parse(&body.order_by, "create_time", "display_name", false)
            .map_err(|m| v.push("order_by", "INVALID_ORDER_BY", m))
            .ok();
        let filter = crm_db::filter::parse(&body.filter)
            .and_then(|f| {
                if let Some(f) = &f {
                    store::check_filter(f)?;
                }
                Ok(f)
            })
            .map_err(|e| v.absorb(e.into()))
            .ok();
        v.finish().map_err(status)?;
        let (Some(org), Some(size), Some(order), Some(filter)) = (org, size, order, filter) else {
            return Err(status(ApiError::Internal(
                "list request parsed without violation".into(),
            )));
        };
        names::require_same_organization(&principal, org).map_err(status)?;

        let show_deleted = if body.show_deleted { "deleted" } else { "live" };
        let query_id = page::fingerprint(
            org,
            &[
                "ListCustomers",
                &body.parent,
                &body.filter,
                &body.order_by,
                show_deleted,
            ],
        );
        let after = match self
            .state
            .ctx
            .page_tokens
            .decode(&body.page_token, &query_id)
            .map_err(|e| status(e.into()))?
        {
            None => None,
            Some(key) => Some(After::decode(order, &key).ok_or_else(|| {
                status(ApiError::invalid(
                    "page_token",
                    "INVALID_PAGE_TOKEN",
                    "page_token is malformed",
                ))
            })?),
        };
        let query = ListQuery {
            order,
            after,
            limit: i64::from(size) + 1,
            show_deleted: body.show_deleted,
            filter,
        };
        let mut rows = crm_db::tenant::transaction(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move { store::list(conn, org, &query).await })
        })
        .await
        .map_err(status)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last()
                .map(|last| {
                    self.state
                        .ctx
                        .page_tokens
                        .encode(&query_id, &store::key_of(order, last))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListCustomersResponse {
            customers: rows.into_iter().map(Customer::from).collect(),
            next_page_token,
        }))
    }

    async fn update_customer(
        &self,
        req: Request<UpdateCustomerRequest>,
    ) -> Result<Response<Customer>, Status> {
        let principal = principal_of(&req)?;
        let call = Call::of(&req, SERVICE, "update_customer")?;
        let dl = deadline(&req);
        let body = req.into_inner();
        let mut v = Violations::new();
        let customer = body.customer.clone().unwrap_or_default();
        if body.customer.is_none() {
            v.push(
                "customer",
                "REQUIRED",
                "the customer with its name is required",
            );
        }
        let parsed = names::parse_child(&customer.name, COLLECTION, "customer.name")
            .map_err(|e| v.absorb(e))
            .ok();
        let paths = mask::resolve(body.update_mask.as_ref(), UPDATABLE, OUTPUT_ONLY)
            .map_err(|e| v.absorb(e))
            .unwrap_or_default();
        validate_fields(&mut v, &customer, "customer", &paths);
        let mut fingerprint = body.clone();
        fingerprint.request_id.clear();
        let key =
            IdempotencyKey::from_request(&mut v, "UpdateCustomer", &body.request_id, &fingerprint);
        v.finish().map_err(status)?;
        let (org, id) = parsed
            .ok_or_else(|| status(ApiError::Internal("name parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;

        let actor = principal.subject.clone();
        let request_id = body.request_id;
        let update_mask = prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        };
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                let name = customer.name.clone();
                let row = store::find(conn, org, id, true)
                    .await?
                    .ok_or_else(|| not_found(&name))?;
                crm_db::etag::check(&customer.etag, row.revision)
                    .map_err(|e| etag_error("customer.etag", e))?;
                if row.delete_time.is_some() {
                    return Err(ApiError::FailedPrecondition {
                        reason: "RESOURCE_DELETED",
                        message: "a deleted customer cannot be updated; undelete it first".into(),
                    });
                }
                if paths.is_empty() {
                    return Ok(Customer::from(row));
                }
                if paths.contains(&"lifecycle_stage") {
                    let from = LifecycleStage::try_from(i32::from(row.lifecycle_stage))
                        .unwrap_or(LifecycleStage::Lead);
                    let to = LifecycleStage::try_from(customer.lifecycle_stage)
                        .unwrap_or(LifecycleStage::Unspecified);
                    if !lifecycle::allowed(from, to) {
                        return Err(ApiError::FailedPrecondition {
                            reason: "LIFECYCLE_TRANSITION_NOT_ALLOWED",
                            message: format!(
                                "a customer cannot move from {} to {}",
                                from.as_str_name(),
                                to.as_str_name()
                            ),
                        });
                    }
                }
                let changes = CustomerChanges::from_mask(&customer, &paths);
                let before = Customer::from(row);
                let updated = Customer::from(store::update(conn, org, id, &changes, &actor).await?);
                audit::record_diff(
                    conn,
                    org,
                    audit::Entry {
                        call: &call,
                        request_id: &request_id,
                        resource: &name,
                        action: Action::Update,
                    },
                    Some(&before),
                    &updated,
                    &paths,
                    &[],
                )
                .await?;
                emit(
                    conn,
                    org,
                    &name,
                    &actor,
                    &request_id,
                    &CustomerUpdated {
                        customer: Some(updated.clone()),
                        update_mask: Some(update_mask),
                    },
                )
                .await?;
                Ok(updated)
            })
        });
        let updated = mutation::detached(dl, write).await.map_err(status)?;
        self.state.ctx.events_written.notify_waiters();
        Ok(Response::new(updated))
    }

    async fn delete_customer(
        &self,
        req: Request<DeleteCustomerRequest>,
    ) -> Result<Response<Customer>, Status> {
        let principal = principal_of(&req)?;
        let call = Call::of(&req, SERVICE, "delete_customer")?;
        let dl = deadline(&req);
        let body = req.into_inner();
        self.set_deleted(
            &principal,
            call,
            dl,
            (body.name, body.etag, body.request_id),
            Deletion::Delete,
        )
        .await
        .map(Response::new)
        .map_err(status)
    }

    async fn undelete_customer(
        &self,
        req: Request<UndeleteCustomerRequest>,
    ) -> Result<Response<Customer>, Status> {
        let principal = principal_of(&req)?;
        let call = Call::of(&req, SERVICE, "undelete_customer")?;
        let dl = deadline(&req);
        let body = req.into_inner();
        self.set_deleted(
            &principal,
            call,
            dl,
            (body.name, body.etag, body.request_id),
            Deletion::Undelete,
        )
        .await
        .map(Response::new)
        .map_err(status)
    }
}
