//! `crm.fieldops.v1.DisposalFacilityService`: permitted sites where haulers dispose of loads,
//! with what they accept, when they are open and what they charge per gallon.

use crm_auth::{MethodPolicy, permission};
use crm_db::filter::Op;
use crm_proto::common_v1::GeoPoint;
use crm_proto::fieldops_v1::{
    CreateDisposalFacilityRequest, DeleteDisposalFacilityRequest, DisposalFacility,
    GetDisposalFacilityRequest, ListDisposalFacilitiesRequest, ListDisposalFacilitiesResponse,
    OpeningHours, UndeleteDisposalFacilityRequest, UpdateDisposalFacilityRequest, WasteKind,
};
use crm_resource::input::{Address, Amount};
use crm_resource::{Field, Input, Resource};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::disposal_facilities::{self, dsl as d};
use crate::technicians::distinct;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::COMPLIANCE_WRITE;
    DisposalFacilityApi::policy(permission::COMPLIANCE_READ, write, write)
}

/// The columns of `fieldops.disposal_facilities` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = disposal_facilities, treat_none_as_null = true)]
pub struct FacilityFields {
    pub display_name: String,
    pub region_code: String,
    pub postal_code: String,
    pub administrative_area: String,
    pub locality: String,
    pub address_lines: Vec<String>,
    pub recipient: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub permit_number: String,
    pub accepted_waste_kinds: Vec<i16>,
    pub opening_hours: Vec<String>,
    pub tipping_fee_currency: Option<String>,
    pub tipping_fee_nanos: Option<i64>,
    pub active: bool,
}

/// At most this many weekly windows.
const MAX_WINDOWS: usize = 14;

/// Minutes after midnight of `HH:MM`.
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Validates weekly windows and encodes each as `D HH:MM HH:MM`.
fn set_hours(i: &mut Input<'_>, hours: &[OpeningHours], f: &mut FacilityFields) {
    f.opening_hours.clear();
    if hours.len() > MAX_WINDOWS {
        i.push("TOO_MANY", format!("at most {MAX_WINDOWS} windows"));
        return;
    }
    for (n, h) in hours.iter().enumerate() {
        if !(1..=7).contains(&h.day_of_week) {
            i.push_at(
                &format!("[{n}].day_of_week"),
                "OUT_OF_RANGE",
                "1 (Monday) to 7 (Sunday)",
            );
            continue;
        }
        match (minutes(&h.open_time), minutes(&h.close_time)) {
            (Some(open), Some(close)) if open < close => f.opening_hours.push(format!(
                "{} {} {}",
                h.day_of_week, h.open_time, h.close_time
            )),
            (Some(_), Some(_)) => {
                let message = "closes after it opens";
                i.push_at(&format!("[{n}].close_time"), "INVALID_WINDOW", message);
            }
            _ => {
                let message = "HH:MM in 24-hour time";
                i.push_at(&format!("[{n}]"), "INVALID_TIME_OF_DAY", message);
            }
        }
    }
}

fn hours_of(encoded: &[String]) -> Vec<OpeningHours> {
    encoded
        .iter()
        .filter_map(|e| {
            let mut parts = e.split(' ');
            Some(OpeningHours {
                day_of_week: parts.next()?.parse().ok()?,
                open_time: parts.next()?.to_owned(),
                close_time: parts.next()?.to_owned(),
            })
        })
        .collect()
}

/// The disposal facility resource.
#[derive(Debug)]
pub struct DisposalFacilities;

impl Resource for DisposalFacilities {
    type Proto = DisposalFacility;
    type Fields = FacilityFields;
    type Table = disposal_facilities::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/DisposalFacility";
    const COLLECTION: &'static str = "disposalFacilities";
    const FIELD: &'static str = "disposal_facility";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(d::display_name, n, op, v)),
        Field::<Self>::updatable("address", |i, x, f| {
            let a = i.address(x.address.as_ref());
            f.region_code = a.region_code;
            f.postal_code = a.postal_code;
            f.administrative_area = a.administrative_area;
            f.locality = a.locality;
            f.address_lines = a.address_lines;
            f.recipient = a.recipient;
        }),
        Field::<Self>::updatable("location", |i, x, f| {
            let point = i.geo(x.location.as_ref());
            f.latitude = point.map(|p| p.0);
            f.longitude = point.map(|p| p.1);
        }),
        Field::<Self>::updatable("permit_number", |i, x, f| {
            f.permit_number = i.required_text(&x.permit_number, 100);
        })
        .filter(|n, op, v| crm_db::filter_text!(d::permit_number, n, op, v)),
        Field::<Self>::updatable("accepted_waste_kinds", |i, x, f| {
            let message = "a waste kind such as WASTE_KIND_SEPTAGE";
            let kinds = &x.accepted_waste_kinds;
            f.accepted_waste_kinds =
                distinct::<WasteKind>(i, kinds, 8, "INVALID_WASTE_KIND", message);
            if kinds.is_empty() {
                i.push("REQUIRED", "at least one accepted waste kind");
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "WASTE_KIND_", WasteKind::from_str_name)?;
            match op {
                Op::Has => Ok(Box::new(d::accepted_waste_kinds.contains(vec![number]))),
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                    Err(crm_db::filter::unsupported_op(n, op))
                }
            }
        }),
        Field::<Self>::updatable("opening_hours", |i, x, f| set_hours(i, &x.opening_hours, f)),
        Field::<Self>::updatable("tipping_fee_per_gallon", |i, x, f| {
            let fee = i.money(x.tipping_fee_per_gallon.as_ref(), false);
            f.tipping_fee_currency = fee.as_ref().map(|c| c.currency.clone());
            f.tipping_fee_nanos = fee.map(|c| c.nanos);
        }),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active)
            .filter(|n, op, v| crm_resource::filter_bool!(d::active, n, op, v)),
    ];

    fn to_proto(_org: Uuid, f: FacilityFields) -> DisposalFacility {
        let address = Address {
            region_code: f.region_code,
            postal_code: f.postal_code,
            administrative_area: f.administrative_area,
            locality: f.locality,
            address_lines: f.address_lines,
            recipient: f.recipient,
        };
        DisposalFacility {
            display_name: f.display_name,
            address: Some(address.to_proto()),
            location: f
                .latitude
                .zip(f.longitude)
                .map(|(latitude, longitude)| GeoPoint {
                    latitude,
                    longitude,
                }),
            permit_number: f.permit_number,
            accepted_waste_kinds: f.accepted_waste_kinds.into_iter().map(i32::from).collect(),
            opening_hours: hours_of(&f.opening_hours),
            tipping_fee_per_gallon: Amount::proto_of(
                f.tipping_fee_currency.as_deref(),
                f.tipping_fee_nanos,
            ),
            active: f.active,
            ..DisposalFacility::default()
        }
    }
    fn order_text(f: &FacilityFields) -> &str {
        &f.display_name
    }
}

crm_resource::standard_store!(
    DisposalFacilities,
    table = disposal_facilities,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.DisposalFacilityService",
    server = crm_proto::fieldops_v1::disposal_facility_service_server::DisposalFacilityService,
    resource = DisposalFacilities,
    api = DisposalFacilityApi,
    field = disposal_facility;
    create = create_disposal_facility(CreateDisposalFacilityRequest, id = disposal_facility_id);
    get = get_disposal_facility(GetDisposalFacilityRequest, full = |_| false);
    list = list_disposal_facilities(ListDisposalFacilitiesRequest, full = |_| false)
        -> ListDisposalFacilitiesResponse.disposal_facilities;
    update = update_disposal_facility(UpdateDisposalFacilityRequest);
    delete = delete_disposal_facility(DeleteDisposalFacilityRequest);
    undelete = undelete_disposal_facility(UndeleteDisposalFacilityRequest);
}
