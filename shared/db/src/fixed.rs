//! Statements whose SQL text never changes but which diesel will not keep prepared.
//!
//! diesel marks every UPDATE, every `ON CONFLICT DO UPDATE`, every insert of an optional column
//! and all raw SQL as unsafe to cache, because such statements *can* change shape from one
//! execution to the next; diesel-async then prepares them afresh at every execution, which costs
//! a round trip (Parse/Describe and its answer) and a parse and plan in PostgreSQL each time.
//! [`FixedSql`] wraps a statement whose text is the same at every execution and lets it be
//! cached by that text, like any other prepared statement of the connection.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

/// A statement cached by its SQL text: prepared once per connection for each text. Caching by
/// text is always correct; it is for statements with one text (or a handful, such as an insert
/// whose few optional columns may be left to their defaults), never for SQL that varies with
/// input (lists of values, changesets built from field masks).
#[derive(Debug, Clone, Copy)]
pub struct FixedSql<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for FixedSql<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for FixedSql<Q> {
    type QueryId = ();
    // Cached by its SQL text, not by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for FixedSql<Q> {
    type SqlType = Q::SqlType;
}
