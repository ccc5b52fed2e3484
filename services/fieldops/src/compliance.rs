//! `crm.fieldops.v1.CertificationService` and `LicenseService`: the credentials jobs and
//! hauling need, with their expiry (inspection jobs go only to technicians whose certification
//! of the required kind is valid).

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::child_name;
use crm_platform::api::time::timestamp;
use crm_proto::fieldops_v1::{
    Certification, CertificationKind, CreateCertificationRequest, CreateLicenseRequest,
    DeleteCertificationRequest, DeleteLicenseRequest, ExpiringCredential, GetCertificationRequest,
    GetLicenseRequest, License, ListCertificationsRequest, ListCertificationsResponse,
    ListExpiringCredentialsRequest, ListExpiringCredentialsResponse, ListLicensesRequest,
    ListLicensesResponse, UndeleteCertificationRequest, UndeleteLicenseRequest,
    UpdateCertificationRequest, UpdateLicenseRequest,
};
use crm_resource::{BoxFuture, Field, Resource, Row};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::certifications::{self, dsl as c};
use crate::schema::licenses::{self, dsl as l};
use crate::technicians::Technicians;
use crate::trucks::Trucks;

/// The permission of every RPC of both services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::COMPLIANCE_READ, permission::COMPLIANCE_WRITE);
    CertificationApi::policy(read, write, write)
        .merge(&LicenseApi::policy(read, write, write))
        .with(
            "crm.fieldops.v1.CertificationService",
            "ListExpiringCredentials",
            crm_auth::Requirement::Permission(read),
        )
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

    async fn list_expiring_credentials(
        &self,
        req: tonic::Request<ListExpiringCredentialsRequest>,
    ) -> Result<tonic::Response<ListExpiringCredentialsResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        expiring(&self.ctx, &principal, &req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| self.ctx.status(e))
    }
}

/// The longest look-ahead of ListExpiringCredentials.
const MAX_WITHIN: i64 = 366 * 86_400;

/// One credential about to expire, from either table.
struct Expiring {
    expire_time: DateTime<Utc>,
    id: Uuid,
    proto: ExpiringCredential,
}

/// Serves ListExpiringCredentials: licenses and certifications expiring before now + `within`
/// (expired ones too), soonest first, keyed by (expiry, id).
async fn expiring(
    ctx: &crm_resource::Context,
    principal: &crm_auth::Principal,
    body: &ListExpiringCredentialsRequest,
) -> Result<ListExpiringCredentialsResponse, ApiError> {
    let within = match &body.within {
        Some(d) if d.nanos == 0 && (86_400..=MAX_WITHIN).contains(&d.seconds) => d.seconds,
        _ => {
            return Err(ApiError::invalid(
                "within",
                "OUT_OF_RANGE",
                "whole seconds, 1 day (86400s) to 366 days",
            ));
        }
    };
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        "ListExpiringCredentials",
        &body.parent,
        body.page_size,
        &body.page_token,
        &[&within.to_string()],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let org = listing.org;
    let after = listing.after_time_id()?;
    let now = Utc::now();
    let until = now + chrono::Duration::seconds(within);
    let limit = listing.limit();
    let mut rows = crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move {
            let certs: Vec<(Uuid, Uuid, String, DateTime<Utc>)> = c::certifications
                .filter(c::organization_id.eq(org))
                .filter(c::delete_time.is_null())
                .filter(c::expire_time.le(until))
                .order((c::expire_time.asc(), c::id.asc()))
                .limit(limit)
                .select((c::id, c::technician_id, c::number, c::expire_time))
                .load(&mut { conn })
                .await?;
            let lics: Vec<LicenseExpiry> = l::licenses
                .filter(l::organization_id.eq(org))
                .filter(l::delete_time.is_null())
                .filter(l::expire_time.le(until))
                .order((l::expire_time.asc(), l::id.asc()))
                .limit(limit)
                .select((
                    l::id,
                    l::truck_id,
                    l::technician_id,
                    l::number,
                    l::expire_time,
                ))
                .load(&mut { conn })
                .await?;
            Ok::<_, ApiError>((certs, lics))
        })
    })
    .await
    .map(|(certs, lics)| {
        let mut all: Vec<Expiring> = certs
            .into_iter()
            .map(|(id, tech, number, expire_time)| Expiring {
                expire_time,
                id,
                proto: ExpiringCredential {
                    credential: child_name(org, "certifications", id),
                    holder: child_name(org, "technicians", tech),
                    r#type: "certification".to_owned(),
                    number,
                    expire_time: Some(timestamp(expire_time)),
                    expired: expire_time <= now,
                },
            })
            .collect();
        all.extend(
            lics.into_iter()
                .map(|(id, truck, tech, number, expire_time)| {
                    let holder = match (truck, tech) {
                        (Some(t), _) => child_name(org, "trucks", t),
                        (None, Some(t)) => child_name(org, "technicians", t),
                        (None, None) => format!("organizations/{org}"),
                    };
                    Expiring {
                        expire_time,
                        id,
                        proto: ExpiringCredential {
                            credential: child_name(org, "licenses", id),
                            holder,
                            r#type: "license".to_owned(),
                            number,
                            expire_time: Some(timestamp(expire_time)),
                            expired: expire_time <= now,
                        },
                    }
                }),
        );
        all.sort_by_key(|e| (e.expire_time, e.id));
        all
    })?;
    rows.retain(|e| after.is_none_or(|a| (e.expire_time, e.id) > a));
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_page_token = listing.finish(&ctx.page_tokens, &mut rows, |e| {
        vec![e.expire_time.to_rfc3339(), e.id.to_string()]
    });
    Ok(ListExpiringCredentialsResponse {
        credentials: rows.into_iter().map(|e| e.proto).collect(),
        next_page_token,
    })
}

/// A license's id, holders, number and expiry.
type LicenseExpiry = (Uuid, Option<Uuid>, Option<Uuid>, String, DateTime<Utc>);

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
