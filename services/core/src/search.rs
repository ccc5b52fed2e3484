//! Full-text search over messages and customers: stored generated `tsvector` columns with GIN
//! indexes, the query through `websearch_to_tsquery` with bound parameters (any text is valid
//! syntax; NUL, which text values cannot hold, is replaced), ranked by `ts_rank_cd`, keyset
//! pages on (rank, id), confined to the tenant by the predicate and by RLS.

use crm_auth::Principal;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::validate::Violations;
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Float4, Nullable, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::CoreState;
use crate::customers::CustomerFields;
use crate::messages::MessageRow;

const MAX_QUERY_CHARS: usize = 500;
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// A searchable kind of row: its query and its keyset.
pub trait Hit: QueryableByName<Pg> + Send + 'static {
    /// The query: binds the organization ($1), the words ($2), the last rank and id of the
    /// previous page ($3, $4, NULL on the first) and the row limit ($5); returns the row's
    /// columns and `rank`, best first.
    const SQL: &'static str;
    /// The search RPC, binding page tokens to it.
    const METHOD: &'static str;
    /// Relevance.
    fn rank(&self) -> f32;
    /// The row's id (the tie-breaker).
    fn id(&self) -> Uuid;
}

/// A message and its rank.
#[derive(QueryableByName)]
pub struct MessageHit {
    /// The message.
    #[diesel(embed)]
    pub message: MessageRow,
    /// Relevance.
    #[diesel(sql_type = Float4)]
    pub rank: f32,
}

impl Hit for MessageHit {
    const METHOD: &'static str = "SearchMessages";
    const SQL: &'static str = "SELECT * FROM (\
           SELECT m.*, ts_rank_cd(m.search, q) AS rank \
             FROM messages m, websearch_to_tsquery('english', $2) q \
            WHERE m.organization_id = $1 AND m.search @@ q\
         ) hits \
         WHERE $3::real IS NULL OR (rank, id) < ($3::real, $4::uuid) \
         ORDER BY rank DESC, id DESC LIMIT $5";
    fn rank(&self) -> f32 {
        self.rank
    }
    fn id(&self) -> Uuid {
        self.message.id.uuid()
    }
}

/// A customer and its rank.
#[derive(QueryableByName)]
pub struct CustomerHit {
    /// The customer's standard columns.
    #[diesel(embed)]
    pub std: crm_resource::Standard,
    /// The customer's own columns.
    #[diesel(embed)]
    pub customer: CustomerFields,
    /// Relevance.
    #[diesel(sql_type = Float4)]
    pub rank: f32,
}

impl Hit for CustomerHit {
    const METHOD: &'static str = "SearchCustomers";
    // Names are matched without stemming ('simple'), notes with it ('english').
    const SQL: &'static str = "SELECT * FROM (\
           SELECT c.*, ts_rank_cd(c.search, t.q) AS rank \
             FROM customers c, \
                  (SELECT websearch_to_tsquery('simple', $2) \
                          || websearch_to_tsquery('english', $2) AS q) t \
            WHERE c.organization_id = $1 AND c.delete_time IS NULL \
              AND c.search @@ t.q\
         ) hits \
         WHERE $3::real IS NULL OR (rank, id) < ($3::real, $4::uuid) \
         ORDER BY rank DESC, id DESC LIMIT $5";
    fn rank(&self) -> f32 {
        self.rank
    }
    fn id(&self) -> Uuid {
        self.std.id
    }
}

/// The fields of a search request.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    parent: &'a str,
    query: &'a str,
    page_size: i32,
    page_token: &'a str,
}

impl<'a> Page<'a> {
    /// A search of `parent` for `query`.
    #[must_use]
    pub fn of(parent: &'a str, query: &'a str, page_size: i32, page_token: &'a str) -> Self {
        Self {
            parent,
            query,
            page_size,
            page_token,
        }
    }
}

fn malformed() -> ApiError {
    ApiError::invalid(
        "page_token",
        "INVALID_PAGE_TOKEN",
        "page_token is malformed",
    )
}

/// One page of hits, best first, and the next page token.
///
/// # Errors
/// INVALID_ARGUMENT for an empty or too long query, a bad parent, size or token;
/// PERMISSION_DENIED for another organization.
pub async fn page<H: Hit>(
    state: &CoreState,
    principal: &Principal,
    req: Page<'_>,
) -> Result<(Vec<H>, String), ApiError> {
    let mut v = Violations::new();
    if req.query.trim().is_empty() {
        v.push("query", "REQUIRED", "words to search for are required");
    } else if req.query.chars().count() > MAX_QUERY_CHARS {
        v.push("query", "TOO_LONG", "at most 500 characters");
    }
    v.finish()?;
    let listing = Listing::begin(
        principal,
        &state.ctx.page_tokens,
        H::METHOD,
        req.parent,
        req.page_size,
        req.page_token,
        &[req.query],
        DEFAULT_PAGE,
        MAX_PAGE,
    )?;
    let (after_rank, after_id) = match listing.after.as_deref() {
        None => (None, None),
        Some([rank, id]) => (
            Some(rank.parse::<f32>().map_err(|_| malformed())?),
            Some(Uuid::parse_str(id).map_err(|_| malformed())?),
        ),
        Some(_) => return Err(malformed()),
    };
    let org = listing.org;
    let limit = listing.limit();
    let words = req.query.replace('\0', " ");
    let mut hits: Vec<H> = crm_db::tenant::read(&state.ctx.pool, org, move |conn| {
        Box::pin(async move {
            diesel::sql_query(H::SQL)
                .bind::<SqlUuid, _>(org)
                .bind::<Text, _>(words)
                .bind::<Nullable<Float4>, _>(after_rank)
                .bind::<Nullable<SqlUuid>, _>(after_id)
                .bind::<BigInt, _>(limit)
                .load(&mut { conn })
                .await
                .map_err(ApiError::from)
        })
    })
    .await?;
    let next = listing.finish(&state.ctx.page_tokens, &mut hits, |h| {
        vec![h.rank().to_string(), h.id().to_string()]
    });
    Ok((hits, next))
}
