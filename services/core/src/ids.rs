//! Typed ids of core's tables (see [`crm_db::id`]) where hand-written queries take several.

crm_db::typed_id!(MessageId, "A message's id (`messages.id`).");
crm_db::typed_id!(ConversationId, "A conversation's id (`conversations.id`).");
crm_db::typed_id!(CustomerId, "A customer's id (`customers.id`).");
