//! `crm.fieldops.v1.TechnicianService`: the people who do the work, each linked to an active
//! member of the organization (checked with identity when the technician is created).

use crm_auth::{MethodPolicy, permission};
use crm_db::filter::Op;
use crm_platform::ApiError;
use crm_platform::api::validate;
use crm_proto::fieldops_v1::{
    CreateTechnicianRequest, DeleteTechnicianRequest, GetTechnicianRequest, JobType,
    ListTechniciansRequest, ListTechniciansResponse, Technician, TechnicianStatus,
    UndeleteTechnicianRequest, UpdateTechnicianRequest,
};
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource};
use diesel::prelude::*;
use uuid::Uuid;

use crate::peers::Peers;
use crate::schema::technicians::{self, dsl as t};

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let write = permission::TECHNICIANS_WRITE;
    TechnicianApi::policy(permission::TECHNICIANS_READ, write, write)
}

/// The columns of `fieldops.technicians` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = technicians, treat_none_as_null = true)]
pub struct TechnicianFields {
    pub user_id: Uuid,
    pub display_name: String,
    pub skills: Vec<i16>,
    pub home_zone: String,
    pub status: i16,
    pub hourly_cost_currency: Option<String>,
    pub hourly_cost_nanos: Option<i64>,
    pub phone: Option<String>,
}

/// At most this many skills.
const MAX_SKILLS: usize = 16;

/// Distinct, specified values of enum `E` (at most `max`) as their column; `reason` and
/// `message` name a bad value.
pub fn distinct<E: TryFrom<i32>>(
    i: &mut Input<'_>,
    values: &[i32],
    max: usize,
    reason: &'static str,
    message: &str,
) -> Vec<i16> {
    let mut out = Vec::new();
    if values.len() > max {
        i.push("TOO_MANY", format!("at most {max}"));
        return out;
    }
    for &n in values {
        let Some(v) = i.specified::<E>(n, reason, message) else {
            continue;
        };
        if out.contains(&v) {
            i.push("DUPLICATE", "each value at most once");
        } else {
            out.push(v);
        }
    }
    out
}

/// A zone: lower-case letters, digits and '-'.
pub fn zone(i: &mut Input<'_>, value: &str) -> String {
    let message = "lower-case letters, digits and '-', at most 40 characters";
    i.slug(value, "INVALID_ZONE", message)
}

/// The technician resource.
#[derive(Debug)]
pub struct Technicians;

impl Resource for Technicians {
    type Proto = Technician;
    type Fields = TechnicianFields;
    type Table = technicians::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/Technician";
    const COLLECTION: &'static str = "technicians";
    const FIELD: &'static str = "technician";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("user", |i, x, f| {
            match x.user.strip_prefix("users/").map(Uuid::parse_str) {
                Some(Ok(id)) if validate::is_user_name(&x.user) => f.user_id = id,
                _ => i.push("INVALID_USER", "a user resource name: users/{uuid}"),
            }
        })
        .filter(|n, op, v| {
            let id = crm_resource::store::user_value(n, v)?;
            match op {
                Op::Eq => Ok(Box::new(t::user_id.eq(id))),
                Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => {
                    Err(crm_db::filter::unsupported_op(n, op))
                }
            }
        }),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(t::display_name, n, op, v)),
        Field::<Self>::updatable("skills", |i, x, f| {
            let message = "a job type such as JOB_TYPE_PUMPING";
            f.skills = distinct::<JobType>(i, &x.skills, MAX_SKILLS, "INVALID_JOB_TYPE", message);
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "JOB_TYPE_", JobType::from_str_name)?;
            match op {
                Op::Has => Ok(Box::new(t::skills.contains(vec![number]))),
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                    Err(crm_db::filter::unsupported_op(n, op))
                }
            }
        }),
        Field::<Self>::updatable("home_zone", |i, x, f| f.home_zone = zone(i, &x.home_zone))
            .filter(|n, op, v| crm_db::filter_text!(t::home_zone, n, op, v)),
        Field::<Self>::updatable("status", |i, x, f| {
            if let Some(n) = i.enumeration_or(x.status, TechnicianStatus::Active) {
                f.status = n;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(
                v,
                "TECHNICIAN_STATUS_",
                TechnicianStatus::from_str_name,
            )?;
            crm_db::filter_enum!(t::status, n, op, number)
        }),
        Field::<Self>::updatable("hourly_cost", |i, x, f| {
            let cost = i.money(x.hourly_cost.as_ref(), false);
            f.hourly_cost_currency = cost.as_ref().map(|c| c.currency.clone());
            f.hourly_cost_nanos = cost.map(|c| c.nanos);
        }),
        Field::<Self>::updatable("phone", |i, x, f| f.phone = i.phone(&x.phone)),
    ];

    fn to_proto(_org: Uuid, f: TechnicianFields) -> Technician {
        Technician {
            user: format!("users/{}", f.user_id),
            display_name: f.display_name,
            skills: f.skills.into_iter().map(i32::from).collect(),
            home_zone: f.home_zone,
            status: i32::from(f.status),
            hourly_cost: Amount::proto_of(f.hourly_cost_currency.as_deref(), f.hourly_cost_nanos),
            phone: f.phone.unwrap_or_default(),
            ..Technician::default()
        }
    }
    fn order_text(f: &TechnicianFields) -> &str {
        &f.display_name
    }
    fn check_remote<'a>(
        ctx: &'a Context,
        call: &'a Call,
        fields: &'a TechnicianFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"user") {
                let peers = ctx.peers::<Peers>()?;
                peers
                    .require_active_member(call, call.principal.organization, fields.user_id)
                    .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Technicians,
    table = technicians,
    time = create_time,
    text = display_name
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.TechnicianService",
    server = crm_proto::fieldops_v1::technician_service_server::TechnicianService,
    resource = Technicians,
    api = TechnicianApi,
    field = technician;
    create = create_technician(CreateTechnicianRequest, id = technician_id);
    get = get_technician(GetTechnicianRequest, full = |_| false);
    list = list_technicians(ListTechniciansRequest, full = |_| false)
        -> ListTechniciansResponse.technicians;
    update = update_technician(UpdateTechnicianRequest);
    delete = delete_technician(DeleteTechnicianRequest);
    undelete = undelete_technician(UndeleteTechnicianRequest);
}
