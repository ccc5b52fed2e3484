//! `crm.fieldops.v1.CertificationService` and `LicenseService`: the credentials jobs and
//! hauling need, with their expiry (inspection jobs go only to technicians whose certification
//! of the required kind is valid).

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::fieldops_v1::{
    Certification, CertificationKind, CreateCertificationRequest, CreateLicenseRequest,
    DeleteCertificationRequest, DeleteLicenseRequest, GetCertificationRequest, GetLicenseRequest,
    License, ListCertificationsRequest, ListCertificationsResponse, ListLicensesRequest,
    ListLicensesResponse, UndeleteCertificationRequest, UndeleteLicenseRequest,
    UpdateCertificationRequest, UpdateLicenseRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::schema::certifications::{self, dsl as c};
use crate::schema::licenses::{self, dsl as l};
use crate::technicians::Technicians;
use crate::trucks::Trucks;

/// The permission of every RPC of both services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::COMPLIANCE_READ, permission::COMPLIANCE_WRITE);
    CertificationApi::policy(read, write, write).merge(&LicenseApi::policy(read, write, write))
}

/// The columns of `fieldops.certifications` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = certifications, treat_none_as_null = true)]
pub struct CertificationFields {
    pub technician_id: Uuid,
    pub kind: i16,
    pub number: String,
    pub issuer: String,
    pub expire_time: DateTime<Utc>,
}

/// The certification resource.
#[derive(Debug)]
pub struct Certifications;

impl Resource for Certifications {
    type Proto = Certification;
    type Fields = CertificationFields;
    type Table = certifications::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/Certification";
    const COLLECTION: &'static str = "certifications";
    const FIELD: &'static str = "certification";
    const TEXT_ORDER: &'static str = "number";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("technician", |i, x, f| {
            if let Some(id) = i.reference(&x.technician, "technicians") {
                f.technician_id = id;
            }
        })
        .filter(|n, op, v| {
            crm_resource::filter_reference!(c::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::create_only("kind", |i, x, f| {
            let message = "a kind such as CERTIFICATION_KIND_INSPECTION";
            if let Some(k) = i.specified::<CertificationKind>(x.kind, "INVALID_KIND", message) {
                f.kind = k;
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(
                v,
                "CERTIFICATION_KIND_",
                CertificationKind::from_str_name,
            )?;
            crm_db::filter_enum!(c::kind, n, op, number)
        }),
        Field::<Self>::updatable("number", |i, x, f| {
            f.number = i.required_text(&x.number, 100);
        })
        .filter(|n, op, v| crm_db::filter_text!(c::number, n, op, v)),
        Field::<Self>::updatable("issuer", |i, x, f| f.issuer = i.trimmed(&x.issuer, 200)),
        Field::<Self>::updatable("expire_time", |i, x, f| {
            if let Some(t) = i.required_time(x.expire_time.as_ref(), "when it expires") {
                f.expire_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(c::expire_time, n, op, v)),
    ];

    fn to_proto(org: Uuid, f: CertificationFields) -> Certification {
        Certification {
            technician: child_name(org, "technicians", f.technician_id),
            kind: i32::from(f.kind),
            number: f.number,
            issuer: f.issuer,
            expire_time: Some(timestamp(f.expire_time)),
            ..Certification::default()
        }
    }
    fn order_text(f: &CertificationFields) -> &str {
        &f.number
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<CertificationFields>>,
        next: &'a mut CertificationFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if current.is_none() {
                let name = child_name(org.uuid(), "technicians", next.technician_id);
                crm_resource::require_live::<Technicians>(conn, org, next.technician_id, &name)
                    .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Certifications,
    table = certifications,
    time = create_time,
    text = number
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.CertificationService",
    server = crm_proto::fieldops_v1::certification_service_server::CertificationService,
    resource = Certifications,
    api = CertificationApi,
    field = certification;
    create = create_certification(CreateCertificationRequest, id = certification_id);
    get = get_certification(GetCertificationRequest, full = |_| false);
    list = list_certifications(ListCertificationsRequest, full = |_| false)
        -> ListCertificationsResponse.certifications;
    update = update_certification(UpdateCertificationRequest);
    delete = delete_certification(DeleteCertificationRequest);
    undelete = undelete_certification(UndeleteCertificationRequest);
}

/// The columns of `fieldops.licenses` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = licenses, treat_none_as_null = true)]
pub struct LicenseFields {
    pub truck_id: Option<Uuid>,
    pub technician_id: Option<Uuid>,
    pub authority: String,
    pub number: String,
    pub expire_time: DateTime<Utc>,
}

/// The license resource.
#[derive(Debug)]
pub struct Licenses;

impl Resource for Licenses {
    type Proto = License;
    type Fields = LicenseFields;
    type Table = licenses::table;
    const RESOURCE_TYPE: &'static str = "fieldops.crm/License";
    const COLLECTION: &'static str = "licenses";
    const FIELD: &'static str = "license";
    const TEXT_ORDER: &'static str = "number";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("truck", |i, x, f| {
            f.truck_id = if x.truck.is_empty() {
                None
            } else {
                i.reference(&x.truck, "trucks")
            };
        })
        .filter(|n, op, v| {
            crm_resource::filter_optional_reference!(l::truck_id, n, op, v, "trucks")
        }),
        Field::<Self>::create_only("technician", |i, x, f| {
            f.technician_id = if x.technician.is_empty() {
                None
            } else {
                i.reference(&x.technician, "technicians")
            };
        })
        .filter(|n, op, v| {
            crm_resource::filter_optional_reference!(l::technician_id, n, op, v, "technicians")
        }),
        Field::<Self>::updatable("authority", |i, x, f| {
            f.authority = i.required_text(&x.authority, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(l::authority, n, op, v)),
        Field::<Self>::updatable("number", |i, x, f| {
            f.number = i.required_text(&x.number, 100);
        })
        .filter(|n, op, v| crm_db::filter_text!(l::number, n, op, v)),
        Field::<Self>::updatable("expire_time", |i, x, f| {
            if let Some(t) = i.required_time(x.expire_time.as_ref(), "when it expires") {
                f.expire_time = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(l::expire_time, n, op, v)),
    ];

    fn to_proto(org: Uuid, f: LicenseFields) -> License {
        License {
            truck: f
                .truck_id
                .map(|id| child_name(org, "trucks", id))
                .unwrap_or_default(),
            technician: f
                .technician_id
                .map(|id| child_name(org, "technicians", id))
                .unwrap_or_default(),
            authority: f.authority,
            number: f.number,
            expire_time: Some(timestamp(f.expire_time)),
            ..License::default()
        }
    }
    fn order_text(f: &LicenseFields) -> &str {
        &f.number
    }
    fn validate_new(v: &mut crm_platform::api::validate::Violations, f: &LicenseFields) {
        if f.truck_id.is_some() && f.technician_id.is_some() {
            let message = "a license is a truck's or a technician's, not both";
            v.push("license.technician", "TWO_HOLDERS", message);
        }
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<LicenseFields>>,
        next: &'a mut LicenseFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if current.is_some() {
                return Ok(());
            }
            if let Some(id) = next.truck_id {
                let name = child_name(org.uuid(), "trucks", id);
                crm_resource::require_live::<Trucks>(conn, org, id, &name).await?;
            }
            if let Some(id) = next.technician_id {
                let name = child_name(org.uuid(), "technicians", id);
                crm_resource::require_live::<Technicians>(conn, org, id, &name).await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Licenses,
    table = licenses,
    time = create_time,
    text = number
);

crm_resource::standard_service! {
    service = "crm.fieldops.v1.LicenseService",
    server = crm_proto::fieldops_v1::license_service_server::LicenseService,
    resource = Licenses,
    api = LicenseApi,
    field = license;
    create = create_license(CreateLicenseRequest, id = license_id);
    get = get_license(GetLicenseRequest, full = |_| false);
    list = list_licenses(ListLicensesRequest, full = |_| false) -> ListLicensesResponse.licenses;
    update = update_license(UpdateLicenseRequest);
    delete = delete_license(DeleteLicenseRequest);
    undelete = undelete_license(UndeleteLicenseRequest);
}
