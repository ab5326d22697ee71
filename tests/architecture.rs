//! The architecture rules, enforced: reads the table under "Architecture
//! rules" in ARCHITECTURE.md and fails when a module of `src/` names a path
//! across a boundary the table forbids (a `use`, a path in code, a macro).
//! The table is the only copy of the rules, so the document and the test
//! cannot drift apart: a rule added to the table is enforced, and a row the
//! test cannot read fails it.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// One row of the rules table.
#[derive(Debug)]
struct Rule {
    number: String,
    /// Top-level modules of the library the rule binds (`analyze`, `stats`).
    modules: Vec<String>,
    forbidden: Vec<Forbidden>,
}

/// What a bound module may not name.
#[derive(Debug, Clone, PartialEq)]
enum Forbidden {
    /// Anything under a top-level module of the library or an external crate.
    Everything(String),
    /// A library module's functions: only its types (names starting with a
    /// capital) may be named.
    FunctionsOf(String),
}

impl Forbidden {
    fn target(&self) -> &str {
        match self {
            Forbidden::Everything(t) | Forbidden::FunctionsOf(t) => t,
        }
    }
}

/// A path that crosses a forbidden boundary.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` breaks rule {} of ARCHITECTURE.md",
            self.file, self.line, self.path, self.rule
        )
    }
}

/// The backquoted words of a table cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|w| w.trim_end_matches('/').trim_end_matches(".rs").to_string())
        .collect()
}

/// The rules table of ARCHITECTURE.md: `| n | modules | may not name |`.
fn rules(architecture: &str) -> Vec<Rule> {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Architecture rules"))
        .expect("ARCHITECTURE.md has an \"Architecture rules\" section");
    let mut rules = Vec::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 3 || !cells[0].chars().all(|c| c.is_ascii_digit()) || cells[0].is_empty()
        {
            continue; // the header and its underline
        }
        let modules = quoted(cells[1]);
        let forbidden: Vec<Forbidden> = match cells[2].strip_prefix("functions of ") {
            Some(rest) => quoted(rest)
                .into_iter()
                .take(1)
                .map(Forbidden::FunctionsOf)
                .collect(),
            None => quoted(cells[2])
                .into_iter()
                .map(Forbidden::Everything)
                .collect(),
        };
        assert!(
            !modules.is_empty() && !forbidden.is_empty(),
            "rule {} of ARCHITECTURE.md cannot be read: {row}",
            cells[0]
        );
        rules.push(Rule {
            number: cells[0].to_string(),
            modules,
            forbidden,
        });
    }
    rules
}

/// The text of `source` with comments, string and character literals blanked
/// (newlines kept, so line numbers hold).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            for &ch in &chars[i..j.min(chars.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' || (c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')))
        {
            // A string, or a character literal ('x', '\n', '\u{..}'); a
            // lifetime stays.
            let end = closing(&chars, i);
            for &ch in &chars[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where the quoted literal opening at `start` ends (one past its closing
/// quote, escapes skipped), or the end of the text.
fn closing(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    (i + 1).min(chars.len())
}

/// A token of code: an identifier (or keyword) or one punctuation character,
/// with its line.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_alphabetic() || c == '_' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    word.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token { text: word, line });
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
            {
                chars.next();
            }
        } else if !c.is_whitespace() {
            out.push(Token {
                text: c.to_string(),
                line,
            });
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Every path named in `code` as (segments, line): `use` trees expanded,
/// inline paths (`a::b::c`), and macros (`json!` as the path `json`).
fn paths(code: &str) -> Vec<(Vec<String>, usize, Vec<String>)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // The stack of inline `mod name { … }` blocks: (name, brace depth inside).
    let mut mods: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                if mods.last().is_some_and(|(_, d)| *d == depth) {
                    mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if toks.get(i + 2).is_some_and(|n| n.text == "{") => {
                mods.push((toks[i + 1].text.clone(), depth + 1));
            }
            _ => {}
        }
        let inner: Vec<String> = mods.iter().map(|(m, _)| m.clone()).collect();
        if t == "use" {
            let end = toks[i..]
                .iter()
                .position(|t| t.text == ";")
                .map_or(toks.len(), |p| i + p);
            let tree: Vec<&Token> = toks[i + 1..end].iter().collect();
            for path in use_tree(&tree) {
                out.push((path, toks[i].line, inner.clone()));
            }
            i = end + 1;
            continue;
        }
        let starts_path = is_ident(t)
            && !(i > 0 && toks[i - 1].text == ".")
            && !(i >= 2 && is_sep(&toks, i - 2))
            && (is_sep(&toks, i + 1) || toks.get(i + 1).is_some_and(|n| n.text == "!"));
        if starts_path {
            let mut path = vec![t.to_string()];
            let mut j = i + 1;
            while is_sep(&toks, j) && toks.get(j + 2).is_some_and(|n| is_ident(&n.text)) {
                path.push(toks[j + 2].text.clone());
                j += 3;
            }
            out.push((path, toks[i].line, inner));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Whether tokens `i` and `i + 1` are `::`.
fn is_sep(toks: &[Token], i: usize) -> bool {
    toks.get(i).is_some_and(|t| t.text == ":") && toks.get(i + 1).is_some_and(|t| t.text == ":")
}

/// The paths a `use` tree names: `a::{b, c::{d, e as f}}` → a::b, a::c::d, a::c::e.
fn use_tree(toks: &[&Token]) -> Vec<Vec<String>> {
    fn walk(toks: &[&Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        while *i < toks.len() {
            let t = toks[*i].text.as_str();
            match t {
                ":" => *i += 1,
                "{" => {
                    *i += 1;
                    loop {
                        walk(toks, i, path.clone(), out);
                        match toks.get(*i).map(|t| t.text.as_str()) {
                            Some(",") => *i += 1,
                            Some("}") => {
                                *i += 1;
                                return;
                            }
                            _ => return,
                        }
                        if toks.get(*i).is_some_and(|t| t.text == "}") {
                            *i += 1;
                            return;
                        }
                    }
                }
                "," | "}" => break,
                "as" => *i += 2,
                _ => {
                    path.push(t.to_string());
                    *i += 1;
                }
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    walk(toks, &mut i, Vec::new(), &mut out);
    out
}

/// The absolute form of `path` named in module `module` (its segments under
/// the crate root): `crate::`, `self::` and `super::` resolved; other paths
/// are kept as written (an external crate, or a name imported elsewhere).
fn resolve(path: &[String], module: &[String]) -> Vec<String> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") | Some("hopscope") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return path.to_vec(),
    }
    base.extend(rest.iter().cloned());
    base
}

/// The violations of `rules` in one source file of module `module`.
fn check(file: &str, module: &[String], source: &str, rules: &[Rule]) -> Vec<Violation> {
    let Some(top) = module.first() else {
        return Vec::new();
    };
    let bound: Vec<&Rule> = rules.iter().filter(|r| r.modules.contains(top)).collect();
    if bound.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (path, line, inner) in paths(&code_only(source)) {
        if inner.iter().any(|m| m == "tests") {
            continue; // a unit test module is not part of the architecture
        }
        let here: Vec<String> = module.iter().chain(&inner).cloned().collect();
        let absolute = resolve(&path, &here);
        let Some(first) = absolute.first() else {
            continue;
        };
        for rule in &bound {
            for forbidden in &rule.forbidden {
                let crosses = match forbidden {
                    Forbidden::Everything(target) => first == target && first != top,
                    Forbidden::FunctionsOf(target) => {
                        first == target
                            && first != top
                            && !absolute
                                .last()
                                .is_some_and(|l| l.starts_with(char::is_uppercase))
                    }
                };
                if crosses {
                    found.push(Violation {
                        file: file.to_string(),
                        line,
                        path: path.join("::"),
                        rule: rule.number.clone(),
                    });
                }
            }
        }
    }
    found
}

/// The library module of a file under `src/` (`src/analyze/budget/map.rs` →
/// analyze::budget::map), or `None` for the binary's files.
fn module_of(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts == ["main"] || parts == ["cli"] {
        return None;
    }
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn the_rules() -> Vec<Rule> {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is readable");
    rules(&text)
}

#[test]
fn no_module_names_a_path_across_a_boundary_architecture_md_forbids() {
    let rules = the_rules();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(module) = module_of(relative) else {
            continue;
        };
        if let Some(top) = module.first() {
            modules.insert(top.clone());
        }
        let source = fs::read_to_string(file).unwrap();
        violations.extend(check(
            &format!("src/{}", relative.display()),
            &module,
            &source,
            &rules,
        ));
    }
    // A rule about a module that does not exist is a rule that drifted.
    for rule in &rules {
        for m in &rule.modules {
            assert!(
                modules.contains(m),
                "rule {} binds `{m}`, which is not a module of src/",
                rule.number
            );
        }
        for f in &rule.forbidden {
            let target = f.target();
            let external = ["tokio", "serde_json", "utoipa"].contains(&target);
            assert!(
                external || modules.contains(target),
                "rule {} forbids `{target}`, which is neither a module of src/ nor a known crate",
                rule.number
            );
        }
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn architecture_md_states_the_rules_as_a_table_the_test_reads() {
    let rules = the_rules();
    assert!(rules.len() >= 5, "{rules:?}");
    let numbers: Vec<&str> = rules.iter().map(|r| r.number.as_str()).collect();
    let expected: Vec<String> = (1..=rules.len()).map(|n| n.to_string()).collect();
    assert_eq!(
        numbers, expected,
        "the rules are numbered 1, 2, 3, … in order"
    );
}

/// The checker itself: what it must catch and what it must let through.
#[test]
fn the_checker_catches_crossings_and_ignores_comments_strings_and_own_paths() {
    let table =
        "# x\n\n## Architecture rules\n\n| rule | modules | may not name |\n|---|---|---|\n\
                 | 1 | `analyze/` | `store`, `tokio`, `serde_json` |\n\
                 | 2 | `api/` | functions of `analyze` |\n\n## Next\n";
    let rules = rules(table);
    assert_eq!(rules.len(), 2);
    let module = |m: &str| m.split("::").map(String::from).collect::<Vec<_>>();
    let caught = |m: &str, src: &str| -> Vec<String> {
        check("f.rs", &module(m), src, &rules)
            .into_iter()
            .map(|v| format!("{}:{}", v.line, v.path))
            .collect()
    };
    let bad = "use crate::{model::Span, store::{Store, durable}};\n\
               fn f() { super::super::super::store::put(); tokio::spawn(async {}); }\n\
               fn g() -> serde_json::Value { json!({}) }\n\
               use serde_json::json;\n";
    assert_eq!(
        caught("analyze::budget::map", bad),
        [
            "1:crate::store::Store",
            "1:crate::store::durable",
            "2:super::super::super::store::put",
            "2:tokio::spawn",
            "3:serde_json::Value",
            "4:serde_json::json"
        ]
    );
    let fine = "//! Not `crate::store`, nor tokio::spawn.\n\
                use crate::model::Span; use super::Finding;\n\
                const S: &str = \"crate::store::Store\"; const R: &str = r#\"tokio::x\"#;\n\
                fn f<'a>(c: char) -> bool { c == ':' || c == '\\'' }\n\
                #[cfg(test)] mod tests { use super::*; use super::super::map; use tokio::time; }\n";
    assert!(
        caught("analyze::budget", fine).is_empty(),
        "{:?}",
        caught("analyze::budget", fine)
    );
    assert_eq!(
        caught(
            "api::hops",
            "use crate::analyze::{Finding, budget::budget_map};\nfn f() { analyze::critical_path(); crate::analyze::FindingKind::Cascade; }"
        ),
        ["1:crate::analyze::budget::budget_map", "2:analyze::critical_path"]
    );
}
