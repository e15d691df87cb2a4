//! A small builder for the listing queries: WHERE clauses with bound
//! parameters (numbered by sqlx's `QueryBuilder`), and cursor pagination
//! over an id column. The same shape as the SQLite module's, so listings
//! read alike in both.

use sqlx::postgres::PgRow;
use sqlx::{Encode, PgExecutor, Postgres, QueryBuilder, Type};

use crate::domain::time::Timestamp;
use crate::store::{Page, PageRequest, StoreResult};

pub struct Select {
    qb: QueryBuilder<'static, Postgres>,
    has_where: bool,
}

impl Select {
    /// `head` is everything up to (not including) WHERE.
    pub fn new(head: impl Into<String>) -> Self {
        Select { qb: QueryBuilder::new(head), has_where: false }
    }

    /// The statement so far, to push SQL text and parameters onto directly
    /// (around the conditions: a prefix before them, a suffix after).
    pub fn sql(&mut self) -> &mut QueryBuilder<'static, Postgres> {
        &mut self.qb
    }

    /// Start `AND <cond>`; the caller pushes the condition.
    pub fn cond(&mut self) -> &mut QueryBuilder<'static, Postgres> {
        self.qb.push(if self.has_where { " AND " } else { " WHERE " });
        self.has_where = true;
        &mut self.qb
    }

    /// A condition without parameters.
    pub fn and(&mut self, cond: &str) -> &mut Self {
        self.cond().push(cond);
        self
    }

    /// `<col> <op> $n`.
    pub fn cmp<T>(&mut self, col: &str, op: &str, v: T) -> &mut Self
    where
        T: 'static + Encode<'static, Postgres> + Type<Postgres>,
    {
        self.cond().push(format_args!("{col} {op} ")).push_bind(v);
        self
    }

    pub fn eq<T>(&mut self, col: &str, v: T) -> &mut Self
    where
        T: 'static + Encode<'static, Postgres> + Type<Postgres>,
    {
        self.cmp(col, "=", v)
    }

    pub fn in_list(&mut self, col: &str, values: &[String]) -> &mut Self {
        self.cond().push(format_args!("{col} = ANY(")).push_bind(values.to_vec()).push(")");
        self
    }

    /// `col` (a JSON array in a TEXT column) contains `value`.
    pub fn json_contains(&mut self, col: &str, value: &str) -> &mut Self {
        self.cond().push(format_args!("({col})::jsonb ? ")).push_bind(value.to_owned());
        self
    }

    pub fn time_range(
        &mut self,
        col: &str,
        before: Option<Timestamp>,
        after: Option<Timestamp>,
    ) -> &mut Self {
        if let Some(b) = before {
            self.cmp(col, "<", b.as_millis());
        }
        if let Some(a) = after {
            self.cmp(col, ">", a.as_millis());
        }
        self
    }

    /// Run as one page ordered by `id_col`; `decode` maps a row to an item.
    pub async fn page<'e, T>(
        mut self,
        db: impl PgExecutor<'e>,
        id_col: &str,
        page: &PageRequest,
        decode: impl Fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let scan = page.scan();
        if let Some((op, id)) = scan.bound {
            self.cmp(id_col, op, id.to_owned());
        }
        let dir = if scan.ascending { "ASC" } else { "DESC" };
        self.qb.push(format_args!(" ORDER BY {id_col} {dir} LIMIT ")).push_bind(limit(page.rows_to_read()));
        Ok(Page::from_rows(self.rows(db, decode).await?, page))
    }

    pub async fn rows<'e, T>(
        mut self,
        db: impl PgExecutor<'e>,
        decode: impl Fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let rows = self.qb.build().fetch_all(db).await?;
        rows.iter().map(decode).collect()
    }
}

/// A row count as a LIMIT parameter.
pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
