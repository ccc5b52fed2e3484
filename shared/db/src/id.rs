//! Typed columns. A typed id is a UUID column read and written as a type of its own, so that
//! passing a user's id where an organization's is expected does not compile
//! ([`typed_id!`](crate::typed_id): `crm_db::typed_id!(UserId, "A user's id.")`). An enum
//! column holds a protobuf enum as `smallint` through a local type
//! ([`enum_column!`](crate::enum_column)): no magic numbers in queries, and a stored number
//! that is not a value of the enum is an error when read, never a silent default.

/// Declares `$name`, a typed id over `uuid::Uuid` stored in `uuid` columns.
#[macro_export]
macro_rules! typed_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Default,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// The UUID.
            #[must_use]
            pub fn uuid(self) -> uuid::Uuid {
                self.0
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Uuid, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <uuid::Uuid as diesel::serialize::ToSql<diesel::sql_types::Uuid, diesel::pg::Pg>>::to_sql(&self.0, out)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Uuid, diesel::pg::Pg> for $name {
            fn from_sql(
                bytes: <diesel::pg::Pg as diesel::backend::Backend>::RawValue<'_>,
            ) -> diesel::deserialize::Result<Self> {
                <uuid::Uuid as diesel::deserialize::FromSql<diesel::sql_types::Uuid, diesel::pg::Pg>>::from_sql(bytes)
                    .map(Self)
            }
        }
    };
}

/// Declares `$name`, a `smallint` column holding values of the protobuf enum `$enum`.
#[macro_export]
macro_rules! enum_column {
    ($name:ident, $enum:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::SmallInt)]
        pub struct $name(pub $enum);

        impl From<$enum> for $name {
            fn from(value: $enum) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $enum {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl From<$name> for i32 {
            fn from(value: $name) -> Self {
                value.0 as i32
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::SmallInt, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                let n = i16::try_from(self.0 as i32)?;
                <i16 as diesel::serialize::ToSql<diesel::sql_types::SmallInt, diesel::pg::Pg>>::to_sql(&n, &mut out.reborrow())
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::SmallInt, diesel::pg::Pg> for $name {
            fn from_sql(
                bytes: <diesel::pg::Pg as diesel::backend::Backend>::RawValue<'_>,
            ) -> diesel::deserialize::Result<Self> {
                let n = <i16 as diesel::deserialize::FromSql<diesel::sql_types::SmallInt, diesel::pg::Pg>>::from_sql(bytes)?;
                <$enum>::try_from(i32::from(n)).map(Self).map_err(|_| {
                    format!("{n} is not a {}", stringify!($enum)).into()
                })
            }
        }
    };
}

typed_id!(OrgId, "An organization's id: the tenant of every row.");

#[cfg(test)]
mod tests {
    use super::OrgId;

    #[test]
    fn an_org_id_is_its_uuid() {
        let raw = uuid::Uuid::now_v7();
        let org = OrgId::from(raw);
        assert_eq!(org.uuid(), raw);
        assert_eq!(org.to_string(), raw.to_string());
        assert_eq!(uuid::Uuid::from(org), raw);
    }
}
