//! The deck's preview pane: a session's transcript (SPEC.md §2 nodes, §3.2 records) as lines
//! that fit the pane — wrapped at word boundaries, never cut — with tool calls, tool results
//! and thinking folded to one line each until unfolded.
//!
//! [`Transcript::of_chain`] reads the chain once into pieces; [`Transcript::lines`] lays them
//! out for a width, so a resize or unfolding needs no store read.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use tapes_protocol::node::tool_result_text;
use tapes_protocol::{ContentBlock, ImageSource, Node, NodeId, SessionId};

use crate::session::SessionRecord;
use crate::views::render;

/// One part of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// `#3 assistant · claude-sonnet-4-5 · 14:02:11`.
    Header {
        index: usize,
        role: String,
        detail: String,
    },
    Text(String),
    Thinking(String),
    ToolUse {
        name: String,
        input: String,
    },
    ToolResult {
        error: bool,
        text: String,
    },
    /// Images and blocks tapes keeps but does not read.
    Other(String),
}

/// A session ready to lay out.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub id: SessionId,
    /// Lines above the messages: title, agent/model/project, start and size.
    pub head: Vec<String>,
    pub pieces: Vec<Piece>,
}

const HEADER: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const TOOL: Style = Style::new().fg(Color::Yellow);
const ERROR: Style = Style::new().fg(Color::Red);

impl Transcript {
    /// The transcript of session `id` (its chain root first).
    pub fn of_chain(id: &SessionId, record: &SessionRecord, chain: &[(NodeId, Node)]) -> Self {
        let s = &record.summary;
        let mut head = Vec::new();
        if let Some(title) = &record.title {
            head.push(title.clone());
        }
        let dash = |t: &str| {
            if t.is_empty() {
                "-".to_string()
            } else {
                t.to_string()
            }
        };
        head.push(format!(
            "{} · {} · {}",
            dash(&s.agent),
            dash(&s.model),
            dash(&s.project)
        ));
        head.push(format!(
            "started {} · {} · {} · session {}",
            render::time(s.started_ms),
            render::duration(s.duration_ms()),
            render::plural(chain.len(), "message"),
            id.short()
        ));
        let mut pieces = Vec::new();
        for (index, (_, node)) in chain.iter().enumerate() {
            let mut detail = String::new();
            if !node.body.model.is_empty() {
                detail.push_str(&node.body.model);
            }
            if let Some(ms) = node.meta.timestamp_ms {
                if !detail.is_empty() {
                    detail.push_str(" · ");
                }
                detail.push_str(&render::time(Some(ms)));
            }
            pieces.push(Piece::Header {
                index,
                role: node.body.role.as_str().to_string(),
                detail,
            });
            for block in &node.body.blocks {
                pieces.push(match block {
                    ContentBlock::Text { text } => Piece::Text(text.trim_end().to_string()),
                    ContentBlock::Thinking { text, .. } => Piece::Thinking(text.clone()),
                    ContentBlock::ToolUse { name, input, .. } => Piece::ToolUse {
                        name: name.clone(),
                        input: input_text(input),
                    },
                    ContentBlock::ToolResult {
                        is_error, content, ..
                    } => Piece::ToolResult {
                        error: *is_error,
                        text: tool_result_text(content),
                    },
                    ContentBlock::Image { media_type, source } => Piece::Other(match source {
                        ImageSource::Bytes { data } => {
                            format!("[image {media_type}, {}]", render::bytes(data.len()))
                        }
                        ImageSource::Reference { uri } => format!("[image {media_type} {uri}]"),
                    }),
                    ContentBlock::Other { kind, .. } => Piece::Other(format!("[{kind}]")),
                });
            }
        }
        Transcript {
            id: *id,
            head,
            pieces,
        }
    }

    /// The transcript laid out `width` columns wide; tool calls, results and thinking on one
    /// line each unless `unfold`.
    pub fn lines(&self, width: usize, unfold: bool) -> Vec<Line<'static>> {
        let width = width.max(8);
        let mut out: Vec<Line<'static>> = Vec::new();
        for (i, h) in self.head.iter().enumerate() {
            let style = if i == 0 {
                Style::new().add_modifier(Modifier::BOLD)
            } else {
                DIM
            };
            push_wrapped(&mut out, h, width, "", style);
        }
        for piece in &self.pieces {
            match piece {
                Piece::Header {
                    index,
                    role,
                    detail,
                } => {
                    out.push(Line::raw(""));
                    let mut text = format!("── #{index} {role}");
                    if !detail.is_empty() {
                        text.push_str(" · ");
                        text.push_str(detail);
                    }
                    push_wrapped(&mut out, &text, width, "", HEADER);
                }
                Piece::Text(text) => push_wrapped(&mut out, text, width, "", Style::new()),
                Piece::Thinking(text) => {
                    if unfold {
                        push_wrapped(&mut out, "(thinking)", width, "  ", DIM);
                        push_wrapped(&mut out, text, width, "  ", DIM);
                    } else {
                        folded(&mut out, "(thinking)", text, width, DIM);
                    }
                }
                Piece::ToolUse { name, input } => {
                    if unfold {
                        push_wrapped(&mut out, &format!("▸ {name}"), width, "  ", TOOL);
                        push_wrapped(&mut out, input, width, "    ", TOOL);
                    } else {
                        folded(&mut out, &format!("▸ {name}"), input, width, TOOL);
                    }
                }
                Piece::ToolResult { error, text } => {
                    let (label, style) = if *error {
                        ("◂ error", ERROR)
                    } else {
                        ("◂ ok", DIM)
                    };
                    if unfold {
                        push_wrapped(&mut out, label, width, "  ", style);
                        push_wrapped(&mut out, text, width, "    ", style);
                    } else {
                        folded(&mut out, label, text, width, style);
                    }
                }
                Piece::Other(text) => push_wrapped(&mut out, text, width, "  ", DIM),
            }
        }
        out
    }
}

/// One line for a folded block: `  ▸ Bash  cargo test --all … (12 lines)`.
fn folded(out: &mut Vec<Line<'static>>, label: &str, body: &str, width: usize, style: Style) {
    let lines = body.lines().count();
    let first = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let tail = if lines > 1 {
        format!("  ({lines} lines)")
    } else {
        String::new()
    };
    let room = width
        .saturating_sub(2 + label.chars().count() + 2 + tail.chars().count())
        .max(1);
    out.push(Line::from(vec![
        Span::styled(format!("  {label}  "), style),
        Span::styled(cut(&printable(first), room), style),
        Span::styled(tail, DIM),
    ]));
}

/// Appends `text` wrapped to `width` (each line starting with `indent`).
fn push_wrapped(
    out: &mut Vec<Line<'static>>,
    text: &str,
    width: usize,
    indent: &str,
    style: Style,
) {
    let room = width.saturating_sub(indent.chars().count()).max(4);
    for line in wrap(text, room) {
        out.push(Line::styled(format!("{indent}{line}"), style));
    }
}

/// `text` safe to put on a terminal: escape sequences (ANSI colours in tool output) removed,
/// other control characters but newlines and tabs shown as `�`, so nothing in a transcript can
/// move the cursor or change the screen under the deck.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}';
    if !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI `ESC [ … final` and OSC `ESC ] … BEL|ESC \\`; anything else: the next char.
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c == '\r' {
            // A carriage return inside a line (progress bars): keep what follows.
        } else if control(c) {
            out.push('�');
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` split into lines of at most `width` characters: at spaces where it can, inside a
/// word longer than a line where it must. Tabs become spaces; an empty text is one empty line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let text = printable(text);
    for raw in text.split('\n') {
        let raw = raw.trim_end_matches('\r').replace('\t', "    ");
        if raw.chars().count() <= width {
            out.push(raw);
            continue;
        }
        let mut line = String::new();
        let mut len = 0;
        for word in raw.split(' ') {
            let mut word = word.to_string();
            let mut wlen = word.chars().count();
            // Does it fit after a space?
            if len > 0 && len + 1 + wlen <= width {
                line.push(' ');
                line.push_str(&word);
                len += 1 + wlen;
                continue;
            }
            if len > 0 {
                out.push(std::mem::take(&mut line));
            }
            while wlen > width {
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                wlen -= width;
                out.push(head);
            }
            line = word;
            len = wlen;
        }
        out.push(line);
    }
    out
}

/// `s` in at most `max` characters, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A tool input for reading: the string values of a JSON object one per line (so a command or
/// a patch reads as written), anything else as it is.
fn input_text(input: &str) -> String {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            serde_json::Value::Null => {}
            other => out.push(other.to_string()),
        }
    }
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(value) => {
            let mut parts = Vec::new();
            walk(&value, &mut parts);
            parts.join("\n")
        }
        Err(_) => input.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\n\nb", 5), vec!["a", "", "b"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(
            wrap("\u{1b}[31mred\u{1b}[0m ok\r\n\u{7}", 20),
            vec!["red ok", "�"]
        );
        for line in wrap(&"word ".repeat(100), 33) {
            assert!(line.chars().count() <= 33, "{line}");
        }
    }

    #[test]
    fn tool_calls_fold_to_one_line_and_unfold() {
        let t = Transcript {
            id: SessionId([1; 16]),
            head: vec!["Title".into()],
            pieces: vec![
                Piece::Header {
                    index: 0,
                    role: "assistant".into(),
                    detail: String::new(),
                },
                Piece::ToolUse {
                    name: "Bash".into(),
                    input: "cargo test\nsecond line\nthird".into(),
                },
                Piece::ToolResult {
                    error: false,
                    text: "ok 1\nok 2".into(),
                },
            ],
        };
        let text = |lines: Vec<Line>| -> Vec<String> {
            lines
                .iter()
                .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
                .collect()
        };
        let folded = text(t.lines(60, false));
        assert_eq!(folded.len(), 5, "{folded:?}");
        assert!(
            folded[3].contains("▸ Bash  cargo test  (3 lines)"),
            "{folded:?}"
        );
        assert!(folded[4].contains("◂ ok  ok 1  (2 lines)"), "{folded:?}");
        let open = text(t.lines(60, true));
        assert!(open.iter().any(|l| l.contains("third")), "{open:?}");
        assert!(open.len() > folded.len());
    }
}
