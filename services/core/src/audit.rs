//! `crm.core.v1.AuditService`: core's change log ([`crm_resource::audit`]), listed and verified.

use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, permission};
use crm_platform::api::listing::Listing;
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::Violations;
use crm_proto::core_v1::audit_service_server::AuditService;
use crm_proto::core_v1::{
    AuditEntry, FieldChange, ListAuditEntriesRequest, ListAuditEntriesResponse,
    VerifyAuditChainRequest, VerifyAuditChainResponse,
};
use crm_resource::audit::{self, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::CoreState;
use crate::status;

const SERVICE: &str = "crm.core.v1.AuditService";

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    crm_resource::policy(
        SERVICE,
        &[
            ("ListAuditEntries", permission::CORE_AUDIT_READ),
            ("VerifyAuditChain", permission::CORE_AUDIT_READ),
        ],
    )
}

fn to_proto(org: Uuid, r: Row) -> AuditEntry {
    AuditEntry {
        name: format!("organizations/{org}/auditEntries/{}", r.seq),
        sequence: r.seq,
        actor_kind: i32::from(r.actor_kind),
        changes: r
            .changes()
            .into_iter()
            .map(|c| FieldChange {
                field: c.field,
                before: c.before,
                after: c.after,
            })
            .collect(),
        create_time: Some(timestamp(r.create_time)),
        hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
        actor: r.actor,
        delegate: r.delegate,
        request_id: r.request_id,
        method: r.method,
        resource: r.resource,
        action: r.action,
    }
}

/// The handlers.
#[derive(Debug, Clone)]
pub struct AuditApi {
    state: CoreState,
}

impl AuditApi {
    /// Handlers over `state`.
    #[must_use]
    pub fn new(state: CoreState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        req: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let mut v = Violations::new();
        let parsed = audit::parse_filter(&body.filter)
            .map_err(|e| v.absorb(e.into()))
            .ok()
            .flatten();
        v.finish().map_err(status)?;
        let listing = Listing::begin(
            &principal,
            &self.state.ctx.page_tokens,
            "ListAuditEntries",
            &body.parent,
            body.page_size,
            &body.page_token,
            &[&body.filter],
            100,
            crm_platform::api::listing::MAX_PAGE_SIZE,
        )
        .map_err(status)?;
        let org = listing.org;
        let after = listing.after_i64().map_err(status)?.unwrap_or(0);
        let limit = listing.limit();
        let mut rows: Vec<Row> = crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move { audit::page(conn, org, after, limit, parsed.as_ref()).await })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.state.ctx.page_tokens, &mut rows, |r| {
            vec![r.seq.to_string()]
        });
        Ok(Response::new(ListAuditEntriesResponse {
            audit_entries: rows.into_iter().map(|r| to_proto(org, r)).collect(),
            next_page_token,
        }))
    }

    async fn verify_audit_chain(
        &self,
        req: Request<VerifyAuditChainRequest>,
    ) -> Result<Response<VerifyAuditChainResponse>, Status> {
        let principal = principal_of(&req)?;
        let body = req.into_inner();
        let org =
            crm_platform::api::names::parse_organization(&body.parent, "parent").map_err(status)?;
        crm_platform::api::names::require_same_organization(&principal, org).map_err(status)?;
        let verdict = crm_db::tenant::read(&self.state.ctx.pool, org, move |conn| {
            Box::pin(async move { audit::verify(conn, org).await })
        })
        .await
        .map_err(status)?;
        let (first_bad_sequence, problem) = verdict.broken.unwrap_or_default();
        Ok(Response::new(VerifyAuditChainResponse {
            intact: problem.is_empty(),
            entries_checked: verdict.checked,
            first_bad_sequence,
            problem,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crm_proto::core_v1::ActorKind;

    #[test]
    fn the_stored_actor_kinds_are_the_contract_s_numbers() {
        for (subject, kind) in [
            ("users/1", ActorKind::User),
            ("clients/1", ActorKind::ApiClient),
            ("services/fieldops", ActorKind::Service),
            ("workflows/1", ActorKind::Workflow),
            ("operators/cli", ActorKind::Unspecified),
        ] {
            assert_eq!(
                i32::from(crm_resource::audit::actor_kind(subject)),
                kind as i32,
                "{subject}"
            );
        }
    }
}
