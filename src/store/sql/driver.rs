//! The core's statements on any sqlx driver: [`Exec`] for its pools and transactions, and
//! [`SqlRow`] for its rows, once. A backend states only what its driver does its own way:
//! how a [`Param`] is bound, and how a UUID and a JSON document are read back.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type};
use uuid::Uuid;

use super::rows::{Param, SqlRow};
use crate::store::StoreError;

/// What a backend's driver does its own way.
pub(crate) trait Driver: Database {
    /// Binds a UUID as the schema stores it.
    fn bind_id(
        query: Query<'_, Self, Self::Arguments>,
        id: Option<Uuid>,
    ) -> Query<'_, Self, Self::Arguments>;

    /// Binds a JSON document as the schema stores it.
    fn bind_json(
        query: Query<'_, Self, Self::Arguments>,
        value: Value,
    ) -> Query<'_, Self, Self::Arguments>;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    fn read_id(row: &Self::Row, column: &str) -> Result<Option<Uuid>, StoreError>;

    fn read_json<T: DeserializeOwned>(row: &Self::Row, column: &str) -> Result<T, StoreError>;
}

/// Binds `params`, in order, to `query`.
pub(crate) fn bind_all<'q, DB: Driver>(
    query: Query<'q, DB, DB::Arguments>,
    params: Vec<Param>,
) -> Query<'q, DB, DB::Arguments>
where
    Option<String>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
{
    params.into_iter().fold(query, |query, param| match param {
        Param::Text(text) => query.bind(text),
        Param::Flag(flag) => query.bind(flag),
        Param::Int(int) => query.bind(int),
        Param::Time(at) => query.bind(at),
        Param::Id(id) => DB::bind_id(query, id),
        Param::Json(value) => DB::bind_json(query, value),
    })
}

/// Somewhere to run statements: the pool, or a write transaction.
pub(crate) trait Exec: Send {
    type Row: SqlRow + Send;

    fn fetch_all(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;

    fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;

    /// Runs a statement; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

impl<DB: Driver> Exec for Pool<DB>
where
    for<'c> &'c Self: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    DB::Row: SqlRow,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
{
    type Row = DB::Row;

    fn fetch_all(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Vec<DB::Row>, sqlx::Error>> + Send {
        bind_all(sqlx::query(sql), params).fetch_all(&*self)
    }

    fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Option<DB::Row>, sqlx::Error>> + Send {
        bind_all(sqlx::query(sql), params).fetch_optional(&*self)
    }

    async fn execute(&mut self, sql: &'static str, params: Vec<Param>) -> Result<u64, sqlx::Error> {
        let done = bind_all(sqlx::query(sql), params).execute(&*self).await?;
        Ok(DB::rows_affected(&done))
    }
}

impl<DB: Driver> Exec for Transaction<'static, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    DB::Row: SqlRow,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
{
    type Row = DB::Row;

    fn fetch_all(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Vec<DB::Row>, sqlx::Error>> + Send {
        bind_all(sqlx::query(sql), params).fetch_all(&mut **self)
    }

    fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> impl Future<Output = Result<Option<DB::Row>, sqlx::Error>> + Send {
        bind_all(sqlx::query(sql), params).fetch_optional(&mut **self)
    }

    async fn execute(&mut self, sql: &'static str, params: Vec<Param>) -> Result<u64, sqlx::Error> {
        let done = bind_all(sqlx::query(sql), params)
            .execute(&mut **self)
            .await?;
        Ok(DB::rows_affected(&done))
    }
}

impl<R> SqlRow for R
where
    R: Row,
    R::Database: Driver<Row = R>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(decode)
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        self.try_get(column).map_err(decode)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.try_get(column).map_err(decode)
    }

    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.try_get(column).map_err(decode)
    }

    fn id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        R::Database::read_id(self, column)
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        R::Database::read_json(self, column)
    }
}

/// A value the schema should not hold (a corrupt row, a schema that was not migrated).
pub(crate) fn decode(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(err))
}
