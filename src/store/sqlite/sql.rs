//! A small builder for the listing queries: WHERE clauses with positional
//! parameters, and cursor pagination over an id column.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use crate::domain::time::Timestamp;
use crate::store::{Page, PageRequest, StoreResult};

/// Deliveries (`d`) with their messages (`m`). Messages are keyed by
/// `(app_id, id)` (no index on `id` alone, see `schema.rs`), so every join
/// on them names the application.
pub const DELIVERIES_WITH_MESSAGES: &str =
    "deliveries d JOIN messages m ON m.app_id = d.app_id AND m.id = d.msg_id";
/// Appended to a query over attempts (`t`) to reach their messages (`m`).
pub const JOIN_ATTEMPT_MESSAGES: &str = " JOIN messages m ON m.app_id = t.app_id AND m.id = t.msg_id";

pub struct Select {
    sql: String,
    params: Vec<Value>,
    has_where: bool,
}

impl Select {
    /// `head` is everything up to (not including) WHERE.
    pub fn new(head: impl Into<String>) -> Self {
        Select { sql: head.into(), params: Vec::new(), has_where: false }
    }

    /// Add `AND <cond>`, where `cond` has one `?` per value.
    pub fn and(&mut self, cond: &str, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.sql.push_str(if self.has_where { " AND " } else { " WHERE " });
        self.has_where = true;
        self.sql.push_str(cond);
        self.params.extend(values);
        self
    }

    pub fn eq(&mut self, col: &str, v: impl Into<Value>) -> &mut Self {
        self.and(&format!("{col} = ?"), [v.into()])
    }

    pub fn in_list(&mut self, col: &str, values: &[String]) -> &mut Self {
        let marks = vec!["?"; values.len()].join(", ");
        self.and(&format!("{col} IN ({marks})"), values.iter().cloned().map(Value::Text))
    }

    pub fn not_in(&mut self, col: &str, values: &[String]) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.and(&format!("{col} NOT IN ({marks})"), values.iter().cloned().map(Value::Text))
    }

    /// `col` (a JSON array column) contains `value`.
    pub fn json_contains(&mut self, col: &str, value: &str) -> &mut Self {
        self.and(
            &format!("EXISTS (SELECT 1 FROM json_each({col}) WHERE json_each.value = ?)"),
            [Value::Text(value.to_owned())],
        )
    }

    pub fn time_range(
        &mut self,
        col: &str,
        before: Option<Timestamp>,
        after: Option<Timestamp>,
    ) -> &mut Self {
        if let Some(b) = before {
            self.and(&format!("{col} < ?"), [Value::Integer(b.as_millis())]);
        }
        if let Some(a) = after {
            self.and(&format!("{col} > ?"), [Value::Integer(a.as_millis())]);
        }
        self
    }

    /// The statement and its parameters, to embed in a larger one.
    pub fn into_parts(self) -> (String, Vec<Value>) {
        (self.sql, self.params)
    }

    /// Run as one page ordered by `id_col`; `decode` maps a row to an item.
    pub fn page<T>(
        mut self,
        conn: &Connection,
        id_col: &str,
        page: &PageRequest,
        decode: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Page<T>> {
        let scan = page.scan();
        if let Some((op, id)) = scan.bound {
            self.and(&format!("{id_col} {op} ?"), [Value::Text(id.to_owned())]);
        }
        let dir = if scan.ascending { "ASC" } else { "DESC" };
        self.sql.push_str(&format!(" ORDER BY {id_col} {dir} LIMIT ?"));
        self.params.push(Value::Integer(page.rows_to_read() as i64));
        Ok(Page::from_rows(self.rows(conn, decode)?, page))
    }

    /// Run with `suffix` (an ORDER BY ending in `LIMIT ?`) appended.
    pub fn rows_with_suffix<T>(
        mut self,
        conn: &Connection,
        suffix: &str,
        limit: usize,
        decode: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        self.sql.push_str(suffix);
        self.params.push(Value::Integer(limit as i64));
        self.rows(conn, decode)
    }

    pub fn rows<T>(
        &self,
        conn: &Connection,
        mut decode: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        let rows = stmt.query_map(params_from_iter(self.params.iter()), |r| decode(r))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
