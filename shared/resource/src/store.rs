//! [`standard_store!`](crate::standard_store): the queries of a table with the standard columns
//! ([`Standard`](crate::Standard)) and a resource's own ([`Resource::Fields`](crate::Resource)).
//! Every query filters on `organization_id` explicitly (the indexes lead with it); row-level
//! security is the second wall.

/// Implements [`Store`](crate::Store) for `$resource` over table `$table` (a `diesel::table!`
/// module in scope where the macro is called), ordering by the columns `$time` and `$text`.
/// The resource's `Fields` derive `Queryable`, `Selectable`, `Insertable` and `AsChangeset`
/// for the table.
#[macro_export]
macro_rules! standard_store {
    // One row of `$table` changed by `$set`, returned with its standard columns.
    (@change $table:ident, $conn:expr, $org:expr, $id:expr, $set:expr) => {{
        use $crate::deps::diesel::{ExpressionMethods as _, QueryDsl as _, SelectableHelper as _};
        let query = $crate::deps::diesel::update($table::table)
            .filter($table::dsl::organization_id.eq($org))
            .filter($table::dsl::id.eq($id))
            .set($set)
            .returning((
                $crate::standard_columns!($table),
                <<Self as $crate::Resource>::Fields>::as_returning(),
            ));
        // Every column of the resource is set, so the text is the same each time: keep it
        // prepared (diesel would prepare every UPDATE afresh).
        let query = $crate::deps::crm_db::fixed::FixedSql(query);
        Ok($crate::deps::diesel_async::RunQueryDsl::get_result(query, &mut { $conn })
            .await
            .map($crate::Row::<<Self as $crate::Resource>::Fields>::from_pair)?)
    }};
    ($resource:ty, table = $table:ident, time = $time:ident, text = $text:ident) => {
        impl $crate::Store for $resource {
            fn insert<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                id: $crate::deps::uuid::Uuid,
                fields: &'a <Self as $crate::Resource>::Fields,
                actor: &'a str,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    $crate::Row<<Self as $crate::Resource>::Fields>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    use $crate::deps::diesel::{ExpressionMethods as _, SelectableHelper as _};
                    use $table::dsl as t;
                    let query = $crate::deps::diesel::insert_into($table::table)
                        .values((
                            (
                                t::organization_id.eq(org),
                                t::id.eq(id),
                                t::created_by.eq(actor),
                                t::updated_by.eq(actor),
                            ),
                            fields,
                        ))
                        .returning((
                            $crate::standard_columns!($table),
                            <<Self as $crate::Resource>::Fields>::as_returning(),
                        ));
                    // One text per combination of optional columns left to their defaults:
                    // few, each kept prepared.
                    let query = $crate::deps::crm_db::fixed::FixedSql(query);
                    $crate::deps::diesel_async::RunQueryDsl::get_result(query, &mut { conn })
                        .await
                        .map($crate::Row::<<Self as $crate::Resource>::Fields>::from_pair)
                        .map_err(|e| {
                            $crate::store::insert_error(
                                e,
                                <Self as $crate::Resource>::RESOURCE_TYPE,
                                <Self as $crate::Resource>::FIELD,
                            )
                        })
                })
            }

            fn find_in<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                id: $crate::deps::uuid::Uuid,
                lock: bool,
                scope: Option<&'a $crate::deps::crm_db::filter::Filter>,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    Option<$crate::Row<<Self as $crate::Resource>::Fields>>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    use $crate::deps::diesel::{
                        ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
                        SelectableHelper as _,
                    };
                    use $table::dsl as t;
                    let query = t::$table
                        .filter(t::organization_id.eq(org))
                        .filter(t::id.eq(id))
                        .select((
                            $crate::standard_columns!($table),
                            <<Self as $crate::Resource>::Fields>::as_select(),
                        ));
                    let row = match (scope, lock) {
                        (None, false) => {
                            $crate::deps::diesel_async::RunQueryDsl::first(query, &mut { conn })
                                .await
                                .optional()
                        }
                        (None, true) => $crate::deps::diesel_async::RunQueryDsl::first(
                            query.for_update(),
                            &mut { conn },
                        )
                        .await
                        .optional(),
                        (Some(f), false) => {
                            let scoped = query
                                .filter($crate::deps::crm_db::filter::compile(f, &Self::__leaf)?);
                            $crate::deps::diesel_async::RunQueryDsl::first(scoped, &mut { conn })
                                .await
                                .optional()
                        }
                        (Some(f), true) => {
                            let scoped = query
                                .filter($crate::deps::crm_db::filter::compile(f, &Self::__leaf)?)
                                .for_update();
                            $crate::deps::diesel_async::RunQueryDsl::first(scoped, &mut { conn })
                                .await
                                .optional()
                        }
                    };
                    Ok(row?.map($crate::Row::<<Self as $crate::Resource>::Fields>::from_pair))
                })
            }

            fn update<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                id: $crate::deps::uuid::Uuid,
                fields: &'a <Self as $crate::Resource>::Fields,
                actor: &'a str,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    $crate::Row<<Self as $crate::Resource>::Fields>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    use $crate::deps::diesel::ExpressionMethods as _;
                    use $table::dsl as t;
                    $crate::standard_store!(@change $table, conn, org, id, (
                            fields,
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq($crate::deps::diesel::dsl::now),
                            t::updated_by.eq(actor),
                        ))
                })
            }

            fn set_deleted<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                id: $crate::deps::uuid::Uuid,
                purge_after: Option<$crate::deps::chrono::Duration>,
                actor: &'a str,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    $crate::Row<<Self as $crate::Resource>::Fields>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    use $crate::deps::diesel::ExpressionMethods as _;
                    use $table::dsl as t;
                    let now = $crate::deps::chrono::Utc::now();
                    let (delete_time, purge_time) = match purge_after {
                        Some(d) => (Some(now), Some(now + d)),
                        None => (None, None),
                    };
                    $crate::standard_store!(@change $table, conn, org, id, (
                            t::delete_time.eq(delete_time),
                            t::purge_time.eq(purge_time),
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq(now),
                            t::updated_by.eq(actor),
                        ))
                })
            }

            fn touch<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                id: $crate::deps::uuid::Uuid,
                actor: &'a str,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    $crate::Row<<Self as $crate::Resource>::Fields>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    use $crate::deps::diesel::ExpressionMethods as _;
                    use $table::dsl as t;
                    $crate::standard_store!(@change $table, conn, org, id, (
                            t::revision.eq(t::revision + 1),
                            t::update_time.eq($crate::deps::diesel::dsl::now),
                            t::updated_by.eq(actor),
                        ))
                })
            }

            fn check_filter(
                f: &$crate::deps::crm_db::filter::Filter,
            ) -> Result<(), $crate::deps::crm_db::filter::FilterError> {
                $crate::deps::crm_db::filter::compile(f, &Self::__leaf).map(|_| ())
            }

            fn list<'a>(
                conn: &'a $crate::deps::diesel_async::AsyncPgConnection,
                org: $crate::deps::crm_db::OrgId,
                q: &'a $crate::ListQuery,
            ) -> $crate::BoxFuture<
                'a,
                Result<
                    Vec<$crate::Row<<Self as $crate::Resource>::Fields>>,
                    $crate::deps::crm_platform::ApiError,
                >,
            > {
                Box::pin(async move {
                    #[allow(unused_imports, reason = "the keyset macro uses them")]
                    use $crate::deps::diesel::{
                        BoolExpressionMethods as _, ExpressionMethods as _, QueryDsl as _,
                        SelectableHelper as _,
                    };
                    use $table::dsl as t;
                    let mut query = t::$table
                        .filter(t::organization_id.eq(org))
                        .select((
                            $crate::standard_columns!($table),
                            <<Self as $crate::Resource>::Fields>::as_select(),
                        ))
                        .limit(q.limit)
                        .into_boxed();
                    if !q.show_deleted {
                        query = query.filter(t::delete_time.is_null());
                    }
                    if let Some(f) = &q.filter {
                        query =
                            query.filter($crate::deps::crm_db::filter::compile(f, &Self::__leaf)?);
                    }
                    let query = $crate::keyset_page!(query, $table, $time, $text, q);
                    let rows: Vec<($crate::Standard, <Self as $crate::Resource>::Fields)> =
                        $crate::deps::diesel_async::RunQueryDsl::load(query, &mut { conn }).await?;
                    Ok(rows
                        .into_iter()
                        .map($crate::Row::<<Self as $crate::Resource>::Fields>::from_pair)
                        .collect())
                })
            }
        }

        impl $resource {
            /// The filter leaf of `field`: the standard times, then the declared fields.
            fn __leaf(
                field: &str,
                op: $crate::deps::crm_db::filter::Op,
                value: &$crate::deps::crm_db::filter::Value,
            ) -> Result<
                $crate::deps::crm_db::filter::BoxedPredicate<$table::table>,
                $crate::deps::crm_db::filter::FilterError,
            > {
                use $table::dsl as t;
                match field {
                    "create_time" => {
                        $crate::deps::crm_db::filter_time!(t::create_time, field, op, value)
                    }
                    "update_time" => {
                        $crate::deps::crm_db::filter_time!(t::update_time, field, op, value)
                    }
                    _ => ($crate::field_leaf::<$resource>(field)?)(field, op, value),
                }
            }
        }
    };
}

/// The standard columns of `$table`, in the order of [`Standard`](crate::Standard).
#[macro_export]
macro_rules! standard_columns {
    ($table:ident) => {
        (
            $table::organization_id,
            $table::id,
            $table::create_time,
            $table::update_time,
            $table::delete_time,
            $table::purge_time,
            $table::revision,
            $table::created_by,
            $table::updated_by,
        )
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

/// The id of a filter value naming a user (`user = "users/{id}"`).
///
/// # Errors
/// A filter error when the value is not such a name.
pub fn user_value(
    field: &str,
    value: &crm_db::filter::Value,
) -> Result<uuid::Uuid, crm_db::filter::FilterError> {
    value
        .text()
        .strip_prefix("users/")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            crm_db::filter::FilterError::new(format!("'{field}' takes a name such as users/{{id}}"))
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
        use $crate::deps::crm_db::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        use $crate::deps::diesel::ExpressionMethods as _;
        let id = $crate::store::reference_value($field, $value, $collection)?;
        let out: Result<BoxedPredicate<_>, FilterError> = match $op {
            Op::Eq => Ok(Box::new($column.eq(id))),
            Op::Ne => Ok(Box::new($column.ne(id))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => Err(unsupported_op($field, $op)),
        };
        out
    }};
}

/// Compiles `=` / `!=` on a nullable reference column (an optional reference): `!=` matches
/// the rows without one too.
#[macro_export]
macro_rules! filter_optional_reference {
    ($column:expr, $field:expr, $op:expr, $value:expr, $collection:expr) => {{
        use $crate::deps::crm_db::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        use $crate::deps::diesel::PgExpressionMethods as _;
        let id = $crate::store::reference_value($field, $value, $collection)?;
        let out: Result<BoxedPredicate<_>, FilterError> = match $op {
            Op::Eq => Ok(Box::new($column.is_not_distinct_from(id))),
            Op::Ne => Ok(Box::new($column.is_distinct_from(id))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => Err(unsupported_op($field, $op)),
        };
        out
    }};
}

/// Compiles `=` / `!=` on a boolean column from a filter value `true` or `false`.
#[macro_export]
macro_rules! filter_bool {
    ($column:expr, $field:expr, $op:expr, $value:expr) => {{
        use $crate::deps::crm_db::filter::{BoxedPredicate, FilterError, Op, unsupported_op};
        use $crate::deps::diesel::ExpressionMethods as _;
        let flag = $crate::store::bool_value($field, $value)?;
        let out: Result<BoxedPredicate<_>, FilterError> = match $op {
            Op::Eq => Ok(Box::new($column.eq(flag))),
            Op::Ne => Ok(Box::new($column.ne(flag))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has => Err(unsupported_op($field, $op)),
        };
        out
    }};
}
