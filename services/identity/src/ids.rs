//! Typed ids of identity's tables (see [`crm_db::id`]).

crm_db::typed_id!(UserId, "A user's id (`users.id`, `memberships.user_id`).");
crm_db::typed_id!(ClientId, "An API client's id (`api_clients.id`).");
