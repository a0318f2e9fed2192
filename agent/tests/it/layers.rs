//! Layers point one way (issue 22): every module of agent/src imports only from the
//! layers below its own, in the order docs/code-layout.md lists them. The test reads the
//! doc's layer table and every `crate::`/`super::` path of the non-test code, so neither
//! the code nor the picture can drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One import of another top-level module, where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The layer table of docs/code-layout.md (rows `N | modules | what`): module → layer.
fn layers(doc: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    // A row with an empty first cell continues the layer above it.
    let mut current = None;
    for (n, line) in doc.lines().enumerate() {
        let mut cells = line.split('|');
        let (Some(first), Some(modules)) = (cells.next(), cells.next()) else {
            current = None;
            continue;
        };
        current = match first.trim() {
            "" => current,
            number => number.parse::<u32>().ok(),
        };
        let Some(layer) = current else {
            continue;
        };
        for module in modules.split_whitespace() {
            if let Some(before) = out.insert(module.to_string(), layer) {
                return Err(format!(
                    "docs/code-layout.md:{}: module {module} is listed twice (layers {before} \
                     and {layer}): give each module one layer",
                    n + 1
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(
            "docs/code-layout.md has no layer table: add rows `N | modules | what`, \
                    the bottom layer 0"
                .into(),
        );
    }
    Ok(out)
}

/// The crate's top-level modules (and lib.rs's own items used as `crate::name`), as
/// lib.rs declares them.
fn top_level(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("//"))
        .filter_map(|l| {
            let rest = l.strip_prefix("pub mod ").or(l.strip_prefix("pub fn "))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// Test code is no import: `tests.rs`, `*_tests.rs`, anything under a `tests/` directory.
fn is_test_file(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let name = parts.last().copied().unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs") || parts[..parts.len() - 1].contains(&"tests")
}

/// The file's module path under the crate root: `doors/uboot/cli.rs` → doors, uboot, cli.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code only: comments, string and character literals become spaces (lines kept).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{1b}'); else a lifetime ('a), kept.
            let end = if next == Some('\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for &ch in &c[i..=end] {
                        blank(&mut out, ch);
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Blanks every item marked `#[cfg(test)]` (up to its `;` or its balanced `{…}`).
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut c: Vec<char> = code.chars().collect();
    let text: String = c.iter().collect();
    let starts: Vec<usize> = text
        .match_indices(MARK)
        .map(|(byte, _)| text[..byte].chars().count())
        .collect();
    let len = c.len();
    for start in starts {
        let mut i = start + MARK.chars().count();
        let mut depth = 0;
        while i < c.len() {
            match c[i] {
                ';' if depth == 0 => break,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        for ch in c.iter_mut().take((i + 1).min(len)).skip(start) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    }
    c.into_iter().collect()
}

fn ident_at(c: &[char], i: usize) -> String {
    c[i.min(c.len())..]
        .iter()
        .take_while(|ch| ch.is_alphanumeric() || **ch == '_')
        .collect()
}

/// The top-level modules a file's non-test code names: `crate::x`, `use crate::{x, y::z}`,
/// and `super::` paths that climb to the crate root.
fn imports(rel: &str, text: &str) -> Vec<Import> {
    if is_test_file(rel) {
        return Vec::new();
    }
    let module = module_path(rel);
    let Some(from) = module.first().cloned() else {
        return Vec::new();
    };
    let code = without_test_items(&code_only(text));
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let boundary =
        |i: usize| i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_' || c[i - 1] == ':');
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        let at_root =
            if boundary(i) && ident_at(&c, i) == "crate" && c[i + 5..].starts_with(&[':', ':']) {
                Some(i + 7)
            } else if boundary(i) && ident_at(&c, i) == "super" {
                let mut j = i;
                let mut climbs = 0;
                while ident_at(&c, j) == "super" && c[j + 5..].starts_with(&[':', ':']) {
                    climbs += 1;
                    j += 7;
                }
                (climbs > 0 && climbs >= module.len()).then_some(j)
            } else {
                None
            };
        let Some(j) = at_root else {
            i += 1;
            continue;
        };
        let mut names = Vec::new();
        if c.get(j) == Some(&'{') {
            // A group: each top-level item's first name.
            let mut depth = 0;
            let mut k = j;
            let mut expect = true;
            while k < c.len() {
                match c[k] {
                    '{' => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect = true,
                    ch if expect && (ch.is_alphanumeric() || ch == '_') => {
                        names.push(ident_at(&c, k));
                        expect = false;
                    }
                    _ => {}
                }
                k += 1;
            }
        } else {
            names.push(ident_at(&c, j));
        }
        for to in names {
            if !to.is_empty() && to != from && to != "self" {
                out.push(Import {
                    file: format!("agent/src/{rel}"),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
        i = j;
    }
    out
}

/// Every way the code and the doc's layer table disagree, one message each.
fn check(
    layers: &BTreeMap<String, u32>,
    modules: &BTreeSet<String>,
    imports: &[Import],
) -> Vec<String> {
    let mut bad = Vec::new();
    for m in modules.iter().filter(|m| !layers.contains_key(*m)) {
        bad.push(format!(
            "module {m} (agent/src/lib.rs) is in no layer of docs/code-layout.md: add it to \
             the layer table"
        ));
    }
    for m in layers.keys().filter(|m| !modules.contains(*m)) {
        bad.push(format!(
            "docs/code-layout.md lists {m}, which agent/src/lib.rs does not declare: remove it \
             from the layer table"
        ));
    }
    for i in imports {
        let (Some(&from), Some(&to)) = (layers.get(&i.from), layers.get(&i.to)) else {
            continue;
        };
        if to >= from {
            let which = if to == from {
                "its own layer"
            } else {
                "a layer above it"
            };
            bad.push(format!(
                "{}:{}: {} (layer {from}) imports {} (layer {to}), {which}: a module imports \
                 only from the layers below its own (docs/code-layout.md); move what it needs \
                 down, pass it in, or put it behind a door",
                i.file, i.line, i.from, i.to
            ));
        }
    }
    bad
}

fn sources(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel != "lib.rs" && rel != "main.rs" {
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(agent.join("../docs/code-layout.md")).unwrap();
    let layers = layers(&doc).unwrap();
    let lib = std::fs::read_to_string(agent.join("src/lib.rs")).unwrap();
    let modules = top_level(&lib);
    let found: Vec<Import> = sources(&agent.join("src"))
        .iter()
        .flat_map(|(rel, text)| imports(rel, text))
        .collect();
    // The reading works: the tree has imports to judge.
    assert!(found.len() > 100, "{found:?}");
    let bad = check(&layers, &modules, &found);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn an_upward_import_is_named_with_its_file_line_and_both_modules() {
    let layers = layers("    1 | state | the state\n    0 | model | words\n").unwrap();
    let modules: BTreeSet<String> = ["state", "model"].map(String::from).into();
    let found = imports(
        "model/pause.rs",
        "//! see crate::state\nuse serde::Serialize;\nuse crate::state::State;\n",
    );
    assert_eq!(
        check(&layers, &modules, &found),
        [
            "agent/src/model/pause.rs:3: model (layer 0) imports state (layer 1), a layer above \
          it: a module imports only from the layers below its own (docs/code-layout.md); move \
          what it needs down, pass it in, or put it behind a door"
        ]
    );
    let same = imports("model/a.rs", "fn f() { crate::model2::x(); }");
    let layers2 = table(&[("model", 0), ("model2", 0)]);
    let modules2: BTreeSet<String> = ["model", "model2"].map(String::from).into();
    let bad = check(&layers2, &modules2, &same);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].starts_with(
            "agent/src/model/a.rs:1: model (layer 0) imports model2 (layer 0), its own layer"
        ),
        "{bad:?}"
    );
}

fn table(rows: &[(&str, u32)]) -> BTreeMap<String, u32> {
    rows.iter().map(|(m, l)| (m.to_string(), *l)).collect()
}

#[test]
fn comments_strings_and_test_code_are_not_imports() {
    let text = r##"
//! crate::a in a doc comment
/* crate::b in a block /* nested crate::c */ */
const S: &str = "crate::d";
const R: &str = r#"crate::e "quoted" "#;
const C: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use crate::g;
    fn h() { if true { crate::h::x(); } }
}
#[cfg(test)]
use crate::i;
use crate::real;
"##;
    let found = imports("m.rs", text);
    let to: Vec<&str> = found.iter().map(|i| i.to.as_str()).collect();
    assert_eq!(to, ["real"], "{found:?}");
    assert_eq!(found[0].line, 15);
    assert!(imports("m/tests.rs", "use crate::x;").is_empty());
    assert!(imports("m/state_tests.rs", "use crate::x;").is_empty());
    assert!(imports("m/tests/pivot.rs", "use crate::x;").is_empty());
}

#[test]
fn groups_and_super_paths_are_resolved_to_their_module() {
    let found = imports(
        "doors/uboot/cli.rs",
        "use crate::{config::Settings, failure, text::{quote, self}};\n\
         use super::layout;\nuse super::super::trial;\nuse super::super::super::state::X;\n",
    );
    let to: Vec<(&str, usize)> = found.iter().map(|i| (i.to.as_str(), i.line)).collect();
    assert_eq!(
        to,
        [("config", 1), ("failure", 1), ("text", 1), ("state", 4)]
    );
    assert!(found.iter().all(|i| i.from == "doors"));
    // From a top-level file, `super::` is the crate root.
    let found = imports("text.rs", "use super::model::X;");
    assert_eq!(found[0].to, "model");
}

#[test]
fn the_doc_and_lib_rs_must_list_the_same_modules() {
    let layers = layers("  0 | text |\n    | exit |\n  1 | gone |\n").unwrap();
    assert_eq!(
        layers.get("exit"),
        Some(&0),
        "a row with no number continues its layer"
    );
    let modules = top_level("pub mod text;\npub mod extra;\npub mod exit {\n}\n");
    assert_eq!(
        check(&layers, &modules, &[]),
        [
            "module extra (agent/src/lib.rs) is in no layer of docs/code-layout.md: add it to \
             the layer table",
            "docs/code-layout.md lists gone, which agent/src/lib.rs does not declare: remove it \
             from the layer table",
        ]
    );
}

#[test]
fn a_doc_without_a_layer_table_or_with_a_module_twice_is_refused() {
    assert_eq!(
        layers("# Code layout\n\nno table here\n").unwrap_err(),
        "docs/code-layout.md has no layer table: add rows `N | modules | what`, the bottom \
         layer 0"
    );
    assert_eq!(
        layers("  1 | state |\n  0 | model state |\n").unwrap_err(),
        "docs/code-layout.md:2: module state is listed twice (layers 1 and 0): give each \
         module one layer"
    );
}
