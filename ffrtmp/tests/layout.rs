//! The layout a reader can hold (docs/architecture.md, "Dependencies"), checked on the
//! source itself: modules depend one way (no cycle among the crate's top-level modules, nor
//! among the submodules of one), no source file over 500 lines outside its tests, no
//! function over 80 lines, no struct with more than 10 fields.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;
const MAX_FIELDS: usize = 10;
/// Structs with a field per key of a format that is not ours to shape: the config file's
/// top-level keys (`RawConfig`, which rejects unknown keys, so it cannot be split with
/// `serde(flatten)`) and the settings they become (`Settings`: one field per key, read by
/// name across the code and the config tests).
const ONE_FIELD_PER_KEY: &[&str] = &["pub struct RawConfig {", "pub struct Settings {"];

/// Every `.rs` file under `src/`, with its module path (`daemon::journal`).
fn sources() -> Vec<(String, PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&root).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|l| l == "mod") {
                    parts.pop();
                }
                let module = if parts == ["lib"] || parts == ["main"] {
                    String::new()
                } else {
                    parts.join("::")
                };
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((module, p, text));
            }
        }
    }
    out
}

/// The code before the file's unit tests (`#[cfg(test)] mod tests`).
fn code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The first `depth` components of a module path.
fn key(module: &str, depth: usize) -> String {
    module
        .split("::")
        .take(depth)
        .collect::<Vec<_>>()
        .join("::")
}

/// `crate::a::b` paths a module's code names (and `super::x` resolved).
fn references(module: &str, text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    for (i, _) in text.match_indices("crate::") {
        out.insert(ident(&text[i + 7..]));
    }
    // `super::` from a file is its parent module (a `mod.rs`'s parent is the module's).
    let parent: Vec<&str> = module.split("::").collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("::") {
            continue;
        }
        let rest = ident(&text[i + 7..]);
        out.insert(if parent.is_empty() {
            rest
        } else {
            format!("{parent}::{rest}")
        });
    }
    out
}

/// Module → modules it uses, at `depth` components, within `scope` (a module prefix).
fn graph(depth: usize, scope: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, text) in sources() {
        if !module.starts_with(scope) || module.is_empty() {
            continue;
        }
        let from = key(&module, depth);
        for r in references(&module, code(&text)) {
            if !r.starts_with(scope) {
                continue;
            }
            let to = key(&r, depth);
            if to != from && !to.is_empty() && to.split("::").count() == depth {
                g.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn modules_depend_one_way() {
    let top = graph(1, "");
    assert!(
        top.contains_key("daemon"),
        "the graph saw no module: {top:?}"
    );
    if let Some(c) = cycle(&top) {
        panic!("a cycle among top-level modules: {}", c.join(" -> "));
    }
    let parents: BTreeSet<String> = sources()
        .iter()
        .filter(|(m, _, _)| m.contains("::"))
        .map(|(m, _, _)| key(m, 1))
        .collect();
    for p in parents {
        if let Some(c) = cycle(&graph(2, &format!("{p}::"))) {
            panic!("a cycle among the submodules of {p}: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    assert!(references("x::y", "use super::z::W; use crate::q::r;").contains("x::z::W"));
}

#[test]
fn files_functions_and_structs_stay_small() {
    let mut too_big = Vec::new();
    for (_, path, text) in sources() {
        // Unit tests in a file of their own (`#[cfg(test)] mod tests;`) are tests.
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = code(&text);
        let lines: Vec<&str> = code.lines().collect();
        let name = path.display().to_string();
        if lines.len() > MAX_FILE_LINES {
            too_big.push(format!("{name}: {} lines", lines.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            let is_fn = (t.starts_with("fn ")
                || t.starts_with("pub fn ")
                || t.starts_with("pub(super) fn ")
                || t.starts_with("pub(crate) fn ")
                || t.starts_with("async fn ")
                || t.starts_with("pub async fn "))
                && !t.ends_with(';');
            let is_struct = (t.starts_with("struct ")
                || t.starts_with("pub struct ")
                || t.starts_with("pub(super) struct ")
                || t.starts_with("pub(crate) struct "))
                && t.ends_with('{');
            if !is_fn && !is_struct {
                continue;
            }
            let end = format!("{}}}", " ".repeat(indent));
            let Some(len) = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with(&end) && l.trim() == "}")
            else {
                continue;
            };
            if is_fn && len + 2 > MAX_FN_LINES {
                too_big.push(format!(
                    "{name}:{}: a function of {} lines: {t}",
                    i + 1,
                    len + 2
                ));
            }
            if is_struct && !ONE_FIELD_PER_KEY.contains(&t) {
                let field_indent = " ".repeat(indent + 4);
                let fields = lines[i + 1..i + 1 + len]
                    .iter()
                    .filter(|l| {
                        l.starts_with(&field_indent)
                            && !l[field_indent.len()..].starts_with([' ', '/', '#'])
                            && l.contains(':')
                    })
                    .count();
                if fields > MAX_FIELDS {
                    too_big.push(format!(
                        "{name}:{}: a struct of {fields} fields: {t}",
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        too_big.is_empty(),
        "too big to hold (files ≤ {MAX_FILE_LINES} lines, functions ≤ {MAX_FN_LINES}, structs ≤ {MAX_FIELDS} fields):\n{}",
        too_big.join("\n")
    );
}
