//! `crm.core.v1.InvoiceService`: invoices from draft to paid. A draft changes freely; issuing
//! takes the organization's next number from a counter row under its lock in the same
//! transaction (so numbers have no gaps: a failed issue rolls its number back); an issued
//! invoice changes only through payments, refunds and voiding. A payment is recorded once per
//! request_id and once per external reference, never past the balance (the invoice row is
//! locked, and a CHECK keeps `paid <= total` in the database too).

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    CreateInvoiceFromQuoteRequest, CreateInvoiceFromWorkOrderRequest, CreateInvoiceRequest,
    CreditNote, DeleteInvoiceRequest, GetInvoiceRequest, Invoice, InvoiceLine, InvoiceStatus,
    IssueCreditNoteRequest, IssueInvoiceRequest, ListCreditNotesRequest, ListCreditNotesResponse,
    ListInvoicesRequest, ListInvoicesResponse, ListPaymentsRequest, ListPaymentsResponse, Payment,
    PaymentMethod, RecordPaymentRequest, RefundPaymentRequest, UndeleteInvoiceRequest,
    UpdateInvoiceRequest, VoidInvoiceRequest,
};
use crm_resource::input::Amount;
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::ToPrimitive;
use uuid::Uuid;

use crate::pricing::engine::{minor_unit, round_half_even};
use crate::schema::credit_note_counters::{self, dsl as cc};
use crate::schema::credit_notes::{self, dsl as cn};
use crate::schema::invoice_counters::{self, dsl as ic};
use crate::schema::invoices::{self, dsl as iv};
use crate::schema::payments::{self, dsl as pa};
use crate::schema::refunds::{self, dsl as rf};

const SERVICE: &str = "crm.core.v1.InvoiceService";
/// At most this many lines.
const MAX_LINES: usize = 100;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::BILLING_READ, permission::BILLING_WRITE);
    let pay = permission::PAYMENTS_WRITE;
    InvoiceApi::policy(read, write, write)
        .with(SERVICE, "IssueInvoice", Requirement::Permission(write))
        .with(
            SERVICE,
            "CreateInvoiceFromWorkOrder",
            Requirement::Permission(write),
        )
        .with(SERVICE, "VoidInvoice", Requirement::Permission(write))
        .with(
            SERVICE,
            "CreateInvoiceFromQuote",
            Requirement::Permission(write),
        )
        .with(SERVICE, "IssueCreditNote", Requirement::Permission(write))
        .with(SERVICE, "ListCreditNotes", Requirement::Permission(read))
        .with(SERVICE, "RecordPayment", Requirement::Permission(pay))
        .with(SERVICE, "RefundPayment", Requirement::Permission(pay))
        .with(SERVICE, "ListPayments", Requirement::Permission(read))
}

fn status(s: InvoiceStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// The columns of `core.invoices` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = invoices, treat_none_as_null = true)]
pub struct InvoiceFields {
    pub customer_id: Uuid,
    pub work_order: String,
    pub status: i16,
    pub number: String,
    pub line_descriptions: Vec<String>,
    pub line_quantities: Vec<i32>,
    pub line_unit_price_nanos: Vec<i64>,
    pub line_taxable: Vec<bool>,
    pub currency: Option<String>,
    pub tax_milli: i32,
    pub terms_days: i32,
    pub notes: String,
    pub subtotal_nanos: i64,
    pub tax_nanos: i64,
    pub total_nanos: i64,
    pub paid_nanos: i64,
    pub issue_time: Option<DateTime<Utc>>,
    pub due_time: Option<DateTime<Utc>>,
    pub void_reason: String,
    pub quote: String,
    pub credited_nanos: i64,
}

fn set_lines(i: &mut Input<'_>, lines: &[InvoiceLine], f: &mut InvoiceFields) {
    f.line_descriptions.clear();
    f.line_quantities.clear();
    f.line_unit_price_nanos.clear();
    f.line_taxable.clear();
    f.currency = None;
    if lines.len() > MAX_LINES {
        i.push("TOO_MANY", format!("at most {MAX_LINES} lines"));
        return;
    }
    for (n, line) in lines.iter().enumerate() {
        let mut at = i.sub(&format!("[{n}]"));
        let description = at.sub(".description").required_text(&line.description, 200);
        if !(1..=100_000).contains(&line.quantity) {
            at.push_at("quantity", "OUT_OF_RANGE", "1 to 100,000");
        }
        let Some(price) = at.sub(".unit_price").money(line.unit_price.as_ref(), false) else {
            at.push_at("unit_price", "REQUIRED", "each line needs a unit price");
            continue;
        };
        match &f.currency {
            Some(c) if *c != price.currency => {
                at.push_at(
                    "unit_price",
                    "MIXED_CURRENCIES",
                    "every line in one currency",
                );
            }
            Some(_) => {}
            None => f.currency = Some(price.currency.clone()),
        }
        f.line_descriptions.push(description);
        f.line_quantities.push(line.quantity);
        f.line_unit_price_nanos.push(price.nanos);
        f.line_taxable.push(line.taxable);
    }
}

/// Subtotal, tax (half-even to the minor unit, once) and total of the lines.
fn totals(f: &mut InvoiceFields) -> Result<(), ApiError> {
    let too_big = || ApiError::invalid("invoice.lines", "OUT_OF_RANGE", "the total is too large");
    let (mut subtotal, mut taxable) = (0i64, 0i64);
    for ((q, p), t) in f
        .line_quantities
        .iter()
        .zip(&f.line_unit_price_nanos)
        .zip(&f.line_taxable)
    {
        let line = i64::from(*q).checked_mul(*p).ok_or_else(too_big)?;
        subtotal = subtotal.checked_add(line).ok_or_else(too_big)?;
        if *t {
            taxable = taxable.checked_add(line).ok_or_else(too_big)?;
        }
    }
    let currency = f.currency.clone().unwrap_or_else(|| "USD".to_owned());
    let exact = BigRational::new(
        BigInt::from(taxable) * BigInt::from(f.tax_milli),
        BigInt::from(100_000),
    );
    let tax = round_half_even(&exact, minor_unit(&currency))
        .to_i64()
        .ok_or_else(too_big)?;
    f.subtotal_nanos = subtotal;
    f.tax_nanos = tax;
    f.total_nanos = subtotal.checked_add(tax).ok_or_else(too_big)?;
    Ok(())
}

/// A percent with at most 3 places as thousandths (`8.25` → 8250).
pub(crate) fn tax_milli(text: &str) -> Option<i32> {
    if text.is_empty() {
        return Some(0);
    }
    let (whole, part) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || whole.len() > 2 || part.len() > 3 {
        return None;
    }
    if !whole
        .bytes()
        .chain(part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    format!("{whole}{part:0<3}")
        .parse::<i32>()
        .ok()
        .filter(|m| (0..=30_000).contains(m))
}

pub(crate) fn show_milli(m: i32) -> String {
    let (whole, part) = (m / 1000, m % 1000);
    if part == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{part:03}").trim_end_matches('0'))
    }
}

/// The invoice resource.
#[derive(Debug)]
pub struct Invoices;

impl Resource for Invoices {
    type Proto = Invoice;
    type Fields = InvoiceFields;
    type Table = invoices::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Invoice";
    const COLLECTION: &'static str = "invoices";
    const FIELD: &'static str = "invoice";
    const TEXT_ORDER: &'static str = "number";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("customer", |i, x, f| {
            if let Some(id) = i.reference(&x.customer, "customers") {
                f.customer_id = id;
            }
        })
        .filter(|n, op, v| crm_resource::filter_reference!(iv::customer_id, n, op, v, "customers")),
        Field::<Self>::create_only("work_order", |i, x, f| {
            if !x.work_order.is_empty() {
                i.reference(&x.work_order, "workOrders");
            }
            f.work_order.clone_from(&x.work_order);
        }),
        Field::<Self>::output("status").filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "INVOICE_STATUS_", InvoiceStatus::from_str_name)?;
            crm_db::filter_enum!(iv::status, n, op, number)
        }),
        Field::<Self>::output("number")
            .filter(|n, op, v| crm_db::filter_text!(iv::number, n, op, v)),
        Field::<Self>::updatable("lines", |i, x, f| set_lines(i, &x.lines, f)),
        Field::<Self>::updatable("tax_percent", |i, x, f| match tax_milli(&x.tax_percent) {
            Some(m) => f.tax_milli = m,
            None => i.push(
                "INVALID_PERCENT",
                "a percentage from 0 to 30 with at most 3 places",
            ),
        }),
        Field::<Self>::updatable("terms_days", |i, x, f| {
            f.terms_days = i.in_range(x.terms_days, 0..=365, "0 to 365 days");
        }),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 2_000)),
        Field::<Self>::output("issue_time")
            .filter(|n, op, v| crm_db::filter_time!(iv::issue_time.assume_not_null(), n, op, v)),
        Field::<Self>::output("due_time")
            .filter(|n, op, v| crm_db::filter_time!(iv::due_time.assume_not_null(), n, op, v)),
    ];

    fn to_proto(org: Uuid, f: InvoiceFields) -> Invoice {
        let currency = f.currency.clone().unwrap_or_default();
        let lines = f
            .line_descriptions
            .iter()
            .zip(&f.line_quantities)
            .zip(&f.line_unit_price_nanos)
            .zip(&f.line_taxable)
            .map(|(((d, q), p), t)| InvoiceLine {
                description: d.clone(),
                quantity: *q,
                unit_price: Amount::money(&currency, *p),
                taxable: *t,
            })
            .collect();
        let shown = |n| {
            (!currency.is_empty())
                .then(|| Amount::money(&currency, n))
                .flatten()
        };
        Invoice {
            customer: child_name(org, "customers", f.customer_id),
            work_order: f.work_order,
            status: i32::from(f.status),
            number: f.number,
            lines,
            tax_percent: show_milli(f.tax_milli),
            terms_days: f.terms_days,
            notes: f.notes,
            subtotal: shown(f.subtotal_nanos),
            tax: shown(f.tax_nanos),
            total: shown(f.total_nanos),
            amount_paid: shown(f.paid_nanos),
            balance: shown(f.total_nanos - f.paid_nanos - f.credited_nanos),
            amount_credited: shown(f.credited_nanos),
            quote: f.quote,
            issue_time: optional_timestamp(f.issue_time),
            due_time: optional_timestamp(f.due_time),
            ..Invoice::default()
        }
    }
    fn order_text(f: &InvoiceFields) -> &str {
        &f.number
    }
    fn check_deletion(current: &Row<InvoiceFields>, _delete: bool) -> Result<(), ApiError> {
        if current.fields.status != status(InvoiceStatus::Draft) {
            return Err(issued_is_final());
        }
        Ok(())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<InvoiceFields>>,
        next: &'a mut InvoiceFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                None => {
                    next.status = status(InvoiceStatus::Draft);
                    crate::customers::require_live(conn, org, next.customer_id).await?;
                }
                Some(c) if c.fields.status != status(InvoiceStatus::Draft) => {
                    return Err(issued_is_final());
                }
                Some(_) => {}
            }
            totals(next)
        })
    }
}

fn issued_is_final() -> ApiError {
    ApiError::FailedPrecondition {
        reason: "INVOICE_ISSUED",
        message: "an issued invoice changes only through payments, refunds and VoidInvoice"
            .to_owned(),
    }
}

crm_resource::standard_store!(
    Invoices,
    table = invoices,
    time = create_time,
    text = number
);

/// A payment row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payments)]
struct PaymentRow {
    id: Uuid,
    invoice_id: Uuid,
    method: i16,
    currency: String,
    amount_nanos: i64,
    refunded_nanos: i64,
    external_reference: String,
    receive_time: DateTime<Utc>,
    created_by: String,
}

fn payment_proto(org: Uuid, p: PaymentRow) -> Payment {
    Payment {
        name: child_name(org, "payments", p.id),
        invoice: child_name(org, "invoices", p.invoice_id),
        method: i32::from(p.method),
        amount: Amount::money(&p.currency, p.amount_nanos),
        external_reference: p.external_reference,
        refunded: Amount::money(&p.currency, p.refunded_nanos),
        receive_time: Some(timestamp(p.receive_time)),
        creator: p.created_by,
    }
}

/// The statuses an issued invoice takes from what is paid and credited of it.
fn paid_status(f: &InvoiceFields) -> i16 {
    if f.paid_nanos == 0 && f.credited_nanos < f.total_nanos {
        status(InvoiceStatus::Issued)
    } else if f.paid_nanos + f.credited_nanos >= f.total_nanos {
        status(InvoiceStatus::Paid)
    } else {
        status(InvoiceStatus::PartiallyPaid)
    }
}

/// Writes `next` over the locked invoice and records the change as `change` / `verb`.
async fn changed(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    current: Row<InvoiceFields>,
    next: &InvoiceFields,
    (change, verb): (&str, &'static str),
    fields: &[&str],
) -> Result<Invoice, ApiError> {
    let before = crm_resource::to_proto::<Invoices>(current.clone());
    let row = Invoices::update(conn, w.org, current.std.id, next, w.call.actor()).await?;
    let after = crm_resource::to_proto::<Invoices>(row);
    let name = after.name.clone();
    let mask = prost_types::FieldMask {
        paths: fields.iter().map(|f| (*f).to_owned()).collect(),
    };
    crm_resource::emit(conn, w, change, &after, &name, Some(mask)).await?;
    crm_resource::audit::record_change::<Invoices>(
        conn,
        w.org,
        w.entry(&name, crm_resource::audit::Action::Custom(verb)),
        Some(&before),
        &after,
        fields,
    )
    .await?;
    Ok(after)
}

/// The parts of a custom invoice request every one has.
struct Target<'a> {
    name: &'a str,
    etag: &'a str,
    request_id: &'a str,
}

/// Runs `work` on the locked invoice `t.name` in one idempotent transaction.
async fn on_invoice<R, F>(
    ctx: &Context,
    call: Call,
    t: Target<'_>,
    fingerprint: &impl prost::Message,
    work: F,
) -> Result<R, ApiError>
where
    R: prost::Message + Default + Clone + Send + 'static,
    F: for<'c> FnOnce(
            &'c AsyncPgConnection,
            Write<'c>,
            Row<InvoiceFields>,
        ) -> crm_resource::BoxFuture<'c, Result<R, ApiError>>
        + Send
        + 'static,
{
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<Invoices>(&mut v, t.name, "name");
    let key = IdempotencyKey::from_request(&mut v, &call.method, t.request_id, fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let (name, etag, request_id) = (
        t.name.to_owned(),
        t.etag.to_owned(),
        t.request_id.to_owned(),
    );
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            let current =
                crm_resource::lock::<Invoices>(conn, w.org, id, &name, &etag, "etag").await?;
            if current.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "the invoice is deleted".to_owned(),
                });
            }
            work(conn, w, current).await
        })
    });
    ctx.commit(deadline, write).await
}

async fn issue(ctx: &Context, call: Call, body: IssueInvoiceRequest) -> Result<Invoice, ApiError> {
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let t = Target {
        name: &body.name,
        etag: &body.etag,
        request_id: &body.request_id,
    };
    on_invoice(ctx, call, t, &fingerprint, |conn, w, current| {
        Box::pin(async move {
            if current.fields.status != status(InvoiceStatus::Draft) {
                return Err(issued_is_final());
            }
            if current.fields.line_descriptions.is_empty() {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_EMPTY",
                    message: "an invoice is issued with at least one line".to_owned(),
                });
            }
            // The counter row's lock orders concurrent issues; a rollback returns the number.
            let n: i64 = diesel::insert_into(invoice_counters::table)
                .values((ic::organization_id.eq(w.org), ic::last.eq(1)))
                .on_conflict(ic::organization_id)
                .do_update()
                .set(ic::last.eq(ic::last + 1))
                .returning(ic::last)
                .get_result(&mut { conn })
                .await?;
            let now = Utc::now();
            let mut next = current.fields.clone();
            next.number = format!("INV-{n:06}");
            next.status = status(InvoiceStatus::Issued);
            next.issue_time = Some(now);
            next.due_time = Some(now + chrono::Duration::days(i64::from(next.terms_days)));
            let fields = ["status", "number", "issue_time", "due_time"];
            changed(conn, w, current, &next, ("issued", "issue"), &fields).await
        })
    })
    .await
}

async fn void(ctx: &Context, call: Call, body: VoidInvoiceRequest) -> Result<Invoice, ApiError> {
    let mut v = Violations::new();
    validate::required_text(&mut v, "reason", &body.reason, 1_000);
    v.finish()?;
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let reason = body.reason.trim().to_owned();
    let t = Target {
        name: &body.name,
        etag: &body.etag,
        request_id: &body.request_id,
    };
    on_invoice(ctx, call, t, &fingerprint, move |conn, w, current| {
        Box::pin(async move {
            let f = &current.fields;
            if f.status == status(InvoiceStatus::Draft) {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_NOT_ISSUED",
                    message: "a draft is deleted, not voided".to_owned(),
                });
            }
            if f.status == status(InvoiceStatus::Void) {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_VOID",
                    message: "the invoice is void already".to_owned(),
                });
            }
            if f.paid_nanos > 0 {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_HAS_PAYMENTS",
                    message: "refund its payments before voiding it".to_owned(),
                });
            }
            let mut next = f.clone();
            next.status = status(InvoiceStatus::Void);
            next.void_reason = reason;
            changed(conn, w, current, &next, ("voided", "void"), &["status"]).await
        })
    })
    .await
}

async fn record_payment(
    ctx: &Context,
    call: Call,
    body: RecordPaymentRequest,
) -> Result<Payment, ApiError> {
    let mut v = Violations::new();
    let method = Input::new(&mut v, None, "method".to_owned()).specified::<PaymentMethod>(
        body.method,
        "INVALID_METHOD",
        "PAYMENT_METHOD_CARD, _ACH, _CHECK or _CASH",
    );
    let amount = Input::new(&mut v, None, "amount".to_owned()).money(body.amount.as_ref(), false);
    if body.amount.is_none() {
        v.push("amount", "REQUIRED", "the amount paid is required");
    }
    if amount.as_ref().is_some_and(|a| a.nanos == 0) {
        v.push("amount", "ZERO_AMOUNT", "more than zero");
    }
    validate::required_text(&mut v, "external_reference", &body.external_reference, 200);
    v.finish()?;
    let (Some(method), Some(amount)) = (method, amount) else {
        return Err(ApiError::Internal("parsed without violation".into()));
    };
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let reference = body.external_reference.trim().to_owned();
    let t = Target {
        name: &body.invoice,
        etag: "",
        request_id: &body.request_id,
    };
    on_invoice(ctx, call, t, &fingerprint, move |conn, w, current| {
        Box::pin(async move {
            let org = w.org.uuid();
            // The provider's idempotency: the same reference is the same payment.
            let existing: Option<PaymentRow> = pa::payments
                .filter(pa::organization_id.eq(w.org))
                .filter(pa::external_reference.eq(&reference))
                .select(PaymentRow::as_select())
                .first(&mut { conn })
                .await
                .optional()?;
            if let Some(p) = existing {
                if p.invoice_id == current.std.id
                    && p.amount_nanos == amount.nanos
                    && p.method == method
                {
                    return Ok(payment_proto(org, p));
                }
                return Err(ApiError::AlreadyExists {
                    resource_type: "core.crm/Payment",
                    detail: "external_reference".to_owned(),
                });
            }
            let f = &current.fields;
            let payable = [
                InvoiceStatus::Issued,
                InvoiceStatus::PartiallyPaid,
                InvoiceStatus::Paid,
            ];
            if !payable.iter().any(|s| status(*s) == f.status) {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_NOT_PAYABLE",
                    message: "only an issued invoice takes payments (not a draft or a void one)"
                        .to_owned(),
                });
            }
            if f.currency.as_deref() != Some(amount.currency.as_str()) {
                return Err(ApiError::invalid(
                    "amount.currency_code",
                    "CURRENCY_MISMATCH",
                    "the invoice's currency",
                ));
            }
            let balance = f.total_nanos - f.paid_nanos - f.credited_nanos;
            if amount.nanos > balance {
                return Err(ApiError::FailedPrecondition {
                    reason: "OVERPAYMENT",
                    message: format!(
                        "the balance is {}; a payment cannot exceed it",
                        crate::pricing::engine::show_nanos(balance)
                    ),
                });
            }
            let row: PaymentRow = diesel::insert_into(payments::table)
                .values((
                    pa::organization_id.eq(w.org),
                    pa::id.eq(Uuid::now_v7()),
                    pa::invoice_id.eq(current.std.id),
                    pa::method.eq(method),
                    pa::currency.eq(&amount.currency),
                    pa::amount_nanos.eq(amount.nanos),
                    pa::external_reference.eq(&reference),
                    pa::created_by.eq(w.call.actor()),
                ))
                .returning(PaymentRow::as_returning())
                .get_result(&mut { conn })
                .await?;
            let mut next = f.clone();
            next.paid_nanos += amount.nanos;
            next.status = paid_status(&next);
            changed(
                conn,
                w,
                current,
                &next,
                ("payment_recorded", "record_payment"),
                &["amount_paid", "status"],
            )
            .await?;
            Ok(payment_proto(org, row))
        })
    })
    .await
}

async fn refund(
    ctx: &Context,
    call: Call,
    body: RefundPaymentRequest,
) -> Result<Payment, ApiError> {
    let mut v = Violations::new();
    let parsed = names::parse_child(&body.name, "payments", "name")
        .map_err(|e| v.absorb(e))
        .ok();
    let amount = Input::new(&mut v, None, "amount".to_owned()).money(body.amount.as_ref(), false);
    if body.amount.is_none() || amount.as_ref().is_some_and(|a| a.nanos == 0) {
        v.push("amount", "REQUIRED", "an amount more than zero");
    }
    validate::required_text(&mut v, "reason", &body.reason, 1_000);
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (Some((org, id)), Some(amount)) = (parsed, amount) else {
        return Err(ApiError::Internal("parsed without violation".into()));
    };
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let payment: PaymentRow = pa::payments
                .filter(pa::organization_id.eq(w.org))
                .filter(pa::id.eq(id))
                .select(PaymentRow::as_select())
                .first(&mut { conn })
                .await
                .optional()?
                .ok_or_else(|| ApiError::NotFound {
                    resource_type: "core.crm/Payment",
                    name: body.name.clone(),
                })?;
            // The invoice's lock orders refunds and payments of one invoice.
            let invoice_name = child_name(org, "invoices", payment.invoice_id);
            let current = crm_resource::lock::<Invoices>(
                conn,
                w.org,
                payment.invoice_id,
                &invoice_name,
                "",
                "etag",
            )
            .await?;
            let payment: PaymentRow = pa::payments
                .filter(pa::organization_id.eq(w.org))
                .filter(pa::id.eq(id))
                .select(PaymentRow::as_select())
                .first(&mut { conn })
                .await?;
            if amount.currency != payment.currency {
                return Err(ApiError::invalid(
                    "amount.currency_code",
                    "CURRENCY_MISMATCH",
                    "the payment's currency",
                ));
            }
            let left = payment.amount_nanos - payment.refunded_nanos;
            if amount.nanos > left {
                return Err(ApiError::FailedPrecondition {
                    reason: "REFUND_EXCEEDS_PAYMENT",
                    message: format!(
                        "{} of the payment is left to refund",
                        crate::pricing::engine::show_nanos(left)
                    ),
                });
            }
            diesel::insert_into(refunds::table)
                .values((
                    rf::organization_id.eq(w.org),
                    rf::id.eq(Uuid::now_v7()),
                    rf::payment_id.eq(id),
                    rf::amount_nanos.eq(amount.nanos),
                    rf::reason.eq(body.reason.trim()),
                    rf::created_by.eq(w.call.actor()),
                ))
                .execute(&mut { conn })
                .await?;
            let row: PaymentRow = diesel::update(
                pa::payments
                    .filter(pa::organization_id.eq(w.org))
                    .filter(pa::id.eq(id)),
            )
            .set(pa::refunded_nanos.eq(pa::refunded_nanos + amount.nanos))
            .returning(PaymentRow::as_returning())
            .get_result(&mut { conn })
            .await?;
            let mut next = current.fields.clone();
            next.paid_nanos -= amount.nanos;
            next.status = paid_status(&next);
            changed(
                conn,
                w,
                current,
                &next,
                ("payment_refunded", "refund_payment"),
                &["amount_paid", "status"],
            )
            .await?;
            Ok(payment_proto(org, row))
        })
    });
    ctx.commit(deadline, write).await
}

/// A keyset position of an invoice's payments or credit notes: time, then id.
type After = Option<(DateTime<Utc>, Uuid)>;

/// One page of the payments or credit notes of invoice `parent`, oldest first: `load` reads up
/// to `limit` rows of the invoice after the position; answers the organization, the rows and
/// the next page token.
async fn invoice_page<T, F>(
    ctx: &Context,
    principal: &crm_auth::Principal,
    (method, parent, page_size, page_token): (&str, &str, i32, &str),
    key: fn(&T) -> (DateTime<Utc>, Uuid),
    load: F,
) -> Result<(Uuid, Vec<T>, String), ApiError>
where
    T: Send,
    F: for<'r> FnOnce(
            &'r AsyncPgConnection,
            (Uuid, Uuid),
            After,
            i64,
        ) -> crm_db::tenant::TxFuture<'r, Result<Vec<T>, ApiError>>
        + Send,
{
    let (org, invoice) = names::parse_child(parent, "invoices", "parent")?;
    names::require_same_organization(principal, org)?;
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        method,
        &format!("organizations/{org}"),
        page_size,
        page_token,
        &[parent],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let after = listing.after_time_id()?;
    let limit = listing.limit();
    let mut rows = crm_db::tenant::read(&ctx.pool, org, move |conn| {
        load(conn, (org, invoice), after, limit)
    })
    .await?;
    let next_page_token = listing.finish(&ctx.page_tokens, &mut rows, |r| {
        let (t, id) = key(r);
        vec![t.to_rfc3339(), id.to_string()]
    });
    Ok((org, rows, next_page_token))
}

async fn list_payments(
    ctx: &Context,
    principal: &crm_auth::Principal,
    body: &ListPaymentsRequest,
) -> Result<ListPaymentsResponse, ApiError> {
    let page = (
        "ListPayments",
        &*body.parent,
        body.page_size,
        &*body.page_token,
    );
    let key = |p: &PaymentRow| (p.receive_time, p.id);
    let (org, rows, next_page_token) = invoice_page(
        ctx,
        principal,
        page,
        key,
        |conn, (org, invoice), after, limit| {
            Box::pin(async move {
                let mut q = pa::payments
                    .filter(pa::organization_id.eq(org))
                    .filter(pa::invoice_id.eq(invoice))
                    .order((pa::receive_time.asc(), pa::id.asc()))
                    .limit(limit)
                    .select(PaymentRow::as_select())
                    .into_boxed();
                if let Some((t, id)) = after {
                    q = q.filter(
                        pa::receive_time
                            .gt(t)
                            .or(pa::receive_time.eq(t).and(pa::id.gt(id))),
                    );
                }
                Ok(q.load(&mut { conn }).await?)
            })
        },
    )
    .await?;
    Ok(ListPaymentsResponse {
        payments: rows.into_iter().map(|p| payment_proto(org, p)).collect(),
        next_page_token,
    })
}

/// Drafts the invoice of a completed work order read from fieldops (caller's credentials).
async fn from_work_order(
    ctx: &Context,
    call: Call,
    body: CreateInvoiceFromWorkOrderRequest,
) -> Result<Invoice, ApiError> {
    use crm_proto::fieldops_v1::work_order_service_client::WorkOrderServiceClient;
    use crm_proto::fieldops_v1::{GetWorkOrderRequest, WorkOrderStatus};
    let mut v = Violations::new();
    let org = names::parse_organization(&body.parent, "parent")
        .map_err(|e| v.absorb(e))
        .ok();
    Input::new(&mut v, org, "work_order".to_owned()).reference(&body.work_order, "workOrders");
    // Empty: the quote's tax when the work order came from one, else none.
    let inherit_tax = body.tax_percent.is_empty();
    let tax = tax_milli(&body.tax_percent);
    if tax.is_none() {
        v.push(
            "tax_percent",
            "INVALID_PERCENT",
            "a percentage from 0 to 30 with at most 3 places",
        );
    }
    if !(0..=365).contains(&body.terms_days) {
        v.push("terms_days", "OUT_OF_RANGE", "0 to 365 days");
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (Some(org), Some(tax)) = (org, tax) else {
        return Err(ApiError::Internal("parsed without violation".into()));
    };
    names::require_same_organization(&call.principal, org)?;
    let channel =
        ctx.peers::<crate::CorePeers>()?
            .fieldops
            .clone()
            .ok_or(ApiError::Unavailable {
                reason: "FIELDOPS_NOT_CONFIGURED",
            })?;
    let mut req = tonic::Request::new(GetWorkOrderRequest {
        name: body.work_order.clone(),
    });
    call.outbound.apply(&mut req);
    let wo = WorkOrderServiceClient::new(channel)
        .get_work_order(req)
        .await
        .map_err(|s| {
            crm_platform::client::remote_error(
                "fieldops",
                "FIELDOPS_UNAVAILABLE",
                &body.work_order,
                &s,
            )
        })?
        .into_inner();
    if wo.status != WorkOrderStatus::Completed as i32 || wo.delete_time.is_some() {
        return Err(ApiError::FailedPrecondition {
            reason: "WORK_ORDER_NOT_COMPLETED",
            message: "only a completed work order is invoiced".to_owned(),
        });
    }
    if wo.line_items.is_empty() {
        return Err(ApiError::FailedPrecondition {
            reason: "WORK_ORDER_HAS_NO_LINES",
            message: "the work order has no line items to invoice".to_owned(),
        });
    }
    let (_, customer_id) = names::parse_child(&wo.customer, "customers", "work_order.customer")?;
    let lines: Vec<InvoiceLine> = wo
        .line_items
        .iter()
        .map(|l| InvoiceLine {
            description: l.description.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price.clone(),
            taxable: true,
        })
        .collect();
    let mut fields = InvoiceFields {
        customer_id,
        work_order: body.work_order.clone(),
        tax_milli: tax,
        terms_days: body.terms_days,
        ..InvoiceFields::default()
    };
    let mut lv = Violations::new();
    set_lines(
        &mut Input::new(&mut lv, Some(org), "work_order.line_items".to_owned()),
        &lines,
        &mut fields,
    );
    lv.finish()?;
    let request_id = body.request_id.clone();
    draft(
        ctx,
        call,
        (org, key, request_id),
        (fields, inherit_tax),
        "work_order: the work order is invoiced already",
    )
    .await
}

/// Creates the draft `fields` in one idempotent transaction; a second live invoice of the same
/// source answers ALREADY_EXISTS with `taken`.
async fn draft(
    ctx: &Context,
    call: Call,
    (org, key, request_id): (Uuid, Option<IdempotencyKey>, String),
    (fields, inherit_tax): (InvoiceFields, bool),
    taken: &'static str,
) -> Result<Invoice, ApiError> {
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &request_id,
            };
            let mut fields = fields;
            if let Ok((_, quote)) = names::parse_child(&fields.quote, "quotes", "quote") {
                // The accepted option, read in the creating transaction.
                let accepted = crate::quotes::accepted(conn, w.org, quote, &fields.quote).await?;
                fields.customer_id = accepted.customer_id;
                fields.tax_milli = accepted.tax_milli;
                let mut v = Violations::new();
                set_lines(
                    &mut Input::new(&mut v, Some(org), "quote.lines".to_owned()),
                    &accepted.lines,
                    &mut fields,
                );
                v.finish()?;
            }
            if !fields.work_order.is_empty()
                && let Some(quoted) =
                    crate::quotes::of_work_order(conn, w.org, &fields.work_order).await?
            {
                // The lines the quote priced keep its tax treatment (fieldops' lines have none).
                for (n, (d, p)) in fields
                    .line_descriptions
                    .iter()
                    .zip(&fields.line_unit_price_nanos)
                    .enumerate()
                {
                    if let Some(l) = quoted.lines.iter().find(|l| {
                        l.description == *d
                            && l.unit_price.as_ref().map(crate::quotes::nanos_of) == Some(*p)
                    }) && let Some(t) = fields.line_taxable.get_mut(n)
                    {
                        *t = l.taxable;
                    }
                }
                if inherit_tax {
                    fields.tax_milli = quoted.tax_milli;
                }
            }
            created(conn, w, fields, taken).await
        })
    });
    ctx.commit(deadline, write).await
}

async fn created(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    fields: InvoiceFields,
    taken: &'static str,
) -> Result<Invoice, ApiError> {
    crm_resource::create_in::<Invoices>(conn, w, Uuid::now_v7(), fields)
        .await
        .map_err(|e| {
            if matches!(e, ApiError::AlreadyExists { .. }) {
                ApiError::AlreadyExists {
                    resource_type: "core.crm/Invoice",
                    detail: taken.to_owned(),
                }
            } else {
                e
            }
        })
}

/// Drafts the invoice of an accepted quote's accepted option.
async fn from_quote(
    ctx: &Context,
    call: Call,
    body: CreateInvoiceFromQuoteRequest,
) -> Result<Invoice, ApiError> {
    let mut v = Violations::new();
    let org = names::parse_organization(&body.parent, "parent")
        .map_err(|e| v.absorb(e))
        .ok();
    Input::new(&mut v, org, "quote".to_owned()).reference(&body.quote, "quotes");
    if !(0..=365).contains(&body.terms_days) {
        v.push("terms_days", "OUT_OF_RANGE", "0 to 365 days");
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let org = org.ok_or_else(|| ApiError::Internal("parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let fields = InvoiceFields {
        quote: body.quote.clone(),
        terms_days: body.terms_days,
        ..InvoiceFields::default()
    };
    draft(
        ctx,
        call,
        (org, key, body.request_id.clone()),
        (fields, false),
        "quote: the quote is invoiced already",
    )
    .await
}

/// A credit note row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = credit_notes)]
struct CreditNoteRow {
    id: Uuid,
    invoice_id: Uuid,
    number: String,
    currency: String,
    amount_nanos: i64,
    reason: String,
    created_by: String,
    create_time: DateTime<Utc>,
}

fn credit_note_proto(org: Uuid, c: CreditNoteRow) -> CreditNote {
    CreditNote {
        name: child_name(org, "creditNotes", c.id),
        invoice: child_name(org, "invoices", c.invoice_id),
        number: c.number,
        amount: Amount::money(&c.currency, c.amount_nanos),
        reason: c.reason,
        create_time: Some(timestamp(c.create_time)),
        creator: c.created_by,
    }
}

async fn credit(
    ctx: &Context,
    call: Call,
    body: IssueCreditNoteRequest,
) -> Result<CreditNote, ApiError> {
    let mut v = Violations::new();
    let amount = Input::new(&mut v, None, "amount".to_owned()).money(body.amount.as_ref(), false);
    if body.amount.is_none() || amount.as_ref().is_some_and(|a| a.nanos == 0) {
        v.push("amount", "REQUIRED", "an amount more than zero");
    }
    validate::required_text(&mut v, "reason", &body.reason, 1_000);
    v.finish()?;
    let amount = amount.ok_or_else(|| ApiError::Internal("parsed without violation".into()))?;
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let reason = body.reason.trim().to_owned();
    let t = Target {
        name: &body.invoice,
        etag: "",
        request_id: &body.request_id,
    };
    on_invoice(ctx, call, t, &fingerprint, move |conn, w, current| {
        Box::pin(async move {
            let f = &current.fields;
            let open = [InvoiceStatus::Issued, InvoiceStatus::PartiallyPaid];
            if !open.iter().any(|s| status(*s) == f.status) {
                return Err(ApiError::FailedPrecondition {
                    reason: "INVOICE_NOT_OPEN",
                    message: "a credit note applies to an issued invoice with a balance".to_owned(),
                });
            }
            if f.currency.as_deref() != Some(amount.currency.as_str()) {
                return Err(ApiError::invalid(
                    "amount.currency_code",
                    "CURRENCY_MISMATCH",
                    "the invoice's currency",
                ));
            }
            let balance = f.total_nanos - f.paid_nanos - f.credited_nanos;
            if amount.nanos > balance {
                return Err(ApiError::FailedPrecondition {
                    reason: "CREDIT_EXCEEDS_BALANCE",
                    message: format!(
                        "the balance is {}; to credit what was paid, refund it first",
                        crate::pricing::engine::show_nanos(balance)
                    ),
                });
            }
            // Numbered as invoices are: the counter row's lock, rolled back with a failure.
            let n: i64 = diesel::insert_into(credit_note_counters::table)
                .values((cc::organization_id.eq(w.org), cc::last.eq(1)))
                .on_conflict(cc::organization_id)
                .do_update()
                .set(cc::last.eq(cc::last + 1))
                .returning(cc::last)
                .get_result(&mut { conn })
                .await?;
            let row: CreditNoteRow = diesel::insert_into(credit_notes::table)
                .values((
                    cn::organization_id.eq(w.org),
                    cn::id.eq(Uuid::now_v7()),
                    cn::invoice_id.eq(current.std.id),
                    cn::number.eq(format!("CN-{n:06}")),
                    cn::currency.eq(&amount.currency),
                    cn::amount_nanos.eq(amount.nanos),
                    cn::reason.eq(&reason),
                    cn::created_by.eq(w.call.actor()),
                ))
                .returning(CreditNoteRow::as_returning())
                .get_result(&mut { conn })
                .await?;
            let mut next = f.clone();
            next.credited_nanos += amount.nanos;
            next.status = paid_status(&next);
            changed(
                conn,
                w,
                current,
                &next,
                ("credited", "issue_credit_note"),
                &["amount_credited", "status"],
            )
            .await?;
            Ok(credit_note_proto(w.org.uuid(), row))
        })
    })
    .await
}

async fn list_credit_notes(
    ctx: &Context,
    principal: &crm_auth::Principal,
    body: &ListCreditNotesRequest,
) -> Result<ListCreditNotesResponse, ApiError> {
    let page = (
        "ListCreditNotes",
        &*body.parent,
        body.page_size,
        &*body.page_token,
    );
    let key = |c: &CreditNoteRow| (c.create_time, c.id);
    let (org, rows, next_page_token) = invoice_page(
        ctx,
        principal,
        page,
        key,
        |conn, (org, invoice), after, limit| {
            Box::pin(async move {
                let mut q = cn::credit_notes
                    .filter(cn::organization_id.eq(org))
                    .filter(cn::invoice_id.eq(invoice))
                    .order((cn::create_time.asc(), cn::id.asc()))
                    .limit(limit)
                    .select(CreditNoteRow::as_select())
                    .into_boxed();
                if let Some((t, id)) = after {
                    q = q.filter(
                        cn::create_time
                            .gt(t)
                            .or(cn::create_time.eq(t).and(cn::id.gt(id))),
                    );
                }
                Ok(q.load(&mut { conn }).await?)
            })
        },
    )
    .await?;
    Ok(ListCreditNotesResponse {
        credit_notes: rows
            .into_iter()
            .map(|c| credit_note_proto(org, c))
            .collect(),
        next_page_token,
    })
}

crm_resource::standard_service! {
    service = "crm.core.v1.InvoiceService",
    server = crm_proto::core_v1::invoice_service_server::InvoiceService,
    resource = Invoices,
    api = InvoiceApi,
    field = invoice;
    create = create_invoice(CreateInvoiceRequest, id = invoice_id);
    get = get_invoice(GetInvoiceRequest, full = |_| false);
    list = list_invoices(ListInvoicesRequest, full = |_| false) -> ListInvoicesResponse.invoices;
    update = update_invoice(UpdateInvoiceRequest);
    delete = delete_invoice(DeleteInvoiceRequest);
    undelete = undelete_invoice(UndeleteInvoiceRequest);

    async fn create_invoice_from_work_order(
        &self,
        req: tonic::Request<CreateInvoiceFromWorkOrderRequest>,
    ) -> Result<tonic::Response<Invoice>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "create_invoice_from_work_order")?;
        from_work_order(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn create_invoice_from_quote(
        &self,
        req: tonic::Request<CreateInvoiceFromQuoteRequest>,
    ) -> Result<tonic::Response<Invoice>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "create_invoice_from_quote")?;
        from_quote(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn issue_credit_note(
        &self,
        req: tonic::Request<IssueCreditNoteRequest>,
    ) -> Result<tonic::Response<CreditNote>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "issue_credit_note")?;
        credit(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn list_credit_notes(
        &self,
        req: tonic::Request<ListCreditNotesRequest>,
    ) -> Result<tonic::Response<ListCreditNotesResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        list_credit_notes(&self.ctx, &principal, &req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn issue_invoice(
        &self,
        req: tonic::Request<IssueInvoiceRequest>,
    ) -> Result<tonic::Response<Invoice>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "issue_invoice")?;
        issue(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn void_invoice(
        &self,
        req: tonic::Request<VoidInvoiceRequest>,
    ) -> Result<tonic::Response<Invoice>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "void_invoice")?;
        void(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn record_payment(
        &self,
        req: tonic::Request<RecordPaymentRequest>,
    ) -> Result<tonic::Response<Payment>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "record_payment")?;
        record_payment(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn refund_payment(
        &self,
        req: tonic::Request<RefundPaymentRequest>,
    ) -> Result<tonic::Response<Payment>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "refund_payment")?;
        refund(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn list_payments(
        &self,
        req: tonic::Request<ListPaymentsRequest>,
    ) -> Result<tonic::Response<ListPaymentsResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        list_payments(&self.ctx, &principal, &req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }
}
