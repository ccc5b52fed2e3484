//! Marketing: `MessageTemplateService` (templates whose variables are checked when saved),
//! `CampaignService` (a template to an audience of customers, enrolled at launch) and
//! `WorkflowService` (an event about a customer enrolls them; steps with delays send a
//! template, add a tag or open a task). The [`scheduler`] advances due enrollments; every send
//! goes through CheckConsent and a refusal is recorded as SendMessage records it.

pub mod scheduler;

use chrono::{DateTime, Utc};
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::{optional_timestamp, timestamp};
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::workflow_step::Action;
use crm_proto::core_v1::{
    Campaign, CampaignStatus, Channel, CreateCampaignRequest, CreateMessageTemplateRequest,
    CreateWorkflowRequest, DeleteCampaignRequest, DeleteMessageTemplateRequest,
    DeleteWorkflowRequest, EnrollCustomerRequest, Enrollment, EnrollmentStatus, GetCampaignRequest,
    GetMessageTemplateRequest, GetWorkflowRequest, LaunchCampaignRequest, ListCampaignsRequest,
    ListCampaignsResponse, ListEnrollmentsRequest, ListEnrollmentsResponse,
    ListMessageTemplatesRequest, ListMessageTemplatesResponse, ListWorkflowsRequest,
    ListWorkflowsResponse, MessageTemplate, UndeleteCampaignRequest,
    UndeleteMessageTemplateRequest, UndeleteWorkflowRequest, UpdateCampaignRequest,
    UpdateMessageTemplateRequest, UpdateWorkflowRequest, Workflow, WorkflowStep,
};
use crm_resource::{BoxFuture, Call, Context, Field, Input, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use prost::Message as _;
use uuid::Uuid;

use crate::customers::Customers;
use crate::schema::campaigns::{self, dsl as cp};
use crate::schema::enrollments::{self, dsl as en};
use crate::schema::message_templates::{self, dsl as mt};
use crate::schema::workflows::{self, dsl as wf};

const CAMPAIGNS: &str = "crm.core.v1.CampaignService";
const WORKFLOWS: &str = "crm.core.v1.WorkflowService";
/// The variables a template may use.
pub const VARIABLES: &[&str] = &[
    "customer.display_name",
    "customer.first_name",
    "customer.email",
    "customer.phone",
];
/// At most this many customers per campaign.
const MAX_AUDIENCE: usize = 10_000;
/// At most this many steps per workflow.
const MAX_STEPS: usize = 20;

/// The permissions of the three services.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::MARKETING_READ, permission::MARKETING_WRITE);
    MessageTemplateApi::policy(read, write, write)
        .merge(&CampaignApi::policy(read, write, write))
        .merge(&WorkflowApi::policy(read, write, write))
        .with(CAMPAIGNS, "LaunchCampaign", Requirement::Permission(write))
        .with(WORKFLOWS, "EnrollCustomer", Requirement::Permission(write))
        .with(WORKFLOWS, "ListEnrollments", Requirement::Permission(read))
}

/// The variables of `text` in order of first use, or the violation's message.
///
/// # Errors
/// A sentence naming an unclosed `{{`, an unknown variable.
pub fn variables(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a '{{' without its '}}'".to_owned())?;
        let name = after[..close].trim();
        if !VARIABLES.contains(&name) {
            return Err(format!(
                "unknown variable {{{{{name}}}}}: use {}",
                VARIABLES.join(", ")
            ));
        }
        if !out.iter().any(|v| v == name) {
            out.push(name.to_owned());
        }
        rest = &after[close + 2..];
    }
    Ok(out)
}

/// `text` with its variables replaced by the customer's values (empty when unknown).
#[must_use]
pub fn render(text: &str, customer: &crate::customers::CustomerFields) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        let value = match after[..close].trim() {
            "customer.display_name" => customer.display_name.clone(),
            "customer.first_name" => customer
                .display_name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            "customer.email" => customer.email.clone().unwrap_or_default(),
            "customer.phone" => customer.phone.clone().unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// The columns of `core.message_templates` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = message_templates, treat_none_as_null = true)]
pub struct MessageTemplateFields {
    pub display_name: String,
    pub channel: i16,
    pub subject: String,
    pub body: String,
    pub variables: Vec<String>,
}

fn used_variables(f: &mut MessageTemplateFields) {
    let mut all = variables(&f.subject).unwrap_or_default();
    for v in variables(&f.body).unwrap_or_default() {
        if !all.contains(&v) {
            all.push(v);
        }
    }
    f.variables = all;
}

fn template_text(i: &mut Input<'_>, text: &str) {
    if let Err(message) = variables(text) {
        i.push("UNKNOWN_VARIABLE", message);
    }
}

/// The message template resource.
#[derive(Debug)]
pub struct MessageTemplates;

impl Resource for MessageTemplates {
    type Proto = MessageTemplate;
    type Fields = MessageTemplateFields;
    type Table = message_templates::table;
    const RESOURCE_TYPE: &'static str = "core.crm/MessageTemplate";
    const COLLECTION: &'static str = "messageTemplates";
    const FIELD: &'static str = "message_template";
    const TEXT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(mt::display_name, n, op, v)),
        Field::<Self>::create_only("channel", |i, x, f| {
            if x.channel == Channel::Sms as i32 || x.channel == Channel::Email as i32 {
                f.channel = i16::try_from(x.channel).unwrap_or_default();
            } else {
                i.push("INVALID_CHANNEL", "CHANNEL_SMS or CHANNEL_EMAIL");
            }
        })
        .filter(|n, op, v| {
            let number = crm_db::filter::enum_number(v, "CHANNEL_", Channel::from_str_name)?;
            crm_db::filter_enum!(mt::channel, n, op, number)
        }),
        Field::<Self>::updatable("subject", |i, x, f| {
            f.subject = i.text(&x.subject, 200);
            template_text(i, &x.subject);
        }),
        Field::<Self>::updatable("body", |i, x, f| {
            f.body = i.required_text(&x.body, 10_000);
            template_text(i, &x.body);
        }),
        Field::<Self>::output("variables"),
    ];

    fn to_proto(_org: Uuid, f: MessageTemplateFields) -> MessageTemplate {
        MessageTemplate {
            display_name: f.display_name,
            channel: i32::from(f.channel),
            subject: f.subject,
            body: f.body,
            variables: f.variables,
            ..MessageTemplate::default()
        }
    }
    fn order_text(f: &MessageTemplateFields) -> &str {
        &f.display_name
    }
    fn validate_new(v: &mut Violations, f: &MessageTemplateFields) {
        if f.channel == Channel::Sms as i16 && f.body.chars().count() > 1_600 {
            v.push(
                "message_template.body",
                "TOO_LONG",
                "an SMS is at most 1,600 characters",
            );
        }
    }
    fn before_write<'a>(
        _conn: &'a AsyncPgConnection,
        _org: OrgId,
        _current: Option<&'a Row<MessageTemplateFields>>,
        next: &'a mut MessageTemplateFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if next.channel == Channel::Sms as i16 && next.body.chars().count() > 1_600 {
                return Err(ApiError::invalid(
                    "message_template.body",
                    "TOO_LONG",
                    "an SMS is at most 1,600 characters",
                ));
            }
            used_variables(next);
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    MessageTemplates,
    table = message_templates,
    time = create_time,
    text = display_name
);

/// The columns of `core.campaigns` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = campaigns, treat_none_as_null = true)]
pub struct CampaignFields {
    pub display_name: String,
    pub template_id: Uuid,
    pub audience_filter: String,
    pub send_time: Option<DateTime<Utc>>,
    pub status: i16,
    pub launch_time: Option<DateTime<Utc>>,
    pub enrolled_count: i32,
}

fn campaign_status(s: CampaignStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// The campaign resource.
#[derive(Debug)]
pub struct Campaigns;

impl Resource for Campaigns {
    type Proto = Campaign;
    type Fields = CampaignFields;
    type Table = campaigns::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Campaign";
    const COLLECTION: &'static str = "campaigns";
    const FIELD: &'static str = "campaign";
    const TEXT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(cp::display_name, n, op, v)),
        Field::<Self>::updatable("template", |i, x, f| {
            if let Some(id) = i.reference(&x.template, "messageTemplates") {
                f.template_id = id;
            }
        }),
        Field::<Self>::updatable("audience_filter", |i, x, f| {
            f.audience_filter = i.text(&x.audience_filter, 2_000);
            let parsed = crm_db::filter::parse(&x.audience_filter).and_then(|p| match p {
                Some(p) => Customers::check_filter(&p),
                None => Ok(()),
            });
            if let Err(e) = parsed {
                i.push("INVALID_FILTER", e.to_string());
            }
        }),
        Field::<Self>::updatable("send_time", |i, x, f| {
            f.send_time = i.optional_time(x.send_time.as_ref());
        }),
        Field::<Self>::output("status").filter(|n, op, v| {
            let number =
                crm_db::filter::enum_number(v, "CAMPAIGN_STATUS_", CampaignStatus::from_str_name)?;
            crm_db::filter_enum!(cp::status, n, op, number)
        }),
        Field::<Self>::output("launch_time"),
        Field::<Self>::output("enrolled_count"),
    ];

    fn to_proto(org: Uuid, f: CampaignFields) -> Campaign {
        Campaign {
            display_name: f.display_name,
            template: child_name(org, "messageTemplates", f.template_id),
            audience_filter: f.audience_filter,
            send_time: optional_timestamp(f.send_time),
            status: i32::from(f.status),
            launch_time: optional_timestamp(f.launch_time),
            enrolled_count: f.enrolled_count,
            ..Campaign::default()
        }
    }
    fn order_text(f: &CampaignFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<CampaignFields>>,
        next: &'a mut CampaignFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                None => next.status = campaign_status(CampaignStatus::Draft),
                Some(c) if c.fields.status != campaign_status(CampaignStatus::Draft) => {
                    return Err(launched());
                }
                Some(_) => {}
            }
            if paths.contains(&"template") {
                let name = child_name(org.uuid(), "messageTemplates", next.template_id);
                crm_resource::require_live::<MessageTemplates>(conn, org, next.template_id, &name)
                    .await?;
            }
            Ok(())
        })
    }
}

fn launched() -> ApiError {
    ApiError::FailedPrecondition {
        reason: "CAMPAIGN_LAUNCHED",
        message: "a launched campaign does not change".to_owned(),
    }
}

crm_resource::standard_store!(
    Campaigns,
    table = campaigns,
    time = create_time,
    text = display_name
);

/// The columns of `core.workflows` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = workflows, treat_none_as_null = true)]
pub struct WorkflowFields {
    pub display_name: String,
    pub trigger_event_type: String,
    /// The steps, encoded as a `Workflow` holding only them.
    pub steps: Vec<u8>,
    pub active: bool,
}

/// The steps of an encoded workflow.
#[must_use]
pub fn steps_of(bytes: &[u8]) -> Vec<WorkflowStep> {
    Workflow::decode(bytes).map(|w| w.steps).unwrap_or_default()
}

fn set_steps(i: &mut Input<'_>, steps: &[WorkflowStep], f: &mut WorkflowFields) {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        i.push("STEP_COUNT", "1 to 20 steps");
    }
    for (n, s) in steps.iter().enumerate() {
        let mut at = i.sub(&format!("[{n}]"));
        let seconds = s.delay.as_ref().map_or(0, |d| d.seconds);
        if !(0..=365 * 86_400).contains(&seconds) || s.delay.as_ref().is_some_and(|d| d.nanos != 0)
        {
            at.push_at("delay", "OUT_OF_RANGE", "whole seconds, 0 to 365 days");
        }
        match &s.action {
            None => at.push_at(
                "action",
                "REQUIRED",
                "send_template, add_tag or create_task",
            ),
            Some(Action::SendTemplate(t)) => {
                at.sub(".send_template").reference(t, "messageTemplates");
            }
            Some(Action::AddTag(t)) => {
                at.sub(".add_tag").slug(
                    t,
                    "INVALID_TAG",
                    "a lower-case slug of at most 40 characters",
                );
            }
            Some(Action::CreateTask(t)) => {
                at.sub(".create_task").required_text(t, 200);
            }
        }
    }
    f.steps = Workflow {
        steps: steps.to_vec(),
        ..Workflow::default()
    }
    .encode_to_vec();
}

/// The workflow resource.
#[derive(Debug)]
pub struct Workflows;

impl Resource for Workflows {
    type Proto = Workflow;
    type Fields = WorkflowFields;
    type Table = workflows::table;
    const RESOURCE_TYPE: &'static str = "core.crm/Workflow";
    const COLLECTION: &'static str = "workflows";
    const FIELD: &'static str = "workflow";
    const TEXT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(wf::display_name, n, op, v)),
        Field::<Self>::updatable("trigger_event_type", |i, x, f| {
            let t = i.required_text(&x.trigger_event_type, 200);
            let valid = t.starts_with("crm.core.v1.")
                && t.split('.').count() == 5
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
            if !valid && !t.is_empty() {
                i.push(
                    "INVALID_EVENT_TYPE",
                    "a core event type such as crm.core.v1.Customer.created",
                );
            }
            f.trigger_event_type = t;
        })
        .filter(|n, op, v| crm_db::filter_text!(wf::trigger_event_type, n, op, v)),
        Field::<Self>::updatable("steps", |i, x, f| set_steps(i, &x.steps, f)),
        Field::<Self>::updatable("active", |_, x, f| f.active = x.active),
    ];

    fn to_proto(_org: Uuid, f: WorkflowFields) -> Workflow {
        Workflow {
            display_name: f.display_name,
            trigger_event_type: f.trigger_event_type,
            steps: steps_of(&f.steps),
            active: f.active,
            ..Workflow::default()
        }
    }
    fn order_text(f: &WorkflowFields) -> &str {
        &f.display_name
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        _current: Option<&'a Row<WorkflowFields>>,
        next: &'a mut WorkflowFields,
        paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if paths.contains(&"steps") {
                for s in steps_of(&next.steps) {
                    if let Some(Action::SendTemplate(t)) = s.action {
                        let (_, id) = names::parse_child(&t, "messageTemplates", "steps")?;
                        crm_resource::require_live::<MessageTemplates>(conn, org, id, &t).await?;
                    }
                }
            }
            Ok(())
        })
    }
}

crm_resource::standard_store!(
    Workflows,
    table = workflows,
    time = create_time,
    text = display_name
);

/// A row of `core.enrollments`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = enrollments)]
pub struct EnrollmentRow {
    pub organization_id: Uuid,
    pub id: Uuid,
    pub workflow_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub customer_id: Uuid,
    pub position: i32,
    pub status: i16,
    pub next_run_time: DateTime<Utc>,
    pub history: Vec<u8>,
    pub trigger_event: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

fn enrollment_status(s: EnrollmentStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

impl EnrollmentRow {
    /// A new active enrollment of `customer` due at `at`.
    #[must_use]
    pub fn new(
        org: Uuid,
        source: (Option<Uuid>, Option<Uuid>),
        customer: Uuid,
        at: DateTime<Utc>,
    ) -> Self {
        let now = Utc::now();
        Self {
            organization_id: org,
            id: Uuid::now_v7(),
            workflow_id: source.0,
            campaign_id: source.1,
            customer_id: customer,
            position: 0,
            status: enrollment_status(EnrollmentStatus::Active),
            next_run_time: at,
            history: Vec::new(),
            trigger_event: String::new(),
            create_time: now,
            update_time: now,
        }
    }

    /// The API message.
    #[must_use]
    pub fn to_proto(&self) -> Enrollment {
        let org = self.organization_id;
        let source = match (self.workflow_id, self.campaign_id) {
            (Some(w), _) => child_name(org, "workflows", w),
            (None, Some(c)) => child_name(org, "campaigns", c),
            (None, None) => String::new(),
        };
        Enrollment {
            name: child_name(org, "enrollments", self.id),
            source,
            customer: child_name(org, "customers", self.customer_id),
            position: self.position,
            status: i32::from(self.status),
            next_run_time: Some(timestamp(self.next_run_time)),
            history: Enrollment::decode(self.history.as_slice())
                .map(|e| e.history)
                .unwrap_or_default(),
            trigger_event: self.trigger_event.clone(),
            create_time: Some(timestamp(self.create_time)),
        }
    }
}

/// The delay before step `n` of `steps`, as a duration.
#[must_use]
pub fn delay_of(steps: &[WorkflowStep], n: usize) -> chrono::Duration {
    steps
        .get(n)
        .and_then(|s| s.delay.as_ref())
        .map_or(chrono::Duration::zero(), |d| {
            chrono::Duration::seconds(d.seconds)
        })
}

/// Enrolls `customer` in workflow `workflow` (steps `steps`) unless they are in it; answers
/// the enrollment when one was made.
///
/// # Errors
/// The database error.
pub async fn enroll(
    conn: &AsyncPgConnection,
    org: Uuid,
    (workflow, steps): (Uuid, &[WorkflowStep]),
    customer: Uuid,
    trigger_event: &str,
) -> Result<Option<EnrollmentRow>, ApiError> {
    let mut row = EnrollmentRow::new(
        org,
        (Some(workflow), None),
        customer,
        Utc::now() + delay_of(steps, 0),
    );
    row.trigger_event = trigger_event.to_owned();
    let made = diesel::insert_into(en::enrollments)
        .values(&row)
        .on_conflict_do_nothing()
        .execute(&mut { conn })
        .await?;
    Ok((made == 1).then_some(row))
}

async fn enroll_customer(
    ctx: &Context,
    call: Call,
    body: EnrollCustomerRequest,
) -> Result<Enrollment, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<Workflows>(&mut v, &body.workflow, "workflow");
    let customer = names::parse_child(&body.customer, "customers", "customer")
        .map_err(|e| v.absorb(e))
        .ok();
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let ((org, id), (customer_org, customer)) = parsed
        .zip(customer)
        .ok_or_else(|| ApiError::Internal("names parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    if customer_org != org {
        return Err(ApiError::invalid(
            "customer",
            "CROSS_ORGANIZATION",
            "the customer must be of the workflow's organization",
        ));
    }
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let workflow = Workflows::find(conn, w.org, id, false)
                .await?
                .filter(|r| !r.std.deleted())
                .ok_or_else(|| crm_resource::not_found::<Workflows>(&body.workflow))?;
            if !workflow.fields.active {
                return Err(ApiError::FailedPrecondition {
                    reason: "WORKFLOW_INACTIVE",
                    message: "the workflow is not active".to_owned(),
                });
            }
            crate::customers::require_live(conn, w.org, customer).await?;
            let steps = steps_of(&workflow.fields.steps);
            let row = enroll(conn, org, (id, &steps), customer, "")
                .await?
                .ok_or_else(|| ApiError::AlreadyExists {
                    resource_type: "core.crm/Enrollment",
                    detail: format!("{} is in the workflow already", body.customer),
                })?;
            let proto = row.to_proto();
            crm_resource::emit(conn, w, "enrolled", &proto, &proto.name, None).await?;
            crm_resource::audit::record(
                conn,
                w.org,
                w.entry(&proto.name, crm_resource::audit::Action::Create),
                &[],
            )
            .await?;
            Ok(proto)
        })
    });
    ctx.commit(deadline, write).await
}

async fn list_enrollments(
    ctx: &Context,
    principal: &crm_auth::Principal,
    body: &ListEnrollmentsRequest,
) -> Result<ListEnrollmentsResponse, ApiError> {
    let collection = body.parent.split('/').nth(2).unwrap_or_default();
    let (org, source) = match collection {
        "campaigns" => names::parse_child(&body.parent, "campaigns", "parent")?,
        _ => names::parse_child(&body.parent, "workflows", "parent")?,
    };
    names::require_same_organization(principal, org)?;
    let by_campaign = collection == "campaigns";
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        "ListEnrollments",
        &format!("organizations/{org}"),
        body.page_size,
        &body.page_token,
        &[&body.parent],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let after = listing.after_time_id()?;
    let limit = listing.limit();
    let mut rows: Vec<EnrollmentRow> = crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move {
            let mut q = en::enrollments
                .filter(en::organization_id.eq(org))
                .order((en::create_time.asc(), en::id.asc()))
                .limit(limit)
                .select(EnrollmentRow::as_select())
                .into_boxed();
            q = if by_campaign {
                q.filter(en::campaign_id.eq(source))
            } else {
                q.filter(en::workflow_id.eq(source))
            };
            if let Some((t, id)) = after {
                q = q.filter(
                    en::create_time
                        .gt(t)
                        .or(en::create_time.eq(t).and(en::id.gt(id))),
                );
            }
            Ok::<_, ApiError>(q.load(&mut { conn }).await?)
        })
    })
    .await?;
    let next_page_token = listing.finish(&ctx.page_tokens, &mut rows, |r| {
        vec![r.create_time.to_rfc3339(), r.id.to_string()]
    });
    Ok(ListEnrollmentsResponse {
        enrollments: rows.iter().map(EnrollmentRow::to_proto).collect(),
        next_page_token,
    })
}

async fn launch(
    ctx: &Context,
    call: Call,
    body: LaunchCampaignRequest,
) -> Result<Campaign, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<Campaigns>(&mut v, &body.name, "name");
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let current =
                crm_resource::lock::<Campaigns>(conn, w.org, id, &body.name, &body.etag, "etag")
                    .await?;
            if current.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "the campaign is deleted".to_owned(),
                });
            }
            if current.fields.status != campaign_status(CampaignStatus::Draft) {
                return Err(launched());
            }
            let template = child_name(org, "messageTemplates", current.fields.template_id);
            crm_resource::require_live::<MessageTemplates>(
                conn,
                w.org,
                current.fields.template_id,
                &template,
            )
            .await?;
            let audience = audience(conn, w.org, &current.fields.audience_filter).await?;
            let now = Utc::now();
            let at = current.fields.send_time.filter(|t| *t > now).unwrap_or(now);
            let rows: Vec<EnrollmentRow> = audience
                .iter()
                .map(|c| EnrollmentRow::new(org, (None, Some(id)), *c, at))
                .collect();
            for chunk in rows.chunks(1_000) {
                diesel::insert_into(en::enrollments)
                    .values(chunk)
                    .execute(&mut { conn })
                    .await?;
            }
            let before = crm_resource::to_proto::<Campaigns>(current.clone());
            let mut next = current.fields;
            next.status = campaign_status(CampaignStatus::Launched);
            next.launch_time = Some(now);
            next.enrolled_count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
            let row = Campaigns::update(conn, w.org, id, &next, w.call.actor()).await?;
            let after = crm_resource::to_proto::<Campaigns>(row);
            crm_resource::emit(conn, w, "launched", &after, &body.name, None).await?;
            crm_resource::audit::record_change::<Campaigns>(
                conn,
                w.org,
                w.entry(&body.name, crm_resource::audit::Action::Custom("launched")),
                Some(&before),
                &after,
                &["status", "launch_time", "enrolled_count"],
            )
            .await?;
            Ok(after)
        })
    });
    ctx.commit(deadline, write).await
}

/// The live customers `filter` matches, at most [`MAX_AUDIENCE`].
async fn audience(
    conn: &AsyncPgConnection,
    org: OrgId,
    filter: &str,
) -> Result<Vec<Uuid>, ApiError> {
    let parsed = crm_db::filter::parse(filter).map_err(|e| {
        ApiError::invalid("campaign.audience_filter", "INVALID_FILTER", e.to_string())
    })?;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let q = crm_resource::ListQuery {
            order: crm_resource::Order {
                field: crm_resource::OrderField::CreateTime,
                desc: false,
            },
            after: after.take(),
            limit: 500,
            show_deleted: false,
            filter: parsed.clone(),
        };
        let page = Customers::list(conn, org, &q).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(crm_resource::After::Time(last.std.create_time, last.std.id));
        let full = page.len() < 500;
        out.extend(page.iter().map(|r| r.std.id));
        if out.len() > MAX_AUDIENCE {
            return Err(ApiError::FailedPrecondition {
                reason: "AUDIENCE_TOO_LARGE",
                message: format!("the audience is over {MAX_AUDIENCE} customers: narrow it"),
            });
        }
        if full {
            break;
        }
    }
    Ok(out)
}

crm_resource::standard_service! {
    service = "crm.core.v1.MessageTemplateService",
    server = crm_proto::core_v1::message_template_service_server::MessageTemplateService,
    resource = MessageTemplates,
    api = MessageTemplateApi,
    field = message_template;
    create = create_message_template(CreateMessageTemplateRequest, id = message_template_id);
    get = get_message_template(GetMessageTemplateRequest, full = |_| false);
    list = list_message_templates(ListMessageTemplatesRequest, full = |_| false) -> ListMessageTemplatesResponse.message_templates;
    update = update_message_template(UpdateMessageTemplateRequest);
    delete = delete_message_template(DeleteMessageTemplateRequest);
    undelete = undelete_message_template(UndeleteMessageTemplateRequest);
}

crm_resource::standard_service! {
    service = "crm.core.v1.CampaignService",
    server = crm_proto::core_v1::campaign_service_server::CampaignService,
    resource = Campaigns,
    api = CampaignApi,
    field = campaign;
    create = create_campaign(CreateCampaignRequest, id = campaign_id);
    get = get_campaign(GetCampaignRequest, full = |_| false);
    list = list_campaigns(ListCampaignsRequest, full = |_| false) -> ListCampaignsResponse.campaigns;
    update = update_campaign(UpdateCampaignRequest);
    delete = delete_campaign(DeleteCampaignRequest);
    undelete = undelete_campaign(UndeleteCampaignRequest);

    async fn launch_campaign(
        &self,
        req: tonic::Request<LaunchCampaignRequest>,
    ) -> Result<tonic::Response<Campaign>, tonic::Status> {
        let call = Call::of(&req, CAMPAIGNS, "launch_campaign")?;
        launch(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }
}

crm_resource::standard_service! {
    service = "crm.core.v1.WorkflowService",
    server = crm_proto::core_v1::workflow_service_server::WorkflowService,
    resource = Workflows,
    api = WorkflowApi,
    field = workflow;
    create = create_workflow(CreateWorkflowRequest, id = workflow_id);
    get = get_workflow(GetWorkflowRequest, full = |_| false);
    list = list_workflows(ListWorkflowsRequest, full = |_| false) -> ListWorkflowsResponse.workflows;
    update = update_workflow(UpdateWorkflowRequest);
    delete = delete_workflow(DeleteWorkflowRequest);
    undelete = undelete_workflow(UndeleteWorkflowRequest);

    async fn enroll_customer(
        &self,
        req: tonic::Request<EnrollCustomerRequest>,
    ) -> Result<tonic::Response<Enrollment>, tonic::Status> {
        let call = Call::of(&req, WORKFLOWS, "enroll_customer")?;
        enroll_customer(&self.ctx, call, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn list_enrollments(
        &self,
        req: tonic::Request<ListEnrollmentsRequest>,
    ) -> Result<tonic::Response<ListEnrollmentsResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        list_enrollments(&self.ctx, &principal, req.get_ref()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_variables_are_listed_and_unknown_ones_refused() {
        assert_eq!(
            variables("Hi {{customer.first_name}}, {{ customer.first_name }}!"),
            Ok(vec!["customer.first_name".to_owned()])
        );
        assert!(variables("Hi {{customer.nickname}}").is_err());
        assert!(variables("Hi {{customer.first_name").is_err());
        assert_eq!(variables("no variables"), Ok(vec![]));
    }

    #[test]
    fn rendering_fills_the_customers_values() {
        let c = crate::customers::CustomerFields {
            display_name: "Dana Reyes".into(),
            phone: Some("+15125550100".into()),
            ..Default::default()
        };
        assert_eq!(
            render(
                "Hi {{customer.first_name}} ({{customer.email}}) at {{customer.phone}}",
                &c
            ),
            "Hi Dana () at +15125550100"
        );
    }
}
