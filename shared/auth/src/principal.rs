//! The caller of an RPC and the permission catalog.

use uuid::Uuid;

/// Permission names, checked by [`Principal::has_permission`].
pub mod permission {
    /// Read customers.
    pub const CUSTOMERS_READ: &str = "crm.customers.read";
    /// Create and change customers.
    pub const CUSTOMERS_WRITE: &str = "crm.customers.write";
    /// Delete and undelete customers.
    pub const CUSTOMERS_DELETE: &str = "crm.customers.delete";
    /// Read the core event stream.
    pub const CORE_EVENTS_READ: &str = "crm.events.read";
    /// Read support tickets.
    pub const TICKETS_READ: &str = "crm.tickets.read";
    /// Open, change and delete support tickets.
    pub const TICKETS_WRITE: &str = "crm.tickets.write";
    /// Read inventory.
    pub const INVENTORY_READ: &str = "crm.inventory.read";
    /// Manage inventory items and adjust stock.
    pub const INVENTORY_WRITE: &str = "crm.inventory.write";
    /// Define the organization's settings in core (call dispositions).
    pub const CORE_SETTINGS_WRITE: &str = "crm.settings.write";
    /// Read integration sync logs.
    pub const SYNC_READ: &str = "crm.sync.read";
    /// Record integration sync runs.
    pub const SYNC_WRITE: &str = "crm.sync.write";
    /// Read properties' access details (gate codes): the FULL property view.
    pub const PROPERTY_ACCESS_READ: &str = "crm.properties.access";
    /// Read core's audit log.
    pub const CORE_AUDIT_READ: &str = "crm.audit.read";
    /// Read conversations and messages.
    pub const MESSAGES_READ: &str = "crm.messages.read";
    /// Send messages and record inbound ones and delivery reports.
    pub const MESSAGES_SEND: &str = "crm.messages.send";
    /// Read SMS consent and its history.
    pub const CONSENT_READ: &str = "crm.consent.read";
    /// Grant and revoke SMS consent.
    pub const CONSENT_WRITE: &str = "crm.consent.write";
    /// Read and verify the organization's authentication audit log.
    pub const AUDIT_READ: &str = "identity.audit.read";
    /// List the organization's members.
    pub const MEMBERS_READ: &str = "identity.members.read";
    /// Add members and change their roles and status.
    pub const MEMBERS_WRITE: &str = "identity.members.write";
    /// List and revoke anyone's sessions in the organization.
    pub const SESSIONS_MANAGE: &str = "identity.sessions.manage";
    /// Create, rotate and delete API clients.
    pub const CLIENTS_MANAGE: &str = "identity.clients.manage";
    /// Store, list and delete integration credentials.
    pub const CREDENTIALS_MANAGE: &str = "identity.credentials.manage";
    /// Decrypt integration credentials (services that call the providers).
    pub const CREDENTIALS_USE: &str = "identity.credentials.use";
    /// Change the organization.
    pub const ORGANIZATION_WRITE: &str = "identity.organization.write";
    /// Exchange a person's token for a delegated one (services acting for people).
    pub const TOKENS_DELEGATE: &str = "identity.tokens.delegate";
    /// Prepare, send and settle quotes.
    pub const QUOTES_WRITE: &str = "crm.quotes.write";
    /// Send documents for e-signature and sign them with the signer's one-time code.
    pub const SIGNATURES_WRITE: &str = "crm.signatures.write";
    /// Make maintenance contracts and their templates.
    pub const CONTRACTS_WRITE: &str = "crm.contracts.write";
    /// Read marketing templates, campaigns, workflows and enrollments.
    pub const MARKETING_READ: &str = "marketing.campaigns.read";
    /// Manage marketing templates, campaigns, workflows and enrollments.
    pub const MARKETING_WRITE: &str = "marketing.campaigns.write";
    /// Read invoices and payments.
    pub const BILLING_READ: &str = "billing.invoices.read";
    /// Draft, issue and void invoices.
    pub const BILLING_WRITE: &str = "billing.invoices.write";
    /// Record payments and refunds.
    pub const PAYMENTS_WRITE: &str = "billing.payments.write";
    /// Read work orders (a technician-only principal: only those assigned to them).
    pub const WORK_ORDERS_READ: &str = "fieldops.workorders.read";
    /// Create, schedule, assign, change and delete work orders.
    pub const WORK_ORDERS_WRITE: &str = "fieldops.workorders.write";
    /// Move work orders through their states (as the transition table allows the role).
    pub const WORK_ORDERS_TRANSITION: &str = "fieldops.workorders.transition";
    /// Read technicians, trucks, shifts and time off.
    pub const TECHNICIANS_READ: &str = "fieldops.technicians.read";
    /// Manage technicians, trucks, shifts and time off.
    pub const TECHNICIANS_WRITE: &str = "fieldops.technicians.write";
    /// Read licenses, certifications, inspections, disposal facilities and manifests.
    pub const COMPLIANCE_READ: &str = "fieldops.compliance.read";
    /// Manage licenses, certifications, inspections and disposal facilities.
    pub const COMPLIANCE_WRITE: &str = "fieldops.compliance.write";
    /// Record waste manifests (pickups, disposals, corrections).
    pub const MANIFESTS_WRITE: &str = "fieldops.manifests.write";
    /// Read the field operations event stream.
    pub const FIELDOPS_EVENTS_READ: &str = "fieldops.events.read";
    /// Read field operations' audit log.
    pub const FIELDOPS_AUDIT_READ: &str = "fieldops.audit.read";
    /// Change the organization's field operations settings (the emergency buffer).
    pub const FIELDOPS_SETTINGS_WRITE: &str = "fieldops.settings.write";
}

/// Permissions that `org.admin`'s `*` does not include: they belong to services.
const SERVICE_ONLY: &[&str] = &[permission::CREDENTIALS_USE, permission::TOKENS_DELEGATE];

/// Which permissions each catalog role grants. `org.admin` grants everything else.
const ROLE_CATALOG: &[(&str, &[&str])] = &[
    // Everything of the organization, except decrypting integration credentials: that is for the
    // services that call the providers (`service.integrations`).
    ("org.admin", &["*"]),
    (
        "crm.sales",
        &[
            permission::QUOTES_WRITE,
            permission::SIGNATURES_WRITE,
            permission::CONTRACTS_WRITE,
            permission::CUSTOMERS_READ,
            permission::CUSTOMERS_WRITE,
            permission::CUSTOMERS_DELETE,
            permission::MESSAGES_READ,
            permission::MESSAGES_SEND,
            permission::CONSENT_READ,
            permission::CONSENT_WRITE,
            permission::TICKETS_READ,
            permission::INVENTORY_READ,
            permission::PROPERTY_ACCESS_READ,
        ],
    ),
    (
        "crm.support",
        &[
            permission::CUSTOMERS_READ,
            permission::CUSTOMERS_WRITE,
            permission::MESSAGES_READ,
            permission::MESSAGES_SEND,
            permission::CONSENT_READ,
            permission::CONSENT_WRITE,
            permission::TICKETS_READ,
            permission::TICKETS_WRITE,
            permission::INVENTORY_READ,
            permission::PROPERTY_ACCESS_READ,
        ],
    ),
    (
        "marketing.manager",
        &[
            permission::MARKETING_READ,
            permission::MARKETING_WRITE,
            permission::CUSTOMERS_READ,
            permission::MESSAGES_READ,
            permission::CONSENT_READ,
        ],
    ),
    (
        "crm.viewer",
        &[
            permission::CUSTOMERS_READ,
            permission::MESSAGES_READ,
            permission::CONSENT_READ,
            permission::TICKETS_READ,
            permission::INVENTORY_READ,
        ],
    ),
    (
        // Plans the work: everything of field operations but its settings, and what checking a
        // work order's customer, property and technician needs in core and identity.
        "fieldops.dispatcher",
        &[
            permission::WORK_ORDERS_READ,
            permission::WORK_ORDERS_WRITE,
            permission::WORK_ORDERS_TRANSITION,
            permission::TECHNICIANS_READ,
            permission::TECHNICIANS_WRITE,
            permission::COMPLIANCE_READ,
            permission::COMPLIANCE_WRITE,
            permission::MANIFESTS_WRITE,
            permission::FIELDOPS_EVENTS_READ,
            permission::CUSTOMERS_READ,
            permission::PROPERTY_ACCESS_READ,
            permission::MEMBERS_READ,
        ],
    ),
    (
        // Does the work: sees and moves only the work orders assigned to them.
        "fieldops.technician",
        &[
            permission::WORK_ORDERS_READ,
            permission::WORK_ORDERS_TRANSITION,
            permission::TECHNICIANS_READ,
            permission::COMPLIANCE_READ,
            permission::MANIFESTS_WRITE,
            permission::CUSTOMERS_READ,
            permission::PROPERTY_ACCESS_READ,
        ],
    ),
    (
        "fieldops.viewer",
        &[
            permission::WORK_ORDERS_READ,
            permission::TECHNICIANS_READ,
            permission::COMPLIANCE_READ,
            permission::CUSTOMERS_READ,
        ],
    ),
    (
        // Bills customers and takes their payments.
        "billing.clerk",
        &[
            permission::CUSTOMERS_READ,
            permission::WORK_ORDERS_READ,
            permission::BILLING_READ,
            permission::BILLING_WRITE,
            permission::PAYMENTS_WRITE,
        ],
    ),
    ("analytics.viewer", &[permission::CUSTOMERS_READ]),
    (
        "service.integrations",
        &[
            permission::CREDENTIALS_USE,
            permission::SYNC_READ,
            permission::SYNC_WRITE,
        ],
    ),
    ("service.delegate", &[permission::TOKENS_DELEGATE]),
    (
        "service.reader",
        &[permission::CUSTOMERS_READ, permission::CORE_EVENTS_READ],
    ),
];

/// Every role of the catalog.
#[must_use]
pub fn catalog_roles() -> Vec<&'static str> {
    ROLE_CATALOG.iter().map(|(r, _)| *r).collect()
}

/// Whether `role` is a service role (`service.*`): held by the suite's own services and by
/// clients an operator registers, never granted through an organization's API.
#[must_use]
pub fn is_service_role(role: &str) -> bool {
    role.starts_with("service.")
}

/// Whether `role` grants `permission`.
#[must_use]
pub fn role_grants(role: &str, permission: &str) -> bool {
    ROLE_CATALOG
        .iter()
        .filter(|(r, _)| *r == role)
        .any(|(_, perms)| {
            perms
                .iter()
                .any(|p| *p == permission || (*p == "*" && !SERVICE_ONLY.contains(&permission)))
        })
}

/// An authenticated caller, as proven by a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `users/{id}`, `clients/{id}` or `services/{name}`.
    pub subject: String,
    /// The one organization the token is for.
    pub organization: Uuid,
    /// Roles in that organization.
    pub roles: Vec<String>,
    /// OAuth scopes granted.
    pub scopes: Vec<String>,
    /// OAuth client the token was issued to.
    pub client_id: String,
    /// Session id (`sid`) for user tokens.
    pub session_id: Option<String>,
    /// Token id (`jti`).
    pub token_id: String,
    /// Issued-at, seconds since the epoch.
    pub issued_at: i64,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    /// For delegated tokens, who acts for the subject (`act.sub`).
    pub actor: Option<String>,
    /// `aud` of the token: the suite's audience, or narrowed to services (`crm.core`).
    pub audiences: Vec<String>,
}

impl Principal {
    /// `organizations/{organization}`.
    #[must_use]
    pub fn organization_name(&self) -> String {
        format!("organizations/{}", self.organization)
    }

    /// Whether the token may be used with the service of method `path` (`/crm.core.v1.X/Y`):
    /// tokens for the whole suite may; a token narrowed to services only with those.
    #[must_use]
    pub fn may_call(&self, suite_audience: &str, path: &str) -> bool {
        if self.audiences.iter().any(|a| a == suite_audience) {
            return true;
        }
        // `/crm.core.v1.CustomerService/Get` → `crm.core`.
        let package = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let mut parts = package.split('.');
        let service_audience = match (parts.next(), parts.next()) {
            (Some(root), Some(service)) => format!("{root}.{service}"),
            _ => return false,
        };
        self.audiences.contains(&service_audience)
    }

    /// Whether any of the principal's roles grants `permission`.
    #[must_use]
    pub fn has_permission(&self, permission: &str) -> bool {
        self.roles.iter().any(|r| role_grants(r, permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog() {
        assert!(role_grants("org.admin", permission::CUSTOMERS_DELETE));
        assert!(role_grants("crm.viewer", permission::CUSTOMERS_READ));
        assert!(!role_grants("crm.viewer", permission::CUSTOMERS_WRITE));
        assert!(!role_grants("crm.support", permission::CUSTOMERS_DELETE));
        assert!(!role_grants("no.such.role", permission::CUSTOMERS_READ));
        assert!(role_grants("org.admin", permission::CREDENTIALS_MANAGE));
        assert!(
            !role_grants("org.admin", permission::CREDENTIALS_USE),
            "admins manage credentials but cannot read them"
        );
        assert!(role_grants(
            "service.integrations",
            permission::CREDENTIALS_USE
        ));
    }
}
