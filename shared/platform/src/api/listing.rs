//! The scaffolding every List handler shares: the parent's organization checked against the
//! caller, AIP-158 page sizes, the page token bound to the query, and the next token.

use crm_auth::Principal;
use crm_db::page::{self, PageTokens};
use uuid::Uuid;

use crate::api::names;
use crate::api::validate::Violations;
use crate::error::ApiError;

/// The paging fields every List request has.
pub trait PageRequest {
    /// `organizations/{organization}`.
    fn parent(&self) -> &str;
    /// Requested page size.
    fn page_size(&self) -> i32;
    /// Token of the previous page.
    fn page_token(&self) -> &str;
}

macro_rules! page_requests {
    ($($t:ty),* $(,)?) => {$(
        impl PageRequest for $t {
            fn parent(&self) -> &str { &self.parent }
            fn page_size(&self) -> i32 { self.page_size }
            fn page_token(&self) -> &str { &self.page_token }
        }
    )*};
}

page_requests!(
    crm_proto::core_v1::ListCustomersRequest,
    crm_proto::identity_v1::ListMembersRequest,
    crm_proto::identity_v1::ListSessionsRequest,
    crm_proto::identity_v1::ListApiClientsRequest,
    crm_proto::identity_v1::ListIntegrationCredentialsRequest,
    crm_proto::identity_v1::ListRolesRequest,
    crm_proto::identity_v1::ListAuditEventsRequest,
);

/// Largest page any List returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A validated List request.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The organization listed.
    pub org: Uuid,
    /// Rows per page.
    pub size: u32,
    /// Fingerprint of the query, binding page tokens to it.
    pub query: [u8; 32],
    /// The decoded position, when a page token was given.
    pub after: Option<Vec<String>>,
}

impl Listing {
    /// Validates `parent` and `page_size`, checks the caller's organization, and decodes
    /// `page_token` for a query identified by `method` (the List RPC, so a token of one List is
    /// refused by every other), `parent` and `scope` (the filter, the order, the caller's
    /// view...).
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming each bad field; PERMISSION_DENIED for another organization.
    #[expect(clippy::too_many_arguments, reason = "the fields of a List request")]
    pub fn begin(
        principal: &Principal,
        tokens: &PageTokens,
        method: &str,
        parent: &str,
        page_size: i32,
        page_token: &str,
        scope: &[&str],
        default_size: u32,
        max_size: u32,
    ) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        let org = names::parse_organization(parent, "parent")
            .map_err(|e| v.absorb(e))
            .ok();
        let size = page::page_size(page_size, default_size, max_size)
            .map_err(|e| v.absorb(e.into()))
            .ok();
        v.finish()?;
        let (Some(org), Some(size)) = (org, size) else {
            return Err(ApiError::Internal("parsed without violation".into()));
        };
        names::require_same_organization(principal, org)?;
        let mut parts = vec![method, parent];
        parts.extend_from_slice(scope);
        let query = page::fingerprint(org, &parts);
        let after = tokens.decode(page_token, &query)?;
        Ok(Self {
            org,
            size,
            query,
            after,
        })
    }

    /// [`Listing::begin`] for a List request, with `default_size` and [`MAX_PAGE_SIZE`]; the
    /// request's message type (one per List RPC) stands for the method.
    ///
    /// # Errors
    /// As [`Listing::begin`].
    pub fn of(
        principal: &Principal,
        tokens: &PageTokens,
        req: &impl PageRequest,
        scope: &[&str],
        default_size: u32,
    ) -> Result<Self, ApiError> {
        Self::begin(
            principal,
            tokens,
            std::any::type_name_of_val(req),
            req.parent(),
            req.page_size(),
            req.page_token(),
            scope,
            default_size,
            MAX_PAGE_SIZE,
        )
    }

    /// The position as a single UUID key (lists ordered by id).
    ///
    /// # Errors
    /// INVALID_ARGUMENT on `page_token` when the key is not one UUID.
    pub fn after_uuid(&self) -> Result<Option<Uuid>, ApiError> {
        match &self.after {
            None => Ok(None),
            Some(key) => match key.as_slice() {
                [one] => Uuid::parse_str(one).map(Some).map_err(|_| malformed()),
                _ => Err(malformed()),
            },
        }
    }

    /// The position as a single integer key (lists ordered by a sequence).
    ///
    /// # Errors
    /// INVALID_ARGUMENT on `page_token` when the key is not one integer.
    /// The start of the page for a (time, id) key, as `[RFC 3339, uuid]`.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed key.
    pub fn after_time_id(&self) -> Result<Option<(chrono::DateTime<chrono::Utc>, Uuid)>, ApiError> {
        match self.after.as_deref() {
            None => Ok(None),
            Some([t, id]) => Ok(Some((
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| malformed())?
                    .with_timezone(&chrono::Utc),
                Uuid::parse_str(id).map_err(|_| malformed())?,
            ))),
            Some(_) => Err(malformed()),
        }
    }

    /// The start of the page for a single-`i64` key (a sequence number).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed key.
    pub fn after_i64(&self) -> Result<Option<i64>, ApiError> {
        match &self.after {
            None => Ok(None),
            Some(key) => match key.as_slice() {
                [one] => one.parse().map(Some).map_err(|_| malformed()),
                _ => Err(malformed()),
            },
        }
    }

    /// Rows to fetch: one more than a page, to know whether another page follows.
    #[must_use]
    pub fn limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Trims `rows` (fetched with [`Listing::limit`]) to a page and returns the next page token
    /// (empty on the last page), keyed by `key` of the last row kept.
    pub fn finish<T>(
        &self,
        tokens: &PageTokens,
        rows: &mut Vec<T>,
        key: impl Fn(&T) -> Vec<String>,
    ) -> String {
        if rows.len() > self.size as usize {
            rows.truncate(self.size as usize);
            rows.last()
                .map(|r| tokens.encode(&self.query, &key(r)))
                .unwrap_or_default()
        } else {
            String::new()
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
