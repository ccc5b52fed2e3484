//! `crm.core.v1.ActivityService`: the customer timeline (notes, calls, emails, texts, visits,
//! status changes), newest first, optionally linked to a ticket, work order or quote.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_proto::core_v1::{
    Activity, ActivityKind, CreateActivityRequest, DeleteActivityRequest, GetActivityRequest,
    ListActivitiesRequest, ListActivitiesResponse, UndeleteActivityRequest, UpdateActivityRequest,
};
use crm_resource::{BoxFuture, Field, Input, Resource, Row, require_live};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::activities::{self, dsl as a};
use crate::tickets::Tickets;

/// Collections an activity may be about.
const RELATED: &[&str] = &["tickets", "workOrders", "quotes"];

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    ActivityApi::policy(
        permission::CUSTOMERS_READ,
        permission::CUSTOMERS_WRITE,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.activities` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = activities, treat_none_as_null = true)]
pub struct ActivityFields {
    pub customer_id: Uuid,
    pub kind: i16,
    pub subject: String,
    pub body: String,
    pub occur_time: DateTime<Utc>,
    pub related: String,
}

/// The collection and id of a `related` name.
fn related_target(value: &str) -> Option<(&'static str, Uuid)> {
    RELATED.iter().find_map(|c| {
        names::parse_child(value, c, "related")
            .ok()
            .map(|(_, id)| (*c, id))
    })
}

/// Validates `related` (empty, or a ticket, work order or quote of this organization).
fn set_related(i: &mut Input<'_>, x: &Activity, f: &mut ActivityFields) {
    if !x.related.is_empty() {
        let org = RELATED
            .iter()
            .find_map(|c| names::parse_child(&x.related, c, "related").ok());
        match org {
            None => i.push(
                "INVALID_RELATED",
                "a ticket, work order or quote name: organizations/{organization}/tickets/{id}",
            ),
            Some((o, _)) if i.org().is_some_and(|org| org != o) => i.push(
                "CROSS_ORGANIZATION_REFERENCE",
                "the referenced resource belongs to another organization",
            ),
            Some(_) => {}
        }
    }
    f.related.clone_from(&x.related);
}

/// The activity resource.
#[derive(Debug)]
pub struct Activities;

impl Resource for Activities {
    type Proto = Activity;
    type Fields = ActivityFields;
    type Table = activities::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Activity";
    const COLLECTION: &'static str = "activities";
    const FIELD: &'static str = "activity";
    const TEXT_ORDER: &'static str = "subject";
    const TIME_ORDER: &'static str = "occur_time";
    const DEFAULT_DESC: bool = true;
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(a::customer_id, n, op, v, "customers")),
        Field::<Self>::updatable("kind", |i, x, f| {
            let message = "NOTE, CALL, EMAIL, SMS, VISIT or STATUS_CHANGE";
            if let Some(k) = i.specified::<ActivityKind>(x.kind, "INVALID_KIND", message) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "ACTIVITY_KIND_", ActivityKind::from_str_name)?;
            crm_db::filter_enum!(a::kind, n, op, number)
        }),
        Field::<Self>::updatable("subject", |i, x, f| f.subject = i.trimmed(&x.subject, 200))
            .filter(|n, op, v| crm_db::filter_text!(a::subject, n, op, v)),
        Field::<Self>::updatable("body", |i, x, f| f.body = i.text(&x.body, 10_000)),
        Field::<Self>::updatable("occur_time", |i, x, f| {
            let at = i.optional_time(x.occur_time.as_ref());
            if at.is_some_and(|t| t > Utc::now() + Duration::days(1)) {
                i.push("TIME_TOO_FAR_AHEAD", "at most a day ahead");
            }
            f.occur_time = at.unwrap_or_else(Utc::now);
        })
        .filter(|n, op, v| crm_db::filter_time!(a::occur_time, n, op, v)),
        Field::<Self>::updatable("related", set_related)
            .filter(|n, op, v| crm_db::filter_text!(a::related, n, op, v)),
    ];

    fn to_proto(org: Uuid, f: ActivityFields) -> Activity {
        Activity {
            customer: child_name(org, "customers", f.customer_id),
            kind: i32::from(f.kind),
            subject: f.subject,
            body: f.body,
            occur_time: Some(timestamp(f.occur_time)),
            related: f.related,
            ..Activity::default()
        }
    }
    fn order_text(f: &ActivityFields) -> &str {
        &f.subject
    }
    fn order_time(row: &Row<ActivityFields>) -> DateTime<Utc> {
        row.fields.occur_time
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<ActivityFields>>,
        next: &'a mut ActivityFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                crate::customers::require_live(conn, org, next.customer_id).await?;
            }
            if paths.contains(&"related")
                && let Some(("tickets", id)) = related_target(&next.related)
            {
                require_live::<Tickets>(conn, org, id, &next.related).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Activities,
    table = activities,
    time = occur_time,
    text = subject
);

crm_resource::standard_service! {
    service = "crm.core.v1.ActivityService",
    server = crm_proto::core_v1::activity_service_server::ActivityService,
    resource = Activities,
    api = ActivityApi,
    field = activity;
    create = create_activity(CreateActivityRequest, id = activity_id);
    get = get_activity(GetActivityRequest, full = |_| false);
    list = list_activities(ListActivitiesRequest, full = |_| false) -> ListActivitiesResponse.activities;
    update = update_activity(UpdateActivityRequest);
    delete = delete_activity(DeleteActivityRequest);
    undelete = undelete_activity(UndeleteActivityRequest);
}
