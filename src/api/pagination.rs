//! Svix list responses: `{data, iterator, prevIterator, done}`.

use serde::Serialize;

use crate::store::Page;

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    /// `id` gives each stored item's cursor id; `out` renders it.
    pub fn from_page<S>(page: Page<S>, id: impl Fn(&S) -> String, out: impl FnMut(S) -> T) -> Self {
        let iterator = page.items.last().map(&id);
        let prev_iterator = page.items.first().map(|s| format!("-{}", id(s)));
        ListResponse {
            data: page.items.into_iter().map(out).collect(),
            iterator,
            prev_iterator,
            done: !page.more,
        }
    }
}
