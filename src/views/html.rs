//! Sessions as HTML, shared by the relay's public page (SPEC.md §16.7) and `tapes web`: the
//! title a page shows, and each message with its text rendered as Markdown and its tool calls,
//! tool output and thinking folded when long.
//!
//! Everything a session contains is untrusted text. Markdown is rendered with pulldown-cmark
//! with raw HTML turned into text (so `<script>` shows as `<script>`), link targets limited to
//! `http:`, `https:`, `mailto:` and relative ones, and images named instead of loaded (a page
//! fetches nothing from elsewhere). Text outside Markdown goes through [`escape`].

use std::fmt::Write as _;

use pulldown_cmark::{CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};
use tapes_protocol::node::tool_result_text;
use tapes_protocol::{ContentBlock, ImageSource, Node, NodeId, ToolResultPart};

use crate::session::SessionRecord;
use crate::views::render;

/// A tool input or output longer than this many lines or bytes starts collapsed, so a page
/// stays readable when an agent read a whole file.
pub const FOLD_LINES: usize = 20;
pub const FOLD_BYTES: usize = 2_000;

/// CSS for transcripts (inline in every page; no external stylesheet).
pub const STYLE: &str = "\
body{margin:0;background:#f6f6f4;color:#1d1d1f;font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif}\
main{max-width:56rem;margin:0 auto;padding:1.5rem 1rem 3rem}\
h1{font-size:1.5rem;margin:0 0 .25rem}\
.meta{color:#555;font-size:.9rem;margin:.15rem 0}\
.note,.description{background:#fff;border-left:3px solid #8a8;padding:.5rem .75rem;margin:.75rem 0;white-space:pre-wrap}\
.msg{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem .75rem}\
.msg>header{color:#666;font-size:.8rem;margin-bottom:.35rem}\
.role{font-weight:600;color:#333;text-transform:uppercase;letter-spacing:.03em}\
.role-user{border-left:4px solid #4a7bd0}\
.role-assistant{border-left:4px solid #3a9a5b}\
.role-tool{border-left:4px solid #b08a2e}\
.role-system,.role-developer{border-left:4px solid #888}\
.text{overflow-wrap:anywhere}\
.text>:first-child{margin-top:0}.text>:last-child{margin-bottom:0}\
.text p{margin:.4rem 0}\
.text code{background:#f0f0ec;padding:0 .2rem;border-radius:3px;font:13px ui-monospace,Menlo,Consolas,monospace}\
.text pre code{background:none;padding:0}\
.text table{border-collapse:collapse}.text td,.text th{border:1px solid #ddd;padding:.15rem .4rem}\
.text blockquote{border-left:3px solid #ccc;margin:.4rem 0;padding-left:.6rem;color:#555}\
pre{background:#f3f3f0;padding:.5rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;margin:.25rem 0}\
details{margin:.35rem 0}\
summary{cursor:pointer;color:#444;font-size:.85rem}\
.error>summary{color:#b00020}\
.placeholder{color:#777;font-style:italic}\
footer{color:#777;font-size:.8rem;margin-top:2rem}\
";

/// `s` as HTML text, safe both between tags and inside a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    push_escaped(&mut out, s);
    out
}

pub fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The title a page shows: the session's title (a Claude Code transcript's summary), the
/// share's title, the description, or the first prompt (never "Untitled").
pub fn session_title(record: &SessionRecord, share_title: Option<&str>) -> String {
    let (title, _) = crate::views::listing::title_of(record, share_title);
    let cut: String = title.chars().take(120).collect();
    if cut.len() < title.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Whether a link target may stay a link: web and mail addresses, and relative ones.
fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
    {
        return true;
    }
    // No scheme: a `:` only after a `/`, `?` or `#` (or none at all).
    match lower.find(':') {
        None => true,
        Some(colon) => lower[..colon].contains(['/', '?', '#']),
    }
}

/// Markdown `text` as HTML, with raw HTML shown as text and unsafe links and images defused.
pub fn markdown(text: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(text, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::HtmlBlock) => {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(CowStr::Borrowed(""))))
        }
        Event::End(TagEnd::HtmlBlock) => Event::End(TagEnd::CodeBlock),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: if safe_url(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            },
            title,
            id,
        }),
        // An image is named, not fetched: its alt text follows as text.
        Event::Start(Tag::Image { .. }) => Event::Text(CowStr::Borrowed("[image: ")),
        Event::End(TagEnd::Image) => Event::Text(CowStr::Borrowed("]")),
        other => other,
    });
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// `2025-09-18 10:00:07` UTC, for message headers.
fn clock(ms: Option<i64>) -> Option<String> {
    use chrono::TimeZone;
    let t = chrono::Utc.timestamp_millis_opt(ms?).single()?;
    Some(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Every message of a chain, in order.
pub fn messages(out: &mut String, chain: &[(NodeId, Node)]) {
    for (index, (_, node)) in chain.iter().enumerate() {
        message(out, index, node);
    }
}

/// One message: `#index ROLE · model · time`, then its blocks.
pub fn message(out: &mut String, index: usize, node: &Node) {
    let role = node.body.role.as_str();
    let _ = write!(
        out,
        "<section class=\"msg role-{}\" id=\"m{index}\"><header>#{index} <span class=\"role\">{}</span>",
        escape(role),
        escape(role)
    );
    if !node.body.model.is_empty() {
        let _ = write!(out, " · {}", escape(&node.body.model));
    }
    if let Some(at) = clock(node.meta.timestamp_ms) {
        let _ = write!(out, " · {} UTC", escape(&at));
    }
    out.push_str("</header>");
    for block in &node.body.blocks {
        content_block(out, block);
    }
    out.push_str("</section>");
}

fn content_block(out: &mut String, block: &ContentBlock) {
    match block {
        ContentBlock::Text { text } => {
            let _ = write!(
                out,
                "<div class=\"text\">{}</div>",
                markdown(text.trim_end())
            );
        }
        ContentBlock::Thinking { text, .. } => {
            // Reasoning is usually long and secondary: folded whatever its size.
            fold(out, "thinking", "thinking", text, false);
        }
        ContentBlock::ToolUse { name, input, .. } => {
            let input = pretty_json(input);
            fold(
                out,
                "tool-use",
                &format!("▸ {name}"),
                &input,
                !is_long(&input),
            );
        }
        ContentBlock::ToolResult {
            is_error, content, ..
        } => tool_result(out, *is_error, content),
        ContentBlock::Image { media_type, source } => {
            // Images are named, not embedded: the page stays small and nothing in it is fetched.
            let _ = write!(
                out,
                "<p class=\"placeholder\">[image {} {}]</p>",
                escape(media_type),
                escape(&image_size(source))
            );
        }
        ContentBlock::Other { kind, json } => {
            fold(
                out,
                "other",
                &format!("[{kind}]"),
                &pretty_json(json),
                false,
            );
        }
    }
}

fn tool_result(out: &mut String, is_error: bool, content: &[ToolResultPart]) {
    let text = tool_result_text(content);
    let images = content
        .iter()
        .filter(|p| matches!(p, ToolResultPart::Image { .. }))
        .count();
    let mut summary = format!(
        "◂ {} ({} lines)",
        if is_error { "error" } else { "ok" },
        text.lines().count()
    );
    if images > 0 {
        let _ = write!(summary, " + {images} image(s)");
    }
    let class = if is_error {
        "tool-result error"
    } else {
        "tool-result"
    };
    fold(out, class, &summary, text.trim_end(), !is_long(&text));
}

/// A `<details>` block, open when `open`; `summary` and `text` are plain text.
fn fold(out: &mut String, class: &str, summary: &str, text: &str, open: bool) {
    let _ = write!(
        out,
        "<details class=\"{}\"{}><summary>{}</summary><pre>{}</pre></details>",
        escape(class),
        if open { " open" } else { "" },
        escape(summary),
        escape(text)
    );
}

fn is_long(text: &str) -> bool {
    text.len() > FOLD_BYTES || text.lines().count() > FOLD_LINES
}

/// JSON indented for reading; anything that is not JSON is shown as it is.
fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_string())
}

fn image_size(source: &ImageSource) -> String {
    match source {
        ImageSource::Bytes { data } => render::bytes(data.len()),
        ImageSource::Reference { uri } => uri.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_raw_html_is_text() {
        let html = markdown("# Plan\n\n- **fix** the `parser`\n- <script>alert('x')</script> & more\n\n```rust\nfn main() {}\n```");
        assert!(html.contains("<h1>Plan</h1>"), "{html}");
        assert!(html.contains("<strong>fix</strong>"), "{html}");
        assert!(html.contains("<code>parser</code>"), "{html}");
        assert!(
            html.contains("<pre><code class=\"language-rust\">fn main() {}"),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&amp; more"), "{html}");
    }

    #[test]
    fn html_blocks_links_and_images_are_defused() {
        let html = markdown("<div onclick=\"x()\">\nhi\n</div>\n\n[a](javascript:alert(1)) [b](https://example.com/x) [c](docs/a.md) ![logo](http://evil/x.png)");
        assert!(!html.contains("<div"), "{html}");
        assert!(html.contains("&lt;div onclick="), "{html}");
        assert!(html.contains("<a href=\"#\">a</a>"), "{html}");
        assert!(
            html.contains("<a href=\"https://example.com/x\">b</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"docs/a.md\">c</a>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("[image: logo]"), "{html}");
    }

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
