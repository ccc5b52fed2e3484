//! `crm.core.v1.PropertyService`: customers' service locations. Gate codes are returned only
//! with the FULL view and never written into audit entries.

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::filter::{self, BoxedPredicate, Filter, FilterError, Op, Value};
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_proto::common_v1::{GeoPoint, PostalAddress};
use crm_proto::core_v1::{
    CreatePropertyRequest, DeletePropertyRequest, GetPropertyRequest, ListPropertiesRequest,
    ListPropertiesResponse, Property, PropertyView, UndeletePropertyRequest, UpdatePropertyRequest,
};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::contacts::require_live_customer;
use crate::schema::properties::{self, dsl as p};
use crm_resource::id_in;
use crm_resource::{BoxFuture, Meta, Order, OrderField, Resource, reference};

const SERVICE: &str = "crm.core.v1.PropertyService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("CreateProperty", permission::CUSTOMERS_WRITE),
            ("GetProperty", permission::CUSTOMERS_READ),
            ("ListProperties", permission::CUSTOMERS_READ),
            ("UpdateProperty", permission::CUSTOMERS_WRITE),
            ("DeleteProperty", permission::CUSTOMERS_DELETE),
            ("UndeleteProperty", permission::CUSTOMERS_DELETE),
        ],
    )
}

/// A row of `core.properties`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = properties)]
pub struct PropertyRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub customer_id: Uuid,
    pub display_name: String,
    pub region_code: String,
    pub postal_code: String,
    pub administrative_area: String,
    pub locality: String,
    pub address_lines: Vec<String>,
    pub recipient: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub zone: String,
    pub access_notes: String,
    pub gate_code: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub delete_time: Option<DateTime<Utc>>,
    pub purge_time: Option<DateTime<Utc>>,
    pub revision: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// A property to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = properties)]
pub struct NewProperty {
    organization_id: Uuid,
    id: Uuid,
    customer_id: Uuid,
    display_name: String,
    region_code: String,
    postal_code: String,
    administrative_area: String,
    locality: String,
    address_lines: Vec<String>,
    recipient: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    zone: String,
    access_notes: String,
    gate_code: String,
    created_by: String,
    updated_by: String,
}

/// Changes to a property.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = properties)]
pub struct PropertyChanges {
    customer_id: Option<Uuid>,
    display_name: Option<String>,
    region_code: Option<String>,
    postal_code: Option<String>,
    administrative_area: Option<String>,
    locality: Option<String>,
    address_lines: Option<Vec<String>>,
    recipient: Option<String>,
    latitude: Option<Option<f64>>,
    longitude: Option<Option<f64>>,
    zone: Option<String>,
    access_notes: Option<String>,
    gate_code: Option<String>,
}

fn trimmed(a: &PostalAddress) -> PostalAddress {
    PostalAddress {
        region_code: a.region_code.trim().to_ascii_uppercase(),
        postal_code: a.postal_code.trim().to_owned(),
        administrative_area: a.administrative_area.trim().to_owned(),
        locality: a.locality.trim().to_owned(),
        address_lines: a
            .address_lines
            .iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        recipient: a.recipient.trim().to_owned(),
    }
}

impl NewProperty {
    fn from_proto(org: Uuid, id: Uuid, x: &Property, actor: &str) -> Self {
        let a = trimmed(&x.address.clone().unwrap_or_default());
        Self {
            organization_id: org,
            id,
            customer_id: id_in(&x.customer, "customers"),
            display_name: x.display_name.trim().to_owned(),
            region_code: a.region_code,
            postal_code: a.postal_code,
            administrative_area: a.administrative_area,
            locality: a.locality,
            address_lines: a.address_lines,
            recipient: a.recipient,
            latitude: x.location.map(|g| g.latitude),
            longitude: x.location.map(|g| g.longitude),
            zone: x.zone.clone(),
            access_notes: x.access_notes.clone(),
            gate_code: x.gate_code.clone(),
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
        }
    }
}

impl PropertyChanges {
    fn from_mask(x: &Property, paths: &[&str]) -> Self {
        let mut ch = Self::default();
        for path in paths {
            match *path {
                "customer" => ch.customer_id = Some(id_in(&x.customer, "customers")),
                "display_name" => ch.display_name = Some(x.display_name.trim().to_owned()),
                "address" => {
                    let a = trimmed(&x.address.clone().unwrap_or_default());
                    ch.region_code = Some(a.region_code);
                    ch.postal_code = Some(a.postal_code);
                    ch.administrative_area = Some(a.administrative_area);
                    ch.locality = Some(a.locality);
                    ch.address_lines = Some(a.address_lines);
                    ch.recipient = Some(a.recipient);
                }
                "location" => {
                    ch.latitude = Some(x.location.map(|g| g.latitude));
                    ch.longitude = Some(x.location.map(|g| g.longitude));
                }
                "zone" => ch.zone = Some(x.zone.clone()),
                "access_notes" => ch.access_notes = Some(x.access_notes.clone()),
                "gate_code" => ch.gate_code = Some(x.gate_code.clone()),
                _ => {}
            }
        }
        ch
    }
}

/// The property resource.
#[derive(Debug)]
pub struct Properties;

const FILTER_FIELDS: &[&str] = &[
    "customer",
    "display_name",
    "zone",
    "locality",
    "postal_code",
    "create_time",
    "update_time",
];

fn leaf(
    field: &str,
    op: Op,
    value: &Value,
) -> Result<BoxedPredicate<properties::table>, FilterError> {
    match field {
        "customer" => {
            crm_resource::filter_reference!(p::customer_id, field, op, value, "customers")
        }
        "display_name" => crm_db::filter_text!(p::display_name, field, op, value),
        "zone" => crm_db::filter_text!(p::zone, field, op, value),
        "locality" => crm_db::filter_text!(p::locality, field, op, value),
        "postal_code" => crm_db::filter_text!(p::postal_code, field, op, value),
        "create_time" => crm_db::filter_time!(p::create_time, field, op, value),
        "update_time" => crm_db::filter_time!(p::update_time, field, op, value),
        other => Err(filter::unknown_field(other, FILTER_FIELDS)),
    }
}

fn validate_address(v: &mut Violations, field: &str, a: Option<&PostalAddress>) {
    let Some(a) = a else {
        v.push(field, "REQUIRED", "an address is required");
        return;
    };
    let region = a.region_code.trim();
    if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_alphabetic()) {
        v.push(
            format!("{field}.region_code"),
            "INVALID_REGION_CODE",
            "an ISO 3166-1 alpha-2 code such as US",
        );
    }
    if a.address_lines.iter().all(|l| l.trim().is_empty()) {
        v.push(
            format!("{field}.address_lines"),
            "REQUIRED",
            "at least one address line is required",
        );
    }
    if a.address_lines.len() > 5 || a.address_lines.iter().any(|l| l.len() > 200) {
        v.push(
            format!("{field}.address_lines"),
            "TOO_LONG",
            "at most 5 lines of 200 characters",
        );
    }
    for (name, value) in [
        ("postal_code", &a.postal_code),
        ("administrative_area", &a.administrative_area),
        ("locality", &a.locality),
        ("recipient", &a.recipient),
    ] {
        validate::optional_text(v, &format!("{field}.{name}"), value, 200);
    }
}

fn validate_location(v: &mut Violations, field: &str, g: Option<&GeoPoint>) {
    if let Some(g) = g {
        if !(-90.0..=90.0).contains(&g.latitude) || !g.latitude.is_finite() {
            v.push(format!("{field}.latitude"), "OUT_OF_RANGE", "-90 to 90");
        }
        if !(-180.0..=180.0).contains(&g.longitude) || !g.longitude.is_finite() {
            v.push(format!("{field}.longitude"), "OUT_OF_RANGE", "-180 to 180");
        }
    }
}

impl Resource for Properties {
    type Proto = Property;
    type Row = PropertyRow;
    const RESOURCE_TYPE: &'static str = "core.crm/Property";
    const COLLECTION: &'static str = "properties";
    const FIELD: &'static str = "property";
    const UPDATABLE: &'static [&'static str] = &[
        "customer",
        "display_name",
        "address",
        "location",
        "zone",
        "access_notes",
        "gate_code",
    ];
    const OUTPUT_ONLY: &'static [&'static str] = crm_resource::STANDARD_OUTPUT_ONLY;
    const REDACTED: &'static [&'static str] = &["gate_code"];
    const FULL_VIEW_PERMISSION: Option<&'static str> = Some(permission::PROPERTY_ACCESS_READ);

    fn name(x: &Property) -> &str {
        &x.name
    }
    fn etag(x: &Property) -> &str {
        &x.etag
    }
    fn meta(row: &PropertyRow) -> Meta {
        Meta {
            revision: row.revision,
            deleted: row.delete_time.is_some(),
        }
    }
    fn sort_key(row: &PropertyRow, field: OrderField) -> Vec<String> {
        let value = match field {
            OrderField::CreateTime => row.create_time.to_rfc3339(),
            OrderField::UpdateTime => row.update_time.to_rfc3339(),
            OrderField::DisplayName => row.display_name.clone(),
        };
        Order::key(value, row.id)
    }
    fn to_proto(row: PropertyRow) -> Property {
        let PropertyRow {
            organization_id,
            id,
            customer_id,
            display_name,
            region_code,
            postal_code,
            administrative_area,
            locality,
            address_lines,
            recipient,
            latitude,
            longitude,
            zone,
            access_notes,
            gate_code,
            create_time,
            update_time,
            delete_time,
            purge_time,
            revision,
            created_by,
            updated_by,
        } = row;
        Property {
            name: child_name(organization_id, "properties", id),
            customer: child_name(organization_id, "customers", customer_id),
            display_name,
            address: Some(PostalAddress {
                region_code,
                postal_code,
                administrative_area,
                locality,
                address_lines,
                recipient,
            }),
            location: latitude
                .zip(longitude)
                .map(|(latitude, longitude)| GeoPoint {
                    latitude,
                    longitude,
                }),
            zone,
            access_notes,
            gate_code,
            create_time: Some(timestamp(create_time)),
            update_time: Some(timestamp(update_time)),
            delete_time: optional_timestamp(delete_time),
            purge_time: optional_timestamp(purge_time),
            etag: crm_db::etag::from_revision(revision),
            creator: created_by,
            last_modifier: updated_by,
        }
    }
    fn validate(v: &mut Violations, org: Option<Uuid>, x: &Property, paths: &[&str]) {
        for path in paths {
            let field = format!("property.{path}");
            match *path {
                "customer" => {
                    reference(v, org, &field, &x.customer, "customers");
                }
                "display_name" => validate::required_text(v, &field, &x.display_name, 200),
                "address" => validate_address(v, &field, x.address.as_ref()),
                "location" => validate_location(v, &field, x.location.as_ref()),
                "zone" if !x.zone.is_empty() && !validate::is_slug(&x.zone) => v.push(
                    field,
                    "INVALID_ZONE",
                    "lower-case letters, digits and '-', at most 40 characters",
                ),
                "access_notes" => validate::optional_text(v, &field, &x.access_notes, 2_000),
                "gate_code" => validate::optional_text(v, &field, &x.gate_code, 50),
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
        _current: Option<&'a PropertyRow>,
        x: &'a Property,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live_customer(conn, org, id_in(&x.customer, "customers"), &x.customer)
                    .await?;
            }
            Ok(())
        })
    }
    fn redact(x: &mut Property) {
        x.gate_code.clear();
    }
}

crm_resource::standard_store!(
    Properties,
    properties,
    create_time,
    display_name,
    PropertyRow,
    NewProperty,
    PropertyChanges,
    leaf
);

crm_resource::standard_service! {
    crm_proto::core_v1::property_service_server::PropertyService, Properties => PropertyApi,
    "crm.core.v1.PropertyService", property;
    create_property(CreatePropertyRequest, property_id);
    get_property(GetPropertyRequest, |b| b.view == PropertyView::Full as i32);
    list_properties(ListPropertiesRequest, |b| b.view == PropertyView::Full as i32)
        -> ListPropertiesResponse.properties;
    update_property(UpdatePropertyRequest);
    delete_property(DeletePropertyRequest);
    undelete_property(UndeletePropertyRequest);
}
