//! `crm.core.v1.TicketService`: support cases with allowed status moves, an SLA due time set by
//! the priority, and a count of reopens.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    CreateTicketRequest, DeleteTicketRequest, GetTicketRequest, ListTicketsRequest,
    ListTicketsResponse, Ticket, TicketPriority, TicketStatus, UndeleteTicketRequest,
    UpdateTicketRequest,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::contacts::require_live_customer;
use crate::schema::tickets::{self, dsl as t};
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference};
use crm_resource::{id_in, small};

const SERVICE: &str = "crm.core.v1.TicketService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateTicket", permission::TICKETS_WRITE),
            ("GetTicket", permission::TICKETS_READ),
            ("ListTickets", permission::TICKETS_READ),
            ("UpdateTicket", permission::TICKETS_WRITE),
            ("DeleteTicket", permission::TICKETS_WRITE),
            ("UndeleteTicket", permission::TICKETS_WRITE),
        ],
    )
}

/// Whether a ticket may move from `from` to `to`.
#[must_use]
pub fn allowed(from: TicketStatus, to: TicketStatus) -> bool {
    use TicketStatus::{Closed, Open, Pending, Resolved};
    from == to
        || matches!(
            (from, to),
            (Open, Pending | Resolved) | (Pending, Open | Resolved) | (Resolved, Closed | Open)
        )
}

/// How long an answer may take at `priority`.
#[must_use]
pub fn sla(priority: TicketPriority) -> Duration {
    match priority {
        TicketPriority::Urgent => Duration::hours(4),
        TicketPriority::High => Duration::hours(24),
        TicketPriority::Normal | TicketPriority::Unspecified => Duration::hours(72),
        TicketPriority::Low => Duration::days(7),
    }
}

fn priority_of(p: i32) -> TicketPriority {
    match TicketPriority::try_from(p) {
        Ok(TicketPriority::Unspecified) | Err(_) => TicketPriority::Normal,
        Ok(p) => p,
    }
}

fn status_of(s: i32) -> TicketStatus {
    match TicketStatus::try_from(s) {
        Ok(TicketStatus::Unspecified) | Err(_) => TicketStatus::Open,
        Ok(s) => s,
    }
}

/// A row of `core.tickets`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tickets)]
pub struct TicketRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub subject: String,
    pub description: String,
    pub status: i16,
    pub priority: i16,
    pub assignee: String,
    pub sla_due_time: DateTime<Utc>,
    pub reopen_count: i32,
    pub resolve_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A ticket to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = tickets)]
pub struct NewTicket {
    organization_id: Uuid,
    id: Uuid,
    customer_id: Uuid,
    subject: String,
    description: String,
    status: i16,
    priority: i16,
    assignee: String,
    sla_due_time: DateTime<Utc>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    created_by: String,
    updated_by: String,
}

/// Changes to a ticket's own fields (derived fields are set in `before_write`).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tickets)]
pub struct TicketChanges {
    customer_id: Option<Uuid>,
    subject: Option<String>,
    description: Option<String>,
    status: Option<i16>,
    priority: Option<i16>,
    assignee: Option<String>,
}

impl NewTicket {
    fn from_proto(org: Uuid, id: Uuid, x: &Ticket, actor: &str) -> Self {
        let now = Utc::now();
        let priority = priority_of(x.priority);
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&x.customer, "customers"),
            subject: x.subject.trim().to_owned(),
            description: x.description.clone(),
            status: small(TicketStatus::Open as i32),
            priority: small(priority as i32),
            assignee: x.assignee.clone(),
            sla_due_time: now + sla(priority),
            create_time: now,
            update_time: now,
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl TicketChanges {
    fn from_mask(x: &Ticket, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&x.customer, "customers")),
                "subject" => ch.subject = Some(x.subject.trim().to_owned()),
                "description" => ch.description = Some(x.description.clone()),
                "status" => ch.status = Some(small(status_of(x.status) as i32)),
                "priority" => ch.priority = Some(small(priority_of(x.priority) as i32)),
                "assignee" => ch.assignee = Some(x.assignee.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The ticket resource.
#[derive(Debug)]
pub struct Tickets;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "status",
    "priority",
    "assignee",
    "subject",
    "sla_due_time",
    "create_time",
    "update_time",
];

fn leaf(field: &str, op: Op, value: &Value) -> Result<BoxedPredicate<tickets::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(t::customer_id, field, op, value, "customers")
        }
        "status" => crm_db::filter_enum!(
            t::status,
            field,
            op,
            crm_db::filter::enum_number(value, "TICKET_STATUS_", TicketStatus::from_str_name)?
        ),
        "priority" => crm_db::filter_enum!(
            t::priority,
            field,
            op,
            crm_db::filter::enum_number(value, "TICKET_PRIORITY_", TicketPriority::from_str_name)?
        ),
        "assignee" => crm_db::filter_text!(t::assignee, field, op, value),
        "subject" => crm_db::filter_text!(t::subject, field, op, value),
        "sla_due_time" => crm_db::filter_time!(t::sla_due_time, field, op, value),
        "create_time" => crm_db::filter_time!(t::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(t::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

impl Resource for Tickets {
    type Proto = Ticket;
    type Row = TicketRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Ticket";
    const COLLECTION: &'static str = "tickets";
    const FIELD: &'static str = "ticket";
    const UPDATABLE: &'static [&'static str] = &[
        "customer",
        "subject",
        "description",
        "status",
        "priority",
        "assignee",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = &[
        "name",
        "sla_due_time",
        "reopen_count",
        "resolve_time",
        "create_time",
        "update_time",
        "delete_time",
        "purge_time",
        "etag",
        "creator",
        "last_modifier",
    ];
    const TEXT_ORDER: &'static str = "subject";

    fn name(x: &Ticket) -> &str {
        &x.name
    }
    fn etag(x: &Ticket) -> &str {
        &x.etag
    }
    fn meta(row: &TicketRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &TicketRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.subject.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: TicketRow) -> Ticket {
        let TicketRow {
            organization_id,
            id,
            customer_id,
            subject,
            description,
            status,
            priority,
            assignee,
            sla_due_time,
            reopen_count,
            resolve_time,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        Ticket {
            name: child_name(organization_id, "tickets", id),
            customer: child_name(organization_id, "customers", customer_id),
            subject,
            description,
            status: i32::from(status),
            priority: i32::from(priority),
            assignee,
            sla_due_time: Some(timestamp(sla_due_time)),
            reopen_count,
            resolve_time: optional_timestamp(resolve_time),
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &Ticket, paths: &[&str]) {
        for path in paths {
            let field = format!("ticket.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &x.customer, "customers");
                }
                "subject" => validate::required_text(v, &field, &x.subject, 200),
                "description" => validate::optional_text(v, &field, &x.description, 10_000),
                "status" if TicketStatus::try_from(x.status).is_err() => {
                    v.push(
                        field,
                        "UNKNOWN_ENUM_VALUE",
                        format!("{} is not a TicketStatus", x.status),
                    );
                }
                "priority" if TicketPriority::try_from(x.priority).is_err() => {
                    v.push(
                        field,
                        "UNKNOWN_ENUM_VALUE",
                        format!("{} is not a TicketPriority", x.priority),
                    );
                }
                "assignee" if !x.assignee.is_empty() && !validate::is_user_name(&x.assignee) => {
                    v.push(
                        field,
                        "INVALID_ASSIGNEE",
                        "a user resource name: users/{uuid}",
                    );
                }
                _ => {}
            }
        }
    }
    fn check_filter(f: &Filter) -> Result<(), FilterError> {
        filter::compile(f, &leaf).map(|_| ())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: Uuid,
        current: Option<&'a TicketRow>,
        x: &'a Ticket,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live_customer(conn, org, id_in(&x.customer, "customers"), &x.customer)
                    .await?;
            }
            let Some(current) = current else {
                let initial = TicketStatus::try_from(x.status).unwrap_or(TicketStatus::Unspecified);
                if !matches!(initial, TicketStatus::Unspecified | TicketStatus::Open) {
                    return Err(ApiError::FailedPrecondition {
                        reason: "INVALID_INITIAL_STATUS",
                        message: "a new ticket is OPEN".into(),
                    });
                }
                return Ok(());
            };
            let now = Utc::now();
            let mut reopen = 0;
            let mut resolve_time = current.resolve_time;
            if paths.contains(&"status") {
                let from = status_of(i32::from(current.status));
                let to = status_of(x.status);
                if !allowed(from, to) {
                    return Err(ApiError::FailedPrecondition {
                        reason: "TICKET_TRANSITION_NOT_ALLOWED",
                        message: format!(
                            "a ticket cannot move from {} to {}",
                            from.as_str_name(),
                            to.as_str_name()
                        ),
                    });
                }
                if from == TicketStatus::Resolved && to == TicketStatus::Open {
                    reopen = 1;
                    resolve_time = None;
                }
                if to == TicketStatus::Resolved && from != TicketStatus::Resolved {
                    resolve_time = Some(now);
                }
            }
            let sla_due_time = if paths.contains(&"priority") {
                current.create_time + sla(priority_of(x.priority))
            } else {
                current.sla_due_time
            };
            // The derived fields, in the same transaction; the standard update that follows
            // bumps the revision once for both.
            diesel::update(t::tickets)
                .filter(t::organization_id.eq(org))
                .filter(t::id.eq(current.id))
                .set((
                    t::reopen_count.eq(t::reopen_count + reopen),
                    t::resolve_time.eq(resolve_time),
                    t::sla_due_time.eq(sla_due_time),
                ))
                .execute(&mut { conn })
                .await?;
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Tickets,
    tickets,
    create_time,
    subject,
    TicketRow,
    NewTicket,
    TicketChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::ticket_service_server::TicketService, Tickets => TicketApi,
    "crm.core.v1.TicketService", ticket;
    create_ticket(CreateTicketRequest, ticket_id);
    get_ticket(GetTicketRequest, |_| false);
    list_tickets(ListTicketsRequest, |_| false) -> ListTicketsResponse.tickets;
    update_ticket(UpdateTicketRequest);
    delete_ticket(DeleteTicketRequest);
    undelete_ticket(UndeleteTicketRequest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_moves_are_allowed() {
        use TicketStatus::{Closed, Open, Pending, Resolved};
        let all = [Open, Pending, Resolved, Closed];
        let allowed_moves: Vec<_> = all
            .iter()
            .flat_map(|f| all.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f != t && allowed(*f, *t))
            .collect();
        assert_eq!(
            allowed_moves,
            vec![
                (Open, Pending),
                (Open, Resolved),
                (Pending, Open),
                (Pending, Resolved),
                (Resolved, Open),
                (Resolved, Closed),
            ]
        );
    }
}
