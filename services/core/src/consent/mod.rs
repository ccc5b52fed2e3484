//! `crm.core.v1.ConsentService`: SMS consent per phone number and purpose, the immutable
//! consent history, inbound keywords (STOP/START/HELP), and the check every outbound SMS passes:
//! consent must be granted for the purpose, and marketing waits out quiet hours (21:00 to 08:00)
//! in the recipient's time zone.

pub mod store;

use chrono::{DateTime, Duration, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names;
use crm_platform::api::time::{from_timestamp, timestamp};
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::consent_service_server::ConsentService;
use crm_proto::core_v1::{
    CheckConsentRequest, CheckConsentResponse, Consent, ConsentEvent, ConsentMethod, ConsentStatus,
    GrantConsentRequest, ListConsentEventsRequest, ListConsentEventsResponse, MessagePurpose,
    RevokeConsentRequest,
};
use diesel_async::AsyncPgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub use self::store::NewEvent;
use self::store::{ConsentRow, EventRow, Upsert};
use crate::CoreState;
use crate::ids::MessageId;
use crate::status;
use crm_resource::Call;
use crm_resource::audit::{self, Action};

const SERVICE: &str = "crm.core.v1.ConsentService";
/// Marketing messages wait until this local time...
const QUIET_END: (u32, u32) = (8, 0);
/// ...once this local time has passed.
const QUIET_START: (u32, u32) = (21, 0);

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("GrantConsent", permission::CONSENT_WRITE),
            ("RevokeConsent", permission::CONSENT_WRITE),
            ("CheckConsent", permission::CONSENT_READ),
            ("ListConsentEvents", permission::CONSENT_READ),
        ],
    )
}

/// The outcome of a consent check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Why not (`None` = allowed).
    pub refusal: Option<Refusal>,
    /// The time zone quiet hours were judged in.
    pub time_zone: String,
    /// For quiet hours, when sending becomes allowed.
    pub next_allowed: Option<DateTime<Utc>>,
}

/// Why a message may not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No consent was ever recorded for the purpose.
    ConsentMissing,
    /// Consent was withdrawn.
    ConsentRevoked,
    /// It is night where the recipient is.
    QuietHours,
    /// The recipient's time zone is not known, so quiet hours cannot be ruled out.
    TimeZoneUnknown,
}

impl Refusal {
    /// The `ErrorInfo` reason.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::ConsentMissing => "CONSENT_MISSING",
            Self::ConsentRevoked => "CONSENT_REVOKED",
            Self::QuietHours => "QUIET_HOURS",
            Self::TimeZoneUnknown => "TIME_ZONE_UNKNOWN",
        }
    }

    /// Parses a stored reason.
    #[must_use]
    pub fn from_reason(reason: &str) -> Option<Self> {
        [
            Self::ConsentMissing,
            Self::ConsentRevoked,
            Self::QuietHours,
            Self::TimeZoneUnknown,
        ]
        .into_iter()
        .find(|r| r.reason() == reason)
    }

    /// A sentence for people.
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::ConsentMissing => "no consent is recorded for this number and purpose",
            Self::ConsentRevoked => "consent for this number and purpose was revoked",
            Self::QuietHours => {
                "marketing messages are not sent between 21:00 and 08:00 local time"
            }
            Self::TimeZoneUnknown => {
                "the recipient's time zone is unknown; set the customer's time_zone"
            }
        }
    }
}

/// When `at` falls in quiet hours in `tz`, the first moment after them (08:00 local).
#[must_use]
pub fn quiet_until(at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&tz);
    let time = local.time();
    let end = NaiveTime::from_hms_opt(QUIET_END.0, QUIET_END.1, 0)?;
    let start = NaiveTime::from_hms_opt(QUIET_START.0, QUIET_START.1, 0)?;
    let day = if time >= start {
        local.date_naive().succ_opt()?
    } else if time < end {
        local.date_naive()
    } else {
        return None;
    };
    // 08:00 always exists (DST moves happen at night, before it); take the earliest mapping.
    tz.from_local_datetime(&day.and_time(end))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Decides whether a message to `phone` for `purpose` may go out at `at`.
///
/// # Errors
/// The database error.
pub async fn check(
    conn: &AsyncPgConnection,
    org: Uuid,
    phone: &str,
    purpose: MessagePurpose,
    at: DateTime<Utc>,
) -> Result<Decision, ApiError> {
    let status = store::status(conn, OrgId(org), phone, purpose).await?;
    let refuse = |refusal| Decision {
        refusal: Some(refusal),
        time_zone: String::new(),
        next_allowed: None,
    };
    match status {
        None | Some(ConsentStatus::Unspecified) => return Ok(refuse(Refusal::ConsentMissing)),
        Some(ConsentStatus::Revoked) => return Ok(refuse(Refusal::ConsentRevoked)),
        Some(ConsentStatus::Granted) => {}
    }
    if purpose != MessagePurpose::Marketing {
        return Ok(Decision {
            refusal: None,
            time_zone: String::new(),
            next_allowed: None,
        });
    }
    let zone = store::time_zone_of(conn, OrgId(org), phone).await?;
    let Some(tz) = zone.and_then(|z| z.parse::<Tz>().ok()) else {
        return Ok(refuse(Refusal::TimeZoneUnknown));
    };
    let next = quiet_until(at, tz);
    Ok(Decision {
        refusal: next.map(|_| Refusal::QuietHours),
        time_zone: tz.name().to_owned(),
        next_allowed: next,
    })
}

/// Appends to the consent history.
///
/// # Errors
/// The database error.
pub async fn append_event(
    conn: &AsyncPgConnection,
    org: Uuid,
    e: NewEvent<'_>,
) -> Result<(), ApiError> {
    Ok(store::insert_event(conn, OrgId(org), e).await?)
}

impl From<ConsentRow> for Consent {
    fn from(r: ConsentRow) -> Self {
        Self {
            phone: r.phone,
            purpose: i32::from(r.purpose),
            status: i32::from(r.status),
            method: i32::from(r.method),
            source: r.source,
            disclosure_version: r.disclosure_version,
            update_time: Some(timestamp(r.update_time)),
            recorded_by: r.updated_by,
        }
    }
}

/// A change of one consent.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Phone.
    pub phone: &'a str,
    /// Purpose.
    pub purpose: MessagePurpose,
    /// New status.
    pub status: ConsentStatus,
    /// Method.
    pub method: ConsentMethod,
    /// Source.
    pub source: &'a str,
    /// Disclosure version (grants).
    pub disclosure_version: &'a str,
    /// When.
    pub at: DateTime<Utc>,
    /// A revocation by STOP (START restores only those).
    pub by_keyword: bool,
    /// The keyword message, if any.
    pub message_id: Option<MessageId>,
}

/// Sets one consent, appends the history entry and the audit entry.
///
/// # Errors
/// The database error.
pub async fn apply(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    change: Change<'_>,
) -> Result<Consent, ApiError> {
    let tenant = OrgId(org);
    let before = store::lock(conn, tenant, change.phone, change.purpose).await?;
    let disclosure = if change.status == ConsentStatus::Granted {
        change.disclosure_version.to_owned()
    } else {
        before
            .as_ref()
            .map(|b| b.disclosure_version.clone())
            .unwrap_or_default()
    };
    let upsert = Upsert {
        phone: change.phone,
        purpose: change.purpose,
        status: change.status,
        method: change.method,
        source: change.source,
        disclosure_version: &disclosure,
        revoked_by_keyword: change.by_keyword,
        update_time: change.at,
        updated_by: call.actor(),
    };
    let row: ConsentRow = store::upsert(conn, tenant, upsert).await?;
    let kind = if change.status == ConsentStatus::Granted {
        "granted"
    } else {
        "revoked"
    };
    append_event(
        conn,
        org,
        NewEvent {
            phone: change.phone,
            purpose: change.purpose,
            kind,
            method: change.method,
            source: change.source,
            disclosure_version: &disclosure,
            detail: "",
            message_id: change.message_id,
            actor: call.actor(),
        },
    )
    .await?;
    let name = |s: ConsentStatus| format!("\"{}\"", s.as_str_name());
    audit::record(
        conn,
        OrgId(org),
        audit::Entry {
            call,
            request_id,
            resource: &consent_name(org, change.phone, change.purpose),
            action: Action::Custom(if change.status == ConsentStatus::Granted {
                "grant_consent"
            } else {
                "revoke_consent"
            }),
        },
        &[audit::Change {
            field: "status".into(),
            before: before
                .as_ref()
                .map(|b| name(b.status.into()))
                .unwrap_or_default(),
            after: name(change.status),
        }],
    )
    .await?;
    Ok(row.into())
}

/// How the audit log names one consent.
#[must_use]
pub fn consent_name(org: Uuid, phone: &str, purpose: MessagePurpose) -> String {
    format!(
        "organizations/{org}/consents/{phone}/{}",
        purpose.as_str_name()
    )
}

/// An inbound SMS keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// Opt out of everything.
    Stop,
    /// Opt back in to what STOP revoked.
    Start,
    /// Ask for help.
    Help,
}

impl Keyword {
    /// The keyword of a message body: the whole text, trimmed, case-insensitive.
    #[must_use]
    pub fn of(body: &str) -> Option<Self> {
        let word = body
            .trim()
            .trim_end_matches(['.', '!'])
            .to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Self::Stop),
            "START" | "UNSTOP" | "YES" => Some(Self::Start),
            "HELP" | "INFO" => Some(Self::Help),
            _ => None,
        }
    }
}

/// Acts on a keyword texted in from `phone` (in the inbound message's transaction).
///
/// # Errors
/// The database error.
pub async fn apply_keyword(
    conn: &AsyncPgConnection,
    org: Uuid,
    call: &Call,
    request_id: &str,
    phone: &str,
    keyword: Keyword,
    message_id: Option<MessageId>,
) -> Result<(), ApiError> {
    let source = message_id.map_or_else(
        || "sms keyword from an unknown sender".to_owned(),
        |m| format!("sms keyword, message {m}"),
    );
    let now = Utc::now();
    match keyword {
        Keyword::Stop => {
            for purpose in [MessagePurpose::Transactional, MessagePurpose::Marketing] {
                let current = store::status(conn, OrgId(org), phone, purpose).await?;
                if current == Some(ConsentStatus::Granted) {
                    apply(
                        conn,
                        org,
                        call,
                        request_id,
                        Change {
                            phone,
                            purpose,
                            status: ConsentStatus::Revoked,
                            method: ConsentMethod::Keyword,
                            source: &source,
                            disclosure_version: "",
                            at: now,
                            by_keyword: true,
                            message_id,
                        },
                    )
                    .await?;
                }
            }
        }
        Keyword::Start => {
            for (purpose, version) in store::revoked_by_keyword(conn, OrgId(org), phone).await? {
                let purpose = MessagePurpose::from(purpose);
                apply(
                    conn,
                    org,
                    call,
                    request_id,
                    Change {
                        phone,
                        purpose,
                        status: ConsentStatus::Granted,
                        method: ConsentMethod::Keyword,
                        source: &source,
                        disclosure_version: &version,
                        at: now,
                        by_keyword: false,
                        message_id,
                    },
                )
                .await?;
            }
        }
        Keyword::Help => {
            append_event(
                conn,
                org,
                NewEvent {
                    phone,
                    kind: "help_requested",
                    method: ConsentMethod::Keyword,
                    source: &source,
                    detail: "HELP",
                    message_id,
                    actor: call.actor(),
                    ..NewEvent::default()
                },
            )
            .await?;
        }
    }
    Ok(())
}

fn validate_purpose(v: &mut Violations, field: &str, value: i32) -> MessagePurpose {
    match MessagePurpose::try_from(value) {
        Ok(MessagePurpose::Unspecified) | Err(_) => {
            v.push(field, "INVALID_PURPOSE", "TRANSACTIONAL or MARKETING");
            MessagePurpose::Unspecified
        }
        Ok(p) => p,
    }
}

fn validate_phone(v: &mut Violations, phone: &str) {
    if phone.is_empty() {
        v.push(
            "phone",
            "REQUIRED",
            "a phone number in E.164 form is required",
        );
    } else {
        validate::optional_phone(v, "phone", phone);
    }
}

fn validate_method(v: &mut Violations, value: i32) -> ConsentMethod {
    match ConsentMethod::try_from(value) {
        Ok(ConsentMethod::Unspecified) | Err(_) => {
            v.push(
                "method",
                "INVALID_METHOD",
                "how consent was given or withdrawn",
            );
            ConsentMethod::Unspecified
        }
        Ok(m) => m,
    }
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct ConsentApi {
    state: CoreState,
}

impl ConsentApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self { state }
    }

    async fn change(
        &self,
        call: Call,
        fields: (
            String,
            String,
            i32,
            i32,
            String,
            String,
            Option<prost_types::Timestamp>,
            String,
        ),
        status: ConsentStatus,
        fingerprint: &impl prost::Message,
    ) -> Result<Consent, ApiError> {
        let (parent, phone, purpose, method, source, disclosure, at, request_id) = fields;
        let mut v = Violations::new();
        let org = names::parse_organization(&parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        validate_phone(&mut v, &phone);
        let purpose = validate_purpose(&mut v, "purpose", purpose);
        let method = validate_method(&mut v, method);
        validate::required_text(&mut v, "source", &source, 200);
        if status == ConsentStatus::Granted {
            validate::required_text(&mut v, "disclosure_version", &disclosure, 50);
        }
        let now = Utc::now();
        let at = match at.as_ref().map(from_timestamp) {
            None => now,
            Some(None) => {
                v.push("grant_time", "INVALID_TIME", "not a valid time");
                now
            }
            Some(Some(t)) if t > now + Duration::minutes(5) => {
                v.push(
                    "grant_time",
                    "TIME_IN_FUTURE",
                    "consent cannot be granted in the future",
                );
                now
            }
            Some(Some(t)) => t,
        };
        let key = IdempotencyKey::from_request(&mut v, &call.method, &request_id, fingerprint);
        v.finish()?;
        let org =
            org.ok_or_else(|| ApiError::Internal("parent parsed without violation".into()))?;
        names::require_same_organization(&call.principal, org)?;
        let deadline = call.deadline;
        let write = mutation::idempotent(self.state.ctx.pool.clone(), org, key, move |conn| {
            Box::pin(async move {
                apply(
                    conn,
                    org,
                    &call,
                    &request_id,
                    Change {
                        phone: &phone,
                        purpose,
                        status,
                        method,
                        source: &source,
                        disclosure_version: &disclosure,
                        at,
                        by_keyword: false,
                        message_id: None,
                    },
                )
                .await
            })
        });
        mutation::detached(deadline, write).await
    }
}

#[tonic::async_trait]
impl ConsentService for ConsentApi {
    async fn grant_consent(
        &self,
        req: Request<GrantConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        let call = Call::of(&req, SERVICE, "grant_consent")?;
        let b = req.into_inner();
        let mut fingerprint = b.clone();
        fingerprint.request_id.clear();
        self.change(
            call,
            (
                b.parent,
                b.phone,
                b.purpose,
                b.method,
                b.source,
                b.disclosure_version,
                b.grant_time,
                b.request_id,
            ),
            ConsentStatus::Granted,
            &fingerprint,
        )
        .await
        .map(Response::new)
        .map_err(status)
    }

    async fn revoke_consent(
        &self,
        req: Request<RevokeConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        let call = Call::of(&req, SERVICE, "revoke_consent")?;
        let b = req.into_inner();
        let mut fingerprint = b.clone();
        fingerprint.request_id.clear();
        self.change(
            call,
            (
                b.parent,
                b.phone,
                b.purpose,
                b.method,
                b.source,
                String::new(),
                None,
                b.request_id,
            ),
            ConsentStatus::Revoked,
            &fingerprint,
        )
        .await
        .map(Response::new)
        .map_err(status)
    }

    async fn check_consent(
        &self,
        req: Request<CheckConsentRequest>,
    ) -> Result<Response<CheckConsentResponse>, Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let mut v = Violations::new();
        let org = names::parse_organization(&b.parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        validate_phone(&mut v, &b.phone);
        let purpose = validate_purpose(&mut v, "purpose", b.purpose);
        let at = match b.time.as_ref().map(from_timestamp) {
            None => Utc::now(),
            Some(Some(t)) => t,
            Some(None) => {
                v.push("time", "INVALID_TIME", "not a valid time");
                Utc::now()
            }
        };
        v.finish().map_err(status)?;
        let org =
            org.ok_or_else(|| status(ApiError::Internal("parsed without violation".into())))?;
        names::require_same_organization(&principal, org).map_err(status)?;
        let phone = b.phone;
        let decision = crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move { check(conn, org, &phone, purpose, at).await })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(CheckConsentResponse {
            allowed: decision.refusal.is_none(),
            reason: decision
                .refusal
                .map(Refusal::reason)
                .unwrap_or_default()
                .to_owned(),
            detail: decision
                .refusal
                .map(Refusal::detail)
                .unwrap_or_default()
                .to_owned(),
            time_zone: decision.time_zone,
            next_allowed_time: decision.next_allowed.map(timestamp),
        }))
    }

    async fn list_consent_events(
        &self,
        req: Request<ListConsentEventsRequest>,
    ) -> Result<Response<ListConsentEventsResponse>, Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let mut v = Violations::new();
        validate::optional_phone(&mut v, "phone", &b.phone);
        v.finish().map_err(status)?;
        let listing = crm_platform::api::listing::Listing::begin(
            &principal,
            &self.state.ctx.page_tokens,
            "ListConsentEvents",
            &b.parent,
            b.page_size,
            &b.page_token,
            &[&b.phone],
            50,
            crm_platform::api::listing::MAX_PAGE_SIZE,
        )
        .map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?;
        let limit = listing.limit();
        let phone = b.phone;
        let mut rows: Vec<EventRow> =
            crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
                Box::pin(async move {
                    // Ids are UUIDv7: time-ordered, so the id alone is the keyset.
                    store::events(conn, OrgId(org), &phone, after, limit)
                        .await
                        .map_err(ApiError::from)
                })
            })
            .await
            .map_err(status)?;
        let next_page_token = listing.finish(&self.state.ctx.page_tokens, &mut rows, |r| {
            vec![r.id.to_string()]
        });
        Ok(Response::new(ListConsentEventsResponse {
            consent_events: rows.into_iter().map(|r| r.into_proto(org)).collect(),
            next_page_token,
        }))
    }
}

impl EventRow {
    /// The entry as the API shows it.
    fn into_proto(self, org: Uuid) -> ConsentEvent {
        ConsentEvent {
            phone: self.phone,
            purpose: i32::from(self.purpose),
            kind: self.kind,
            method: i32::from(self.method),
            source: self.source,
            disclosure_version: self.disclosure_version,
            detail: self.detail,
            message: self
                .message_id
                .map(|m| names::child_name(org, "messages", m.uuid()))
                .unwrap_or_default(),
            actor: self.actor,
            occur_time: Some(timestamp(self.occur_time)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn quiet_hours_follow_the_recipients_clock() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        // 20:59 in Los Angeles (PST, UTC-8): still allowed.
        assert_eq!(quiet_until(utc("2026-01-15T04:59:00Z"), la), None);
        // 21:00: quiet until 08:00 the next morning, 16:00 UTC.
        assert_eq!(
            quiet_until(utc("2026-01-15T05:00:00Z"), la),
            Some(utc("2026-01-15T16:00:00Z"))
        );
        // 07:59 local: quiet until 08:00 the same day.
        assert_eq!(
            quiet_until(utc("2026-01-15T15:59:00Z"), la),
            Some(utc("2026-01-15T16:00:00Z"))
        );
        // Across the spring-forward night, 08:00 PDT is 15:00 UTC.
        assert_eq!(
            quiet_until(utc("2026-03-08T06:00:00Z"), la),
            Some(utc("2026-03-08T15:00:00Z"))
        );
        let ny: Tz = "America/New_York".parse().unwrap();
        // The same instant is evening in New York and afternoon in Los Angeles.
        assert!(quiet_until(utc("2026-01-15T02:30:00Z"), ny).is_some());
        assert!(quiet_until(utc("2026-01-15T02:30:00Z"), la).is_none());
    }

    #[test]
    fn keywords_are_whole_messages() {
        assert_eq!(Keyword::of(" stop "), Some(Keyword::Stop));
        assert_eq!(Keyword::of("Unsubscribe."), Some(Keyword::Stop));
        assert_eq!(Keyword::of("START"), Some(Keyword::Start));
        assert_eq!(Keyword::of("help"), Some(Keyword::Help));
        assert_eq!(Keyword::of("please stop by tomorrow"), None);
    }
}
