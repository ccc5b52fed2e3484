//! `crm.core.v1.ContractTemplateService` and `ContractService`: maintenance agreements. A
//! contract is made from a template (its service, recurrence, price per visit, term and
//! renewal, copied where the contract leaves them unset), changes while a draft, and is
//! activated by signing it through a signature request. An active contract carries its
//! due-service schedule: the visits of its term, which its `activated` event hands to fieldops.
//! The [`sweep`] announces each visit once ahead of its date and renews or expires the term at
//! its end.

pub mod sweep;

use chrono::{DateTime, Duration, Months, Utc};
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_proto::core_v1::{
    Contract, ContractStatus, ContractTemplate, CreateContractRequest,
    CreateContractTemplateRequest, DeleteContractRequest, DeleteContractTemplateRequest,
    GetContractRequest, GetContractTemplateRequest, ListContractTemplatesRequest,
    ListContractTemplatesResponse, ListContractsRequest, ListContractsResponse, Recurrence,
    RecurrenceUnit, ScheduledService, UndeleteContractRequest, UndeleteContractTemplateRequest,
    UpdateContractRequest, UpdateContractTemplateRequest,
};
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Field, Input, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use prost::Message as _;
use uuid::Uuid;

use crate::pricing::book::CatalogItems;
use crate::schema::contract_templates::{self, dsl as ct};
use crate::schema::contracts::{self, dsl as co};
use crate::signatures::Document;

/// The permissions of both services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::CUSTOMERS_READ, permission::CONTRACTS_WRITE);
    ContractTemplateApi::policy(read, write, write).merge(&ContractApi::policy(read, write, write))
}

/// Reads a recurrence as `(interval, unit)`.
fn read_recurrence(i: &mut Input<'_>, r: Option<&Recurrence>) -> Option<(i32, i16)> {
    let r = r?;
    if !(1..=1_000).contains(&r.interval) {
        i.push_at("interval", "OUT_OF_RANGE", "1 to 1,000");
    }
    let unit = i.sub(".unit").specified::<RecurrenceUnit>(
        r.unit,
        "INVALID_UNIT",
        "RECURRENCE_UNIT_DAY, _WEEK, _MONTH or _YEAR",
    )?;
    Some((r.interval, i16::try_from(unit as i32).unwrap_or_default()))
}

fn recurrence(interval: i32, unit: i16) -> Option<Recurrence> {
    (interval > 0).then_some(Recurrence {
        interval,
        unit: i32::from(unit),
    })
}

fn set_term(i: &mut Input<'_>, months: i32, out: &mut i32) {
    if !(1..=120).contains(&months) {
        i.push("OUT_OF_RANGE", "1 to 120 months");
    }
    *out = months;
}

/// The moment `k` recurrences after `start`.
fn step(start: DateTime<Utc>, (interval, unit): (i32, i16), k: u32) -> Option<DateTime<Utc>> {
    let n = u32::try_from(interval).ok()?.checked_mul(k)?;
    match RecurrenceUnit::try_from(i32::from(unit)).ok()? {
        RecurrenceUnit::Day => start.checked_add_signed(Duration::days(i64::from(n))),
        RecurrenceUnit::Week => start.checked_add_signed(Duration::weeks(i64::from(n))),
        RecurrenceUnit::Month => start.checked_add_months(Months::new(n)),
        RecurrenceUnit::Year => start.checked_add_months(Months::new(n.checked_mul(12)?)),
        RecurrenceUnit::Unspecified => None,
    }
}

/// The visits from `start` (the first) every recurrence until the term's `end`.
#[must_use]
pub fn schedule(start: DateTime<Utc>, end: DateTime<Utc>, every: (i32, i16)) -> Vec<DateTime<Utc>> {
    (0..1_000u32)
        .map_while(|k| step(start, every, k).filter(|t| *t < end))
        .collect()
}

/// The columns of `core.contract_templates` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = contract_templates, treat_none_as_null = true)]
pub struct ContractTemplateFields {
    pub display_name: String,
    pub catalog_item_id: Uuid,
    pub recurrence_interval: i32,
    pub recurrence_unit: i16,
    pub currency: String,
    pub price_nanos: i64,
    pub term_months: i32,
    pub auto_renew: bool,
    pub terms: String,
}

/// The contract template resource.
#[derive(Debug)]
pub struct ContractTemplates;

impl Resource for ContractTemplates {
    type Proto = ContractTemplate;
    type Fields = ContractTemplateFields;
    type Table = contract_templates::table;
    const RESOURCE_TYPE: &'static str = "core.crm/ContractTemplate";
    const COLLECTION: &'static str = "contractTemplates";
    const FIELD: &'static str = "contract_template";
    const TEXT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(ct::display_name, n, op, v)),
        Field::<Self>::updatable("catalog_item", |i, x, f| {
            if let Some(id) = i.reference(&x.catalog_item, "catalogItems") {
                f.catalog_item_id = id;
            }
        }),
        Field::<Self>::updatable("recurrence", |i, x, f| {
            if x.recurrence.is_none() {
                i.push("REQUIRED", "how often the service recurs");
            }
            if let Some((n, unit)) = read_recurrence(i, x.recurrence.as_ref()) {
                (f.recurrence_interval, f.recurrence_unit) = (n, unit);
            }
        }),
        Field::<Self>::updatable("price", |i, x, f| {
            if x.price.is_none() {
                i.push("REQUIRED", "the price per visit");
            }
            if let Some(a) = i.money(x.price.as_ref(), false) {
                (f.currency, f.price_nanos) = (a.currency, a.nanos);
            }
        }),
        Field::<Self>::updatable("term_months", |i, x, f| {
            set_term(i, x.term_months, &mut f.term_months);
        }),
        Field::<Self>::updatable("auto_renew", |_, x, f| f.auto_renew = x.auto_renew),
        Field::<Self>::updatable("terms", |i, x, f| f.terms = i.text(&x.terms, 20_000)),
    ];

    fn to_proto(org: Uuid, f: ContractTemplateFields) -> ContractTemplate {
        ContractTemplate {
            display_name: f.display_name,
            catalog_item: child_name(org, "catalogItems", f.catalog_item_id),
            recurrence: recurrence(f.recurrence_interval, f.recurrence_unit),
            price: Amount::money(&f.currency, f.price_nanos),
            term_months: f.term_months,
            auto_renew: f.auto_renew,
            terms: f.terms,
            ..ContractTemplate::default()
        }
    }
    fn order_text(f: &ContractTemplateFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<ContractTemplateFields>>,
        next: &'a mut ContractTemplateFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"catalog_item") {
                let name = child_name(org.uuid(), "catalogItems", next.catalog_item_id);
                crm_resource::require_live::<CatalogItems>(conn, org, next.catalog_item_id, &name)
                    .await?;
            }
            if paths.contains(&"price") {
                crate::pricing::book::require_currency(
                    conn,
                    org,
                    &next.currency,
                    "contract_template.price",
                )
                .await?;
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    ContractTemplates,
    table = contract_templates,
    time = create_time,
    text = display_name
);

/// The columns of `core.contracts` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = contracts, treat_none_as_null = true)]
pub struct ContractFields {
    pub customer_id: Uuid,
    pub property_id: Uuid,
    pub template_id: Uuid,
    pub title: String,
    pub catalog_item_id: Option<Uuid>,
    pub recurrence_interval: i32,
    pub recurrence_unit: i16,
    pub currency: String,
    pub price_nanos: Option<i64>,
    pub term_months: i32,
    pub auto_renew: bool,
    pub terms: String,
    pub start_time: DateTime<Utc>,
    pub status: i16,
    pub sign_time: Option<DateTime<Utc>>,
    pub renewals: i32,
    /// How many visits of the schedule were announced.
    pub announced: i32,
    /// When the sweep next has work on it (an announcement or the term's end).
    pub next_check_time: Option<DateTime<Utc>>,
}

/// How long before its date a visit is announced.
pub const SERVICE_DUE_LEAD: Duration = Duration::days(14);

impl ContractFields {
    /// The end of the current term: the start plus the term once per renewal and once more.
    fn end_time(&self) -> Option<DateTime<Utc>> {
        let terms = u32::try_from(self.renewals).ok()?.checked_add(1)?;
        let months = u32::try_from(self.term_months).ok()?.checked_mul(terms)?;
        self.start_time.checked_add_months(Months::new(months))
    }

    /// The visits from the start to the current term's end.
    fn visits(&self) -> Vec<DateTime<Utc>> {
        match self.end_time() {
            Some(end) if self.status != contract_status(ContractStatus::Draft) => schedule(
                self.start_time,
                end,
                (self.recurrence_interval, self.recurrence_unit),
            ),
            _ => Vec::new(),
        }
    }

    /// When an active contract next needs the sweep: its next visit's announcement or its
    /// term's end, whichever is first.
    fn next_check(&self) -> Option<DateTime<Utc>> {
        if self.status != contract_status(ContractStatus::Active) {
            return None;
        }
        let end = self.end_time()?;
        let next = usize::try_from(self.announced)
            .ok()
            .and_then(|n| self.visits().get(n).copied())
            .map(|t| t - SERVICE_DUE_LEAD);
        Some(next.map_or(end, |t| t.min(end)))
    }
}

fn contract_status(s: ContractStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// The contract resource.
#[derive(Debug)]
pub struct Contracts;

impl Resource for Contracts {
    type Proto = Contract;
    type Fields = ContractFields;
    type Table = contracts::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Contract";
    const COLLECTION: &'static str = "contracts";
    const FIELD: &'static str = "contract";
    const TEXT_ORDER: &'static str = "title";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(co::customer_id, n, op, v, "customers")),
        Field::<Self>::create_only("property", |i, x, f| {
            if let Some(id) = i.reference(&x.property, "properties") {
                f.property_id = id;
            }
        }),
        Field::<Self>::create_only("template", |i, x, f| {
            if let Some(id) = i.reference(&x.template, "contractTemplates") {
                f.template_id = id;
            }
        }),
        Field::<Self>::updatable("title", |i, x, f| f.title = i.text(&x.title, 200))
            .filter(|n, op, v| crm_db::filter_text!(co::title, n, op, v)),
        Field::<Self>::updatable("catalog_item", |i, x, f| {
            f.catalog_item_id = if x.catalog_item.is_empty() {
                None
            } else {
                i.reference(&x.catalog_item, "catalogItems")
            };
        }),
        Field::<Self>::updatable("recurrence", |i, x, f| {
            (f.recurrence_interval, f.recurrence_unit) =
                read_recurrence(i, x.recurrence.as_ref()).unwrap_or_default();
        }),
        Field::<Self>::updatable("price", |i, x, f| {
            let a = i.money(x.price.as_ref(), false);
            f.price_nanos = a.as_ref().map(|a| a.nanos);
            f.currency = a.map(|a| a.currency).unwrap_or_default();
        }),
        Field::<Self>::updatable("term_months", |i, x, f| {
            if x.term_months != 0 {
                set_term(i, x.term_months, &mut f.term_months);
            }
        }),
        Field::<Self>::updatable("auto_renew", |_, x, f| f.auto_renew = x.auto_renew),
        Field::<Self>::updatable("terms", |i, x, f| f.terms = i.text(&x.terms, 20_000)),
        Field::<Self>::updatable("start_time", |i, x, f| {
            if let Some(t) = i.required_time(x.start_time.as_ref(), "when the term starts") {
                f.start_time = t;
            }
        }),
        Field::<Self>::output("status").filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "CONTRACT_STATUS_", ContractStatus::from_str_name)?;
            crm_db::filter_enum!(co::status, n, op, number)
        }),
        Field::<Self>::output("sign_time"),
        Field::<Self>::output("end_time"),
        Field::<Self>::output("schedule"),
    ];

    fn to_proto(org: Uuid, f: ContractFields) -> Contract {
        let end = f.end_time();
        let visits = f.visits();
        let item = f
            .catalog_item_id
            .map(|id| child_name(org, "catalogItems", id))
            .unwrap_or_default();
        let property = child_name(org, "properties", f.property_id);
        Contract {
            customer: child_name(org, "customers", f.customer_id),
            property: property.clone(),
            template: child_name(org, "contractTemplates", f.template_id),
            title: f.title,
            catalog_item: item.clone(),
            recurrence: recurrence(f.recurrence_interval, f.recurrence_unit),
            price: Amount::proto_of(Some(&f.currency), f.price_nanos),
            term_months: f.term_months,
            auto_renew: f.auto_renew,
            terms: f.terms,
            start_time: Some(timestamp(f.start_time)),
            status: i32::from(f.status),
            sign_time: optional_timestamp(f.sign_time),
            end_time: end.map(timestamp),
            renewals: f.renewals,
            schedule: visits
                .into_iter()
                .zip(1..)
                .map(|(t, sequence)| ScheduledService {
                    sequence,
                    due_time: Some(timestamp(t)),
                    catalog_item: item.clone(),
                    property: property.clone(),
                })
                .collect(),
            ..Contract::default()
        }
    }
    fn order_text(f: &ContractFields) -> &str {
        &f.title
    }
    fn check_deletion(current: &Row<ContractFields>, _delete: bool) -> Result<(), ApiError> {
        if current.fields.status != contract_status(ContractStatus::Draft) {
            return Err(ApiError::FailedPrecondition {
                reason: "CONTRACT_SIGNED",
                message: "a signed contract is kept".to_owned(),
            });
        }
        Ok(())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<ContractFields>>,
        next: &'a mut ContractFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                Some(c) if c.fields.status != contract_status(ContractStatus::Draft) => {
                    return Err(ApiError::FailedPrecondition {
                        reason: "CONTRACT_SIGNED",
                        message: "a signed contract does not change; make a new one".to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    next.status = contract_status(ContractStatus::Draft);
                    crate::customers::require_live(conn, org, next.customer_id).await?;
                    crate::properties::require_customers(
                        conn,
                        org,
                        next.property_id,
                        next.customer_id,
                    )
                    .await?;
                    let name = child_name(org.uuid(), "contractTemplates", next.template_id);
                    let t = ContractTemplates::find(conn, org, next.template_id, false)
                        .await?
                        .filter(|r| !r.std.deleted())
                        .ok_or_else(|| ApiError::FailedPrecondition {
                            reason: "REFERENCE_NOT_FOUND",
                            message: format!("contract template {name} does not exist"),
                        })?
                        .fields;
                    if next.title.is_empty() {
                        next.title.clone_from(&t.display_name);
                    }
                    if next.catalog_item_id.is_none() {
                        next.catalog_item_id = Some(t.catalog_item_id);
                    }
                    if next.recurrence_interval == 0 {
                        next.recurrence_interval = t.recurrence_interval;
                        next.recurrence_unit = t.recurrence_unit;
                    }
                    if next.price_nanos.is_none() {
                        next.currency.clone_from(&t.currency);
                        next.price_nanos = Some(t.price_nanos);
                    }
                    if next.term_months == 0 {
                        next.term_months = t.term_months;
                    }
                    if next.terms.is_empty() {
                        next.terms.clone_from(&t.terms);
                    }
                    next.auto_renew |= t.auto_renew;
                }
            }
            if next.price_nanos.is_none()
                || next.recurrence_interval == 0
                || next.catalog_item_id.is_none()
            {
                return Err(ApiError::invalid(
                    "contract",
                    "REQUIRED",
                    "a contract needs a catalog item, a recurrence and a price",
                ));
            }
            if let Some(item) = next.catalog_item_id {
                let name = child_name(org.uuid(), "catalogItems", item);
                crm_resource::require_live::<CatalogItems>(conn, org, item, &name).await?;
            }
            crate::pricing::book::require_currency(conn, org, &next.currency, "contract.price")
                .await?;
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Contracts,
    table = contracts,
    time = create_time,
    text = title
);

/// Contract `name` as a signable document: its terms, not its status.
///
/// # Errors
/// INVALID_ARGUMENT for a malformed name; the database error.
pub async fn document(
    conn: &AsyncPgConnection,
    org: OrgId,
    name: &str,
) -> Result<Option<Document>, ApiError> {
    let (_, id) = crm_platform::api::names::parse_child(name, "contracts", "document")?;
    let Some(row) = Contracts::find(conn, org, id, false).await? else {
        return Ok(None);
    };
    if row.std.deleted() {
        return Ok(None);
    }
    let mut c = Contracts::to_proto(org.uuid(), row.fields.clone());
    c.status = 0;
    c.sign_time = None;
    c.schedule.clear();
    let refusal = (row.fields.status != contract_status(ContractStatus::Draft))
        .then_some("only a draft contract can be signed");
    Ok(Some(Document {
        bytes: c.encode_to_vec(),
        customer: row.fields.customer_id,
        refusal,
    }))
}

/// Activates contract `name`, signed at `at`, in the signing transaction: its `activated`
/// event carries the due-service schedule.
///
/// # Errors
/// FAILED_PRECONDITION when it is no longer a draft; the database error.
pub async fn on_signed(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    name: &str,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let (_, id) = crm_platform::api::names::parse_child(name, "contracts", "document")?;
    let current = crm_resource::lock::<Contracts>(conn, w.org, id, name, "", "etag").await?;
    if current.fields.status != contract_status(ContractStatus::Draft) {
        return Err(ApiError::FailedPrecondition {
            reason: "CONTRACT_SIGNED",
            message: "the contract is already signed".to_owned(),
        });
    }
    let before = crm_resource::to_proto::<Contracts>(current.clone());
    let mut next = current.fields;
    next.status = contract_status(ContractStatus::Active);
    next.sign_time = Some(at);
    next.next_check_time = next.next_check();
    let row = Contracts::update(conn, w.org, id, &next, w.call.actor()).await?;
    let after = crm_resource::to_proto::<Contracts>(row);
    crm_resource::emit(conn, w, "activated", &after, name, None).await?;
    crm_resource::audit::record_change::<Contracts>(
        conn,
        w.org,
        w.entry(name, crm_resource::audit::Action::Custom("activated")),
        Some(&before),
        &after,
        &["status", "sign_time", "schedule"],
    )
    .await
}

crm_resource::standard_service! {
    service = "crm.core.v1.ContractTemplateService",
    server = crm_proto::core_v1::contract_template_service_server::ContractTemplateService,
    resource = ContractTemplates,
    api = ContractTemplateApi,
    field = contract_template;
    create = create_contract_template(CreateContractTemplateRequest, id = contract_template_id);
    get = get_contract_template(GetContractTemplateRequest, full = |_| false);
    list = list_contract_templates(ListContractTemplatesRequest, full = |_| false) -> ListContractTemplatesResponse.contract_templates;
    update = update_contract_template(UpdateContractTemplateRequest);
    delete = delete_contract_template(DeleteContractTemplateRequest);
    undelete = undelete_contract_template(UndeleteContractTemplateRequest);
}

crm_resource::standard_service! {
    service = "crm.core.v1.ContractService",
    server = crm_proto::core_v1::contract_service_server::ContractService,
    resource = Contracts,
    api = ContractApi,
    field = contract;
    create = create_contract(CreateContractRequest, id = contract_id);
    get = get_contract(GetContractRequest, full = |_| false);
    list = list_contracts(ListContractsRequest, full = |_| false) -> ListContractsResponse.contracts;
    update = update_contract(UpdateContractRequest);
    delete = delete_contract(DeleteContractRequest);
    undelete = undelete_contract(UndeleteContractRequest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn a_grease_trap_every_90_days_for_a_year_is_due_five_times() {
        let start = Utc
            .with_ymd_and_hms(2027, 1, 1, 9, 0, 0)
            .single()
            .unwrap_or_default();
        let end = start
            .checked_add_months(Months::new(12))
            .unwrap_or_default();
        let day = i16::try_from(RecurrenceUnit::Day as i32).unwrap_or_default();
        let due = schedule(start, end, (90, day));
        assert_eq!(due.len(), 5);
        assert_eq!(due[4], start + Duration::days(360));
    }

    #[test]
    fn septic_every_3_years_over_a_10_year_term_is_due_four_times_on_the_same_date() {
        let start = Utc
            .with_ymd_and_hms(2027, 2, 28, 9, 0, 0)
            .single()
            .unwrap_or_default();
        let end = start
            .checked_add_months(Months::new(120))
            .unwrap_or_default();
        let year = i16::try_from(RecurrenceUnit::Year as i32).unwrap_or_default();
        let due = schedule(start, end, (3, year));
        let years: Vec<_> = due
            .iter()
            .map(|t| t.format("%Y-%m-%d").to_string())
            .collect();
        assert_eq!(
            years,
            ["2027-02-28", "2030-02-28", "2033-02-28", "2036-02-28"]
        );
    }
}
