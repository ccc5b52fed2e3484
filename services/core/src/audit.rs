//! `crm.core.v1.AuditService`: core's change log ([`crm_resource::audit`]), listed and verified.

use crm_auth::{MethodPolicy, permission};

crm_resource::audit_service! {
    service = "crm.core.v1.AuditService",
    package = crm_proto::core_v1,
    api = AuditApi,
    permission = permission::CORE_AUDIT_READ,
}

/// RPC requirements.
#[must_use]
pub fn policy() -> MethodPolicy {
    AuditApi::policy()
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
