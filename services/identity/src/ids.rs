//! Typed ids of identity's tables (see [`crm_db::id`]).

crm_db::typed_id!(UserId, "A user's id (`users.id`, `memberships.user_id`).");
crm_db::typed_id!(ClientId, "An API client's id (`api_clients.id`).");

impl UserId {
    /// The user a subject names (`users/{uuid}`), if it names one.
    #[must_use]
    pub fn of_subject(subject: &str) -> Option<Self> {
        subject
            .strip_prefix("users/")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .map(Self)
    }
}
