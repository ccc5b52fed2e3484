//! `crm.fieldops.v1.TruckService`: vacuum trucks, their tank capacity and who drives them.

use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_proto::fieldops_v1::{
    CreateTruckRequest, DeleteTruckRequest, GetTruckRequest, ListTrucksRequest, ListTrucksResponse,
    Truck, UndeleteTruckRequest, UpdateTruckRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::trucks::{self, dsl as t};
use crate::technicians::Technicians;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::TECHNICIANS_WRITE;
    TruckApi::policy(permission::TECHNICIANS_READ, write, write)
}

/// The columns of `fieldops.trucks` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = trucks, treat_none_as_null = true)]
pub struct TruckFields {
    pub display_name: String,
    pub plate: String,
    pub tank_capacity_gallons: i32,
    pub technician_id: Option<Uuid>,
    pub active: bool,
    pub notes: String,
}

/// The largest tank.
pub const MAX_TANK_GALLONS: i32 = 20_000;

/// The truck resource.
#[derive(Debug)]
pub struct Trucks;

impl Resource for Trucks {
    type Proto = Truck;
    type Fields = TruckFields;
    type Table = trucks::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/Truck";
    const COLLECTION: &'static str = "trucks";
    const FIELD: &'static str = "truck";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(t::display_name, n, op, v)),
        Field::<Self>::updatable("plate", |i, x, f| {
            let plate = i.required_text(&x.plate, 20);
            if !plate
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
            {
                i.push("INVALID_PLATE", "letters, digits, spaces and '-'");
            }
            f.plate = plate.to_ascii_uppercase();
        })
        .filter(|n, op, v| crm_db::filter_text!(t::plate, n, op, v)),
        Field::<Self>::updatable("tank_capacity_gallons", |i, x, f| {
            let message = format!("1 to {MAX_TANK_GALLONS} gallons");
            f.tank_capacity_gallons =
                i.in_range(x.tank_capacity_gallons, 1..=MAX_TANK_GALLONS, &message);
        }),
        Field::<Self>::updatable("technician", |i, x, f| {
            f.technician_id = if x.technician.is_empty() {
                None
            } else {
                i.reference(&x.technician, "technicians")
            };
        })
        .filter(|n, op, v| {
            crm_resource::filter_optional_reference!(t::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active)
            .filter(|n, op, v| crm_resource::filter_bool!(t::active, n, op, v)),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 2_000)),
    ];

    fn to_proto(org: Uuid, f: TruckFields) -> Truck {
        Truck {
            display_name: f.display_name,
            plate: f.plate,
            tank_capacity_gallons: f.tank_capacity_gallons,
            technician: f
                .technician_id
                .map(|id| child_name(org, "technicians", id))
                .unwrap_or_default(),
            active: f.active,
            notes: f.notes,
            ..Truck::default()
        }
    }
    fn order_text(f: &TruckFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<TruckFields>>,
        next: &'a mut TruckFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if let (true, Some(id)) = (paths.contains(&"technician"), next.technician_id) {
                let name = child_name(org.uuid(), "technicians", id);
                crm_resource::require_live::<Technicians>(conn, org, id, &name).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Trucks,
    table = trucks,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.TruckService",
    server = crm_proto::fieldops_v1::truck_service_server::TruckService,
    resource = Trucks,
    api = TruckApi,
    field = truck;
    create = create_truck(CreateTruckRequest, id = truck_id);
    get = get_truck(GetTruckRequest, full = |_| false);
    list = list_trucks(ListTrucksRequest, full = |_| false) -> ListTrucksResponse.trucks;
    update = update_truck(UpdateTruckRequest);
    delete = delete_truck(DeleteTruckRequest);
    undelete = undelete_truck(UndeleteTruckRequest);
}
