//! `crm.core.v1.PropertyService`: customers' service locations. Gate codes are returned only
//! with the FULL view and never written into audit entries.

use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_proto::common_v1::{GeoPoint, PostalAddress};
use crm_proto::core_v1::{
    CreatePropertyRequest, DeletePropertyRequest, GetPropertyRequest, ListPropertiesRequest,
    ListPropertiesResponse, Property, PropertyView, UndeletePropertyRequest, UpdatePropertyRequest,
};
use crm_resource::{BoxFuture, Field, Input, Resource, Row};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::customers::require_live;
use crate::schema::properties::{self, dsl as p};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    PropertyApi::policy(
        permission::CUSTOMERS_READ,
        permission::CUSTOMERS_WRITE,
        permission::CUSTOMERS_DELETE,
    )
}

/// The columns of `core.properties` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = properties, treat_none_as_null = true)]
pub struct PropertyFields {
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
}

/// Validates a postal address and writes it, trimmed, into the columns.
fn set_address(i: &mut Input<'_>, a: Option<&PostalAddress>, f: &mut PropertyFields) {
    let a = i.address(a);
    f.region_code = a.region_code;
    f.postal_code = a.postal_code;
    f.administrative_area = a.administrative_area;
    f.locality = a.locality;
    f.recipient = a.recipient;
    f.address_lines = a.address_lines;
}

/// Validates a geo point and writes it into the columns (none is none).
fn set_location(i: &mut Input<'_>, g: Option<&GeoPoint>, f: &mut PropertyFields) {
    let point = i.geo(g);
    f.latitude = point.map(|p| p.0);
    f.longitude = point.map(|p| p.1);
}

/// The property resource.
#[derive(Debug)]
pub struct Properties;

impl Resource for Properties {
    type Proto = Property;
    type Fields = PropertyFields;
    type Table = properties::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Property";
    const COLLECTION: &'static str = "properties";
    const FIELD: &'static str = "property";
    const FULL_VIEW_PERMISSION: Option<&'static str> = Some(permission::PROPERTY_ACCESS_READ);
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(p::customer_id, n, op, v, "customers")),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(p::display_name, n, op, v)),
        Field::<Self>::updatable("address", |i, x, f| set_address(i, x.address.as_ref(), f)),
        Field::<Self>::updatable("location", |i, x, f| {
            set_location(i, x.location.as_ref(), f);
        }),
        Field::<Self>::updatable("zone", |i, x, f| {
            let message = "lower-case letters, digits and '-', at most 40 characters";
            f.zone = i.slug(&x.zone, "INVALID_ZONE", message);
        })
        .filter(|n, op, v| crm_db::filter_text!(p::zone, n, op, v)),
        Field::<Self>::filter_only("locality", |n, op, v| {
            crm_db::filter_text!(p::locality, n, op, v)
        }),
        Field::<Self>::filter_only("postal_code", |n, op, v| {
            crm_db::filter_text!(p::postal_code, n, op, v)
        }),
        Field::<Self>::updatable("access_notes", |i, x, f| {
            f.access_notes = i.text(&x.access_notes, 2_000);
        }),
        Field::<Self>::updatable("gate_code", |i, x, f| {
            f.gate_code = i.text(&x.gate_code, 50);
        })
        .redacted(),
    ];

    fn to_proto(org: Uuid, f: PropertyFields) -> Property {
        Property {
            customer: child_name(org, "customers", f.customer_id),
            display_name: f.display_name,
            address: Some(PostalAddress {
                region_code: f.region_code,
                postal_code: f.postal_code,
                administrative_area: f.administrative_area,
                locality: f.locality,
                address_lines: f.address_lines,
                recipient: f.recipient,
            }),
            location: (f.latitude.zip(f.longitude)).map(|(latitude, longitude)| GeoPoint {
                latitude,
                longitude,
            }),
            zone: f.zone,
            access_notes: f.access_notes,
            gate_code: f.gate_code,
            ..Property::default()
        }
    }
    fn order_text(f: &PropertyFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<PropertyFields>>,
        next: &'a mut PropertyFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"customer") {
                require_live(conn, org, next.customer_id).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Properties,
    table = properties,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.core.v1.PropertyService",
    server = crm_proto::core_v1::property_service_server::PropertyService,
    resource = Properties,
    api = PropertyApi,
    field = property;
    create = create_property(CreatePropertyRequest, id = property_id);
    get = get_property(GetPropertyRequest, full = |b| b.view == PropertyView::Full as i32);
    list = list_properties(ListPropertiesRequest, full = |b| b.view == PropertyView::Full as i32)
        -> ListPropertiesResponse.properties;
    update = update_property(UpdatePropertyRequest);
    delete = delete_property(DeletePropertyRequest);
    undelete = undelete_property(UndeletePropertyRequest);
}

/// Fails unless live property `property` of `org` belongs to `customer`.
///
/// # Errors
/// FAILED_PRECONDITION `PROPERTY_OF_ANOTHER_CUSTOMER` (also for a missing or deleted property);
/// the database error.
pub async fn require_customers(
    conn: &AsyncPgConnection,
    org: OrgId,
    property: Uuid,
    customer: Uuid,
) -> Result<(), ApiError> {
    use crate::schema::properties::dsl as pp;
    let owner: Option<Uuid> = pp::properties
        .filter(pp::organization_id.eq(org))
        .filter(pp::id.eq(property))
        .filter(pp::delete_time.is_null())
        .select(pp::customer_id)
        .first(&mut { conn })
        .await
        .optional()?;
    if owner == Some(customer) {
        return Ok(());
    }
    Err(ApiError::FailedPrecondition {
        reason: "PROPERTY_OF_ANOTHER_CUSTOMER",
        message: "the property is not the customer's (or does not exist)".to_owned(),
    })
}
