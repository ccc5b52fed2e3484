//! Request helpers every handler uses: resource names, field masks, field validation,
//! idempotency keys.

pub mod listing;
pub mod mask;
pub mod names;
pub mod time;
pub mod validate;
