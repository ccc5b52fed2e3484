//! `crm.core.v1.ActivityService`: the customer timeline (notes, calls, emails, texts, visits,
//! status changes), newest first, optionally linked to a ticket, work order or quote.

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{from_timestamp, optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::core_v1::{
    Activity, ActivityKind, CreateActivityRequest, DeleteActivityRequest, GetActivityRequest,
    ListActivitiesRequest, ListActivitiesResponse, UndeleteActivityRequest, UpdateActivityRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::contacts::require_live_customer;
use crate::schema::activities::{self, dsl as a};
use crate::tickets::Tickets;
use crm_resource::id_in;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference, require_live};

const SERVICE: &str = "crm.core.v1.ActivityService";
/// Collections an activity may be about.
const RELATED: &[&str] = &["tickets", "workOrders", "quotes"];

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateActivity", permission::CUSTOMERS_WRITE),
            ("GetActivity", permission::CUSTOMERS_READ),
            ("ListActivities", permission::CUSTOMERS_READ),
            ("UpdateActivity", permission::CUSTOMERS_WRITE),
            ("DeleteActivity", permission::CUSTOMERS_DELETE),
            ("UndeleteActivity", permission::CUSTOMERS_DELETE),
        ],
    )
}

/// A row of `core.activities`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = activities)]
pub struct ActivityRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub kind: i16,
    pub subject: String,
    pub body: String,
    pub occur_time: DateTime<Utc>,
    pub related: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// An activity to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = activities)]
pub struct NewActivity {
    organization_id: Uuid,
    id: Uuid,
    customer_id: Uuid,
    kind: i16,
    subject: String,
    body: String,
    occur_time: DateTime<Utc>,
    related: String,
    created_by: String,
    updated_by: String,
}

/// Changes to an activity.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = activities)]
pub struct ActivityChanges {
    customer_id: Option<Uuid>,
    kind: Option<i16>,
    subject: Option<String>,
    body: Option<String>,
    occur_time: Option<DateTime<Utc>>,
    related: Option<String>,
}

fn occur_time(x: &Activity) -> DateTime<Utc> {
    x.occur_time
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or_else(Utc::now)
}

impl NewActivity {
    fn from_proto(org: Uuid, id: Uuid, x: &Activity, actor: &str) -> Self {
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&x.customer, "customers"),
            kind: i16::try_from(x.kind).unwrap_or(0),
            subject: x.subject.trim().to_owned(),
            body: x.body.clone(),
            occur_time: occur_time(x),
            related: x.related.clone(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl ActivityChanges {
    fn from_mask(x: &Activity, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&x.customer, "customers")),
                "kind" => ch.kind = Some(i16::try_from(x.kind).unwrap_or(0)),
                "subject" => ch.subject = Some(x.subject.trim().to_owned()),
                "body" => ch.body = Some(x.body.clone()),
                "occur_time" => ch.occur_time = Some(occur_time(x)),
                "related" => ch.related = Some(x.related.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The activity resource.
#[derive(Debug)]
pub struct Activities;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "kind",
    "related",
    "subject",
    "occur_time",
    "create_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<activities::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(a::customer_id, field, op, value, "customers")
        }
        "kind" => crm_db::filter_enum!(
            a::kind,
            field,
            op,
            crm_db::filter::enum_number(value, "ACTIVITY_KIND_", ActivityKind::from_str_name)?
        ),
        "related" => crm_db::filter_text!(a::related, field, op, value),
        "subject" => crm_db::filter_text!(a::subject, field, op, value),
        "occur_time" => crm_db::filter_time!(a::occur_time, field, op, value),
        "create_time" => crm_db::filter_time!(a::create_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

/// The collection and id of a `related` name in organization `org`, or the violation.
fn related_target(
    v: &mut Violations,
    org: Option<Uuid>,
    field: &str,
    value: &str,
) -> Option<(&'static str, Uuid)> {
    let found = RELATED
        .iter()
        .find_map(|c| names::parse_child(value, c, field).ok().map(|n| (*c, n)));
    match found {
        None => {
            v.push(
                field,
                "INVALID_RELATED",
                "a ticket, work order or quote name: organizations/{organization}/tickets/{id}",
            );
            None
        }
        Some((_, (o, _))) if org.is_some_and(|org| org != o) => {
            v.push(
                field,
                "CROSS_ORGANIZATION_REFERENCE",
                "the referenced resource belongs to another organization",
            );
            None
        }
        Some((c, (_, id))) => Some((c, id)),
    }
}

impl Resource for Activities {
    type Proto = Activity;
    type Row = ActivityRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Activity";
    const COLLECTION: &'static str = "activities";
    const FIELD: &'static str = "activity";
    const UPDATABLE: &'static [&'static str] = &[
        "customer",
        "kind",
        "subject",
        "body",
        "occur_time",
        "related",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;
    const TEXT_ORDER: &'static str = "subject";
    const TIME_ORDER: &'static str = "occur_time";
    const DEFAULT_DESC: bool = true;

    fn name(x: &Activity) -> &str {
        &x.name
    }
    fn etag(x: &Activity) -> &str {
        &x.etag
    }
    fn meta(row: &ActivityRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &ActivityRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.occur_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.subject.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: ActivityRow) -> Activity {
        let ActivityRow {
            organization_id,
            id,
            customer_id,
            kind,
            subject,
            body,
            occur_time,
            related,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        Activity {
            name: child_name(organization_id, "activities", id),
            customer: child_name(organization_id, "customers", customer_id),
            kind: i32::from(kind),
            subject,
            body,
            occur_time: Some(timestamp(occur_time)),
            related,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &Activity, paths: &[&str]) {
        for path in paths {
            let field = format!("activity.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &x.customer, "customers");
                }
                "kind" => match ActivityKind::try_from(x.kind) {
                    Ok(ActivityKind::Unspecified) | Err(_) => {
                        v.push(
                            field,
                            "INVALID_KIND",
                            "NOTE, CALL, EMAIL, SMS, VISIT or STATUS_CHANGE",
                        );
                    }
                    Ok(_) => {}
                },
                "subject" => validate::optional_text(v, &field, &x.subject, 200),
                "body" => validate::optional_text(v, &field, &x.body, 10_000),
                "occur_time" => match x.occur_time.as_ref().map(from_timestamp) {
                    Some(None) => v.push(field, "INVALID_TIME", "not a valid time"),
                    Some(Some(t)) if t > Utc::now() + Duration::days(1) => {
                        v.push(field, "TIME_TOO_FAR_AHEAD", "at most a day ahead");
                    }
                    None | Some(Some(_)) => {}
                },
                "related" if !x.related.is_empty() => {
                    related_target(v, org, &field, &x.related);
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
        _current: Option<&'a ActivityRow>,
        x: &'a Activity,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live_customer(conn, org, id_in(&x.customer, "customers"), &x.customer)
                    .await?;
            }
            if paths.contains(&"related") && !x.related.is_empty() {
                let mut v = Violations::new();
                // Tickets live here and are checked; work orders and quotes belong to other
                // services and are taken by name.
                if let Some(("tickets", id)) =
                    related_target(&mut v, Some(org), "related", &x.related)
                {
                    require_live::<Tickets>(conn, org, id, &x.related).await?;
                }
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Activities,
    activities,
    occur_time,
    subject,
    ActivityRow,
    NewActivity,
    ActivityChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::activity_service_server::ActivityService, Activities => ActivityApi,
    "crm.core.v1.ActivityService", activity;
    create_activity(CreateActivityRequest, activity_id);
    get_activity(GetActivityRequest, |_| false);
    list_activities(ListActivitiesRequest, |_| false) -> ListActivitiesResponse.activities;
    update_activity(UpdateActivityRequest);
    delete_activity(DeleteActivityRequest);
    undelete_activity(UndeleteActivityRequest);
}
