//! Statement shapes: a query with its literals folded, so calls of one query
//! with different values group together.

/// Longest statement read (longer text is cut first; an open quote then folds
/// to `?`).
const MAX_INPUT: usize = 8 * 1024;
/// Longest shape kept.
pub const MAX_SHAPE: usize = 1024;

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Normalises a statement: numbers (`42`, `1.5e3`), hex (`0x1f`) and
/// single-quoted strings become `?`; lists of literals or placeholders
/// (`IN (1, 2, 3)`, `VALUES (?, ?), (?, ?)`, `ANY(ARRAY[1, 2])`) become one
/// `?`; comments are dropped and whitespace collapsed. Placeholders (`$1`, `?`,
/// `:name`), identifiers (also quoted ones) and the case of keywords are kept.
pub fn normalize(statement: &str) -> String {
    let text = match statement.char_indices().nth(MAX_INPUT) {
        Some((cut, _)) => &statement[..cut],
        None => statement,
    };
    let folded = fold_literals(text);
    let mut shape = fold_lists(&folded);
    // Most statements have no row list to fold: one scan, not two copies.
    while shape.contains("(?),") {
        let next = shape.replace("(?), (?)", "(?)").replace("(?),(?)", "(?)");
        if next.len() == shape.len() {
            break;
        }
        shape = next;
    }
    if let Some((cut, _)) = shape.char_indices().nth(MAX_SHAPE) {
        shape.truncate(cut);
        shape.push('…');
    }
    shape
}

/// Literals to `?`, comments out, whitespace runs to one space.
fn fold_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let space = |out: &mut String| {
        if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let prev = if i > 0 { Some(chars[i - 1]) } else { None };
        match c {
            c if c.is_whitespace() => {
                space(&mut out);
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                space(&mut out);
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                space(&mut out);
            }
            '\'' => {
                // '' inside a string is an escaped quote; \' too.
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 2,
                        '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
                        '\'' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push('?');
            }
            '"' | '`' => {
                // A quoted identifier: kept as written.
                let end = chars[i + 1..]
                    .iter()
                    .position(|&q| q == c)
                    .map_or(chars.len(), |p| i + 2 + p);
                out.extend(&chars[i..end]);
                i = end;
            }
            c if c.is_ascii_digit() && !prev.is_some_and(ident_char) => {
                let hex = c == '0' && matches!(chars.get(i + 1), Some('x' | 'X'));
                i += if hex { 2 } else { 1 };
                while i < chars.len() {
                    let d = chars[i];
                    let exp_sign =
                        matches!(d, '+' | '-') && !hex && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '.' || exp_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push('?');
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// The item of a list that may be folded: `?` or a placeholder (`$1`, `:id`).
fn literal_item(item: &str) -> bool {
    let item = item.trim();
    item == "?"
        || item
            .strip_prefix(['$', ':'])
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(ident_char))
}

/// `(?, ?, $3)` → `(?)`, `ARRAY[?, ?]` → `?`, `[?, ?]` → `[?]`.
fn fold_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['(', '[']) {
        let (before, from) = rest.split_at(open);
        out.push_str(before);
        let close = if from.starts_with('(') { ')' } else { ']' };
        let inner_end = from[1..].find([')', ']', '(', '[']).map(|p| p + 1);
        let list = inner_end
            .filter(|&e| from[e..].starts_with(close))
            .map(|e| &from[1..e])
            .filter(|inner| {
                let items: Vec<&str> = inner.split(',').collect();
                items.iter().all(|i| literal_item(i)) && (items.len() > 1 || inner.trim() == "?")
            });
        match list {
            Some(inner) if close == ']' => {
                let trimmed = out.trim_end();
                let array = trimmed.len() >= 5
                    && trimmed.is_char_boundary(trimmed.len() - 5)
                    && trimmed[trimmed.len() - 5..].eq_ignore_ascii_case("array");
                if array {
                    out.truncate(trimmed.len() - 5);
                    out.push('?');
                } else {
                    out.push_str("[?]");
                }
                rest = &from[inner.len() + 2..];
            }
            Some(inner) => {
                out.push_str("(?)");
                rest = &from[inner.len() + 2..];
            }
            None => {
                out.push_str(&from[..1]);
                rest = &from[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn literals_fold_and_placeholders_stay() {
        assert_eq!(
            normalize("SELECT * FROM orders WHERE id = 42 AND note = 'it''s' AND h = 0xDEADbeef"),
            "SELECT * FROM orders WHERE id = ? AND note = ? AND h = ?"
        );
        assert_eq!(
            normalize("select  *\n\tfrom t1 where price > 1.5e-3 and id = $1"),
            "select * from t1 where price > ? and id = $1"
        );
        assert_eq!(
            normalize(r#"SELECT "col2019" FROM "t 1" WHERE x = ?"#),
            r#"SELECT "col2019" FROM "t 1" WHERE x = ?"#
        );
        assert_eq!(
            normalize("SELECT 1 /* traceparent='00-abc' */ -- note 7\nFROM dual"),
            "SELECT ? FROM dual"
        );
    }

    #[test]
    fn lists_fold_to_one_placeholder() {
        let one = normalize("SELECT * FROM items WHERE id IN (1, 2, 3)");
        assert_eq!(one, "SELECT * FROM items WHERE id IN (?)");
        assert_eq!(normalize("SELECT * FROM items WHERE id IN (7)"), one);
        assert_eq!(
            normalize("SELECT * FROM items WHERE id IN ($1,$2,$3)"),
            one,
            "a list of placeholders is a list"
        );
        assert_eq!(
            normalize("SELECT * FROM items WHERE id = ANY(ARRAY[4, 5, 6])"),
            "SELECT * FROM items WHERE id = ANY(?)"
        );
        assert_eq!(
            normalize("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
            "INSERT INTO t (a, b) VALUES (?)"
        );
        assert_eq!(
            normalize("SELECT count(*) FROM t WHERE f(a, 2) > 0"),
            "SELECT count(*) FROM t WHERE f(a, ?) > ?",
            "calls and column lists are not literal lists"
        );
        assert_eq!(
            normalize("SELECT * FROM t WHERE id = $1"),
            "SELECT * FROM t WHERE id = $1"
        );
    }

    #[test]
    fn long_statements_are_cut() {
        let long = format!("SELECT {} FROM t", "a, ".repeat(2_000));
        let shape = normalize(&long);
        assert_eq!(shape.chars().count(), super::MAX_SHAPE + 1);
        assert!(shape.ends_with('…'));
        assert_eq!(normalize("SELECT 'unterminated"), "SELECT ?");
    }
}
