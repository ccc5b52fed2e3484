//! The services fieldops checks references with: identity (members) and core (customers,
//! properties, equipment). Every call carries the caller's credentials, trace context, request
//! id and remaining deadline, so the callee applies the caller's own permissions and tenancy;
//! fieldops never reads another service's schema.

use crm_platform::ApiError;
use crm_proto::identity_v1::member_service_client::MemberServiceClient;
use crm_proto::identity_v1::{GetMemberRequest, MemberStatus};
use crm_resource::Call;
use tonic::transport::Channel;
use tonic::{Code, Status};
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

/// What a refusal by `service` about `reference` means for the write that named it.
#[must_use]
pub fn remote_error(service: &'static str, reference: &str, s: &Status) -> ApiError {
    match s.code() {
        Code::NotFound => ApiError::FailedPrecondition {
            reason: "REFERENCE_NOT_FOUND",
            message: format!("{reference} does not exist"),
        },
        Code::PermissionDenied => ApiError::PermissionDenied {
            reason: "REFERENCE_NOT_READABLE",
            message: format!("the caller may not read {reference} in {service}"),
        },
        Code::Unauthenticated => ApiError::Unauthenticated {
            reason: "REMOTE_UNAUTHENTICATED",
            message: format!("{service} did not accept the caller's credentials"),
        },
        Code::InvalidArgument => ApiError::FailedPrecondition {
            reason: "REFERENCE_INVALID",
            message: format!(
                "{service} refused the reference {reference}: {}",
                s.message()
            ),
        },
        Code::DeadlineExceeded | Code::Cancelled => ApiError::DeadlineExceeded,
        Code::Unavailable | Code::Unknown | Code::ResourceExhausted | Code::Aborted => {
            tracing::warn!(%service, code = ?s.code(), message = s.message(), "peer unavailable");
            ApiError::Unavailable {
                reason: if service == "core" {
                    "CORE_UNAVAILABLE"
                } else {
                    "IDENTITY_UNAVAILABLE"
                },
            }
        }
        Code::Ok
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => ApiError::Internal(format!(
            "{service} answered {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}
