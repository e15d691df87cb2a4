//! SQLite's rendering of the shared listing descriptions
//! ([`crate::store::listing`]): `?` placeholders, `json_each` for JSON
//! containment, `LIKE … ESCAPE` (case-insensitive for ASCII in SQLite).

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use crate::store::listing::{Cond, Listing, Param};
use crate::store::{Page, PageRequest, StoreResult};

/// A statement being built: SQL text with `?` placeholders and their values.
#[derive(Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Value>,
}

impl Sql {
    pub fn new(head: impl Into<String>) -> Self {
        Sql { text: head.into(), params: Vec::new() }
    }

    /// Append ` WHERE c1 AND c2 …` (nothing when there are no conditions).
    pub fn where_all(&mut self, conds: &[Cond]) -> &mut Self {
        for (i, cond) in conds.iter().enumerate() {
            self.text.push_str(if i == 0 { " WHERE " } else { " AND " });
            self.cond(cond);
        }
        self
    }

    fn bind(&mut self, p: &Param) {
        self.text.push('?');
        self.params.push(match p {
            Param::Text(s) => Value::Text(s.clone()),
            Param::Int(i) => Value::Integer(*i),
            Param::Int4(i) => Value::Integer((*i).into()),
            Param::Bool(b) => Value::Integer((*b).into()),
        });
    }

    fn list(&mut self, col: &str, not: &str, values: &[Param]) {
        self.text.push_str(&format!("{col} {not}IN ("));
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self.text.push(')');
    }

    fn cond(&mut self, cond: &Cond) {
        match cond {
            Cond::Cmp(col, op, v) => {
                self.text.push_str(&format!("{col} {op} "));
                self.bind(v);
            }
            Cond::In(_, values) if values.is_empty() => self.text.push('0'),
            Cond::In(col, values) => self.list(col, "", values),
            Cond::NotIn(_, values) if values.is_empty() => self.text.push('1'),
            Cond::NotIn(col, values) => self.list(col, "NOT ", values),
            Cond::JsonContains(col, v) => {
                self.text
                    .push_str(&format!("EXISTS (SELECT 1 FROM json_each({col}) WHERE json_each.value = "));
                self.bind(&Param::Text(v.clone()));
                self.text.push(')');
            }
            Cond::ContainsText(col, v) => {
                self.text.push_str(&format!("{col} LIKE "));
                self.bind(&Param::Text(like_pattern(v)));
                self.text.push_str(" ESCAPE '\\'");
            }
            Cond::Or(any) => {
                self.text.push('(');
                for (i, c) in any.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(" OR ");
                    }
                    self.cond(c);
                }
                self.text.push(')');
            }
            Cond::Sql(s) => self.text.push_str(s),
        }
    }

    /// Append SQL text and its values.
    pub fn push(&mut self, text: &str, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.text.push_str(text);
        self.params.extend(values);
        self
    }

    pub fn rows<T>(
        &self,
        conn: &Connection,
        mut decode: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut stmt = conn.prepare_cached(&self.text)?;
        let rows = stmt.query_map(params_from_iter(self.params.iter()), |r| decode(r))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn execute(&self, conn: &Connection) -> StoreResult<usize> {
        Ok(conn.prepare_cached(&self.text)?.execute(params_from_iter(self.params.iter()))?)
    }
}

/// `%text%`, with LIKE's wildcards in `text` escaped.
fn like_pattern(text: &str) -> String {
    format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// Read one page of a listing; `decode` maps a row to an item.
pub fn page<T>(
    conn: &Connection,
    listing: &Listing,
    page: &PageRequest,
    decode: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> StoreResult<Page<T>> {
    let (conds, order_by, rows) = listing.page(page);
    let mut sql = Sql::new(listing.head.clone());
    sql.where_all(&conds).push(&format!("{order_by} LIMIT ?"), [Value::Integer(rows as i64)]);
    Ok(Page::from_rows(sql.rows(conn, decode)?, page))
}

/// How many rows a listing has.
pub fn count(conn: &Connection, listing: &Listing) -> StoreResult<u64> {
    let mut sql = Sql::new(format!("SELECT COUNT(*) FROM ({}", listing.head));
    sql.where_all(&listing.conds).push(")", []);
    let n: Vec<i64> = sql.rows(conn, |r| r.get(0))?;
    Ok(n.first().copied().unwrap_or(0).max(0) as u64)
}

/// Every row of a listing (no paging).
pub fn all<T>(
    conn: &Connection,
    listing: &Listing,
    decode: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut sql = Sql::new(listing.head.clone());
    sql.where_all(&listing.conds);
    sql.rows(conn, decode)
}
