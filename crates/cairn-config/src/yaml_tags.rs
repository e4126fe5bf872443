//! Finding YAML tags, which Cairn configuration files may not use.
//!
//! yaml_serde resolves core-schema tags (`!!int 2`, `!<tag:yaml.org,2002:int> 2`) and tags
//! with a `%TAG`-declared global prefix into plain values, and its event parser is private, so
//! a loaded `Value` cannot tell `!!int 2` from `2`. The parser can find them, though: every tag
//! starts with `!`, and a `!` anywhere else (inside text, quotes, block scalars, comments, keys,
//! anchor names) is an ordinary character. Rewriting every `!` as `!x!` (a named tag handle no
//! directive declares) leaves a document without tags valid, and turns the first tag of any
//! other document into a parse error at the tag's position.

use crate::error::{ConfigError, ConfigErrorKind};

/// The tag handle no directive declares, substituted for every `!`.
const UNDECLARED: &str = "!x!";

/// The local tag the found tag is replaced with, so the loaded tree shows where it was.
const MARKER: &str = "cairn-found-tag";

/// The first YAML tag (or `%TAG` directive) of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FoundTag {
    /// 1-based line.
    line: usize,
    /// Byte range of the tag token in the document (for a directive: of its handle).
    range: std::ops::Range<usize>,
    /// Whether it is a `%TAG` directive rather than a tag on a node.
    directive: bool,
}

/// Fails with an error naming the tag, the key it is on and its line when `text` (a document
/// that parses) uses a YAML tag.
pub(crate) fn reject_tags(text: &str, origin: &str) -> Result<(), ConfigError> {
    let Some(found) = first_tag(text) else {
        return Ok(());
    };
    let tag = &text[found.range.clone()];
    let fix = "Cairn reads every value as plain text and parses it for the option's type; \
               remove the tag";
    let message = if found.directive {
        format!(
            "a %TAG directive declares the YAML tag handle '{tag}', but YAML tags are not \
             supported in configuration files; {fix} directive and the tags that use it"
        )
    } else {
        let on = match where_is_marker(text, &found.range) {
            Some(Place::Value(key)) => format!("'{key}' has"),
            Some(Place::Key(parent)) if parent.is_empty() => "a key at the top level has".to_string(),
            Some(Place::Key(parent)) => format!("a key under '{parent}' has"),
            None => "the document has".to_string(),
        };
        format!("{on} the YAML tag '{tag}', but YAML tags are not supported; {fix}")
    };
    Err(ConfigError::new(ConfigErrorKind::Syntax, message)
        .with_origin(origin)
        .with_line(Some(found.line)))
}

fn first_tag(text: &str) -> Option<FoundTag> {
    if !text.contains('!') {
        return None;
    }
    let rewritten = text.replace('!', UNDECLARED);
    let err = yaml_serde::from_str::<yaml_serde::Value>(&rewritten).err()?;
    // Without a position there is nothing to point at; the first `!` that starts a token is
    // then the best guess (the document did change meaning, so it has a tag).
    let (line, column) = match err.location() {
        Some(l) => (l.line(), l.column()),
        None => return first_token_bang(text),
    };
    let line_start = line_offsets(text).nth(line.checked_sub(1)?)?;
    let line_text = text[line_start..].split('\n').next().unwrap_or("");
    if line_text.starts_with('%') {
        // Directives (`%TAG !e! prefix`) name their handle second.
        let handle = line_text.split_whitespace().nth(1).unwrap_or("%TAG");
        let at = line_start + line_text.find(handle).unwrap_or(0);
        return Some(FoundTag {
            line,
            range: at..at + handle.len(),
            directive: true,
        });
    }
    // The error column counts characters of the rewritten line (1-based); map it back.
    let target = column.saturating_sub(1);
    let mut rewritten_col = 0;
    let mut hit = line_text.len();
    for (byte, ch) in line_text.char_indices() {
        let width = if ch == '!' { UNDECLARED.chars().count() } else { 1 };
        if target < rewritten_col + width {
            hit = byte;
            break;
        }
        rewritten_col += width;
    }
    // The error may point just past the handle (`! 2`, `!<...>`): back up to the `!` that
    // starts the tag token.
    let start = (0..=hit.min(line_text.len().saturating_sub(1)))
        .rev()
        .find(|&i| starts_tag_token(line_text, i))?;
    Some(FoundTag {
        line,
        range: line_start + start..line_start + tag_token_end(line_text, start),
        directive: false,
    })
}

fn first_token_bang(text: &str) -> Option<FoundTag> {
    for (n, line_start) in line_offsets(text).enumerate() {
        let line_text = text[line_start..].split('\n').next().unwrap_or("");
        if let Some(start) = (0..line_text.len()).find(|&i| starts_tag_token(line_text, i)) {
            return Some(FoundTag {
                line: n + 1,
                range: line_start + start..line_start + tag_token_end(line_text, start),
                directive: false,
            });
        }
    }
    None
}

/// Byte offsets at which lines start.
fn line_offsets(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1))
}

/// Whether byte `i` of `line` is a `!` where a node's properties may start.
fn starts_tag_token(line: &str, i: usize) -> bool {
    let bytes = line.as_bytes();
    bytes.get(i) == Some(&b'!') && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'[' | b'{' | b','))
}

/// End (exclusive) of the tag token starting at `start`: a verbatim tag `!<...>` ends after
/// `>`, a shorthand at whitespace or a flow indicator.
fn tag_token_end(line: &str, start: usize) -> usize {
    let rest = &line[start..];
    if rest.starts_with("!<") {
        return rest.find('>').map_or(line.len(), |i| start + i + 1);
    }
    rest.find(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}'))
        .map_or(line.len(), |i| start + i)
}

/// Where the found tag sits: on the value of a (dotted) key, or on a key under a parent.
enum Place {
    Value(String),
    Key(String),
}

/// Loads the document with the found tag replaced by a local tag, which yaml_serde keeps, and
/// finds it in the tree.
fn where_is_marker(text: &str, range: &std::ops::Range<usize>) -> Option<Place> {
    let marked = format!("{}!{MARKER}{}", &text[..range.start], &text[range.end..]);
    let doc: yaml_serde::Value = yaml_serde::from_str(&marked).ok()?;
    find_marker(&doc, &mut Vec::new())
}

fn find_marker(v: &yaml_serde::Value, path: &mut Vec<String>) -> Option<Place> {
    use yaml_serde::Value;
    match v {
        Value::Tagged(t) if t.tag == MARKER => Some(Place::Value(path.join("."))),
        Value::Tagged(t) => find_marker(&t.value, path),
        Value::Sequence(items) => items.iter().find_map(|item| find_marker(item, path)),
        Value::Mapping(map) => {
            for (k, v) in map {
                let seg = match k {
                    Value::Tagged(t) if t.tag == MARKER => return Some(Place::Key(path.join("."))),
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                path.push(seg);
                let found = find_marker(v, path);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_of(text: &str) -> Option<(usize, &str)> {
        first_tag(text).map(|t| (t.line, &text[t.range]))
    }

    #[test]
    fn finds_the_first_tag_of_each_form() {
        assert_eq!(tag_of("a: 1\nb: !!int 2\nc: !!str x\n"), Some((2, "!!int")));
        assert_eq!(tag_of("a: ! 2\n"), Some((1, "!")));
        assert_eq!(
            tag_of("a: !<tag:yaml.org,2002:str> 2\n"),
            Some((1, "!<tag:yaml.org,2002:str>"))
        );
        assert_eq!(tag_of("a: [x!, !!int 1]\n"), Some((1, "!!int")));
        assert_eq!(tag_of("a: {b: !!int,}\n"), Some((1, "!!int")));
    }

    #[test]
    fn ordinary_exclamation_marks_are_not_tags() {
        assert_eq!(tag_of("a: x !y\nb: 'z !w'\nc: |\n  !!int\n# !!str\n"), None);
        assert_eq!(tag_of("a: 1\n"), None);
    }
}
