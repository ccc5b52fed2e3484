//! `crm.core.v1.SignatureRequestService`: e-signatures with a one-time code. A request fixes the
//! document's SHA-256 (its canonical encoding: the fields people agree to, not its status) and
//! sends a 6-digit code in a message that passes CheckConsent; the code is stored only as a
//! salted SHA-256. Signing with the code writes the signature row (the document as signed, its
//! hash, who, when, from where, the consent text and version), which the service's role cannot
//! update or delete, and a signed request is final (a trigger refuses any change to it).

use chrono::{DateTime, Duration, Utc};
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_platform::ApiError;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    Channel, CreateSignatureRequestRequest, DeleteSignatureRequestRequest,
    GetSignatureRequestRequest, ListSignatureRequestsRequest, ListSignatureRequestsResponse,
    MessagePurpose, Quote, SignDocumentRequest, Signature, SignatureRequest, SignatureStatus,
    UndeleteSignatureRequestRequest, UpdateSignatureRequestRequest, VerifySignatureRequest,
    VerifySignatureResponse,
};
use crm_resource::{BoxFuture, Call, Context, Field, Resource, Row, Store, Write};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use prost::Message as _;
use rand::{Rng as _, RngCore as _};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::ids::MessageId;
use crate::messages::{self, Outgoing};
use crate::schema::signature_requests::{self, dsl as sr};
use crate::schema::signatures::dsl as sg;

const SERVICE: &str = "crm.core.v1.SignatureRequestService";
/// Wrong codes before a request locks.
const MAX_ATTEMPTS: i32 = 5;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::CUSTOMERS_READ, permission::SIGNATURES_WRITE);
    SignatureRequestApi::policy(read, write, write)
        .with(SERVICE, "SignDocument", Requirement::Permission(write))
        .with(SERVICE, "VerifySignature", Requirement::Permission(read))
}

fn status(s: SignatureStatus) -> i16 {
    i16::try_from(s as i32).unwrap_or_default()
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

fn code_hash(salt: &[u8], code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().to_vec()
}

/// The columns of `core.signature_requests` besides the standard ones.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = signature_requests, treat_none_as_null = true)]
pub struct SignatureRequestFields {
    pub document: String,
    pub signer_name: String,
    pub signer_email: String,
    pub signer_phone: String,
    pub consent_text: String,
    pub consent_version: String,
    pub expire_time: DateTime<Utc>,
    pub document_sha256: Vec<u8>,
    pub status: i16,
    pub code_salt: Vec<u8>,
    pub code_hash: Vec<u8>,
    pub failed_attempts: i32,
    pub code_message: String,
    pub sign_time: Option<DateTime<Utc>>,
    pub signer_ip: String,
    pub user_agent: String,
}

/// A signable document as it stands.
#[derive(Debug)]
pub struct Document {
    /// Its canonical encoding (what is hashed and stored when signed).
    pub bytes: Vec<u8>,
    /// Its customer (whose conversation carries the code).
    pub customer: Uuid,
    /// Why it cannot be sent for signature now, if it cannot.
    pub refusal: Option<&'static str>,
}

/// Document `name` of `org` as it stands, or `None` when it does not exist (or is deleted).
///
/// # Errors
/// INVALID_ARGUMENT for a name that is not a quote's or a contract's; the database error.
pub async fn document(
    conn: &AsyncPgConnection,
    org: OrgId,
    name: &str,
) -> Result<Option<Document>, ApiError> {
    let collection = name.split('/').nth(2).unwrap_or_default();
    match collection {
        "quotes" => {
            let (_, id) = names::parse_child(name, "quotes", "document")?;
            let Some(row) = crate::quotes::Quotes::find(conn, org, id, false).await? else {
                return Ok(None);
            };
            if row.std.deleted() {
                return Ok(None);
            }
            let quote = crate::quotes::Quotes::to_proto(org.uuid(), row.fields.clone());
            let refusal = (![2, 3].contains(&row.fields.status))
                .then_some("only a sent or viewed quote can be signed");
            Ok(Some(Document {
                bytes: canonical_quote(quote).encode_to_vec(),
                customer: row.fields.customer_id,
                refusal,
            }))
        }
        "contracts" => crate::contracts::document(conn, org, name).await,
        _ => Err(ApiError::invalid(
            "document",
            "INVALID_DOCUMENT",
            "a quote (organizations/{organization}/quotes/{quote}) or a contract",
        )),
    }
}

/// What a quote's signer agrees to: its content, without its status or the options' states.
fn canonical_quote(q: Quote) -> Quote {
    Quote {
        customer: q.customer,
        property: q.property,
        title: q.title,
        options: q
            .options
            .into_iter()
            .map(|mut o| {
                o.state = 0;
                o
            })
            .collect(),
        tax_percent: q.tax_percent,
        valid_until: q.valid_until,
        ..Quote::default()
    }
}

/// The signature request resource.
#[derive(Debug)]
pub struct SignatureRequests;

impl Resource for SignatureRequests {
    type Proto = SignatureRequest;
    type Fields = SignatureRequestFields;
    type Table = signature_requests::table;
    const RESOURCE_TYPE: &'static str = "core.crm/SignatureRequest";
    const COLLECTION: &'static str = "signatureRequests";
    const FIELD: &'static str = "signature_request";
    const TEXT_ORDER: &'static str = "signer_name";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::create_only("document", |i, x, f| {
            let collection = x.document.split('/').nth(2).unwrap_or_default();
            if collection != "quotes" && collection != "contracts" {
                i.push(
                    "INVALID_DOCUMENT",
                    "a quote (organizations/{organization}/quotes/{quote}) or a contract",
                );
            } else if i.reference(&x.document, collection).is_some() {
                f.document.clone_from(&x.document);
            }
        })
        .filter(|n, op, v| crm_db::filter_text!(sr::document, n, op, v)),
        Field::<Self>::create_only("signer_name", |i, x, f| {
            f.signer_name = i.required_text(&x.signer_name, 200);
        }),
        Field::<Self>::create_only("signer_email", |i, x, f| {
            f.signer_email = i.email(&x.signer_email).unwrap_or_default();
        }),
        Field::<Self>::create_only("signer_phone", |i, x, f| {
            f.signer_phone = i.phone(&x.signer_phone).unwrap_or_default();
        }),
        Field::<Self>::create_only("consent_text", |i, x, f| {
            f.consent_text = i.required_text(&x.consent_text, 5_000);
        }),
        Field::<Self>::create_only("consent_version", |i, x, f| {
            f.consent_version = i.required_text(&x.consent_version, 50);
        }),
        Field::<Self>::updatable("expire_time", |i, x, f| {
            let now = Utc::now();
            let t = i
                .optional_time(x.expire_time.as_ref())
                .unwrap_or_else(|| now + Duration::hours(72));
            if t <= now || t > now + Duration::days(30) {
                i.push("OUT_OF_RANGE", "in the future, at most 30 days ahead");
            }
            f.expire_time = t;
        }),
        Field::<Self>::output("document_sha256"),
        Field::<Self>::output("status").filter(|n, op, v| {
            let number = crm_db::filter::enum_number(
                v,
                "SIGNATURE_STATUS_",
                SignatureStatus::from_str_name,
            )?;
            crm_db::filter_enum!(sr::status, n, op, number)
        }),
        Field::<Self>::output("code_message"),
        Field::<Self>::output("failed_attempts"),
        Field::<Self>::output("signature"),
    ];

    fn to_proto(_org: Uuid, f: SignatureRequestFields) -> SignatureRequest {
        let signature = f.sign_time.map(|t| Signature {
            signer_name: f.signer_name.clone(),
            sign_time: Some(timestamp(t)),
            ip_address: f.signer_ip.clone(),
            user_agent: f.user_agent.clone(),
            consent_text: f.consent_text.clone(),
            consent_version: f.consent_version.clone(),
            document_sha256: hex(&f.document_sha256),
        });
        SignatureRequest {
            document: f.document,
            signer_name: f.signer_name,
            signer_email: f.signer_email,
            signer_phone: f.signer_phone,
            consent_text: f.consent_text,
            consent_version: f.consent_version,
            expire_time: Some(timestamp(f.expire_time)),
            document_sha256: hex(&f.document_sha256),
            status: i32::from(f.status),
            code_message: f.code_message,
            failed_attempts: f.failed_attempts,
            signature,
            ..SignatureRequest::default()
        }
    }
    fn order_text(f: &SignatureRequestFields) -> &str {
        &f.signer_name
    }
    fn validate_new(v: &mut Violations, f: &SignatureRequestFields) {
        if f.signer_email.is_empty() && f.signer_phone.is_empty() {
            v.push(
                "signature_request.signer_phone",
                "REQUIRED",
                "a phone (the code goes by SMS) or an email",
            );
        }
    }
    fn check_deletion(
        current: &Row<SignatureRequestFields>,
        _delete: bool,
    ) -> Result<(), ApiError> {
        if current.fields.status == status(SignatureStatus::Signed) {
            return Err(final_error());
        }
        Ok(())
    }
    fn before_write<'a>(
        conn: &'a AsyncPgConnection,
        org: OrgId,
        current: Option<&'a Row<SignatureRequestFields>>,
        next: &'a mut SignatureRequestFields,
        _paths: &'a [&'static str],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match current {
                Some(c) if c.fields.status != status(SignatureStatus::Pending) => {
                    Err(final_error())
                }
                Some(_) => Ok(()),
                None => {
                    let doc = document(conn, org, &next.document).await?.ok_or_else(|| {
                        ApiError::FailedPrecondition {
                            reason: "REFERENCE_NOT_FOUND",
                            message: format!("document {} does not exist", next.document),
                        }
                    })?;
                    if let Some(why) = doc.refusal {
                        return Err(ApiError::FailedPrecondition {
                            reason: "DOCUMENT_NOT_SIGNABLE",
                            message: why.to_owned(),
                        });
                    }
                    next.document_sha256 = sha256(&doc.bytes);
                    next.status = status(SignatureStatus::Pending);
                    let mut salt = vec![0u8; 16];
                    rand::rngs::OsRng.fill_bytes(&mut salt);
                    next.code_salt = salt;
                    // Matches no code until after_write sets the real one.
                    next.code_hash = vec![0u8; 32];
                    next.code_message = child_name(org.uuid(), "messages", Uuid::now_v7());
                    Ok(())
                }
            }
        })
    }
    fn after_write<'a>(
        conn: &'a AsyncPgConnection,
        w: Write<'a>,
        before: Option<&'a Row<SignatureRequestFields>>,
        after: &'a Row<SignatureRequestFields>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if before.is_some() {
                return Ok(());
            }
            send_code(conn, w, after).await
        })
    }
}

crm_resource::standard_store!(
    SignatureRequests,
    table = signature_requests,
    time = create_time,
    text = signer_name
);

fn final_error() -> ApiError {
    ApiError::FailedPrecondition {
        reason: "SIGNATURE_FINAL",
        message: "a signed (or locked) signature request cannot change; make a new one".to_owned(),
    }
}

/// Generates the one-time code of the new request `row`, stores its salted hash and sends it to
/// the signer (SMS through CheckConsent, else email). A refused send fails the request.
async fn send_code(
    conn: &AsyncPgConnection,
    w: Write<'_>,
    row: &Row<SignatureRequestFields>,
) -> Result<(), ApiError> {
    let f = &row.fields;
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    diesel::update(sr::signature_requests)
        .filter(sr::organization_id.eq(w.org))
        .filter(sr::id.eq(row.std.id))
        .set(sr::code_hash.eq(code_hash(&f.code_salt, &code)))
        .execute(&mut { conn })
        .await?;
    let doc = document(conn, w.org, &f.document)
        .await?
        .ok_or_else(|| ApiError::Internal("the document just read".into()))?;
    let (channel, address) = if f.signer_phone.is_empty() {
        (Channel::Email, f.signer_email.as_str())
    } else {
        (Channel::Sms, f.signer_phone.as_str())
    };
    let (_, message_id) = names::parse_child(&f.code_message, "messages", "code_message")?;
    let body = format!(
        "Your code to sign {}: {code}. It expires at {} UTC. Never share it.",
        f.document,
        f.expire_time.format("%Y-%m-%d %H:%M")
    );
    let sent = messages::send_to(
        conn,
        w,
        doc.customer,
        (channel, address),
        Outgoing {
            id: Some(MessageId(message_id)),
            purpose: MessagePurpose::Transactional,
            body: &body,
            attachment_uris: &[],
            consent_phone: None,
        },
    )
    .await?;
    match messages::refused(&sent) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The client address and user agent of a call.
fn evidence<T>(req: &tonic::Request<T>) -> (String, String) {
    let ip = req
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let agent = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    (ip, agent)
}

async fn sign(
    ctx: &Context,
    call: Call,
    body: SignDocumentRequest,
    (ip, agent): (String, String),
) -> Result<SignatureRequest, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<SignatureRequests>(&mut v, &body.name, "name");
    if body.code.len() != 6 || !body.code.bytes().all(|b| b.is_ascii_digit()) {
        v.push(
            "code",
            "INVALID_CODE",
            "the 6-digit code the signer received",
        );
    }
    let mut fingerprint = body.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &body.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let name = body.name.clone();
    let write = mutation::idempotent(ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &body.request_id,
            };
            let current =
                crm_resource::lock::<SignatureRequests>(conn, w.org, id, &body.name, "", "etag")
                    .await?;
            let f = &current.fields;
            if current.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "the signature request was cancelled".to_owned(),
                });
            }
            if f.status == status(SignatureStatus::Signed) {
                return Err(ApiError::FailedPrecondition {
                    reason: "ALREADY_SIGNED",
                    message: "the document is signed; a code works once".to_owned(),
                });
            }
            if f.status == status(SignatureStatus::Locked) {
                return Err(locked());
            }
            if f.expire_time <= Utc::now() {
                return Err(ApiError::FailedPrecondition {
                    reason: "CODE_EXPIRED",
                    message: "the code has expired; make a new request".to_owned(),
                });
            }
            let mut next = f.clone();
            let before = crm_resource::to_proto::<SignatureRequests>(current.clone());
            let (change, paths): (&str, &[&str]) = if code_hash(&f.code_salt, &body.code)
                == f.code_hash
            {
                let doc = document(conn, w.org, &f.document).await?;
                let doc = doc
                    .filter(|d| sha256(&d.bytes) == f.document_sha256)
                    .ok_or_else(|| ApiError::FailedPrecondition {
                        reason: "DOCUMENT_CHANGED",
                        message: "the document changed (or is gone) since the request".to_owned(),
                    })?;
                let now = Utc::now();
                next.status = status(SignatureStatus::Signed);
                next.sign_time = Some(now);
                next.signer_ip.clone_from(&ip);
                next.user_agent.clone_from(&agent);
                diesel::insert_into(sg::signatures)
                    .values((
                        sg::organization_id.eq(w.org),
                        sg::signature_request_id.eq(id),
                        sg::document.eq(&f.document),
                        sg::document_bytes.eq(&doc.bytes),
                        sg::document_sha256.eq(&f.document_sha256),
                        sg::signer_name.eq(&f.signer_name),
                        sg::signer_email.eq(&f.signer_email),
                        sg::signer_phone.eq(&f.signer_phone),
                        sg::consent_text.eq(&f.consent_text),
                        sg::consent_version.eq(&f.consent_version),
                        sg::ip_address.eq(&ip),
                        sg::user_agent.eq(&agent),
                        sg::sign_time.eq(now),
                    ))
                    .execute(&mut { conn })
                    .await?;
                if f.document.split('/').nth(2) == Some("contracts") {
                    crate::contracts::on_signed(conn, w, &f.document, now).await?;
                }
                ("signed", &["status", "signature"])
            } else {
                next.failed_attempts += 1;
                if next.failed_attempts >= MAX_ATTEMPTS {
                    next.status = status(SignatureStatus::Locked);
                }
                ("code_refused", &["failed_attempts", "status"])
            };
            let row = SignatureRequests::update(conn, w.org, id, &next, w.call.actor()).await?;
            let after = crm_resource::to_proto::<SignatureRequests>(row);
            crm_resource::emit(conn, w, change, &after, &body.name, None).await?;
            crm_resource::audit::record_change::<SignatureRequests>(
                conn,
                w.org,
                w.entry(&body.name, crm_resource::audit::Action::Custom(change)),
                Some(&before),
                &after,
                paths,
            )
            .await?;
            Ok(after)
        })
    });
    let after = ctx.commit(deadline, write).await?;
    // A wrong code is committed (the attempt counts) and answered as an error, also on replay.
    match SignatureStatus::try_from(after.status) {
        Ok(SignatureStatus::Signed) => Ok(after),
        Ok(SignatureStatus::Locked) => Err(locked()),
        Ok(SignatureStatus::Pending | SignatureStatus::Unspecified) | Err(_) => {
            Err(ApiError::FailedPrecondition {
                reason: "WRONG_CODE",
                message: format!(
                    "the code is wrong ({} of {MAX_ATTEMPTS} attempts used) for {name}",
                    after.failed_attempts
                ),
            })
        }
    }
}

fn locked() -> ApiError {
    ApiError::FailedPrecondition {
        reason: "SIGNATURE_LOCKED",
        message: format!("{MAX_ATTEMPTS} wrong codes: make a new signature request"),
    }
}

async fn verify(
    ctx: &Context,
    principal: &crm_auth::Principal,
    body: VerifySignatureRequest,
) -> Result<VerifySignatureResponse, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<SignatureRequests>(&mut v, &body.name, "name");
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(principal, org)?;
    crm_db::tenant::read(&ctx.pool, org, move |conn| {
        Box::pin(async move {
            let request = SignatureRequests::find(conn, OrgId(org), id, false)
                .await?
                .ok_or_else(|| crm_resource::not_found::<SignatureRequests>(&body.name))?;
            let stored: Option<(String, Vec<u8>, Vec<u8>)> = sg::signatures
                .filter(sg::organization_id.eq(org))
                .filter(sg::signature_request_id.eq(id))
                .select((sg::document, sg::document_bytes, sg::document_sha256))
                .first(&mut { conn })
                .await
                .optional()?;
            let document_name = request.fields.document.clone();
            let current = document(conn, OrgId(org), &document_name)
                .await?
                .map(|d| sha256(&d.bytes));
            let Some((_, bytes, recorded)) = stored else {
                return Ok(VerifySignatureResponse {
                    current_sha256: current.as_deref().map(hex).unwrap_or_default(),
                    ..VerifySignatureResponse::default()
                });
            };
            let computed = sha256(&bytes);
            let proto = crm_resource::to_proto::<SignatureRequests>(request);
            Ok(VerifySignatureResponse {
                valid: computed == recorded,
                recorded_sha256: hex(&recorded),
                computed_sha256: hex(&computed),
                current_sha256: current.as_deref().map(hex).unwrap_or_default(),
                document_unchanged: current.as_ref() == Some(&recorded),
                signature: proto.signature,
                signed: true,
            })
        })
    })
    .await
}

crm_resource::standard_service! {
    service = "crm.core.v1.SignatureRequestService",
    server = crm_proto::core_v1::signature_request_service_server::SignatureRequestService,
    resource = SignatureRequests,
    api = SignatureRequestApi,
    field = signature_request;
    create = create_signature_request(CreateSignatureRequestRequest, id = signature_request_id);
    get = get_signature_request(GetSignatureRequestRequest, full = |_| false);
    list = list_signature_requests(ListSignatureRequestsRequest, full = |_| false) -> ListSignatureRequestsResponse.signature_requests;
    update = update_signature_request(UpdateSignatureRequestRequest);
    delete = delete_signature_request(DeleteSignatureRequestRequest);
    undelete = undelete_signature_request(UndeleteSignatureRequestRequest);

    async fn sign_document(
        &self,
        req: tonic::Request<SignDocumentRequest>,
    ) -> Result<tonic::Response<SignatureRequest>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "sign_document")?;
        let evidence = evidence(&req);
        sign(&self.ctx, call, req.into_inner(), evidence).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }

    async fn verify_signature(
        &self,
        req: tonic::Request<VerifySignatureRequest>,
    ) -> Result<tonic::Response<VerifySignatureResponse>, tonic::Status> {
        let principal = crm_auth::layer::principal_of(&req)?;
        verify(&self.ctx, &principal, req.into_inner()).await.map(tonic::Response::new).map_err(|e| self.ctx.status(e))
    }
}
