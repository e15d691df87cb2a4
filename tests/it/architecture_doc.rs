//! ARCHITECTURE.md's "Where does X live" table stays true: every file it
//! names exists, and every item it names (`fn`, type, trait, const, or an
//! `impl Trait`) is defined in one of the row's files.

use std::path::Path;

/// `src/store/{sqlite,postgres}/tenants.rs` → both paths.
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(a), Some(b)) if a < b => path[a + 1..b]
            .split(',')
            .flat_map(|alt| expand(&format!("{}{}{}", &path[..a], alt, &path[b + 1..])))
            .collect(),
        _ => vec![path.to_owned()],
    }
}

/// The backticked words of a table cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Whether `source` defines `item` (`Type::method` names the method;
/// `impl Trait` an implementation of it).
fn defines(source: &str, item: &str) -> bool {
    if let Some(tr) = item.strip_prefix("impl ") {
        return source.contains(&format!("impl {tr} for "));
    }
    let name = item.rsplit("::").next().unwrap_or(item);
    ["fn ", "struct ", "enum ", "trait ", "const ", "type ", "mod ", "static "].iter().any(|kw| {
        source.contains(&format!("{kw}{name}("))
            || source.contains(&format!("{kw}{name} "))
            || source.contains(&format!("{kw}{name}<"))
            || source.contains(&format!("{kw}{name}:"))
    })
}

#[test]
fn where_does_x_live_points_at_real_files_and_items() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let table = doc.split("## Where does X live").nth(1).expect("the table's heading");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
    assert!(rows.len() > 30, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (files_cell, items_cell) = (cells[2], cells[3]);
        let mut sources = String::new();
        for f in quoted(files_cell).iter().flat_map(|f| expand(f)) {
            let path = root.join(&f);
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    sources += &std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
                }
            } else {
                match std::fs::read_to_string(&path) {
                    Ok(text) => sources += &text,
                    Err(_) => wrong.push(format!("{row}\n  no file {f}")),
                }
            }
        }
        // "a / b" cells pair files and items one to one; every item must be
        // found in the row's files either way.
        for item in quoted(items_cell) {
            if !defines(&sources, item) {
                wrong.push(format!("{row}\n  `{item}` is not defined in {files_cell}"));
            }
        }
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md's table is out of date:\n{}", wrong.join("\n"));
}
