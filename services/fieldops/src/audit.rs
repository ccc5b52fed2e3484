//! `crm.fieldops.v1.AuditService`: fieldops' change log ([`crm_resource::audit`]), listed and
//! verified.

use crm_auth::{MethodPolicy, permission};

crm_resource::audit_service! {
    service = "crm.fieldops.v1.AuditService",
    package = crm_proto::fieldops_v1,
    api = AuditApi,
    permission = permission::FIELDOPS_AUDIT_READ,
}

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    AuditApi::policy()
}
