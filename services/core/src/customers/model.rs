//! The customer row and its conversions.

use chrono::{DateTime, Utc};
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_proto::core_v1::{Customer, CustomerKind, LifecycleStage};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::customers;

/// The collection segment of customer names.
pub const COLLECTION: &str = "customers";
/// The resource type in errors.
pub const RESOURCE_TYPE: &str = "core.crm/Customer";

/// A row of `core.customers`.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = customers)]
pub struct CustomerRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub kind: i16,
    pub notes: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
    pub lifecycle_stage: i16,
    pub source: String,
    pub tier: String,
    pub tags: Vec<String>,
    pub time_zone: String,
}

/// A customer to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = customers)]
pub struct NewCustomer<'a> {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub kind: i16,
    pub notes: &'a str,
    pub created_by: &'a str,
    pub updated_by: &'a str,
    pub lifecycle_stage: i16,
    pub source: &'a str,
    pub tier: &'a str,
    pub tags: &'a [String],
    pub time_zone: &'a str,
}

/// Changes to apply; `None` leaves a column alone, `Some(None)` clears a nullable one.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = customers)]
pub struct CustomerChanges {
    pub display_name: Option<String>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub kind: Option<i16>,
    pub notes: Option<String>,
    pub lifecycle_stage: Option<i16>,
    pub source: Option<String>,
    pub tier: Option<String>,
    pub tags: Option<Vec<String>>,
    pub time_zone: Option<String>,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl<'a> NewCustomer<'a> {
    /// The insert for `c` (already validated) by `actor`.
    #[must_use]
    pub fn from_proto(org: Uuid, id: Uuid, c: &'a Customer, actor: &'a str) -> Self {
        Self {
            organization_id: org,
            id,
            display_name: c.display_name.trim(),
            email: non_empty(&c.email),
            phone: non_empty(&c.phone),
            kind: i16::try_from(c.kind).unwrap_or(0),
            notes: &c.notes,
            created_by: actor,
            updated_by: actor,
            lifecycle_stage: i16::try_from(if c.lifecycle_stage == 0 {
                LifecycleStage::Lead as i32
            } else {
                c.lifecycle_stage
            })
            .unwrap_or(1),
            source: &c.source,
            tier: &c.tier,
            tags: &c.tags,
            time_zone: &c.time_zone,
        }
    }
}

impl CustomerChanges {
    /// The changes of the masked `paths` taken from `c` (already validated).
    #[must_use]
    pub fn from_mask(c: &Customer, paths: &[&str]) -> Self {
        let mut changes = Self::default();
        for path in paths {
            match *path {
                "display_name" => changes.display_name = Some(c.display_name.trim().to_owned()),
                "email" => changes.email = Some(non_empty(&c.email).map(str::to_owned)),
                "phone" => changes.phone = Some(non_empty(&c.phone).map(str::to_owned)),
                "kind" => changes.kind = Some(i16::try_from(c.kind).unwrap_or(0)),
                "notes" => changes.notes = Some(c.notes.clone()),
                "lifecycle_stage" => {
                    changes.lifecycle_stage = Some(i16::try_from(c.lifecycle_stage).unwrap_or(1));
                }
                "source" => changes.source = Some(c.source.clone()),
                "tier" => changes.tier = Some(c.tier.clone()),
                "tags" => changes.tags = Some(c.tags.clone()),
                "time_zone" => changes.time_zone = Some(c.time_zone.clone()),
                _ => {}
            }
        }
        changes
    }
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        let CustomerRow {
            organization_id,
            id,
            display_name,
            email,
            phone,
            kind,
            notes,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
            lifecycle_stage,
            source,
            tier,
            tags,
            time_zone,
        } = row;
        Self {
            name: child_name(organization_id, COLLECTION, id),
            display_name,
            email: email.unwrap_or_default(),
            phone: phone.unwrap_or_default(),
            kind: CustomerKind::try_from(i32::from(kind)).map_or(0, |k| k as i32),
            notes,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
            lifecycle_stage: i32::from(lifecycle_stage),
            source,
            tier,
            tags,
            time_zone,
        }
    }
}
