//! `crm.core.v1.QuoteService`: quotes with good / better / best options whose lines the pricing
//! engine prices from the price book (a different price is a manual override and needs a
//! reason; the audit entry of the change records who made it). Statuses follow a table
//! (draft → sent → viewed → declined / expired; accepted through AcceptQuote, which declines
//! the other options and refuses an expired quote).

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    AcceptQuoteRequest, CreateQuoteRequest, DeleteQuoteRequest, GetQuoteRequest, ListQuotesRequest,
    ListQuotesResponse, Quote, QuoteLevel, QuoteLine, QuoteOption, QuoteOptionState, QuoteStatus,
    TransitionQuoteRequest, UndeleteQuoteRequest, UpdateQuoteRequest,
};
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::ToPrimitive;
use prost::Message;
use uuid::Uuid;

use crate::invoices::{show_milli, tax_milli};
use crate::pricing::engine::{minor_unit, round_half_even};
use crate::schema::catalog_items::dsl as ci;
use crate::schema::quotes::{self, dsl as q};

const SERVICE: &str = "crm.core.v1.QuoteService";

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::CUSTOMERS_READ, permission::QUOTES_WRITE);
    QuoteApi::policy(read, write, write)
        .with(SERVICE, "TransitionQuote", Requirement::Permission(write))
        .with(SERVICE, "AcceptQuote", Requirement::Permission(write))
}

fn status(s: QuoteStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// The columns of `core.quotes` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = quotes, treat_none_as_null = true)]
pub struct QuoteFields {
    pub customer_id: Uuid,
    pub property_id: Option<Uuid>,
    pub title: String,
    /// The options, encoded as a `Quote` holding only them.
    pub options: Vec<u8>,
    pub tax_milli: i32,
    pub valid_until: DateTime<Utc>,
    pub status: i16,
    pub accepted_level: i16,
    pub work_order: String,
}

fn decode(bytes: &[u8]) -> Vec<QuoteOption> {
    Quote::decode(bytes).map(|q| q.options).unwrap_or_default()
}

fn encode(options: Vec<QuoteOption>) -> Vec<u8> {
    Quote {
        options,
        ..Quote::default()
    }
    .encode_to_vec()
}

/// Validates the options' shape (the prices come in `before_write`).
fn set_options(i: &mut Input<'_>, options: &[QuoteOption], f: &mut QuoteFields) {
    if options.is_empty() || options.len() > 3 {
        i.push("OPTION_COUNT", "one to three options: good, better, best");
    }
    let mut levels = Vec::new();
    let mut out = Vec::new();
    for (n, o) in options.iter().enumerate() {
        let mut at = i.sub(&format!("[{n}]"));
        let message = "QUOTE_LEVEL_GOOD, _BETTER or _BEST";
        if let Some(l) = at
            .sub(".level")
            .specified::<QuoteLevel>(o.level, "INVALID_LEVEL", message)
        {
            if levels.contains(&l) {
                at.push_at("level", "DUPLICATE", "each level at most once");
            }
            levels.push(l);
        }
        let title = at.sub(".title").required_text(&o.title, 200);
        if o.lines.is_empty() || o.lines.len() > 50 {
            at.push_at("lines", "LINE_COUNT", "1 to 50 lines");
        }
        let mut lines = Vec::new();
        for (k, l) in o.lines.iter().enumerate() {
            let mut li = at.sub(&format!(".lines[{k}]"));
            let item = if l.catalog_item.is_empty() {
                None
            } else {
                li.sub(".catalog_item")
                    .reference(&l.catalog_item, "catalogItems")
            };
            if item.is_none() && l.catalog_item.is_empty() {
                li.sub(".description").required_text(&l.description, 200);
                if l.unit_price.is_none() {
                    li.push_at(
                        "unit_price",
                        "REQUIRED",
                        "a line without a catalog item needs a price",
                    );
                }
            } else {
                li.sub(".description").text(&l.description, 200);
            }
            if !(1..=100_000).contains(&l.quantity) {
                li.push_at("quantity", "OUT_OF_RANGE", "1 to 100,000");
            }
            if !(0..=100_000).contains(&l.gallons) {
                li.push_at("gallons", "OUT_OF_RANGE", "0 to 100,000");
            }
            li.sub(".unit_price").money(l.unit_price.as_ref(), false);
            let reason = li.sub(".override_reason").trimmed(&l.override_reason, 500);
            lines.push(QuoteLine {
                catalog_item: l.catalog_item.clone(),
                description: l.description.trim().to_owned(),
                quantity: l.quantity,
                gallons: l.gallons,
                unit_price: l.unit_price.clone(),
                override_reason: reason,
                engine_price: None,
                taxable: l.taxable,
            });
        }
        out.push(QuoteOption {
            level: o.level,
            title,
            lines,
            subtotal: None,
            tax: None,
            total: None,
            state: QuoteOptionState::Open as i32,
        });
    }
    f.options = encode(out);
}

pub(crate) fn nanos_of(m: &crm_proto::common_v1::Money) -> i64 {
    m.units * 1_000_000_000 + i64::from(m.nanos)
}

/// Prices every line (the engine for catalog items; a different given price needs a reason)
/// and totals every option.
async fn price_options(
    conn: &AsyncPgConnection,
    org: OrgId,
    f: &mut QuoteFields,
) -> Result<(), ApiError> {
    let mut options = decode(&f.options);
    let mut currency: Option<String> = None;
    let bad = |field: String, reason: &'static str, message: &str| {
        ApiError::invalid(field, reason, message)
    };
    for (n, o) in options.iter_mut().enumerate() {
        let (mut subtotal, mut taxable) = (0i64, 0i64);
        for (k, l) in o.lines.iter_mut().enumerate() {
            let at = format!("quote.options[{n}].lines[{k}]");
            if !l.catalog_item.is_empty() {
                let (_, item) = names::parse_child(&l.catalog_item, "catalogItems", &at)?;
                let request = crate::pricing::Request {
                    item,
                    customer: f.customer_id,
                    property: f.property_id,
                    time: Utc::now(),
                    gallons: i64::from(l.gallons),
                    emergency: false,
                };
                let priced = crate::pricing::compute(conn, org, request).await?;
                let engine = Amount::money(&priced.currency, priced.price_nanos);
                if l.description.is_empty() {
                    l.description = ci::catalog_items
                        .filter(ci::organization_id.eq(org))
                        .filter(ci::id.eq(item))
                        .select(ci::display_name)
                        .first(&mut { conn })
                        .await?;
                }
                match &l.unit_price {
                    None => l.unit_price.clone_from(&engine),
                    Some(given)
                        if Some(given) != engine.as_ref() && l.override_reason.is_empty() =>
                    {
                        return Err(bad(
                            format!("{at}.override_reason"),
                            "OVERRIDE_REASON_REQUIRED",
                            "a price other than the engine's is an override: say why",
                        ));
                    }
                    Some(_) => {}
                }
                l.engine_price = engine;
            }
            let price = l.unit_price.clone().unwrap_or_default();
            match &currency {
                Some(c) if *c != price.currency_code => {
                    return Err(bad(
                        format!("{at}.unit_price"),
                        "MIXED_CURRENCIES",
                        "one currency",
                    ));
                }
                Some(_) => {}
                None => currency = Some(price.currency_code.clone()),
            }
            let line = i64::from(l.quantity)
                .checked_mul(nanos_of(&price))
                .ok_or_else(|| bad(at.clone(), "OUT_OF_RANGE", "too large"))?;
            subtotal += line;
            if l.taxable {
                taxable += line;
            }
        }
        let c = currency.clone().unwrap_or_else(|| "USD".to_owned());
        let exact = BigRational::new(
            BigInt::from(taxable) * BigInt::from(f.tax_milli),
            BigInt::from(100_000),
        );
        let tax = round_half_even(&exact, minor_unit(&c))
            .to_i64()
            .unwrap_or_default();
        o.subtotal = Amount::money(&c, subtotal);
        o.tax = Amount::money(&c, tax);
        o.total = Amount::money(&c, subtotal + tax);
    }
    f.options = encode(options);
    Ok(())
}

/// The quote resource.
#[derive(Debug)]
pub struct Quotes;

impl Resource for Quotes {
    type Proto = Quote;
    type Fields = QuoteFields;
    type Table = quotes::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Quote";
    const COLLECTION: &'static str = "quotes";
    const FIELD: &'static str = "quote";
    const TEXT_ORDER: &'static str = "title";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(q::customer_id, n, op, v, "customers")),
        Field::<Self>::create_only("property", |i, x, f| {
            f.property_id = if x.property.is_empty() {
                None
            } else {
                i.reference(&x.property, "properties")
            };
        }),
        Field::<Self>::updatable("title", |i, x, f| f.title = i.required_text(&x.title, 200))
            .filter(|n, op, v| crm_db::filter_text!(q::title, n, op, v)),
        Field::<Self>::updatable("options", |i, x, f| set_options(i, &x.options, f)),
        Field::<Self>::updatable("tax_percent", |i, x, f| match tax_milli(&x.tax_percent) {
            Some(m) => f.tax_milli = m,
            None => i.push(
                "INVALID_PERCENT",
                "a percentage from 0 to 30 with at most 3 places",
            ),
        }),
        Field::<Self>::updatable("valid_until", |i, x, f| {
            if let Some(t) =
                i.required_time(x.valid_until.as_ref(), "until when it can be accepted")
            {
                f.valid_until = t;
            }
        })
        .filter(|n, op, v| crm_db::filter_time!(q::valid_until, n, op, v)),
        Field::<Self>::output("status").filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "QUOTE_STATUS_", QuoteStatus::from_str_name)?;
            crm_db::filter_enum!(q::status, n, op, number)
        }),
        Field::<Self>::output("accepted_level"),
        Field::<Self>::output("work_order"),
    ];

    fn to_proto(org: Uuid, f: QuoteFields) -> Quote {
        Quote {
            customer: child_name(org, "customers", f.customer_id),
            property: f
                .property_id
                .map(|id| child_name(org, "properties", id))
                .unwrap_or_default(),
            title: f.title,
            options: decode(&f.options),
            tax_percent: show_milli(f.tax_milli),
            valid_until: Some(timestamp(f.valid_until)),
            status: i32::from(f.status),
            accepted_level: i32::from(f.accepted_level),
            work_order: f.work_order,
            ..Quote::default()
        }
    }
    fn order_text(f: &QuoteFields) -> &str {
        &f.title
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<QuoteFields>>,
        next: &'a mut QuoteFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                None => {
                    next.status = status(QuoteStatus::Draft);
                    crate::customers::require_live(conn, org, next.customer_id).await?;
                    if let Some(p) = next.property_id {
                        crate::properties::require_customers(conn, org, p, next.customer_id)
                            .await?;
                    }
                }
                Some(c) if c.fields.status != status(QuoteStatus::Draft) => {
                    return Err(ApiError::FailedPrecondition {
                        reason: "QUOTE_NOT_DRAFT",
                        message: "only a draft quote changes; make a new one".to_owned(),
                    });
                }
                Some(_) => {}
            }
            price_options(conn, org, next).await
        })
    }
}

crm_resource::standard_store!(Quotes, table = quotes, time = create_time, text = title);

/// What an invoice takes from an accepted quote.
pub(crate) struct Accepted {
    pub customer_id: Uuid,
    pub tax_milli: i32,
    pub lines: Vec<crm_proto::core_v1::InvoiceLine>,
}

/// The accepted option of quote `id` (live, accepted, without a work order of its own).
///
/// # Errors
/// NOT_FOUND for no such quote; FAILED_PRECONDITION when it is not accepted or is invoiced
/// through its work order; the database error.
pub(crate) async fn accepted(
    conn: &AsyncPgConnection,
    org: OrgId,
    id: Uuid,
    name: &str,
) -> Result<Accepted, ApiError> {
    let row = Quotes::find(conn, org, id, false)
        .await?
        .filter(|r| !r.std.deleted())
        .ok_or_else(|| ApiError::NotFound {
            resource_type: "core.crm/Quote",
            name: name.to_owned(),
        })?;
    let f = row.fields;
    if f.status != status(QuoteStatus::Accepted) {
        return Err(ApiError::FailedPrecondition {
            reason: "QUOTE_NOT_ACCEPTED",
            message: "only an accepted quote is invoiced".to_owned(),
        });
    }
    if !f.work_order.is_empty() {
        return Err(ApiError::FailedPrecondition {
            reason: "QUOTE_HAS_WORK_ORDER",
            message: format!(
                "its acceptance created {}: invoice that work order (CreateInvoiceFromWorkOrder)",
                f.work_order
            ),
        });
    }
    Ok(accepted_option(&f))
}

/// The accepted quote whose acceptance created work order `work_order`, if any.
///
/// # Errors
/// The database error.
pub(crate) async fn of_work_order(
    conn: &AsyncPgConnection,
    org: OrgId,
    work_order: &str,
) -> Result<Option<Accepted>, ApiError> {
    let f: Option<QuoteFields> = q::quotes
        .filter(q::organization_id.eq(org))
        .filter(q::work_order.eq(work_order))
        .filter(q::status.eq(status(QuoteStatus::Accepted)))
        .filter(q::delete_time.is_null())
        .select(QuoteFields::as_select())
        .first(&mut { conn })
        .await
        .optional()?;
    Ok(f.as_ref().map(accepted_option))
}

fn accepted_option(f: &QuoteFields) -> Accepted {
    let option = decode(&f.options)
        .into_iter()
        .find(|o| o.level == i32::from(f.accepted_level))
        .unwrap_or_default();
    Accepted {
        customer_id: f.customer_id,
        tax_milli: f.tax_milli,
        lines: option
            .lines
            .into_iter()
            .map(|l| crm_proto::core_v1::InvoiceLine {
                description: l.description,
                quantity: l.quantity,
                unit_price: l.unit_price,
                taxable: l.taxable,
            })
            .collect(),
    }
}

/// The quote's allowed moves (AcceptQuote makes `accepted`).
const MOVES: &[(QuoteStatus, QuoteStatus)] = &[
    (QuoteStatus::Draft, QuoteStatus::Sent),
    (QuoteStatus::Sent, QuoteStatus::Viewed),
    (QuoteStatus::Sent, QuoteStatus::Declined),
    (QuoteStatus::Viewed, QuoteStatus::Declined),
    (QuoteStatus::Sent, QuoteStatus::Expired),
    (QuoteStatus::Viewed, QuoteStatus::Expired),
];

fn status_of(n: i16) -> QuoteStatus {
    QuoteStatus::try_from(i32::from(n)).unwrap_or(QuoteStatus::Unspecified)
}

/// Runs `work` on the locked quote in one idempotent transaction, then records the change.
async fn on_quote(
    ctx: &Context,
    call: Call,
    (name, etag, request_id): (&str, &str, &str),
    key: Option<IdempotencyKey>,
    work: impl FnOnce(&QuoteFields) -> Result<(QuoteFields, &'static str), ApiError> + Send + 'static,
) -> Result<Quote, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<Quotes>(&mut v, name, "name");
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let (name, etag, request_id) = (name.to_owned(), etag.to_owned(), request_id.to_owned());
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            let current =
                crm_resource::lock::<Quotes>(conn, w.org, id, &name, &etag, "etag").await?;
            if current.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "the quote is deleted".to_owned(),
                });
            }
            let (next, change) = work(&current.fields)?;
            let before = crm_resource::to_proto::<Quotes>(current.clone());
            let row = Quotes::update(conn, w.org, id, &next, w.call.actor()).await?;
            let after = crm_resource::to_proto::<Quotes>(row);
            let mask = prost_types::FieldMask {
                paths: vec!["status".to_owned(), "options".to_owned()],
            };
            crm_resource::emit(conn, w, change, &after, &name, Some(mask)).await?;
            crm_resource::audit::record_change::<Quotes>(
                conn,
                w.org,
                w.entry(&name, crm_resource::audit::Action::Custom(change)),
                Some(&before),
                &after,
                &["status", "accepted_level", "options"],
            )
            .await?;
            Ok(after)
        })
    });
    ctx.commit(deadline, write).await
}

async fn transition(
    ctx: &Context,
    call: Call,
    body: TransitionQuoteRequest,
) -> Result<Quote, ApiError> {
    let mut v = Violations::new();
    let to = QuoteStatus::try_from(body.to_status).unwrap_or(QuoteStatus::Unspecified);
    if to == QuoteStatus::Unspecified {
        v.push(
            "to_status",
            "INVALID_STATUS",
            "a status such as QUOTE_STATUS_SENT",
        );
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    on_quote(
        ctx,
        call,
        (&body.name, &body.etag, &body.request_id),
        key,
        move |f| {
            let from = status_of(f.status);
            if !MOVES.contains(&(from, to)) {
                return Err(ApiError::FailedPrecondition {
                    reason: "TRANSITION_NOT_ALLOWED",
                    message: format!(
                        "no move from {} to {} (accepting goes through AcceptQuote)",
                        from.as_str_name(),
                        to.as_str_name()
                    ),
                });
            }
            if to == QuoteStatus::Sent && f.valid_until <= Utc::now() {
                return Err(ApiError::FailedPrecondition {
                    reason: "QUOTE_EXPIRED",
                    message: "valid_until has passed: extend it before sending".to_owned(),
                });
            }
            let mut next = f.clone();
            next.status = status(to);
            if to == QuoteStatus::Declined {
                let mut options = decode(&f.options);
                for o in &mut options {
                    o.state = QuoteOptionState::Declined as i32;
                }
                next.options = encode(options);
            }
            let change = match to {
                QuoteStatus::Sent => "sent",
                QuoteStatus::Viewed => "viewed",
                QuoteStatus::Declined => "declined",
                QuoteStatus::Unspecified
                | QuoteStatus::Draft
                | QuoteStatus::Accepted
                | QuoteStatus::Expired => "expired",
            };
            Ok((next, change))
        },
    )
    .await
}

/// Whether `f` can accept `level` now.
fn check_accept(f: &QuoteFields, level: QuoteLevel) -> Result<(), ApiError> {
    let from = status_of(f.status);
    if ![QuoteStatus::Sent, QuoteStatus::Viewed].contains(&from) {
        return Err(ApiError::FailedPrecondition {
            reason: "TRANSITION_NOT_ALLOWED",
            message: format!(
                "a {} quote cannot be accepted; only a sent or viewed one",
                from.as_str_name()
            ),
        });
    }
    if f.valid_until <= Utc::now() {
        return Err(ApiError::FailedPrecondition {
            reason: "QUOTE_EXPIRED",
            message: "the quote's validity has passed".to_owned(),
        });
    }
    if !decode(&f.options).iter().any(|o| o.level == level as i32) {
        return Err(ApiError::FailedPrecondition {
            reason: "NO_SUCH_OPTION",
            message: format!("the quote has no {} option", level.as_str_name()),
        });
    }
    Ok(())
}

/// Creates (or finds, on a retry) the draft work order of quote `id`'s accepted option in
/// fieldops, with the caller's credentials; answers its name.
async fn create_work_order(
    ctx: &Context,
    call: &Call,
    (org, id): (Uuid, Uuid),
    f: &QuoteFields,
    level: QuoteLevel,
) -> Result<String, ApiError> {
    use crm_proto::fieldops_v1::work_order_service_client::WorkOrderServiceClient;
    use crm_proto::fieldops_v1::{CreateWorkOrderRequest, LineItem, WorkOrder};
    let property = f.property_id.ok_or_else(|| ApiError::FailedPrecondition {
        reason: "QUOTE_WITHOUT_PROPERTY",
        message: "a work order needs the quote's property".to_owned(),
    })?;
    let option = decode(&f.options)
        .into_iter()
        .find(|o| o.level == level as i32)
        .unwrap_or_default();
    let items: Vec<Uuid> = option
        .lines
        .iter()
        .filter_map(|l| {
            names::parse_child(&l.catalog_item, "catalogItems", "")
                .ok()
                .map(|p| p.1)
        })
        .collect();
    let job_types: Vec<i16> = crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move {
            Ok::<_, ApiError>(
                ci::catalog_items
                    .filter(ci::organization_id.eq(org))
                    .filter(ci::id.eq_any(items))
                    .filter(ci::job_type.ne(0))
                    .select(ci::job_type)
                    .load(&mut { conn })
                    .await?,
            )
        })
    })
    .await?;
    let job_type =
        job_types
            .as_slice()
            .first()
            .copied()
            .ok_or_else(|| ApiError::FailedPrecondition {
                reason: "NO_JOB_TYPE",
                message: "no line of the option names a catalog item with a job type".to_owned(),
            })?;
    let channel =
        ctx.peers::<crate::CorePeers>()?
            .fieldops
            .clone()
            .ok_or(ApiError::Unavailable {
                reason: "FIELDOPS_NOT_CONFIGURED",
            })?;
    let mut req = tonic::Request::new(CreateWorkOrderRequest {
        parent: format!("organizations/{org}"),
        work_order: Some(WorkOrder {
            job_type: i32::from(job_type),
            summary: f.title.clone(),
            customer: child_name(org, "customers", f.customer_id),
            property: child_name(org, "properties", property),
            line_items: option
                .lines
                .iter()
                .map(|l| LineItem {
                    description: l.description.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.clone(),
                })
                .collect(),
            ..WorkOrder::default()
        }),
        // The quote's id: a retry of the acceptance finds the same work order.
        work_order_id: id.to_string(),
        request_id: id.to_string(),
    });
    call.outbound.apply(&mut req);
    let name = child_name(org, "workOrders", id);
    match WorkOrderServiceClient::new(channel)
        .create_work_order(req)
        .await
    {
        Ok(r) => Ok(r.into_inner().name),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(name),
        Err(s) => Err(crm_platform::client::remote_error(
            "fieldops",
            "FIELDOPS_UNAVAILABLE",
            &name,
            &s,
        )),
    }
}

async fn accept(ctx: &Context, call: Call, body: AcceptQuoteRequest) -> Result<Quote, ApiError> {
    let mut v = Violations::new();
    let level = QuoteLevel::try_from(body.level).unwrap_or(QuoteLevel::Unspecified);
    if level == QuoteLevel::Unspecified {
        v.push(
            "level",
            "INVALID_LEVEL",
            "QUOTE_LEVEL_GOOD, _BETTER or _BEST",
        );
    }
    let parsed = crm_resource::parse_name::<Quotes>(&mut v, &body.name, "name");
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    // The work order first (fieldops, idempotent by the quote's id), then the acceptance.
    let work_order = if body.create_work_order {
        let current = crm_db::tenant::read(&ctx.pool, org, move |conn| {
            Box::pin(async move { Quotes::find(conn, OrgId(org), id, false).await })
        })
        .await?
        .filter(|r| !r.std.deleted())
        .ok_or_else(|| crm_resource::not_found::<Quotes>(&body.name))?;
        check_accept(&current.fields, level)?;
        Some(create_work_order(ctx, &call, (org, id), &current.fields, level).await?)
    } else {
        None
    };
    on_quote(
        ctx,
        call,
        (&body.name, &body.etag, &body.request_id),
        key,
        move |f| {
            check_accept(f, level)?;
            let mut options = decode(&f.options);
            for o in &mut options {
                o.state = if o.level == level as i32 {
                    QuoteOptionState::Accepted as i32
                } else {
                    QuoteOptionState::Declined as i32
                };
            }
            let mut next = f.clone();
            next.options = encode(options);
            next.status = status(QuoteStatus::Accepted);
            next.accepted_level = i16::try_from(level as i32).unwrap_or_default();
            if let Some(w) = work_order {
                next.work_order = w;
            }
            Ok((next, "accepted"))
        },
    )
    .await
}

crm_resource::standard_service! {
    service = "crm.core.v1.QuoteService",
    server = crm_proto::core_v1::quote_service_server::QuoteService,
    resource = Quotes,
    api = QuoteApi,
    field = quote;
    create = create_quote(CreateQuoteRequest, id = quote_id);
    get = get_quote(GetQuoteRequest, full = |_| false);
    list = list_quotes(ListQuotesRequest, full = |_| false) -> ListQuotesResponse.quotes;
    update = update_quote(UpdateQuoteRequest);
    delete = delete_quote(DeleteQuoteRequest);
    undelete = undelete_quote(UndeleteQuoteRequest);

    async fn transition_quote(
        &self,
        req: tonic::Request<TransitionQuoteRequest>,
    ) -> Result<tonic::Response<Quote>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "transition_quote")?;
        transition(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn accept_quote(
        &self,
        req: tonic::Request<AcceptQuoteRequest>,
    ) -> Result<tonic::Response<Quote>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "accept_quote")?;
        accept(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }
}
