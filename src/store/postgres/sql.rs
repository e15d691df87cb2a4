//! PostgreSQL's rendering of the shared listing descriptions
//! ([`crate::store::listing`]): `$n` placeholders (numbered by sqlx's
//! `QueryBuilder`), `= ANY($n)` for IN-lists, `::jsonb ?` for JSON
//! containment, `ILIKE` (SQLite's LIKE ignores case too).

use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use crate::store::listing::{Cond, Listing, Param};
use crate::store::{Page, PageRequest, StoreResult};

/// A statement being built.
pub struct Sql {
    pub qb: QueryBuilder<'static, Postgres>,
}

impl Sql {
    pub fn new(head: impl Into<String>) -> Self {
        Sql { qb: QueryBuilder::new(head) }
    }

    /// Append ` WHERE c1 AND c2 …` (nothing when there are no conditions).
    pub fn where_all(&mut self, conds: &[Cond]) -> &mut Self {
        self.and_all(conds, " WHERE ")
    }

    /// Append ` <first>c1 AND c2 …`: `first` is " WHERE " or " AND ".
    pub fn and_all(&mut self, conds: &[Cond], first: &str) -> &mut Self {
        for (i, cond) in conds.iter().enumerate() {
            self.qb.push(if i == 0 { first } else { " AND " });
            self.cond(cond);
        }
        self
    }

    fn bind(&mut self, p: &Param) {
        match p.clone() {
            Param::Text(s) => self.qb.push_bind(s),
            Param::Int(i) => self.qb.push_bind(i),
            Param::Int4(i) => self.qb.push_bind(i),
            Param::Bool(b) => self.qb.push_bind(b),
        };
    }

    /// `col [NOT] IN (…)` as `= ANY($n)` / `<> ALL($n)`: one array
    /// parameter, so one statement to prepare whatever the list's length.
    /// The lists are of INTEGER columns (statuses) or of text.
    fn list(&mut self, col: &str, negate: bool, values: &[Param]) {
        let (op, quantifier) = if negate { ("<>", "ALL") } else { ("=", "ANY") };
        self.qb.push(format_args!("{col} {op} {quantifier}("));
        let ints: Option<Vec<i32>> =
            values.iter().map(|v| if let Param::Int4(i) = v { Some(*i) } else { None }).collect();
        match ints {
            Some(ints) if !values.is_empty() => self.qb.push_bind(ints),
            _ => self.qb.push_bind(values.iter().map(Param::to_text).collect::<Vec<String>>()),
        };
        self.qb.push(")");
    }

    fn cond(&mut self, cond: &Cond) {
        match cond {
            Cond::Cmp(col, op, v) => {
                self.qb.push(format_args!("{col} {op} "));
                self.bind(v);
            }
            Cond::In(col, values) => self.list(col, false, values),
            Cond::NotIn(col, values) => self.list(col, true, values),
            Cond::JsonContains(col, v) => {
                self.qb.push(format_args!("({col})::jsonb ? ")).push_bind(v.clone());
            }
            Cond::ContainsText(col, v) => {
                let like = format!("%{}%", v.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                self.qb.push(format_args!("{col} ILIKE ")).push_bind(like);
            }
            Cond::Or(any) => {
                self.qb.push("(");
                for (i, c) in any.iter().enumerate() {
                    if i > 0 {
                        self.qb.push(" OR ");
                    }
                    self.cond(c);
                }
                self.qb.push(")");
            }
            Cond::Sql(s) => {
                self.qb.push(*s);
            }
        }
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

/// Read one page of a listing; `decode` maps a row to an item.
pub async fn page<'e, T>(
    db: impl PgExecutor<'e>,
    listing: &Listing,
    page: &PageRequest,
    decode: impl Fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let (conds, order_by, rows) = listing.page(page);
    let mut sql = Sql::new(listing.head.clone());
    sql.where_all(&conds);
    sql.qb.push(format_args!("{order_by} LIMIT ")).push_bind(limit(rows));
    Ok(Page::from_rows(sql.rows(db, decode).await?, page))
}

/// How many rows a listing has.
pub async fn count<'e>(db: impl PgExecutor<'e>, listing: &Listing) -> StoreResult<u64> {
    let mut sql = Sql::new(format!("SELECT count(*) FROM ({}", listing.head));
    sql.where_all(&listing.conds);
    sql.qb.push(") AS counted");
    let n = sql.rows(db, |r| crate::store::postgres::rows::col::<i64>(r, 0)).await?;
    Ok(n.first().copied().unwrap_or(0).max(0) as u64)
}

/// A row count as a LIMIT parameter.
pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
