//! Which line of the file a key path (`health.checks[0].timeout`) is written on, so a
//! validation error points at the line as well as the key. Found from `toml_edit`'s
//! spans, never by searching the text for the key's name.

use toml_edit::{ImDocument, Item};

/// The 1-based line of the value at `key_path`; when the key is not written (a missing
/// required key), the line of the nearest enclosing table that is. `None` when nothing
/// of the path is in the file.
pub fn line_of(text: &str, key_path: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut item: &Item = doc.as_item();
    let mut offset = None;
    for segment in segments(key_path) {
        let next = match segment {
            Segment::Key(k) => item.get(k),
            Segment::Index(i) => item.get(i),
        };
        let Some(next) = next else { break };
        item = next;
        if let Some(span) = span_of(item) {
            offset = Some(span.start);
        }
    }
    offset.map(|o| line_at(text, o))
}

/// The key path (`health.checks[1].expect_status`) of the deepest key or value whose
/// span holds `offset`: what a serde error at that offset is about.
pub fn path_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut path = String::new();
    descend(doc.as_table(), offset, &mut path).then_some(path)
}

fn descend(table: &toml_edit::Table, offset: usize, path: &mut String) -> bool {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        let holds = |span: Option<std::ops::Range<usize>>| {
            span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
        };
        let mut here = path.clone();
        if !here.is_empty() {
            here.push('.');
        }
        here.push_str(key);
        let found = match item {
            Item::Table(t) => {
                let mut p = here.clone();
                descend(t, offset, &mut p).then_some(p)
            }
            Item::ArrayOfTables(a) => a.iter().enumerate().find_map(|(i, t)| {
                let mut p = format!("{here}[{i}]");
                (descend(t, offset, &mut p) || holds(t.span())).then_some(p)
            }),
            Item::Value(toml_edit::Value::InlineTable(t)) => {
                let t = t.clone().into_table();
                let mut p = here.clone();
                descend(&t, offset, &mut p).then_some(p)
            }
            _ => None,
        };
        if let Some(p) = found {
            *path = p;
            return true;
        }
        if holds(k.span()) || holds(span_of(item)) {
            *path = here;
            return true;
        }
    }
    false
}

/// The 1-based line of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn span_of(item: &Item) -> Option<std::ops::Range<usize>> {
    match item {
        Item::Table(t) => t.span(),
        Item::Value(v) => v.span(),
        Item::ArrayOfTables(a) => a.span().or_else(|| a.get(0).and_then(|t| t.span())),
        Item::None => None,
    }
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `health.checks[0].timeout` → `health`, `checks`, `0`, `timeout`.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        for index in rest.split(['[', ']']).filter(|s| !s.is_empty()) {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[source]\nurl = \"/r\"\n\n[health]\nsettle = \"1y\"\n\n[[health.checks]]\ntype = \"tcp\"\naddress = \"a:1\"\n[[health.checks]]\ntype = \"command\"\ntimeout = \"0s\"\ncommand = []\n";

    #[test]
    fn finds_the_line_of_a_key_path() {
        assert_eq!(line_of(TEXT, "source.url"), Some(2));
        assert_eq!(line_of(TEXT, "health.settle"), Some(5));
        assert_eq!(line_of(TEXT, "health.checks[0].address"), Some(9));
        assert_eq!(line_of(TEXT, "health.checks[1].timeout"), Some(12));
        assert_eq!(line_of(TEXT, "health.checks[1].command"), Some(13));
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        assert_eq!(line_of(TEXT, "health.timeout"), Some(4));
        assert_eq!(line_of(TEXT, "health.checks[1].name"), Some(10));
        assert_eq!(line_of(TEXT, "build.timeout"), None);
    }

    #[test]
    fn dotted_and_inline_forms_are_found_too() {
        let text = "source.url = \"/r\"\nhealth = { settle = \"1y\" }\n";
        assert_eq!(line_of(text, "source.url"), Some(1));
        assert_eq!(line_of(text, "health.settle"), Some(2));
    }

    #[test]
    fn finds_the_key_path_at_an_offset() {
        let at = |needle: &str| path_at(TEXT, TEXT.find(needle).unwrap());
        assert_eq!(at("\"/r\"").as_deref(), Some("source.url"));
        assert_eq!(at("settle").as_deref(), Some("health.settle"));
        assert_eq!(at("\"a:1\"").as_deref(), Some("health.checks[0].address"));
        assert_eq!(at("\"0s\"").as_deref(), Some("health.checks[1].timeout"));
        assert_eq!(
            at("command = []").as_deref(),
            Some("health.checks[1].command")
        );
    }

    #[test]
    fn splits_paths() {
        assert_eq!(
            segments("health.checks[2].units"),
            vec![
                Segment::Key("health"),
                Segment::Key("checks"),
                Segment::Index(2),
                Segment::Key("units")
            ]
        );
    }
}
