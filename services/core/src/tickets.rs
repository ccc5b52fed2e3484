//! `crm.core.v1.TicketService`: support cases with allowed status moves, an SLA due time set by
//! the priority, and a count of reopens.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_proto::core_v1::{
    CreateTicketRequest, DeleteTicketRequest, GetTicketRequest, ListTicketsRequest,
    ListTicketsResponse, Ticket, TicketPriority, TicketStatus, UndeleteTicketRequest,
    UpdateTicketRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crm_resource::{BoxFuture, Field, Resource, Row};

use crate::customers::require_live;
use crate::schema::tickets::{self, dsl as t};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::TICKETS_READ, permission::TICKETS_WRITE);
    TicketApi::policy(read, write, write)
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

fn status_of(s: i16) -> TicketStatus {
    match TicketStatus::try_from(i32::from(s)) {
        Ok(TicketStatus::Unspecified) | Err(_) => TicketStatus::Open,
        Ok(s) => s,
    }
}

fn priority_of(p: i16) -> TicketPriority {
    match TicketPriority::try_from(i32::from(p)) {
        Ok(TicketPriority::Unspecified) | Err(_) => TicketPriority::Normal,
        Ok(p) => p,
    }
}

/// The columns of `core.tickets` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tickets, treat_none_as_null = true)]
pub struct TicketFields {
    pub customer_id: Uuid,
    pub subject: String,
    pub description: String,
    pub status: i16,
    pub priority: i16,
    pub assignee: String,
    pub sla_due_time: DateTime<Utc>,
    pub reopen_count: i32,
    pub resolve_time: Option<DateTime<Utc>>,
}

/// The ticket resource.
#[derive(Debug)]
pub struct Tickets;

impl Resource for Tickets {
    type Proto = Ticket;
    type Fields = TicketFields;
    type Table = tickets::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Ticket";
    const COLLECTION: &'static str = "tickets";
    const FIELD: &'static str = "ticket";
    const TEXT_ORDER: &'static str = "subject";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(t::customer_id, n, op, v, "customers")),
        Field::<Self>::updatable("subject", |i, x, f| {
            f.subject = i.required_text(&x.subject, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(t::subject, n, op, v)),
        Field::<Self>::updatable("description", |i, x, f| {
            f.description = i.text(&x.description, 10_000);
        }),
        Field::<Self>::updatable("status", |i, x, f| {
            if let Some(n) = i.enumeration_or(x.status, TicketStatus::Open) {
                f.status = n;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "TICKET_STATUS_", TicketStatus::from_str_name)?;
            crm_db::filter_enum!(t::status, n, op, number)
        }),
        Field::<Self>::updatable("priority", |i, x, f| {
            if let Some(n) = i.enumeration_or(x.priority, TicketPriority::Normal) {
                f.priority = n;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "TICKET_PRIORITY_", TicketPriority::from_str_name)?;
            crm_db::filter_enum!(t::priority, n, op, number)
        }),
        Field::<Self>::updatable("assignee", |i, x, f| {
            f.assignee = i.user(&x.assignee, "INVALID_ASSIGNEE");
        })
        .filter(|n, op, v| crm_db::filter_text!(t::assignee, n, op, v)),
        Field::<Self>::output("sla_due_time")
            .filter(|n, op, v| crm_db::filter_time!(t::sla_due_time, n, op, v)),
        Field::<Self>::output("reopen_count"),
        Field::<Self>::output("resolve_time"),
    ];

    fn to_proto(org: Uuid, f: TicketFields) -> Ticket {
        Ticket {
            customer: child_name(org, "customers", f.customer_id),
            subject: f.subject,
            description: f.description,
            status: i32::from(f.status),
            priority: i32::from(f.priority),
            assignee: f.assignee,
            sla_due_time: Some(timestamp(f.sla_due_time)),
            reopen_count: f.reopen_count,
            resolve_time: optional_timestamp(f.resolve_time),
            ..Ticket::default()
        }
    }
    fn order_text(f: &TicketFields) -> &str {
        &f.subject
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<TicketFields>>,
        next: &'a mut TicketFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live(conn, org, next.customer_id).await?;
            }
            let Some(current) = current else {
                if status_of(next.status) != TicketStatus::Open {
                    return Err(ApiError::FailedPrecondition {
                        reason: "INVALID_INITIAL_STATUS",
                        message: "a new ticket is OPEN".into(),
                    });
                }
                next.sla_due_time = Utc::now() + sla(priority_of(next.priority));
                return Ok(());
            };
            let (from, to) = (status_of(current.fields.status), status_of(next.status));
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
                next.reopen_count += 1;
                next.resolve_time = None;
            }
            if to == TicketStatus::Resolved && from != TicketStatus::Resolved {
                next.resolve_time = Some(Utc::now());
            }
            if paths.contains(&"priority") {
                next.sla_due_time = current.std.create_time + sla(priority_of(next.priority));
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(Tickets, table = tickets, time = create_time, text = subject);

crm_resource::standard_service! {
    service = "crm.core.v1.TicketService",
    server = crm_proto::core_v1::ticket_service_server::TicketService,
    resource = Tickets,
    api = TicketApi,
    field = ticket;
    create = create_ticket(CreateTicketRequest, id = ticket_id);
    get = get_ticket(GetTicketRequest, full = |_| false);
    list = list_tickets(ListTicketsRequest, full = |_| false) -> ListTicketsResponse.tickets;
    update = update_ticket(UpdateTicketRequest);
    delete = delete_ticket(DeleteTicketRequest);
    undelete = undelete_ticket(UndeleteTicketRequest);
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
