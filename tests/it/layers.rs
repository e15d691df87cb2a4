//! The architecture, enforced: no module uses one above it, and no files
//! use each other in a circle.
//!
//! Reads every `src/**/*.rs`, finds the paths that start with `crate::`,
//! `super::` or `self::` (in code, not in comments or strings; `use`
//! groups included) and resolves each to the file that defines the module
//! it names. Then:
//!
//! - (a) a top-level module uses only modules on a lower layer of
//!   [`LAYERS`] (same layer: only pairs listed in [`SAME_LAYER`]);
//! - (b) within each directory, the files and subdirectories use each other
//!   without a cycle. The directory's own `mod.rs` is not part of that
//!   graph: children may use what it defines (shared types, re-exports).
//!
//! `lib.rs` and `main.rs` (the crate roots) are left out. Paths through a
//! re-export count as a use of the module that re-exports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Top-level modules, lowest layer first. A module may use modules on
/// lower layers only.
///
/// `operational` (the events and the emitter) sits under `dispatch` and
/// `service`, which emit events; sending them as messages is `server`'s
/// wiring. `bench` drives a server over HTTP (a child process) and uses
/// only `service::generate_token`; `sim` (the deterministic simulation)
/// drives `dispatch`'s parts and the `store` itself; `cli` runs everything.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["clock", "telemetry", "traces"],
    &["store"],
    &["operational"],
    &["dispatch"],
    &["service"],
    &["api", "dashboard", "maintenance"],
    &["config"],
    &["server"],
    &["bench", "sim"],
    &["cli"],
];

/// Modules on the same layer that may use each other, as (user, used).
const SAME_LAYER: &[(&str, &str)] = &[];

/// A crate root: not a module of any layer.
const ROOTS: &[&str] = &["src/lib.rs", "src/main.rs"];

#[test]
fn modules_use_only_lower_layers_and_files_form_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_dir(&root, "src", &mut files);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), root.display());
    let problems = check(&files);
    assert!(problems.is_empty(), "the architecture is broken:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_cycles_and_upward_uses() {
    let files = sources(&[
        ("src/domain/mod.rs", "pub mod a;\npub mod b;"),
        ("src/domain/a.rs", "use super::b::B;\npub struct A;"),
        ("src/domain/b.rs", "pub struct B;\nfn f() { let _ = super::a::A; }"),
        ("src/store.rs", "use crate::domain::a::A;\nuse crate::{clock, service::S};"),
        ("src/clock.rs", ""),
        ("src/telemetry.rs", ""),
        ("src/service.rs", "pub struct S;"),
    ]);
    let problems = check(&files).join("\n");
    assert!(problems.contains("src/domain: a.rs -> b.rs -> a.rs"), "{problems}");
    assert!(problems.contains("src/domain/a.rs:1 `super::b::B`"), "{problems}");
    assert!(problems.contains("src/domain/b.rs:2 `super::a::A`"), "{problems}");
    assert!(
        problems.contains("src/store.rs:2 `crate::service::S`: `store` (layer 2) uses `service` (layer 5)")
    );
    assert!(!problems.contains("`crate::clock`"), "clock is lower than store: {problems}");
    assert!(problems.contains("`operational` is in LAYERS but not in src"), "{problems}");
}

#[test]
fn the_checker_reads_code_only() {
    let files = sources(&[
        ("src/domain/mod.rs", "pub mod a;\npub mod b;"),
        // Comments, doc links and strings are not uses; a test module's
        // `super` is the file itself, not its parent.
        (
            "src/domain/a.rs",
            "//! See [`crate::service`].\n/* super::b */ const S: &str = \"crate::service::X\";\n\
             const R: &str = r#\"super::b\"#; const C: char = '\"';\nfn l<'a>(x: &'a str) {}\n\
             #[cfg(test)]\nmod tests { use super::*; use super::b; }\nfn b() {}",
        ),
        ("src/domain/b.rs", "use super::a::l; // crate::service"),
        ("src/service.rs", "use crate::domain::{self, a::{l}};"),
    ]);
    let mut layers = check(&files);
    layers.retain(|p| !p.contains("is in LAYERS but not in src"));
    assert_eq!(layers, Vec::<String>::new());
}

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

fn read_dir(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            read_dir(&path, &format!("{rel}/{name}"), out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((format!("{rel}/{name}"), text));
        }
    }
}

/// One use of a module, as written.
#[derive(Clone, Debug)]
struct Use {
    /// `src/…` of the file it is in, and the line.
    file: String,
    line: usize,
    /// The path as written, e.g. `super::layout::page`.
    written: String,
    /// The module path of the file that defines what it names.
    target: Vec<String>,
}

impl Use {
    fn at(&self) -> String {
        format!("{}:{} `{}`", self.file, self.line, self.written)
    }
}

/// Every problem found, one line (or block) each.
fn check(files: &[(String, String)]) -> Vec<String> {
    let mut modules: HashMap<Vec<String>, String> = HashMap::new();
    for (rel, _) in files {
        if !ROOTS.contains(&rel.as_str()) {
            modules.insert(module_path(rel), rel.clone());
        }
    }
    let mut uses = Vec::new();
    for (rel, text) in files {
        if !ROOTS.contains(&rel.as_str()) {
            uses.extend(uses_in(rel, text, &modules));
        }
    }
    let mut problems = layer_problems(&modules, &uses);
    problems.extend(cycles(&modules, &uses));
    problems
}

/// `src/api/mod.rs` → `[api]`, `src/api/error.rs` → `[api, error]`.
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_prefix("src/").unwrap_or(rel).strip_suffix(".rs").unwrap_or(rel);
    let mut path: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if path.last().map(String::as_str) == Some("mod") {
        path.pop();
    }
    path
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn layer_problems(modules: &HashMap<Vec<String>, String>, uses: &[Use]) -> Vec<String> {
    let mut problems = Vec::new();
    let tops: BTreeSet<&str> = modules.keys().map(|m| m[0].as_str()).collect();
    for top in &tops {
        if layer_of(top).is_none() {
            problems.push(format!("layers: `{top}` is in src but not in LAYERS (give it a layer)"));
        }
    }
    for top in LAYERS.iter().flat_map(|l| l.iter()) {
        if !tops.contains(top) {
            problems.push(format!("layers: `{top}` is in LAYERS but not in src (renamed? update LAYERS)"));
        }
    }
    for u in uses {
        let (from, to) = (&module_path(&u.file)[0], &u.target[0]);
        let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to)) else { continue };
        if from == to || lt < lf || (lt == lf && SAME_LAYER.contains(&(from.as_str(), to.as_str()))) {
            continue;
        }
        let how = if lt == lf { "on its own layer" } else { "a higher layer" };
        problems.push(format!("layers: {}: `{from}` (layer {lf}) uses `{to}` (layer {lt}), {how}", u.at()));
    }
    problems
}

/// Cycles among the children of each directory (files, and subdirectories
/// taken whole), with the uses that make up each edge.
fn cycles(modules: &HashMap<Vec<String>, String>, uses: &[Use]) -> Vec<String> {
    // directory → (child → child → first use)
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeMap<String, Use>>> = BTreeMap::new();
    for u in uses {
        let from = module_path(&u.file);
        let common = from.iter().zip(&u.target).take_while(|(a, b)| a == b).count();
        // One of them is the other's `mod.rs` (or the same file): not an
        // edge between siblings.
        if common == from.len() || common == u.target.len() {
            continue;
        }
        let dir = from[..common].to_vec();
        graphs
            .entry(dir)
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .entry(u.target[common].clone())
            .or_insert_with(|| u.clone());
    }
    let mut problems = Vec::new();
    for (dir, graph) in &graphs {
        let name = |child: &str| {
            let mut path = dir.clone();
            path.push(child.to_owned());
            match modules.get(&path) {
                Some(file) if file.ends_with("/mod.rs") => format!("{child}/"),
                _ => format!("{child}.rs"),
            }
        };
        for cycle in find_cycles(graph) {
            let shown: Vec<String> = cycle.iter().chain(cycle.first()).map(|c| name(c)).collect();
            let dir_name = if dir.is_empty() { "src".to_owned() } else { format!("src/{}", dir.join("/")) };
            let mut text = format!("cycle in {dir_name}: {}", shown.join(" -> "));
            for (i, from) in cycle.iter().enumerate() {
                let to = &cycle[(i + 1) % cycle.len()];
                text.push_str(&format!("\n    {}", graph[from][to].at()));
            }
            problems.push(text);
        }
    }
    problems
}

/// One cycle through each strongly connected group of two or more nodes.
fn find_cycles(graph: &BTreeMap<String, BTreeMap<String, Use>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(n) = todo.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone())
                && let Some(next) = graph.get(&n)
            {
                todo.extend(next.keys().cloned());
            }
        }
        false
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        if done.contains(start) {
            continue;
        }
        let group: BTreeSet<String> = graph
            .keys()
            .chain(graph.values().flat_map(|e| e.keys()))
            .filter(|n| reaches(start, n) && reaches(n, start))
            .cloned()
            .collect();
        done.extend(group.iter().cloned());
        if group.len() < 2 {
            continue;
        }
        // Shortest way back to `start` within the group (breadth first).
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        'search: while let Some(n) = queue.pop_front() {
            for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
                if !group.contains(next) {
                    continue;
                }
                if next == start {
                    let mut cycle = vec![n.clone()];
                    while let Some(prev) = back.get(cycle.last().unwrap()) {
                        cycle.push(prev.clone());
                    }
                    cycle.reverse();
                    found.push(cycle);
                    break 'search;
                }
                if !back.contains_key(next) && next != start {
                    back.insert(next.clone(), n.clone());
                    queue.push_back(next.clone());
                }
            }
        }
    }
    found
}

/// The uses of modules in one file.
fn uses_in(rel: &str, text: &str, modules: &HashMap<Vec<String>, String>) -> Vec<Use> {
    let tokens = tokens(&code_only(text));
    let file_module = module_path(rel);
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) open at a brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let (tok, line) = (&tokens[i].0, tokens[i].1);
        let is = |k: usize, s: &str| tokens.get(k).is_some_and(|t| t.0 == s);
        match tok.as_str() {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if is(i + 2, "{") => {
                if let Some((name, _)) = tokens.get(i + 1) {
                    inline.push((name.clone(), depth + 1));
                }
            }
            "crate" | "super" | "self" if is(i + 1, "::") && !(i > 0 && is(i - 1, "::")) => {
                let start = i;
                let mut paths = Vec::new();
                path_tree(&tokens, &mut i, Vec::new(), &mut paths);
                let mut here = file_module.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                for path in paths {
                    let Some(absolute) = resolve(&here, &path) else { continue };
                    let Some(target) = defining_file(&absolute, modules) else { continue };
                    // `a::{self, b}` is written `a` and `a::b`.
                    let written = path.iter().enumerate().filter(|(i, s)| *i == 0 || *s != "self");
                    let written = written.map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("::");
                    out.push(Use { file: rel.to_owned(), line, written, target });
                }
                debug_assert!(i > start);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Read a path, or a `use` tree, starting at `tokens[*i]`; push every full
/// path in it (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn path_tree(tokens: &[(String, usize)], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some((tok, _)) = tokens.get(*i) {
        if tok == "{" {
            *i += 1;
            while let Some((tok, _)) = tokens.get(*i) {
                match tok.as_str() {
                    "}" => {
                        *i += 1;
                        return;
                    }
                    "," => *i += 1,
                    "as" => *i += 2,
                    _ => {
                        let before = *i;
                        path_tree(tokens, i, prefix.clone(), out);
                        if *i == before {
                            *i += 1;
                        }
                    }
                }
            }
            return;
        }
        if tok == "*" {
            *i += 1;
            break;
        }
        if !is_ident(tok) {
            break;
        }
        prefix.push(tok.clone());
        *i += 1;
        if tokens.get(*i).is_some_and(|t| t.0 == "::") {
            *i += 1;
        } else {
            break;
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
}

/// The absolute module path a written path names, from module `here`.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut segments = path.iter().peekable();
    let mut base = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("self") => {
            segments.next();
            here.to_vec()
        }
        _ => {
            let mut base = here.to_vec();
            while segments.next_if(|s| *s == "super").is_some() {
                base.pop()?;
            }
            base
        }
    };
    base.extend(segments.filter(|s| *s != "self").cloned());
    Some(base)
}

/// The longest prefix of `path` that is a module with a file of its own.
fn defining_file(path: &[String], modules: &HashMap<Vec<String>, String>) -> Option<Vec<String>> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))
}

fn is_ident(tok: &str) -> bool {
    tok.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters, with their lines.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(("::".to_owned(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

/// The source with comments, string and character literals blanked out
/// (line breaks kept, so lines still count).
fn code_only(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    // Blank chars[from..to], keeping line breaks.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &c in &chars[from..to.min(chars.len())] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            let end = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let (mut j, mut nest) = (i + 2, 1);
            while j < chars.len() && nest > 0 {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    nest += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    nest -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c == 'r'
            && (!prev_ident || (i >= 1 && chars[i - 1] == 'b' && (i < 2 || !ident(chars[i - 2]))))
        {
            // Maybe a raw string: r"…", r#"…"#, br"…".
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) == Some(&'"') {
                let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                let body = i + 2 + hashes;
                let rest: String = chars[body..].iter().collect();
                let end =
                    rest.find(&close).map_or(chars.len(), |p| body + rest[..p].chars().count() + 1 + hashes);
                blank(&mut out, i, end);
                i = end;
            } else {
                out.push(c);
                i += 1;
            }
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{…}'), or a lifetime ('a).
            let end = if next == Some('\\') {
                chars.get(i + 3..).and_then(|r| r.iter().position(|&c| c == '\'')).map(|p| i + 3 + p + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}
