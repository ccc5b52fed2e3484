//! List (AIP-132) for standard resources: one order field with the id as tie-breaker, keyset
//! pages, an AIP-160 filter over each resource's allow-list, soft-deleted rows on request.

use chrono::{DateTime, Utc};
use crm_auth::Principal;
use crm_db::filter::Filter;
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::validate::Violations;
use uuid::Uuid;

use super::Store;
use crate::Context;

/// The orders a List supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    /// The resource's time order field: `create_time` (the default), or e.g. `occur_time`.
    CreateTime,
    /// `update_time`.
    UpdateTime,
    /// The resource's text order field (`display_name`, or e.g. `subject`).
    DisplayName,
}

/// A List order: one field, ascending or descending, with `id` as the tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Field.
    pub field: OrderField,
    /// Descending.
    pub desc: bool,
}

impl Order {
    /// Parses `order_by` (`field` or `field desc`/`field asc`); `text` names the resource's
    /// text order field.
    ///
    /// # Errors
    /// A message for the `order_by` violation.
    pub fn parse(
        order_by: &str,
        time: &str,
        text: &str,
        default_desc: bool,
    ) -> Result<Self, String> {
        let mut words = order_by.split_whitespace();
        let field = match words.next() {
            None => OrderField::CreateTime,
            Some(t) if t == time => OrderField::CreateTime,
            Some("update_time") => OrderField::UpdateTime,
            Some(t) if t == text => OrderField::DisplayName,
            Some(other) => {
                return Err(format!(
                    "cannot order by {other:?}; use {time}, update_time or {text}"
                ));
            }
        };
        let desc = match (words.next(), words.next()) {
            (None, None) if order_by.trim().is_empty() => default_desc,
            (None | Some("asc"), None) => false,
            (Some("desc"), None) => true,
            _ => {
                return Err(
                    "order_by takes one field, optionally followed by asc or desc".to_owned(),
                );
            }
        };
        Ok(Self { field, desc })
    }

    /// The page-token key of a row with this order `value` and `id`.
    #[must_use]
    pub fn key(value: String, id: Uuid) -> Vec<String> {
        vec![value, id.to_string()]
    }
}

/// Where a page starts: after the row with this order value and id.
#[derive(Debug, Clone)]
pub enum After {
    /// A time-ordered key.
    Time(DateTime<Utc>, Uuid),
    /// A text-ordered key.
    Text(String, Uuid),
}

impl After {
    /// Decodes a page-token key for `order`; `None` if it does not fit (a forged or stale token).
    #[must_use]
    pub fn decode(order: Order, key: &[String]) -> Option<Self> {
        let [value, id] = key else { return None };
        let id = Uuid::parse_str(id).ok()?;
        match order.field {
            OrderField::CreateTime | OrderField::UpdateTime => DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| Self::Time(t.with_timezone(&Utc), id)),
            OrderField::DisplayName => Some(Self::Text(value.clone(), id)),
        }
    }
}

/// One List query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Order.
    pub order: Order,
    /// Position.
    pub after: Option<After>,
    /// Rows to fetch.
    pub limit: i64,
    /// Include soft-deleted rows.
    pub show_deleted: bool,
    /// Parsed filter.
    pub filter: Option<Filter>,
}

/// The fields of a standard List request.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    /// `organizations/{org}`.
    pub parent: &'a str,
    /// Page size.
    pub page_size: i32,
    /// Page token.
    pub page_token: &'a str,
    /// AIP-160 filter.
    pub filter: &'a str,
    /// Order.
    pub order_by: &'a str,
    /// Include soft-deleted.
    pub show_deleted: bool,
}

/// Lists one page; returns the resources and the next page token.
///
/// # Errors
/// INVALID_ARGUMENT for a bad parent, page size, filter, order or token; PERMISSION_DENIED for
/// another organization.
pub async fn list<R: Store>(
    ctx: &Context,
    principal: &Principal,
    req: ListRequest<'_>,
    full: bool,
) -> Result<(Vec<R::Proto>, String), ApiError> {
    super::require_full_view::<R>(principal, full)?;
    let mut v = Violations::new();
    let order = Order::parse(req.order_by, R::TIME_ORDER, R::TEXT_ORDER, R::DEFAULT_DESC)
        .map_err(|m| v.push("order_by", "INVALID_ORDER_BY", m))
        .ok();
    let filter = crm_db::filter::parse(req.filter)
        .and_then(|f| {
            if let Some(f) = &f {
                R::check_filter(f)?;
            }
            Ok(f)
        })
        .map_err(|e| v.absorb(e.into()))
        .ok();
    v.finish()?;
    let (Some(order), Some(filter)) = (order, filter) else {
        return Err(ApiError::Internal("list parsed without violation".into()));
    };
    let deleted = if req.show_deleted { "deleted" } else { "live" };
    let listing = Listing::begin(
        principal,
        &ctx.page_tokens,
        R::COLLECTION,
        req.parent,
        req.page_size,
        req.page_token,
        &[req.filter, req.order_by, deleted],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    let after = match &listing.after {
        None => None,
        Some(key) => Some(After::decode(order, key).ok_or_else(|| {
            ApiError::invalid(
                "page_token",
                "INVALID_PAGE_TOKEN",
                "page_token is malformed",
            )
        })?),
    };
    let scope = R::scope(principal);
    let filter = match (filter, scope.as_ref().map(|s| s.filter.clone())) {
        (Some(f), Some(s)) => Some(Filter::And(vec![f, s])),
        (f, s) => f.or(s),
    };
    let query = ListQuery {
        order,
        after,
        limit: listing.limit(),
        show_deleted: req.show_deleted,
        filter,
    };
    let org = listing.org;
    let viewer = scope.map(|s| s.viewer);
    let mut rows = crm_db::tenant::read_as(&ctx.pool, org, viewer, move |conn| {
        Box::pin(async move { R::list(conn, crm_db::OrgId(org), &query).await })
    })
    .await?;
    let next = listing.finish(&ctx.page_tokens, &mut rows, |r| {
        super::sort_key::<R>(r, order.field)
    });
    let items = rows
        .into_iter()
        .map(|r| {
            let mut p = super::to_proto::<R>(r);
            if !full {
                super::redact::<R>(&mut p);
            }
            p
        })
        .collect();
    Ok((items, next))
}

/// The keyset condition and order of a List over a table with the standard columns.
#[macro_export]
macro_rules! keyset_page {
    ($query:expr, $table:ident, $time:ident, $text:ident, $q:expr) => {{
        use $crate::{After, OrderField};
        use $table::dsl as t;
        let mut query = $query;
        let desc = $q.order.desc;
        query = match (&$q.after, desc) {
            (None, _) => query,
            (Some(After::Time(at, id)), false) => match $q.order.field {
                OrderField::UpdateTime => query.filter(
                    t::update_time
                        .gt(*at)
                        .or(t::update_time.eq(*at).and(t::id.gt(*id))),
                ),
                OrderField::CreateTime | OrderField::DisplayName => {
                    query.filter(t::$time.gt(*at).or(t::$time.eq(*at).and(t::id.gt(*id))))
                }
            },
            (Some(After::Time(at, id)), true) => match $q.order.field {
                OrderField::UpdateTime => query.filter(
                    t::update_time
                        .lt(*at)
                        .or(t::update_time.eq(*at).and(t::id.lt(*id))),
                ),
                OrderField::CreateTime | OrderField::DisplayName => {
                    query.filter(t::$time.lt(*at).or(t::$time.eq(*at).and(t::id.lt(*id))))
                }
            },
            (Some(After::Text(s, id)), false) => query.filter(
                t::$text
                    .gt(s.clone())
                    .or(t::$text.eq(s.clone()).and(t::id.gt(*id))),
            ),
            (Some(After::Text(s, id)), true) => query.filter(
                t::$text
                    .lt(s.clone())
                    .or(t::$text.eq(s.clone()).and(t::id.lt(*id))),
            ),
        };
        match ($q.order.field, desc) {
            (OrderField::CreateTime, false) => {
                query.order_by(t::$time.asc()).then_order_by(t::id.asc())
            }
            (OrderField::CreateTime, true) => {
                query.order_by(t::$time.desc()).then_order_by(t::id.desc())
            }
            (OrderField::UpdateTime, false) => query
                .order_by(t::update_time.asc())
                .then_order_by(t::id.asc()),
            (OrderField::UpdateTime, true) => query
                .order_by(t::update_time.desc())
                .then_order_by(t::id.desc()),
            (OrderField::DisplayName, false) => {
                query.order_by(t::$text.asc()).then_order_by(t::id.asc())
            }
            (OrderField::DisplayName, true) => {
                query.order_by(t::$text.desc()).then_order_by(t::id.desc())
            }
        }
    }};
}
