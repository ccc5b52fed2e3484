//! [`standard_store!`](crate::standard_store): the queries of a table with the standard columns
//! (`organization_id`, `id`, `display_name`, `create_time`, `update_time`, `delete_time`,
//! `purge_time`, `revision`, `updated_by`). Every query filters on `organization_id` explicitly
//! (the indexes lead with it); row-level security is the second wall.

/// Implements [`Store`](crate::resource::Store) for `$resource` over table `$table` (order
/// columns `$time` and `$text`), with the
/// row type `$row`, the insert built by `$new::from_proto(org, id, &proto, actor)`, the changes
/// by `$changes::from_mask(&proto, paths)`, and the filter leaves of `$leaf`.
#[macro_export]
macro_rules! standard_store {
    ($resource:ty, $table:ident, $time:ident, $text:ident, $row:ty, $new:ty, $changes:ty, $leaf:path) => {
        impl $crate::resource::Store for $resource {
            fn insert<'a>(
                conn: &'a diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                id: uuid::Uuid,
                p: &'a <Self as $crate::resource::Resource>::Proto,
                actor: &'a str,
            ) -> $crate::resource::BoxFuture<'a, Result<$row, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    let new = <$new>::from_proto(org, id, p, actor);
                    let query = diesel::insert_into($crate::schema::$table::table)
                        .values(&new)
                        .returning(<$row>::as_returning());
                    diesel_async::RunQueryDsl::get_result(query, &mut { conn })
                        .await
                        .map_err(|e| {
                            $crate::resource::store::insert_error(
                                e,
                                <Self as $crate::resource::Resource>::RESOURCE_TYPE,
                                <Self as $crate::resource::Resource>::FIELD,
                            )
                        })
                })
            }

            fn find(
                conn: &diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                id: uuid::Uuid,
                lock: bool,
            ) -> $crate::resource::BoxFuture<'_, Result<Option<$row>, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    use $crate::schema::$table::dsl as t;
                    let query = t::$table
                        .filter(t::organization_id.eq(org))
                        .filter(t::id.eq(id))
                        .select(<$row>::as_select());
                    let row = if lock {
                        diesel_async::RunQueryDsl::first(query.for_update(), &mut { conn })
                            .await
                            .optional()
                    } else {
                        diesel_async::RunQueryDsl::first(query, &mut { conn })
                            .await
                            .optional()
                    };
                    Ok(row?)
                })
            }

            fn update<'a>(
                conn: &'a diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                id: uuid::Uuid,
                p: &'a <Self as $crate::resource::Resource>::Proto,
                paths: &'a [&'static str],
                actor: &'a str,
            ) -> $crate::resource::BoxFuture<'a, Result<$row, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    use $crate::schema::$table::dsl as t;
                    let changes = <$changes>::from_mask(p, paths);
                    let query = diesel::update(t::$table)
                        .filter(t::organization_id.eq(org))
                        .filter(t::id.eq(id))
                        .set((
                            &changes,
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq(diesel::dsl::now),
                            t::updated_by.eq(actor),
                        ))
                        .returning(<$row>::as_returning());
                    Ok(diesel_async::RunQueryDsl::get_result(query, &mut { conn }).await?)
                })
            }

            fn set_deleted<'a>(
                conn: &'a diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                id: uuid::Uuid,
                purge_after: Option<chrono::Duration>,
                actor: &'a str,
            ) -> $crate::resource::BoxFuture<'a, Result<$row, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    use $crate::schema::$table::dsl as t;
                    let now = chrono::Utc::now();
                    let (delete_time, purge_time) = match purge_after {
                        Some(d) => (Some(now), Some(now + d)),
                        None => (None, None),
                    };
                    let query = diesel::update(t::$table)
                        .filter(t::organization_id.eq(org))
                        .filter(t::id.eq(id))
                        .set((
                            t::delete_time.eq(delete_time),
                            t::purge_time.eq(purge_time),
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq(now),
                            t::updated_by.eq(actor),
                        ))
                        .returning(<$row>::as_returning());
                    Ok(diesel_async::RunQueryDsl::get_result(query, &mut { conn }).await?)
                })
            }

            fn touch<'a>(
                conn: &'a diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                id: uuid::Uuid,
                actor: &'a str,
            ) -> $crate::resource::BoxFuture<'a, Result<$row, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    use $crate::schema::$table::dsl as t;
                    let query = diesel::update(t::$table)
                        .filter(t::organization_id.eq(org))
                        .filter(t::id.eq(id))
                        .set((
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq(diesel::dsl::now),
                            t::updated_by.eq(actor),
                        ))
                        .returning(<$row>::as_returning());
                    Ok(diesel_async::RunQueryDsl::get_result(query, &mut { conn }).await?)
                })
            }

            fn list<'a>(
                conn: &'a diesel_async::AsyncPgConnection,
                org: uuid::Uuid,
                q: &'a $crate::resource::ListQuery,
            ) -> $crate::resource::BoxFuture<'a, Result<Vec<$row>, crm_platform::ApiError>> {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the calling module may import them too")]
                    use diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _,
                        QueryDsl as _, SelectableHelper as _,
                    };
                    use $crate::schema::$table::dsl as t;
                    let mut query = t::$table
                        .filter(t::organization_id.eq(org))
                        .select(<$row>::as_select())
                        .limit(q.limit)
                        .into_boxed();
                    if !q.show_deleted {
                        query = query.filter(t::delete_time.is_null());
                    }
                    if let Some(f) = &q.filter {
                        query = query.filter(crm_db::filter::compile(f, &$leaf)?);
                    }
                    let query = $crate::keyset_page!(query, $table, $time, $text, q);
                    Ok(diesel_async::RunQueryDsl::load(query, &mut { conn }).await?)
                })
            }
        }
    };
}

use crm_platform::ApiError;

/// An insert's error: a duplicate primary key is the caller's `<x>_id` already taken.
pub fn insert_error(
    e: diesel::result::Error,
    resource_type: &'static str,
    field: &'static str,
) -> ApiError {
    let error = ApiError::from(e);
    if let ApiError::AlreadyExists { detail, .. } = &error
        && detail.ends_with("_pkey")
    {
        return ApiError::AlreadyExists {
            resource_type,
            detail: format!("{field}_id"),
        };
    }
    error
}

/// The id of a filter value naming a resource in `collection` (`customer = "organizations/…"`).
///
/// # Errors
/// A filter error when the value is not such a name.
pub fn reference_value(
    field: &str,
    value: &crm_db::filter::Value,
    collection: &str,
) -> Result<uuid::Uuid, crm_db::filter::FilterError> {
    crm_platform::api::names::parse_child(value.text(), collection, field)
        .map(|(_, id)| id)
        .map_err(|_| {
            crm_db::filter::FilterError::new(format!(
                "'{field}' takes a name such as organizations/{{organization}}/{collection}/{{id}}"
            ))
        })
}

/// A filter value that must be `true` or `false`.
///
/// # Errors
/// A filter error otherwise.
pub fn bool_value(
    field: &str,
    value: &crm_db::filter::Value,
) -> Result<bool, crm_db::filter::FilterError> {
    match value.text() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(crm_db::filter::FilterError::new(format!(
            "'{field}' takes true or false"
        ))),
    }
}

/// Compiles `=` / `!=` on a reference column from a filter value naming a resource of
/// `collection` (`customer = "organizations/{o}/customers/{id}"`).
#[macro_export]
macro_rules! filter_reference {
    ($column:expr, $field:expr, $op:expr, $value:expr, $collection:expr) => {{
        use crm_db::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        use diesel::ExpressionMethods as _;
        let id = $crate::resource::store::reference_value($field, $value, $collection)?;
        let out: Result<BoxedPredicate<_>, FilterError> = match $op {
            Op::Eq => Ok(Box::new($column.eq(id))),
            Op::Ne => Ok(Box::new($column.ne(id))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => Err(unsupported_op($field, $op)),
        };
        out
    }};
}
