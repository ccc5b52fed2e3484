//! The services fieldops checks references with: identity (members) and core (customers,
//! properties, equipment). Every call carries the caller's credentials, trace context, request
//! id and remaining deadline, so the callee applies the caller's own permissions and tenancy;
//! fieldops never reads another service's schema.

use crm_platform::ApiError;
use crm_platform::api::names::child_name;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::equipment_service_client::EquipmentServiceClient;
use crm_proto::core_v1::property_service_client::PropertyServiceClient;
use crm_proto::core_v1::{GetCustomerRequest, GetEquipmentRequest, GetPropertyRequest};
use crm_proto::identity_v1::member_service_client::MemberServiceClient;
use crm_proto::identity_v1::{GetMemberRequest, MemberStatus};
use crm_resource::Call;
use tonic::Status;
use tonic::transport::Channel;
use uuid::Uuid;

/// Channels to the services fieldops calls.
#[derive(Debug, Clone)]
pub struct Peers {
    /// CRM core.
    pub core: Channel,
    /// Identity.
    pub identity: Channel,
}

impl Peers {
    /// Lazily connecting channels to `core_url` and `identity_url`.
    ///
    /// # Errors
    /// A URL that is not a valid endpoint.
    pub fn connect_lazy(
        core_url: &str,
        identity_url: &str,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            core: crm_platform::client::channel(core_url)?,
            identity: crm_platform::client::channel(identity_url)?,
        })
    }

    /// Fails unless `users/{user}` is an active member of `org`, asked of identity.
    ///
    /// # Errors
    /// FAILED_PRECONDITION `MEMBER_NOT_FOUND` / `MEMBER_NOT_ACTIVE`; what identity answered for
    /// the caller (PERMISSION_DENIED, UNAUTHENTICATED); UNAVAILABLE when identity cannot be reached.
    pub async fn require_active_member(
        &self,
        call: &Call,
        org: Uuid,
        user: Uuid,
    ) -> Result<(), ApiError> {
        let name = format!("organizations/{org}/members/{user}");
        let mut req = tonic::Request::new(GetMemberRequest { name: name.clone() });
        call.outbound.apply(&mut req);
        let member = MemberServiceClient::new(self.identity.clone())
            .get_member(req)
            .await
            .map_err(|s| remote_error("identity", &format!("users/{user}"), &s))?
            .into_inner();
        if member.status == MemberStatus::Active as i32 {
            Ok(())
        } else {
            Err(ApiError::FailedPrecondition {
                reason: "MEMBER_NOT_ACTIVE",
                message: format!("users/{user} is not an active member of the organization"),
            })
        }
    }
}

/// What a work order names in core.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// The organization.
    pub org: Uuid,
    /// The customer.
    pub customer: Uuid,
    /// The customer's property.
    pub property: Uuid,
    /// Equipment at the property, if any.
    pub equipment: Option<Uuid>,
}

fn deleted(name: &str) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "REFERENCE_DELETED",
        message: format!("{name} is deleted"),
    }
}

impl Peers {
    /// Fails unless the customer, its property and the equipment (at that property) exist in
    /// core and are not deleted, asked with the caller's credentials (customer and property at
    /// once, then the equipment).
    ///
    /// # Errors
    /// FAILED_PRECONDITION `REFERENCE_NOT_FOUND`, `REFERENCE_DELETED`, `PROPERTY_OF_ANOTHER_CUSTOMER`,
    /// `EQUIPMENT_AT_ANOTHER_PROPERTY`; what core answered for the caller; UNAVAILABLE when core
    /// cannot be reached.
    pub async fn require_site(&self, call: &Call, site: Site) -> Result<(), ApiError> {
        let customer = child_name(site.org, "customers", site.customer);
        let property = child_name(site.org, "properties", site.property);
        let mut customer_req = tonic::Request::new(GetCustomerRequest {
            name: customer.clone(),
        });
        call.outbound.apply(&mut customer_req);
        let mut property_req = tonic::Request::new(GetPropertyRequest {
            name: property.clone(),
            ..GetPropertyRequest::default()
        });
        call.outbound.apply(&mut property_req);
        let mut customers = CustomerServiceClient::new(self.core.clone());
        let mut properties = PropertyServiceClient::new(self.core.clone());
        let (c, p) = futures_util::future::join(
            customers.get_customer(customer_req),
            properties.get_property(property_req),
        )
        .await;
        let c = c
            .map_err(|s| remote_error("core", &customer, &s))?
            .into_inner();
        let p = p
            .map_err(|s| remote_error("core", &property, &s))?
            .into_inner();
        if c.delete_time.is_some() {
            return Err(deleted(&customer));
        }
        if p.delete_time.is_some() {
            return Err(deleted(&property));
        }
        if p.customer != customer {
            return Err(ApiError::FailedPrecondition {
                reason: "PROPERTY_OF_ANOTHER_CUSTOMER",
                message: format!("{property} belongs to {}, not {customer}", p.customer),
            });
        }
        if let Some(equipment) = site.equipment {
            let name = child_name(site.org, "equipment", equipment);
            let mut req = tonic::Request::new(GetEquipmentRequest { name: name.clone() });
            call.outbound.apply(&mut req);
            let e = EquipmentServiceClient::new(self.core.clone())
                .get_equipment(req)
                .await
                .map_err(|s| remote_error("core", &name, &s))?
                .into_inner();
            if e.delete_time.is_some() {
                return Err(deleted(&name));
            }
            if e.property != property {
                return Err(ApiError::FailedPrecondition {
                    reason: "EQUIPMENT_AT_ANOTHER_PROPERTY",
                    message: format!("{name} is at {}, not {property}", e.property),
                });
            }
        }
        Ok(())
    }
}

impl Peers {
    /// The zone of `property` in core (empty when it has none), asked with the caller's
    /// credentials.
    ///
    /// # Errors
    /// As [`Peers::require_site`].
    pub async fn property_zone(
        &self,
        call: &Call,
        org: Uuid,
        property: Uuid,
    ) -> Result<String, ApiError> {
        let name = child_name(org, "properties", property);
        let mut req = tonic::Request::new(GetPropertyRequest {
            name: name.clone(),
            ..GetPropertyRequest::default()
        });
        call.outbound.apply(&mut req);
        let p = PropertyServiceClient::new(self.core.clone())
            .get_property(req)
            .await
            .map_err(|s| remote_error("core", &name, &s))?
            .into_inner();
        if p.delete_time.is_some() {
            return Err(deleted(&name));
        }
        Ok(p.zone)
    }
}

/// What a refusal by `service` (`core` or `identity`) about `reference` means for the write
/// that named it (see [`crm_platform::client::remote_error`]).
#[must_use]
pub fn remote_error(service: &'static str, reference: &str, s: &Status) -> ApiError {
    let unavailable = if service == "core" {
        "CORE_UNAVAILABLE"
    } else {
        "IDENTITY_UNAVAILABLE"
    };
    crm_platform::client::remote_error(service, unavailable, reference, s)
}
