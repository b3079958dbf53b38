//! Secret scanning (SPEC.md §11.2): before a session or its text leaves the machine, tapes
//! looks for credentials in it.
//!
//! A hit blocks what would leave and lists what was found (`--dry-run` only lists,
//! `--allow-secrets` overrides); `--redact` sends a copy in which every finding is replaced by
//! `[REDACTED:<kind label>]` (the original nodes are untouched).
//!
//! Detection is a handful of hand-written scanners, no regex engine: every rule is a literal
//! anchor (a prefix, `://`, a variable name) plus runs of one character class, checked in a
//! left-to-right pass. Every pass is linear in the input (a rule that fails never rescans the
//! run it already looked at), so 10 MB scan in about a tenth of a second in release builds (the
//! wrapped-token pass included), and text is only ever sliced at ASCII bytes, so no input can
//! make a slice panic.
//!
//! Two families of rules:
//!
//! * Specific rules ([`SecretKind::OpenAiKey`] .. [`SecretKind::ConnectionStringPassword`]):
//!   a provider's documented token shape. They are precise, so they run first and win.
//! * [`SecretKind::HighEntropy`]: a generic catch-all for random-looking tokens, run only on
//!   the text the specific rules did not claim. Coding transcripts are full of long random-ish
//!   strings that are not secrets (commit ids, digests, UUIDs, lockfile hashes, long
//!   identifiers), so this rule carries most of the false-positive filtering; each filter is
//!   documented where it is applied.
//!
//! Specific rules also find a token cut in two by a line break (a wrapped terminal line, wrapped
//! JSON, an escaped `\n` plus indentation): see [`scan_wrapped`]. A private key block spans its
//! lines by construction.
//!
//! Findings never overlap: overlapping matches are merged into one span (kind of the earliest),
//! so redaction always covers every byte any rule matched.
//!
//! Where the scan is run (every exit of a session or its text from the machine) is
//! [`crate::share::gate`]'s business (SPEC.md §11.2).

use serde_json::Value;
use tapes_protocol::canonical_json::canonical_value;
use tapes_protocol::node::{ContentBlock, ImageSource, ToolResultPart};

/// What a finding looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    OpenAiKey,
    AnthropicKey,
    AwsAccessKey,
    AwsSecretKey,
    GitHubToken,
    SlackToken,
    StripeKey,
    GoogleApiKey,
    PrivateKeyBlock,
    Jwt,
    ConnectionStringPassword,
    HighEntropy,
}

impl SecretKind {
    /// Human-readable name, also used in redaction markers (`[REDACTED:<label>]`).
    ///
    /// Every label contains a space and no digits: markers must never themselves look like a
    /// secret or like the end of a URL authority when a redacted text is scanned again.
    pub fn label(&self) -> &'static str {
        match self {
            SecretKind::OpenAiKey => "OpenAI API key",
            SecretKind::AnthropicKey => "Anthropic API key",
            SecretKind::AwsAccessKey => "AWS access key ID",
            SecretKind::AwsSecretKey => "AWS secret access key",
            SecretKind::GitHubToken => "GitHub token",
            SecretKind::SlackToken => "Slack token",
            SecretKind::StripeKey => "Stripe secret key",
            SecretKind::GoogleApiKey => "Google API key",
            SecretKind::PrivateKeyBlock => "private key block",
            SecretKind::Jwt => "JSON Web Token",
            SecretKind::ConnectionStringPassword => "connection string password",
            SecretKind::HighEntropy => "high-entropy string",
        }
    }
}

impl std::fmt::Display for SecretKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One secret found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    /// Byte offset of the first byte of the secret in the scanned text.
    pub start: usize,
    /// Byte offset just past the secret.
    pub end: usize,
    /// A display form that identifies the secret without revealing it: at most the first 6
    /// and last 3 characters and never more than 25% of it, with its total length in between,
    /// e.g. `sk-pro…(51 chars)…9xZ`.
    pub masked: String,
}

/// A finding inside a message's content blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFinding {
    /// Index of the block in the node's `blocks`.
    pub block: usize,
    /// Which part of the block: `"text"`, `"thinking"`, `"tool_input"`, `"tool_result"` or
    /// `"other"`.
    pub field: &'static str,
    /// Offsets are relative to the string that was scanned: the block's text, one text part
    /// of a tool result, or one string (value or key) inside a tool input's or unmodeled
    /// block's JSON (the raw JSON text if it does not parse).
    pub finding: Finding,
}

// ------------------------------------------------------------------------------------------
// Thresholds
// ------------------------------------------------------------------------------------------

/// OpenAI and Anthropic keys are 40+ random characters after the prefix; 20 leaves room for
/// older/shorter formats while `sk-` followed by a short word (`sk-learn`) stays clear.
const OPENAI_MIN_BODY: usize = 20;
const ANTHROPIC_MIN_BODY: usize = 20;
/// `ghp_` & co. carry exactly 36 base62 characters today; longer is accepted.
const GITHUB_MIN_BODY: usize = 36;
/// Fine-grained PATs: `github_pat_` + 22 id characters + `_` + 59 secret characters.
const GITHUB_PAT_MIN_BODY: usize = 22;
/// Slack tokens are `xoxb-<team>-<bot>-<secret>`, far longer than 10.
const SLACK_MIN_BODY: usize = 10;
/// The path of a webhook URL is `T…/B…/<24 chars>`.
const SLACK_WEBHOOK_MIN_PATH: usize = 20;
/// Stripe secret keys carry 24+ (usually 99) base62 characters after the prefix.
const STRIPE_MIN_BODY: usize = 16;
/// Google API keys are exactly `AIza` + 35 characters.
const GOOGLE_BODY: usize = 35;
/// AWS access key ids are exactly `AKIA`/`ASIA` + 16 characters.
const AWS_ACCESS_BODY: usize = 16;
/// AWS secret access keys are exactly 40 base64 characters.
const AWS_SECRET_LEN: usize = 40;
/// Each of a JWT's three segments (header, claims, signature) is far longer than this; short
/// dotted `eyJ…` strings are not tokens.
const JWT_MIN_SEGMENT: usize = 10;
/// A PEM body line is 64 base64 characters; 16 is enough to tell a real key from a mention of
/// the header in code or prose.
const PEM_MIN_BODY_RUN: usize = 16;

/// High-entropy tokens must be at least this long. Random API tokens are 32+ characters;
/// shorter random-looking strings (tool call ids, short hashes, build suffixes) are
/// overwhelmingly not secrets.
const HIGH_ENTROPY_MIN_LEN: usize = 32;
/// Shannon entropy threshold in bits per character. Random base62/base64 tokens of length
/// 32..64 measure 4.5..5.5; hex tops out at exactly 4.0 (16 symbols) and English-like
/// identifiers mostly measure 3.3..4.0. 4.0 keeps every random base62/base64 token of the
/// minimum length while dropping hex and most prose.
const HIGH_ENTROPY_MIN_BITS: f64 = 4.0;
/// A token with more than this many `/` is a path or URL piece, not a token.
const HIGH_ENTROPY_MAX_SLASHES: usize = 2;
/// Word-likeness filter (see [`looks_like_words`]): at least this many letter pairs, and at
/// least this fraction (in tenths) of them common in identifiers and English.
const WORDLIKE_MIN_PAIRS: usize = 6;
const WORDLIKE_MIN_COMMON_TENTHS: usize = 6;

// ------------------------------------------------------------------------------------------
// Text API
// ------------------------------------------------------------------------------------------

/// Scans `text` for secrets. Findings are non-overlapping and sorted by `start`; their
/// offsets are byte offsets on char boundaries.
pub fn scan_text(text: &str) -> Vec<Finding> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    scan_prefixed(text, &[], &mut spans);
    scan_aws_secret_keys(bytes, &[], &mut spans);
    scan_connection_strings(text, &mut spans);
    scan_wrapped(text, &mut spans);
    let specific = merge_spans(spans);

    // The generic rule only looks at the gaps between specific findings. Treating findings as
    // separators (rather than discarding any token that overlaps one) mirrors exactly what a
    // redacted copy looks like, so scanning a redacted text finds nothing new.
    let mut all = Vec::with_capacity(specific.len());
    let mut cursor = 0;
    for span in specific {
        scan_high_entropy(bytes, cursor, span.start, &mut all);
        cursor = span.end;
        all.push(span);
    }
    scan_high_entropy(bytes, cursor, bytes.len(), &mut all);

    all.into_iter()
        .map(|s| Finding {
            kind: s.kind,
            start: s.start,
            end: s.end,
            masked: mask(&text[s.start..s.end]),
        })
        .collect()
}

/// Replaces each finding's span with `[REDACTED:<kind label>]`, keeping everything else.
///
/// Tolerates findings from elsewhere: unsorted, overlapping (the overlap is redacted once),
/// out of range or off char boundaries (skipped).
pub fn redact_text(text: &str, findings: &[Finding]) -> String {
    let mut spans: Vec<(usize, usize, SecretKind)> =
        findings.iter().map(|f| (f.start, f.end, f.kind)).collect();
    spans.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for (start, end, kind) in spans {
        let start = start.max(cursor);
        let end = end.min(text.len());
        if start >= end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            continue;
        }
        out.push_str(&text[cursor..start]);
        out.push_str("[REDACTED:");
        out.push_str(kind.label());
        out.push(']');
        cursor = end;
    }
    out.push_str(&text[cursor..]);
    out
}

// ------------------------------------------------------------------------------------------
// Content blocks
// ------------------------------------------------------------------------------------------

/// Scans every text-bearing part of a message's blocks.
///
/// What is scanned: text, thinking text, tool inputs (each JSON string and key), tool result
/// text parts, image reference URIs (presigned URLs carry credentials) and the JSON of
/// unmodeled blocks. What is not: tool use ids and names (provider-generated), image bytes,
/// and thinking signatures — those are provider-signed opaque blobs, high entropy by nature,
/// that carry nothing the user wrote; scanning them would flag every thinking block, and
/// redacting them would only break resume (the provider rejects a modified signature).
/// For the same reason the opaque fields of unmodeled blocks (`signature`,
/// `encrypted_content`, and `data` of `redacted_thinking`) are skipped.
pub fn scan_blocks(blocks: &[ContentBlock]) -> Vec<NodeFinding> {
    let mut out = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        visit_block(block, &mut |field, text| {
            out.extend(scan_text(text).into_iter().map(|finding| NodeFinding {
                block: index,
                field,
                finding,
            }));
        });
    }
    out
}

/// A redacted copy of `blocks` and the number of spans redacted (always equal to
/// `scan_blocks(blocks).len()`).
///
/// Tool inputs (and unmodeled blocks' JSON) stay valid JSON: the redaction happens inside
/// the decoded string values (and keys), and a changed document is re-serialized in canonical
/// form (the form node ids hash anyway). A document with nothing to redact is returned
/// byte-for-byte. Text that is not valid JSON is redacted as plain text.
pub fn redact_blocks(blocks: &[ContentBlock]) -> (Vec<ContentBlock>, usize) {
    let mut count = 0;
    let out = blocks
        .iter()
        .map(|block| redact_block(block, &mut count))
        .collect();
    (out, count)
}

const NOT_OPAQUE: &dyn Fn(&str) -> bool = &|_| false;

/// Fields of unmodeled blocks that are provider-encrypted or provider-signed blobs.
fn is_opaque_key(kind: &str, key: &str) -> bool {
    key == "signature"
        || key == "encrypted_content"
        || (kind == "redacted_thinking" && key == "data")
}

fn visit_block(block: &ContentBlock, f: &mut dyn FnMut(&'static str, &str)) {
    match block {
        ContentBlock::Text { text } => f("text", text),
        // `signature` deliberately not scanned: see `scan_blocks`.
        ContentBlock::Thinking { text, .. } => f("thinking", text),
        ContentBlock::ToolUse { input, .. } => {
            visit_json_text(input, NOT_OPAQUE, &mut |s| f("tool_input", s))
        }
        ContentBlock::ToolResult { content, .. } => {
            for part in content {
                match part {
                    ToolResultPart::Text { text } => f("tool_result", text),
                    ToolResultPart::Image { source, .. } => {
                        if let ImageSource::Reference { uri } = source {
                            f("tool_result", uri)
                        }
                    }
                }
            }
        }
        ContentBlock::Image { source, .. } => {
            if let ImageSource::Reference { uri } = source {
                f("other", uri)
            }
        }
        ContentBlock::Other { kind, json } => {
            visit_json_text(json, &|k| is_opaque_key(kind, k), &mut |s| f("other", s))
        }
    }
}

fn visit_json_text(text: &str, opaque: &dyn Fn(&str) -> bool, f: &mut dyn FnMut(&str)) {
    if !walk_json(text, opaque, f) {
        f(text);
    }
}

/// Calls `f` with every string and key of the JSON document `text`, in document order, not
/// descending into the values of opaque keys. Returns false (without calling `f`) if `text`
/// is not JSON.
///
/// This walks the parser's tokens instead of a parsed [`Value`] because a `Value` keeps only
/// the last of duplicate keys: a secret in an earlier duplicate would be missed while the
/// original text (kept verbatim when nothing is found) still carries it.
fn walk_json(text: &str, opaque: &dyn Fn(&str) -> bool, f: &mut dyn FnMut(&str)) -> bool {
    use serde::de::{DeserializeSeed, IgnoredAny};
    // Validate first so that `f` is never called for a prefix of an invalid document.
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    JsonWalk { opaque, f }.deserialize(&mut de).is_ok() && de.end().is_ok()
}

struct JsonWalk<'a, 'f> {
    opaque: &'a dyn Fn(&str) -> bool,
    f: &'a mut (dyn FnMut(&str) + 'f),
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonWalk<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonWalk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        (self.f)(s);
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let JsonWalk { opaque, f } = self;
        while seq
            .next_element_seed(JsonWalk { opaque, f: &mut *f })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let JsonWalk { opaque, f } = self;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            f(&key);
            if opaque(&key) {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                map.next_value_seed(JsonWalk { opaque, f: &mut *f })?;
            }
        }
        Ok(())
    }
}

fn redact_block(block: &ContentBlock, count: &mut usize) -> ContentBlock {
    match block {
        ContentBlock::Text { text } => ContentBlock::Text {
            text: redact_or_clone(text, count),
        },
        ContentBlock::Thinking { text, signature } => ContentBlock::Thinking {
            text: redact_or_clone(text, count),
            signature: signature.clone(),
        },
        ContentBlock::ToolUse { id, name, input } => ContentBlock::ToolUse {
            id: id.clone(),
            name: name.clone(),
            input: redact_json_text(input, NOT_OPAQUE, count),
        },
        ContentBlock::ToolResult {
            tool_use_id,
            is_error,
            content,
        } => ContentBlock::ToolResult {
            tool_use_id: tool_use_id.clone(),
            is_error: *is_error,
            content: content
                .iter()
                .map(|part| match part {
                    ToolResultPart::Text { text } => ToolResultPart::Text {
                        text: redact_or_clone(text, count),
                    },
                    ToolResultPart::Image { media_type, source } => ToolResultPart::Image {
                        media_type: media_type.clone(),
                        source: redact_image_source(source, count),
                    },
                })
                .collect(),
        },
        ContentBlock::Image { media_type, source } => ContentBlock::Image {
            media_type: media_type.clone(),
            source: redact_image_source(source, count),
        },
        ContentBlock::Other { kind, json } => ContentBlock::Other {
            kind: kind.clone(),
            json: redact_json_text(json, &|k| is_opaque_key(kind, k), count),
        },
    }
}

fn redact_image_source(source: &ImageSource, count: &mut usize) -> ImageSource {
    match source {
        ImageSource::Reference { uri } => ImageSource::Reference {
            uri: redact_or_clone(uri, count),
        },
        ImageSource::Bytes { .. } => source.clone(),
    }
}

/// The redacted string if `s` contains secrets (adding their number to `count`).
fn redact_string(s: &str, count: &mut usize) -> Option<String> {
    let findings = scan_text(s);
    if findings.is_empty() {
        return None;
    }
    *count += findings.len();
    Some(redact_text(s, &findings))
}

fn redact_or_clone(s: &str, count: &mut usize) -> String {
    redact_string(s, count).unwrap_or_else(|| s.to_string())
}

fn redact_json_text(text: &str, opaque: &dyn Fn(&str) -> bool, count: &mut usize) -> String {
    // Count exactly what `scan_blocks` reports (duplicate keys included, see `walk_json`).
    let mut found = 0;
    if !walk_json(text, opaque, &mut |s| found += scan_text(s).len()) {
        return redact_or_clone(text, count);
    }
    if found == 0 {
        return text.to_string();
    }
    *count += found;
    match serde_json::from_str::<Value>(text) {
        Ok(mut value) => {
            // Duplicate keys collapse here, as they do in the canonical form node ids hash.
            redact_json(&mut value, opaque, &mut 0);
            canonical_value(&value)
        }
        // Not reachable (`walk_json` accepted the same text), but never leak if it were.
        Err(_) => redact_text(text, &scan_text(text)),
    }
}

/// Redacts every string and key of `value`, not descending into opaque keys' values (the
/// places `walk_json` visits).
fn redact_json(value: &mut Value, opaque: &dyn Fn(&str) -> bool, count: &mut usize) {
    match value {
        Value::String(s) => {
            if let Some(redacted) = redact_string(s, count) {
                *s = redacted;
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_json(item, opaque, count);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !opaque(key) {
                    redact_json(item, opaque, count);
                }
            }
            if map.keys().all(|k| scan_text(k).is_empty()) {
                return;
            }
            // Some keys hold secrets: rebuild the object. Keys that stay are inserted first,
            // so a redacted key can never overwrite one; two keys that redact to the same text
            // get a ` #2`, ` #3`, ... suffix instead of merging.
            let old = std::mem::take(map);
            let mut renamed = Vec::new();
            for (key, item) in old {
                match redact_string(&key, count) {
                    Some(new_key) => renamed.push((new_key, item)),
                    None => {
                        map.insert(key, item);
                    }
                }
            }
            for (new_key, item) in renamed {
                let mut unique = new_key.clone();
                let mut n = 2;
                while map.contains_key(&unique) {
                    unique = format!("{new_key} #{n}");
                    n += 1;
                }
                map.insert(unique, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

// ------------------------------------------------------------------------------------------
// Spans, masking
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    kind: SecretKind,
}

/// Sorts spans and merges overlapping ones into their union (keeping the kind of the one that
/// starts first, or the longest, or the most specific), so no matched byte escapes redaction.
fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.kind.cmp(&b.kind))
    });
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match out.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => out.push(span),
        }
    }
    out
}

/// At most the first 6 and last 3 characters, never more than a quarter of the secret in
/// total, with the secret's length (in characters) in between. Control characters (newlines
/// of a key block) show as `?`.
fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    let budget = n / 4;
    let tail = (budget / 3).min(3);
    let head = (budget - tail).min(6);
    let shown = |c: char| if c.is_control() { '?' } else { c };
    let mut out = String::with_capacity(head + tail + 24);
    out.extend(secret.chars().take(head).map(shown));
    out.push('…');
    out.push_str(&format!("({n} chars)"));
    out.push('…');
    out.extend(secret.chars().skip(n - tail).map(shown));
    out
}

// ------------------------------------------------------------------------------------------
// Character classes and runs
// ------------------------------------------------------------------------------------------

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9_-]`: base64url, the alphabet of most modern API keys.
fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_alnum_underscore(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// `[A-Za-z0-9/+]`: the alphabet of AWS secret access keys.
fn is_aws_secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
}

fn is_base64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+' || c == b'='
}

fn is_url_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'_' || c == b'-'
}

/// Token characters for the high-entropy rule, without `=` (only trailing `=` padding joins a
/// token, see `scan_high_entropy`).
fn is_token_core(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-')
}

/// True when `p` is right after a removed line break (see [`scan_prefixed`]).
fn at_break(breaks: &[usize], p: usize) -> bool {
    breaks.binary_search(&p).is_ok()
}

/// Length of the run of `class` bytes starting at `from` (0 if `from` is past the end).
fn run_len(b: &[u8], from: usize, class: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .map_or(0, |s| s.iter().take_while(|&&c| class(c)).count())
}

/// Like `run_len` but stops counting at `cap` (for rules that only need to know whether a run
/// has an exact or minimum length; keeps them O(cap) per attempt).
fn run_len_capped(b: &[u8], from: usize, class: impl Fn(u8) -> bool, cap: usize) -> usize {
    b.get(from..)
        .map_or(0, |s| s.iter().take(cap).take_while(|&&c| class(c)).count())
}

// ------------------------------------------------------------------------------------------
// Prefix rules
// ------------------------------------------------------------------------------------------

/// Positions before which a rule that scans a `_`/`-`-bearing run is known to fail.
///
/// Such a run can contain the rule's own prefix again after a `-` or `_` (`sk-a-sk-a-…`).
/// A match attempt starting inside a run that already failed would scan a suffix of the same
/// run and fail for the same reason (too short, no digit, missing dot), so those attempts are
/// skipped; this keeps the scan linear on adversarial input.
#[derive(Default)]
struct Blocked {
    openai: usize,
    anthropic: usize,
    github_pat: usize,
    slack: usize,
    jwt: usize,
}

/// Runs all prefix-based rules in one pass. Every rule requires that the match is not preceded
/// by `[A-Za-z0-9]`: a prefix glued to a word (`task-…`, `mask-…`, `AAKIA…`) is part of that
/// word, not the start of a token.
///
/// `breaks` are the offsets in `text` right after a line break that [`scan_wrapped`] removed
/// (sorted; empty for the text as written): a fixed-length token may end there even though a
/// token character follows.
fn scan_prefixed(text: &str, breaks: &[usize], out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut blocked = Blocked::default();
    let mut i = 0;
    while i < b.len() {
        // A removed break (`breaks`, in a joined text) was a line start: a token starts there
        // whatever the line before ended with.
        let candidate = matches!(b[i], b's' | b'r' | b'A' | b'g' | b'x' | b'h' | b'e' | b'-')
            && (i == 0 || !is_alnum(b[i - 1]) || breaks.binary_search(&i).is_ok());
        if candidate {
            if let Some((end, kind)) = match_prefixed(text, i, &mut blocked, breaks) {
                debug_assert!(end > i);
                out.push(Span {
                    start: i,
                    end,
                    kind,
                });
                // Anything starting inside a match is covered by it.
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// The end and kind of a prefix-rule match starting at `i`, if any.
fn match_prefixed(
    text: &str,
    i: usize,
    blocked: &mut Blocked,
    breaks: &[usize],
) -> Option<(usize, SecretKind)> {
    let b = text.as_bytes();
    let rest = &b[i..];
    match b[i] {
        b's' => {
            // Anthropic: `sk-ant-` + 20+ [A-Za-z0-9_-] (`sk-ant-api03-…`, `sk-ant-admin01-…`).
            // The prefix is unique to Anthropic; false positives would need that literal
            // prefix followed by a long token.
            if rest.starts_with(b"sk-ant-") {
                if i < blocked.anthropic {
                    return None;
                }
                let body = i + 7;
                let end = body + run_len(b, body, is_key_char);
                if end - body >= ANTHROPIC_MIN_BODY {
                    return Some((end, SecretKind::AnthropicKey));
                }
                blocked.anthropic = end;
                // `sk-ant-` is never an OpenAI key.
                return None;
            }
            // OpenAI: `sk-` + 20+ [A-Za-z0-9_-] (legacy `sk-…`, `sk-proj-…`,
            // `sk-svcacct-…`, `sk-admin-…`). `sk-` is also a plain-English prefix
            // (`sk-learn`, kebab-case names), so the body must be long and contain both a
            // letter and a digit: 20+ random base62 characters practically always do, while
            // kebab-case words never contain digits.
            if rest.starts_with(b"sk-") {
                if i < blocked.openai {
                    return None;
                }
                let body = i + 3;
                let end = body + run_len(b, body, is_key_char);
                let s = &b[body..end];
                if s.len() >= OPENAI_MIN_BODY
                    && s.iter().any(u8::is_ascii_digit)
                    && s.iter().any(u8::is_ascii_alphabetic)
                {
                    return Some((end, SecretKind::OpenAiKey));
                }
                blocked.openai = end;
                return None;
            }
            stripe_at(b, i, &[b"sk_live_", b"sk_test_"])
        }
        // Stripe restricted keys.
        b'r' => stripe_at(b, i, &[b"rk_live_", b"rk_test_"]),
        b'A' => {
            // AWS access key id: `AKIA` (long-term) / `ASIA` (STS) + exactly 16 [A-Z0-9],
            // word-bounded on both sides. The fixed length, upper-case alphabet and two-sided
            // boundary make accidental matches in prose or identifiers vanishingly rare.
            if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
                let body = i + 4;
                let n = run_len_capped(
                    b,
                    body,
                    |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
                    AWS_ACCESS_BODY,
                );
                let end = body + n;
                if n == AWS_ACCESS_BODY
                    && (b.get(end).is_none_or(|&c| !is_alnum(c)) || at_break(breaks, end))
                {
                    return Some((end, SecretKind::AwsAccessKey));
                }
                return None;
            }
            // Google API key: `AIza` + exactly 35 [A-Za-z0-9_-]. `AIza` is the base64 of the
            // key's fixed version bytes; a run of exactly that length after it is not
            // something prose or code produces by accident. Longer runs are left to the
            // high-entropy rule (a key glued to more token characters is not this format).
            if rest.starts_with(b"AIza") {
                let body = i + 4;
                let n = run_len_capped(b, body, is_key_char, GOOGLE_BODY + 1);
                if n == GOOGLE_BODY || (n > GOOGLE_BODY && at_break(breaks, body + GOOGLE_BODY)) {
                    return Some((body + GOOGLE_BODY, SecretKind::GoogleApiKey));
                }
            }
            None
        }
        b'g' => {
            // GitHub: `ghp_` (classic PAT), `gho_` (OAuth), `ghu_` (user-to-server), `ghs_`
            // (server-to-server), `ghr_` (refresh) + 36+ base62; fine-grained PATs
            // `github_pat_` + 22+ [A-Za-z0-9_]. Prefixes chosen by GitHub precisely so they
            // are unambiguous; 36 random characters after them are not an accident.
            if rest.len() >= 4
                && rest.starts_with(b"gh")
                && matches!(rest[2], b'p' | b'o' | b'u' | b's' | b'r')
                && rest[3] == b'_'
            {
                let body = i + 4;
                let n = run_len(b, body, is_alnum);
                if n >= GITHUB_MIN_BODY {
                    return Some((body + n, SecretKind::GitHubToken));
                }
                return None;
            }
            if rest.starts_with(b"github_pat_") {
                if i < blocked.github_pat {
                    return None;
                }
                let body = i + 11;
                let end = body + run_len(b, body, is_alnum_underscore);
                if end - body >= GITHUB_PAT_MIN_BODY {
                    return Some((end, SecretKind::GitHubToken));
                }
                blocked.github_pat = end;
            }
            None
        }
        b'x' => {
            // Slack: `xoxb-` (bot), `xoxp-` (user), `xoxa-`/`xoxr-` (app/refresh), `xoxs-`
            // (session) + 10+ [A-Za-z0-9-]. The `xox?-` prefix does not occur in prose.
            if rest.len() >= 5
                && rest.starts_with(b"xox")
                && matches!(rest[3], b'b' | b'p' | b'a' | b'r' | b's')
                && rest[4] == b'-'
            {
                if i < blocked.slack {
                    return None;
                }
                let body = i + 5;
                let end = body + run_len(b, body, is_alnum_dash);
                if end - body >= SLACK_MIN_BODY {
                    return Some((end, SecretKind::SlackToken));
                }
                blocked.slack = end;
            }
            None
        }
        b'h' => {
            // Slack incoming webhook: the URL itself is the credential (anyone holding it can
            // post), so the whole URL is the span. Only the `hooks.slack.com/services/` host
            // and path match, with a path long enough to hold the three ids.
            const WEBHOOK: &[u8] = b"https://hooks.slack.com/services/";
            if rest.starts_with(WEBHOOK) {
                let path = i + WEBHOOK.len();
                let n = run_len(b, path, is_url_path_char);
                if n >= SLACK_WEBHOOK_MIN_PATH {
                    return Some((path + n, SecretKind::SlackToken));
                }
            }
            None
        }
        b'e' => {
            // JWT: three base64url segments joined by dots, the first starting with `eyJ`
            // (base64 of `{"`), each at least 10 characters. Requiring all three segments and
            // the JSON-object header keeps dotted identifiers and version strings out. Signed
            // JWTs are bearer credentials (session tokens, API tokens).
            if !rest.starts_with(b"eyJ") || i < blocked.jwt {
                return None;
            }
            let seg1_end = i + run_len(b, i, is_key_char);
            let seg_ok = |start: usize, end: usize| end - start >= JWT_MIN_SEGMENT;
            let result = (|| {
                if !seg_ok(i, seg1_end) || b.get(seg1_end) != Some(&b'.') {
                    return None;
                }
                let seg2 = seg1_end + 1;
                let seg2_end = seg2 + run_len(b, seg2, is_key_char);
                if !seg_ok(seg2, seg2_end) || b.get(seg2_end) != Some(&b'.') {
                    return None;
                }
                let seg3 = seg2_end + 1;
                let seg3_end = seg3 + run_len(b, seg3, is_key_char);
                seg_ok(seg3, seg3_end).then_some((seg3_end, SecretKind::Jwt))
            })();
            if result.is_none() {
                blocked.jwt = seg1_end;
            }
            result
        }
        b'-' => private_key_block_at(text, i).map(|end| (end, SecretKind::PrivateKeyBlock)),
        _ => None,
    }
}

/// Stripe: `sk_live_`, `sk_test_`, `rk_live_`, `rk_test_` + 16+ base62. Test-mode keys are
/// included: they still grant API access to the account's test data. Publishable keys
/// (`pk_…`) are public by design and not matched.
fn stripe_at(b: &[u8], i: usize, prefixes: &[&[u8]]) -> Option<(usize, SecretKind)> {
    let rest = &b[i..];
    let prefix = prefixes.iter().find(|p| rest.starts_with(p))?;
    let body = i + prefix.len();
    let n = run_len(b, body, is_alnum);
    (n >= STRIPE_MIN_BODY).then_some((body + n, SecretKind::StripeKey))
}

/// PEM private keys: `-----BEGIN <LABEL>-----` where the label contains `PRIVATE KEY` (RSA,
/// EC, DSA, OPENSSH, ENCRYPTED, PGP … BLOCK, bare PKCS#8), through the matching
/// `-----END <LABEL>-----`. The whole block is the span: every line of it is key material.
/// Without a matching END (a truncated paste, a key cut off by a tool's output limit) the
/// span runs to the end of the text — over-redacting a tail beats leaking half a key.
///
/// False positives: code and docs mention the header (`starts_with("-----BEGIN …")`), so
/// the header must be followed (after whitespace, or a literal `\n` escape inside JSON or
/// source text) by key material: a base64 run of 16+ characters, or an RFC 1421 / OpenPGP
/// armor header line (`Proc-Type:`, `Version:`, `Comment:`).
fn private_key_block_at(text: &str, i: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let b = text.as_bytes();
    if !b[i..].starts_with(BEGIN) {
        return None;
    }
    let label_start = i + BEGIN.len();
    let label_len = run_len_capped(
        b,
        label_start,
        |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ',
        64,
    );
    let label_end = label_start + label_len;
    if !b[label_end..].starts_with(b"-----") {
        return None;
    }
    // All bytes of the label are ASCII, so these are char boundaries.
    let label = &text[label_start..label_end];
    if !label.contains("PRIVATE KEY") {
        return None;
    }
    let header_end = label_end + 5;
    if !pem_body_follows(b, header_end) {
        return None;
    }
    let end_marker = format!("-----END {label}-----");
    Some(match text[header_end..].find(&end_marker) {
        Some(p) => header_end + p + end_marker.len(),
        None => text.len(),
    })
}

fn pem_body_follows(b: &[u8], mut j: usize) -> bool {
    loop {
        match b.get(j) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => j += 1,
            Some(b'\\') if matches!(b.get(j + 1), Some(b'n' | b'r')) => j += 2,
            _ => break,
        }
    }
    if run_len_capped(b, j, is_base64_char, PEM_MIN_BODY_RUN) >= PEM_MIN_BODY_RUN {
        return true;
    }
    let rest = b.get(j..).unwrap_or_default();
    [b"Proc-Type:".as_slice(), b"Version:", b"Comment:"]
        .iter()
        .any(|h| rest.starts_with(h))
}

// ------------------------------------------------------------------------------------------
// Secrets wrapped across lines
// ------------------------------------------------------------------------------------------

/// Characters a wrapped token may be cut between: the key alphabet plus base64's `/` and `+`.
fn is_wrap_char(c: u8) -> bool {
    is_key_char(c) || c == b'/' || c == b'+'
}

/// Length of the line break starting at `i`, with the indentation after it: a line feed
/// (`LF` or `CR LF`), or the escape sequence of one inside JSON or source text (a backslash and
/// `n`, or backslash `r` backslash `n`). 0 if none.
fn wrap_break_len(b: &[u8], i: usize) -> usize {
    let rest = &b[i..];
    let len = if rest.starts_with(b"\r\n") {
        2
    } else if rest.starts_with(b"\n") {
        1
    } else if rest.starts_with(b"\\r\\n") {
        4
    } else if rest.starts_with(b"\\n") {
        2
    } else {
        return 0;
    };
    len + run_len(b, i + len, |c| c == b' ' || c == b'\t')
}

/// Specific-rule secrets cut in two by a line break: a key pasted into a terminal that wrapped
/// it, a hard-wrapped log line, a token split inside wrapped JSON (`AKIA` at the end of one
/// line, the other 16 characters on the next, maybe indented).
///
/// The text is scanned again with every break that sits between two token characters removed
/// (with the indentation after it), by the prefix rules and the AWS secret key rule only: the
/// generic high-entropy rule would turn every pair of wrapped code lines into one long token.
/// A match there that spans a removed break is mapped back to the original text, break and
/// all, so redaction covers both halves. Variable-length rules over-extend on the joined text
/// when a complete key ends a line and the next line starts with a word (`…Ua\nexport FOO`),
/// so a match that only extends a key already found on its own line is kept only when the
/// continuation carries a digit, as random key material does and words mostly do not. Linear:
/// one pass to build the joined text, the ordinary linear rules on it.
fn scan_wrapped(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut joined: Vec<u8> = Vec::new();
    // Joined offsets of the first byte after each removed break (sorted), and how many bytes
    // were removed up to and including that break: byte `j` of the joined text is byte
    // `j + removed[k - 1]` of `text`, `k` being the number of breaks at or before `j`.
    let mut breaks = Vec::new();
    let mut removed = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !matches!(b[i], b'\n' | b'\r' | b'\\') {
            i += 1;
            continue;
        }
        let len = wrap_break_len(b, i);
        if len > 0
            && i > 0
            && is_wrap_char(b[i - 1])
            && b.get(i + len).is_some_and(|&c| is_wrap_char(c))
        {
            if breaks.is_empty() {
                joined.reserve(b.len());
            }
            joined.extend_from_slice(&b[copied..i]);
            copied = i + len;
            breaks.push(joined.len());
            removed.push(copied - joined.len());
            i += len;
            continue;
        }
        i += 1;
    }
    if breaks.is_empty() {
        return;
    }
    joined.extend_from_slice(&b[copied..]);
    // Only ASCII bytes between two ASCII characters were removed, so this cannot fail.
    let Ok(joined) = String::from_utf8(joined) else {
        return;
    };
    let origin = |j: usize| {
        let k = breaks.partition_point(|&p| p <= j);
        j + if k == 0 { 0 } else { removed[k - 1] }
    };
    let mut found = Vec::new();
    scan_prefixed(&joined, &breaks, &mut found);
    scan_aws_secret_keys(joined.as_bytes(), &breaks, &mut found);
    for span in found {
        let Some(end) = trim_wrapped(&joined, &breaks, span) else {
            continue;
        };
        out.push(Span {
            start: origin(span.start),
            end: origin(end - 1) + 1,
            kind: span.kind,
        });
    }
}

/// Where a match on the joined text ends once its over-extension is cut off, or `None` when
/// what remains crosses no removed break (the ordinary scan has it, or it is no secret).
///
/// Variable-length rules run on across a break when a token ends a line and the next line
/// starts with a word (`…Ua` then `export FOO`). Random key material practically always has
/// a digit in a dozen characters and such words mostly do not, so from the last break inside
/// the match backwards, a continuation without a digit is cut off, as long as the rest still
/// matches the same rule on its own. Fixed-length matches and private key blocks (which end
/// at their END line) are kept whole.
fn trim_wrapped(joined: &str, breaks: &[usize], span: Span) -> Option<usize> {
    let crosses = |end: usize| {
        let k = breaks.partition_point(|&p| p <= span.start);
        breaks.get(k).is_some_and(|&p| p < end)
    };
    let mut end = span.end;
    if !matches!(
        span.kind,
        SecretKind::AwsAccessKey
            | SecretKind::AwsSecretKey
            | SecretKind::GoogleApiKey
            | SecretKind::PrivateKeyBlock
    ) {
        // Walk back over the trailing continuations without a digit (each byte looked at
        // once), then check the rest once: linear, whatever the input.
        let b = joined.as_bytes();
        let first = breaks.partition_point(|&p| p <= span.start);
        let last = breaks.partition_point(|&p| p < span.end);
        let mut cut = span.end;
        for &p in breaks[first..last].iter().rev() {
            if b[p..cut].iter().any(u8::is_ascii_digit) {
                break;
            }
            cut = p;
        }
        if cut < span.end {
            // `cut` follows an ASCII byte, so it is a char boundary.
            let shorter = &joined[..cut];
            if let Some((e, kind)) =
                match_prefixed(shorter, span.start, &mut Blocked::default(), breaks)
            {
                if e == cut && kind == span.kind {
                    end = cut;
                }
            }
        }
    }
    crosses(end).then_some(end)
}

// ------------------------------------------------------------------------------------------
// AWS secret access keys
// ------------------------------------------------------------------------------------------

/// AWS secret access key: a 40-character [A-Za-z0-9/+] value assigned (`=` or `:`, with
/// optional spaces and quotes) on the same line to a name containing `aws_secret`
/// (`aws_secret_access_key`, `AWS_SECRET_ACCESS_KEY`, `AWS_SECRET_KEY`) or `SecretAccessKey`
/// (the field name in `aws sts` / IAM JSON output), case-insensitively.
///
/// The value alone is indistinguishable from any other base64 string, so the assignment
/// context is required; in return the 40-character value is reported even when it would not
/// pass the generic high-entropy filters. The value must be exactly 40 characters (a maximal
/// run) so longer base64 blobs under such a name are not cut in half.
fn scan_aws_secret_keys(b: &[u8], breaks: &[usize], out: &mut Vec<Span>) {
    const KEYWORDS: [&[u8]; 2] = [b"aws_secret", b"secretaccesskey"];
    let mut i = 0;
    while i < b.len() {
        let lower = b[i] | 0x20;
        if lower != b'a' && lower != b's' {
            i += 1;
            continue;
        }
        let Some(keyword) = KEYWORDS
            .iter()
            .find(|k| b.len() - i >= k.len() && b[i..i + k.len()].eq_ignore_ascii_case(k))
        else {
            i += 1;
            continue;
        };
        // The rest of the variable name (`_ACCESS_KEY`, ...).
        let name_end = i + keyword.len() + run_len(b, i + keyword.len(), is_alnum_underscore);
        let quote_or_space = |c: u8| matches!(c, b' ' | b'\t' | b'"' | b'\'' | b'`');
        let mut j = name_end + run_len(b, name_end, quote_or_space);
        if matches!(b.get(j), Some(b'=' | b':')) {
            j += 1;
            // `: "`, `= '`, `:=`, `=>`.
            j += run_len(b, j, |c| {
                quote_or_space(c) || matches!(c, b'=' | b':' | b'>')
            });
            let n = run_len_capped(b, j, is_aws_secret_char, AWS_SECRET_LEN + 1);
            if n == AWS_SECRET_LEN || (n > AWS_SECRET_LEN && at_break(breaks, j + AWS_SECRET_LEN)) {
                out.push(Span {
                    start: j,
                    end: j + AWS_SECRET_LEN,
                    kind: SecretKind::AwsSecretKey,
                });
            }
        }
        // A keyword found again inside the same name would lead to the same assignment.
        i = name_end.max(i + 1);
    }
}

// ------------------------------------------------------------------------------------------
// Connection strings
// ------------------------------------------------------------------------------------------

/// Database and broker URL schemes whose userinfo carries a password.
const DB_SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mongodb",
    "mongodb+srv",
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "mssql",
    "sqlserver",
];

/// `scheme://user:password@host` for database/broker schemes (also with a driver suffix, as
/// SQLAlchemy writes them: `postgresql+psycopg2://`). The span is the password only, so a
/// redacted URL still shows which database a session talked to.
///
/// False positives: only these schemes (an `https://user:pass@` is rarer and often a
/// documented example); the password must be non-empty, and obvious placeholders are skipped
/// (`${DB_PASSWORD}`, `{{password}}`, `<password>`, `%s`, `****`, `xxx`, the literal words
/// `password`/`pass`/`secret` …) since docs and templates are full of them.
fn scan_connection_strings(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    for (sep, _) in text.match_indices("://") {
        let mut s = sep;
        while s > 0 && sep - s <= 32 && is_scheme_char(b[s - 1]) {
            s -= 1;
        }
        // `b[s..sep]` is ASCII, so `s` is a char boundary.
        if !is_db_scheme(&text[s..sep]) {
            continue;
        }
        // The authority ends at the path, query, fragment, whitespace or a quote; the
        // userinfo ends at its last `@` (passwords sometimes contain a raw `@`). Every `://`
        // contains a `/`, so these forward scans never overlap: linear overall.
        let authority = sep + 3;
        let mut at = None;
        let mut e = authority;
        while e < b.len() && !is_authority_end(b[e]) {
            if b[e] == b'@' {
                at = Some(e);
            }
            e += 1;
        }
        let Some(at) = at else { continue };
        let Some(colon) = b[authority..at].iter().position(|&c| c == b':') else {
            continue;
        };
        let start = authority + colon + 1;
        if start >= at || is_placeholder_password(&text[start..at]) {
            continue;
        }
        out.push(Span {
            start,
            end: at,
            kind: SecretKind::ConnectionStringPassword,
        });
    }
}

fn is_scheme_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')
}

fn is_authority_end(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'`' | b'<' | b'>')
}

fn is_db_scheme(scheme: &str) -> bool {
    let matches = |s: &str| DB_SCHEMES.iter().any(|d| d.eq_ignore_ascii_case(s));
    matches(scheme)
        || scheme
            .split_once('+')
            .is_some_and(|(base, _)| matches(base))
}

fn is_placeholder_password(pw: &str) -> bool {
    let bytes = pw.as_bytes();
    // Variables and templates (`$DB_PASS`, `${…}`, `{{…}}`, `<…>`, `%s`) and redaction
    // markers (`[REDACTED:…]`, `[password]`).
    if matches!(bytes.first(), Some(b'$' | b'{' | b'<' | b'[' | b'%')) {
        return true;
    }
    // Masks: `****`, `xxxx`, `...`.
    if bytes.iter().all(|c| matches!(c, b'*' | b'x' | b'X' | b'.')) {
        return true;
    }
    if bytes.len() > 24 {
        return false;
    }
    let word: String = pw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let word = word
        .strip_prefix("your")
        .or_else(|| word.strip_prefix("my"))
        .unwrap_or(&word);
    matches!(
        word,
        "password" | "passwd" | "pass" | "pwd" | "pw" | "secret" | "dbpassword"
    )
}

// ------------------------------------------------------------------------------------------
// High-entropy tokens
// ------------------------------------------------------------------------------------------

/// Generic rule for random-looking tokens in `b[from..to]`.
///
/// A token is a maximal run of `[A-Za-z0-9+/_-]` plus any trailing `=` (base64 padding). `=`
/// inside a run separates tokens instead of joining them, so `API_KEY=<token>` reports the
/// token alone, and redaction keeps the variable name.
fn scan_high_entropy(b: &[u8], from: usize, to: usize, out: &mut Vec<Span>) {
    let mut i = from;
    while i < to {
        if !is_token_core(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < to && is_token_core(b[i]) {
            i += 1;
        }
        while i < to && b[i] == b'=' {
            i += 1;
        }
        if i - start >= HIGH_ENTROPY_MIN_LEN {
            high_entropy_pieces(b, from, start, i, out);
        }
    }
}

/// Splits a token around embedded exempt ids (UUIDs, 40/64-hex digests), then reports each
/// remaining piece that looks like a secret. Session file names (`rollout-<date>-<uuid>`),
/// `<name>-<sha>` build artifacts and the like are ids glued to words, not secrets.
fn high_entropy_pieces(b: &[u8], gap: usize, start: usize, end: usize, out: &mut Vec<Span>) {
    let mut piece_start = start;
    let mut k = start;
    while k < end {
        if let Some(len) = exempt_id_at(b, start, k, end) {
            report_if_secret_like(b, gap, piece_start, k, out);
            k += len;
            piece_start = k;
        } else {
            k += 1;
        }
    }
    report_if_secret_like(b, gap, piece_start, end, out);
}

/// Length of an exempt id starting at `k` inside the token `b[lo..end]`, if there is one.
///
/// Exempt, because coding transcripts are full of them and they are identifiers, not
/// credentials:
/// * UUIDs (8-4-4-4-12 hex, `-` or `_` separated, optionally `0x`-prefixed as in Windows
///   GUID constants): session, message and request ids.
/// * All-hex runs of exactly 40 or 64 digits: git commit/object ids (SHA-1), SHA-256 and
///   BLAKE3 digests (tapes' own node ids among them), lockfile checksums, container digests.
///   (Hex cannot exceed 4.0 bits/char anyway, but a digest glued to a name could push the
///   whole token over.)
///
/// The id must stand alone inside the token: not preceded or followed by an alphanumeric.
fn exempt_id_at(b: &[u8], lo: usize, k: usize, end: usize) -> Option<usize> {
    if k > lo && is_alnum(b[k - 1]) {
        return None;
    }
    let mut p = k;
    if end - k > 2 && b[k] == b'0' && (b[k + 1] | 0x20) == b'x' {
        p = k + 2;
    }
    let bounded = |q: usize| q == end || !is_alnum(b[q]);
    if p + 36 <= end && is_uuid(&b[p..p + 36]) && bounded(p + 36) {
        return Some(p + 36 - k);
    }
    let hex = b[p..end]
        .iter()
        .take(65)
        .take_while(|c| c.is_ascii_hexdigit())
        .count();
    if (hex == 40 || hex == 64) && bounded(p + hex) {
        return Some(p + hex - k);
    }
    None
}

fn is_uuid(s: &[u8]) -> bool {
    let sep = s[8];
    if sep != b'-' && sep != b'_' {
        return false;
    }
    s.iter().enumerate().all(|(i, &c)| match i {
        8 | 13 | 18 | 23 => c == sep,
        _ => c.is_ascii_hexdigit(),
    })
}

fn report_if_secret_like(b: &[u8], gap: usize, start: usize, end: usize, out: &mut Vec<Span>) {
    if end - start >= HIGH_ENTROPY_MIN_LEN && is_secret_like(b, gap, start, end) {
        out.push(Span {
            start,
            end,
            kind: SecretKind::HighEntropy,
        });
    }
}

/// Token prefixes of things that are random-looking but public, and everywhere in agent
/// transcripts:
/// * Subresource-integrity hashes (`sha512-<base64>`) in package-lock.json, yarn.lock and Nix
///   files: public checksums.
/// * SSH public key blobs (`ssh-ed25519 AAAAC3NzaC1…`, `ssh-rsa AAAAB3NzaC1…`,
///   `ecdsa-sha2-… AAAAE2VjZHNh…`, FIDO `sk-…` keys) in authorized_keys, known_hosts and
///   `ssh-keygen` output: the base64 of the key type name is a fixed prefix. (Private SSH keys
///   are PEM blocks and caught by their own rule.)
/// * Provider-assigned ids of tool calls, messages and requests (Anthropic `toolu_…`,
///   `srvtoolu_…`, `msg_…`, `req_…`; OpenAI `call_…`, `chatcmpl-…`, `resp_…`): every
///   session is full of them and they grant nothing.
const PUBLIC_TOKEN_PREFIXES: &[&[u8]] = &[
    b"sha1-",
    b"sha256-",
    b"sha384-",
    b"sha512-",
    b"AAAAB3NzaC1",
    b"AAAAC3NzaC1",
    b"AAAAE2VjZHNh",
    b"AAAAGnNrLXNzaC1",
    b"AAAAInNrLWVjZHNh",
    b"toolu_",
    b"srvtoolu_",
    b"msg_",
    b"req_",
    b"call_",
    b"chatcmpl-",
    b"resp_",
];

/// age recipients (`age1` + bech32) are public keys: tapes' own team manifests and `age-keygen`
/// output are full of them. (age identities, `AGE-SECRET-KEY-1…`, are upper case and stay
/// reported.)
fn is_age_recipient(tok: &[u8]) -> bool {
    const BECH32: &str = concat!("qpzry9x8gf2tvdw0", "s3jn54khce6mua7l");
    tok.starts_with(b"age1") && tok[4..].iter().all(|c| BECH32.as_bytes().contains(c))
}

/// The filters of the high-entropy rule, cheapest first.
/// `gap` is where the stretch of text not claimed by specific rules begins: context before the
/// token is only looked at inside it, because in a redacted copy whatever precedes the gap is
/// a `[REDACTED:…]` marker.
fn is_secret_like(b: &[u8], gap: usize, start: usize, end: usize) -> bool {
    let tok = &b[start..end];
    // Paths and URL paths (`a/b/c/d`) are long and varied but not secrets.
    if tok.iter().filter(|&&c| c == b'/').count() > HIGH_ENTROPY_MAX_SLASHES {
        return false;
    }
    // Random tokens mix letters and digits; a run of only letters is a word or identifier,
    // a run of only digits is a number.
    if !tok.iter().any(u8::is_ascii_digit) || !tok.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    // Subresource-integrity hashes (`sha512-<base64>`) fill package-lock.json / yarn.lock /
    // Nix files, and `h1:<base64>` hashes fill go.sum: public checksums, not secrets.
    if PUBLIC_TOKEN_PREFIXES.iter().any(|p| tok.starts_with(p)) {
        return false;
    }
    if is_age_recipient(tok) {
        return false;
    }
    if start >= gap + 3
        && &b[start - 3..start] == b"h1:"
        // `h1` must be a token of its own (so it can never be part of a finding itself).
        && (start == gap + 3 || !(is_token_core(b[start - 4]) || b[start - 4] == b'='))
    {
        return false;
    }
    // snake_case / CONSTANT_CASE identifiers (`NL80211_ATTR_…`, `test_scan_blocks_2`):
    // letters all of one case, with a `_`. Random tokens whose alphabet has `_` (base64url)
    // are mixed-case; single-case random alphabets (base32, hex) have no `_`.
    if is_single_case_snake(tok) {
        return false;
    }
    if shannon_entropy(tok) < HIGH_ENTROPY_MIN_BITS {
        return false;
    }
    !looks_like_words(tok)
}

fn is_single_case_snake(tok: &[u8]) -> bool {
    tok.contains(&b'_')
        && !(tok.iter().any(u8::is_ascii_lowercase) && tok.iter().any(u8::is_ascii_uppercase))
}

/// Shannon entropy of the byte distribution, in bits per character.
fn shannon_entropy(tok: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in tok {
        counts[c as usize] += 1;
    }
    let n = tok.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The 150 most frequent letter pairs inside words of Rust source and docs (words split at
/// case humps and non-letters, case-folded), measured on the crates in this workspace's
/// dependency tree. They cover 85% of all letter pairs in identifiers.
const COMMON_BIGRAMS: &[u8; 300] = b"erinseteatstreonlentetthutcoenoraralesiteldemehemutipuransas\
antrubedrolitoomngnerindtafiismacasiloecuscheaiopaunvefflfpeexctoclliaadimrrlaoufortgenosozeur\
vampulsshaicprfnacceilkecrtyidopplizapueemttrsdisuldamrynancptscdorgtufepoottsckluhibuifltieruy\
polmoblrmofefbeaioseqodddowmifrigspwifaivoknirndaum";

const fn bigram_table() -> [[bool; 26]; 26] {
    let mut table = [[false; 26]; 26];
    let mut i = 0;
    while i + 1 < COMMON_BIGRAMS.len() {
        let a = (COMMON_BIGRAMS[i] - b'a') as usize;
        let b = (COMMON_BIGRAMS[i + 1] - b'a') as usize;
        table[a][b] = true;
        i += 2;
    }
    table
}

static BIGRAMS: [[bool; 26]; 26] = bigram_table();

/// Whether a token reads like words glued together (a long identifier such as
/// `TestSuiteHandlerForVersion2Compatibility`, `x86_64-unknown-linux-gnu-release` or
/// `GUID_WICPixelFormat32bppRGBA`) rather than random characters.
///
/// Entropy alone cannot tell them apart: camelCase identifiers with a digit measure 4.0..4.4
/// bits/char, the same as lowercase+digit random tokens. What differs is which letters follow
/// each other: in identifiers about 80% of adjacent letter pairs (within a word) are among
/// the 150 most common ones, in random tokens about 22% (150 of 676 possible pairs).
/// Measured on ~5,000 entropy-passing tokens from real Rust crates versus random
/// base62/base64/base32 tokens of 32..64 characters, a 60% threshold over at least 6 pairs
/// drops ~92% of those identifiers while missing ~0.2% of random tokens.
fn looks_like_words(tok: &[u8]) -> bool {
    let mut pairs = 0usize;
    let mut common = 0usize;
    for w in 0..tok.len().saturating_sub(1) {
        let (x, y) = (tok[w], tok[w + 1]);
        if !x.is_ascii_alphabetic() || !y.is_ascii_alphabetic() {
            continue;
        }
        // A case hump starts a new word: `fooBar` (o|B), `HTTPServer` (P|Se).
        if x.is_ascii_lowercase() && y.is_ascii_uppercase() {
            continue;
        }
        if x.is_ascii_uppercase()
            && y.is_ascii_uppercase()
            && tok.get(w + 2).is_some_and(u8::is_ascii_lowercase)
        {
            continue;
        }
        pairs += 1;
        let a = (x.to_ascii_lowercase() - b'a') as usize;
        let b = (y.to_ascii_lowercase() - b'a') as usize;
        if BIGRAMS[a][b] {
            common += 1;
        }
    }
    pairs >= WORDLIKE_MIN_PAIRS && common * 10 >= pairs * WORDLIKE_MIN_COMMON_TENTHS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Every secret-looking literal below is split with `concat!` so this file itself does
    // not trip secret scanners (including this one).

    const OPENAI: &str = concat!("sk-", "proj-", "Xq7vB2mK9pLw", "4Rt8Yz3Nc6Hd", "1Gf5Js0Ua");
    const OPENAI_LEGACY: &str = concat!(
        "sk-",
        "T3BlbkFJ",
        "a1B2c3D4e5F6",
        "g7H8i9J0k1L2",
        "m3N4o5P6"
    );
    const ANTHROPIC: &str = concat!(
        "sk-",
        "ant-",
        "api03-",
        "R2d2C3p0Xw9Y",
        "v8Uq7Tp6So5R",
        "n4Qm3Pl2Ok1N",
        "j0Mi-Hh_Gg-A",
        "AAA"
    );
    const AWS_ACCESS: &str = concat!("AK", "IA", "Z7QX4M2N8P5R", "3T6V");
    const AWS_STS: &str = concat!("AS", "IA", "Q2W3E4R5T6Y7", "U8I9");
    const AWS_SECRET: &str = concat!("wJalrXUtnFEM", "I/K7MDENG/", "bPxRfiCYEXAM", "PLEKEY");
    const GITHUB: &str = concat!("gh", "p_", "aB3dE5gH7jK9", "mN1pQ3sT5vW7", "yZ9bC1dF3hJ5");
    const GITHUB_PAT: &str = concat!(
        "github",
        "_pat_",
        "11ABCDEFG012",
        "3456789abc_",
        "xyzXYZ012345",
        "6789abcdefgh",
        "ijklmnopqrst",
        "uvwxyzABCDEF",
        "GHIJKLMNOPQR",
        "S"
    );
    const SLACK: &str = concat!(
        "xo",
        "xb-",
        "2150000000-4",
        "270000000-Xk",
        "9Lm2Np5Qr8St",
        "1Uv4Wx7Yz0"
    );
    const SLACK_WEBHOOK: &str = concat!(
        "https://hook",
        "s.",
        "slack.com/se",
        "rvices/",
        "T0AB12CDE/B0",
        "FG34HIJ/",
        "Zx9Yw8Vu7Ts6",
        "Rq5Po4Nm3Lk2"
    );
    const STRIPE: &str = concat!("sk_", "live_", "51H8xYzAbCdE", "f0123456789G", "hIjKl");
    const GOOGLE: &str = concat!("AI", "za", "SyD3mK9pLw4R", "t8Yz3Nc6Hd1G", "f5Js0Ua7Vb2");
    const PEM: &str = concat!(
        "-----BEGIN ",
        "RSA PRIVATE",
        " KEY-----\n",
        "MIIEowIBAAKC",
        "AQEA7Xq2b9Lm",
        "4Np6Qr8St1Uv",
        "3Wx5Yz7Ab9Cd",
        "1Ef3Gh5Ij7Kl",
        "9Mn1Op\n",
        "3Qr5St7Uv9Wx",
        "1Yz3Ab5Cd7Ef",
        "9Gh1Ij3Kl5Mn",
        "7Op9Qr1St3Uv",
        "5Wx7Yz9Ab1Cd",
        "3Ef5==\n",
        "-----END ",
        "RSA PRIVATE",
        " KEY-----"
    );
    const PEM_UNTERMINATED: &str = concat!(
        "-----BEGIN ",
        "OPENSSH PRIV",
        "ATE",
        " KEY-----\n",
        "b3BlbnNzaC1r",
        "ZXktdjEAAAAA",
        "BG5vbmUAAAAE",
        "bm9uZQAAAAAA",
        "AAABAAAAMwAA",
        "AAtzc2gtZW\n",
        "QyNTUxOQAAAC",
        "AwKgrb"
    );
    const JWT: &str = concat!(
        "eyJ",
        "hbGciOiJIUzI",
        "1NiIsInR5cCI",
        "6IkpXVCJ9",
        ".",
        "eyJzdWIiOiIx",
        "MjM0NTY3ODkw",
        "IiwibmFtZSI6",
        "IkpvaG4ifQ",
        ".",
        "SflKxwRJSMeK",
        "KF2QT4fwpMeJ",
        "f36POk6yJV_a",
        "dQssw5c"
    );
    const DB_PASSWORD: &str = concat!("s3cr3t", "-Pa55w0rd!");
    const HIGH_ENTROPY: &str = concat!("Zq8Lm3Xv9Tn2", "Rb7W", "c4Hd6Jf1Kg5P", "s0Ay8Ue3");

    /// (kind, text before, secret, text after).
    fn planted() -> Vec<(SecretKind, String, &'static str, String)> {
        let s = |x: &str| x.to_string();
        vec![
            (
                SecretKind::OpenAiKey,
                s("export OPENAI_API_KEY="),
                OPENAI,
                s(" # rotate"),
            ),
            (SecretKind::OpenAiKey, s("key: \""), OPENAI_LEGACY, s("\",")),
            (
                SecretKind::AnthropicKey,
                s("ANTHROPIC_API_KEY='"),
                ANTHROPIC,
                s("'\n"),
            ),
            (
                SecretKind::AwsAccessKey,
                s("aws_access_key_id = "),
                AWS_ACCESS,
                s("\n"),
            ),
            (
                SecretKind::AwsAccessKey,
                s("\"AccessKeyId\": \""),
                AWS_STS,
                s("\","),
            ),
            (
                SecretKind::AwsSecretKey,
                s("[default]\naws_secret_access_key = "),
                AWS_SECRET,
                s("\nregion = us-east-1"),
            ),
            (
                SecretKind::AwsSecretKey,
                s("{\"SecretAccessKey\": \""),
                AWS_SECRET,
                s("\"}"),
            ),
            (
                SecretKind::GitHubToken,
                s("git clone https://"),
                GITHUB,
                s("@github.com/o/r"),
            ),
            (
                SecretKind::GitHubToken,
                s("GH_TOKEN="),
                GITHUB_PAT,
                s(" gh pr list"),
            ),
            (
                SecretKind::SlackToken,
                s("SLACK_BOT_TOKEN="),
                SLACK,
                s("\n"),
            ),
            (
                SecretKind::SlackToken,
                s("curl -X POST "),
                SLACK_WEBHOOK,
                s(" -d @msg.json"),
            ),
            (
                SecretKind::StripeKey,
                s("Stripe.api_key = '"),
                STRIPE,
                s("'"),
            ),
            (
                SecretKind::GoogleApiKey,
                s("https://maps.googleapis.com/x?key="),
                GOOGLE,
                s("&q=1"),
            ),
            (
                SecretKind::PrivateKeyBlock,
                s("$ cat id_rsa\n"),
                PEM,
                s("\n$ ls"),
            ),
            (
                SecretKind::PrivateKeyBlock,
                s("output truncated:\n"),
                PEM_UNTERMINATED,
                s(""),
            ),
            (SecretKind::Jwt, s("Authorization: Bearer "), JWT, s("\r\n")),
            (
                SecretKind::ConnectionStringPassword,
                s("DATABASE_URL=postgresql://app_user:"),
                DB_PASSWORD,
                s("@db.internal:5432/app"),
            ),
            (
                SecretKind::ConnectionStringPassword,
                s("mongo \"mongodb+srv://root:"),
                DB_PASSWORD,
                s("@cluster0.example.net/?retryWrites=true\""),
            ),
            (
                SecretKind::ConnectionStringPassword,
                s("url = postgresql+psycopg2://u:"),
                DB_PASSWORD,
                s("@localhost/db"),
            ),
            (
                SecretKind::HighEntropy,
                s("token: "),
                HIGH_ENTROPY,
                s(" (expires)"),
            ),
        ]
    }

    fn revealed_chars(masked: &str) -> usize {
        let parts: Vec<&str> = masked.split('…').collect();
        assert_eq!(parts.len(), 3, "{masked}");
        assert!(
            parts[1].starts_with('(') && parts[1].ends_with(" chars)"),
            "{masked}"
        );
        parts[0].chars().count() + parts[2].chars().count()
    }

    #[test]
    fn finds_each_planted_kind_with_exact_span() {
        for (kind, before, secret, after) in planted() {
            let text = format!("{before}{secret}{after}");
            let findings = scan_text(&text);
            assert_eq!(findings.len(), 1, "{kind:?} in {text:?}: {findings:?}");
            let f = &findings[0];
            assert_eq!(f.kind, kind, "{text:?}");
            assert_eq!(
                (f.start, f.end),
                (before.len(), before.len() + secret.len()),
                "{text:?}"
            );
            assert_eq!(&text[f.start..f.end], secret);

            let redacted = redact_text(&text, &findings);
            assert!(!redacted.contains(secret), "{redacted}");
            assert_eq!(
                redacted,
                format!("{before}[REDACTED:{}]{after}", kind.label())
            );
            assert!(scan_text(&redacted).is_empty(), "{redacted}");
        }
    }

    #[test]
    fn masked_reveals_at_most_a_quarter() {
        for (_, before, secret, after) in planted() {
            let text = format!("{before}{secret}{after}");
            for f in scan_text(&text) {
                let n = text[f.start..f.end].chars().count();
                assert!(
                    revealed_chars(&f.masked) * 4 <= n,
                    "{} for {n} chars",
                    f.masked
                );
                assert!(f.masked.contains(&format!("({n} chars)")));
                assert!(!f.masked.contains(secret));
            }
        }
        assert_eq!(mask(OPENAI), "sk-pro…(41 chars)…0Ua");
        assert_eq!(mask("abc"), "…(3 chars)…");
        assert_eq!(mask(""), "…(0 chars)…");
        for n in 0..200 {
            let s: String = std::iter::repeat_n('é', n).collect();
            let m = mask(&s);
            assert!(revealed_chars(&m) * 4 <= n);
            assert!(revealed_chars(&m) <= 9);
        }
    }

    #[test]
    fn several_secrets_in_one_text() {
        let text = format!("a={OPENAI} b={GITHUB}\nc={JWT} d={AWS_ACCESS}.");
        let findings = scan_text(&text);
        let kinds: Vec<SecretKind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                SecretKind::OpenAiKey,
                SecretKind::GitHubToken,
                SecretKind::Jwt,
                SecretKind::AwsAccessKey
            ]
        );
        let redacted = redact_text(&text, &findings);
        assert_eq!(
            redacted,
            "a=[REDACTED:OpenAI API key] b=[REDACTED:GitHub token]\nc=[REDACTED:JSON Web Token] \
             d=[REDACTED:AWS access key ID]."
        );
    }

    #[test]
    fn no_false_positives() {
        let cases = [
            // git SHA-1, in prose and glued to a name
            "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
            "tapes-3f786850e387550fdab836ed7e6dc881de23001b-x86_64",
            // sha256 / blake3 digests
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "node af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 stored",
            // UUIDs
            "session 123e4567-e89b-12d3-a456-426614174000 resumed",
            "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl",
            "0xf2e455dc_09b3_4316_8260_676ada32481c",
            // paths
            "/home/alice/projects/tapes/src/import/claude_code/parser_v2_backup_2024.rs",
            "~/.claude/projects/-home-alice-work-main/0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d.jsonl",
            // prose
            "The quick brown fox jumps over the lazy dog while the compiler rebuilds everything.",
            // `sk-` + words
            "pip install sk-learn, then read sk-learn-compatible-estimators-and-pipelines docs",
            "task-sk-abcdefghijklmnopqrstuvwxyz",
            // URLs without passwords, placeholders
            "postgres://localhost:5432/mydb and postgresql://app@db.internal/app",
            "https://example.com/a/b?c=d#e and redis://cache:6379/0",
            "postgres://user:password@localhost/db",
            "DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app",
            "mysql://root:<password>@127.0.0.1:3306/test",
            "https://user:hunter2@example.com/ (not a database scheme)",
            // identifiers
            "x86_64-unknown-linux-gnu-release-build-2024",
            "TestSuiteHandlerForVersion2Compatibility",
            "D3D11_MESSAGE_ID_CREATEVIDEODECODEROUTPUTVIEW_INVALIDTYPE",
            "test_scan_blocks_redacts_nested_json_strings_in_tool_input2",
            // lockfile checksums
            "\"integrity\": \"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==\"",
            "golang.org/x/text v0.3.7 h1:olpwvP2KacW1ZWvsR7uQhoyTYvKAupfQrRGBFM352Gk=",
            // PEM header mentioned in code
            concat!("if line.starts_with(\"-----BEGIN ", "PRIVATE KEY", "-----\") {"),
            // short JWT-ish
            "eyJhbGci.eyJzdWIi.abc",
            // public keys and provider ids
            concat!("age1v349n4q68g0xqralt", "vuvg6c8e6dq3npdt", "exzfdusq4jcyy9d0qhhag7gct"),
            concat!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP/i/", "nVhgwXf0z0fErNTsUIA", "yGJDyLecv2+kWGaH3RCL me@host"),
            "\"tool_use_id\": \"toolu_bdrk_01QRsKSkDDpcbN5DcZGF6N69\"",
            // AKIA glued to a longer word
            concat!("AKIA", "IOSFODNN7EXAMPLEXYZ"),
        ];
        for text in cases {
            let findings = scan_text(text);
            assert!(findings.is_empty(), "{text:?}: {findings:?}");
        }
    }

    #[test]
    fn aws_secret_needs_context() {
        // The same 40 characters without an AWS name in front are not an AWS secret key (the
        // generic rule may still call them high-entropy; this one is not random enough).
        let findings = scan_text(&format!("value = {AWS_SECRET}"));
        assert!(findings.iter().all(|f| f.kind != SecretKind::AwsSecretKey));
        // Different assignment styles.
        for text in [
            format!("export AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
            format!("aws_secret_access_key: '{AWS_SECRET}'"),
            format!("AWS_SECRET_KEY := \"{AWS_SECRET}\""),
        ] {
            let findings = scan_text(&text);
            assert_eq!(findings.len(), 1, "{text}");
            assert_eq!(findings[0].kind, SecretKind::AwsSecretKey);
            assert_eq!(&text[findings[0].start..findings[0].end], AWS_SECRET);
        }
    }

    #[test]
    fn age_identity_is_high_entropy() {
        // Not a provider token, but exactly what the generic rule is for (and tapes itself
        // handles age identities).
        let key = concat!(
            "AGE-SECRET-KEY-1",
            "UAUVT7TXUNF9",
            "ZEU2QYRZV0PA",
            "5UVWJLQ9A369",
            "S5WJPYXEXJCY",
            "PQDDR7CE6Y"
        );
        let text = format!("# created: 2025-01-01\n{key}\n");
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, SecretKind::HighEntropy);
        assert_eq!(&text[findings[0].start..findings[0].end], key);
    }

    #[test]
    fn overlapping_matches_merge() {
        // A Slack token as a database password: both rules match the same bytes.
        let text = format!("redis://default:{SLACK}@cache:6379");
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(&text[findings[0].start..findings[0].end], SLACK);
        // A JWT inside a private key block is part of the block.
        let text = PEM.replace("\n3Qr5", &format!("\n{JWT}\n3Qr5"));
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, SecretKind::PrivateKeyBlock);
    }

    #[test]
    fn pem_in_json_escaped_text() {
        let escaped = PEM.replace('\n', "\\n");
        let text = format!("{{\"private_key\": \"{escaped}\\n\", \"x\": 1}}");
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(&text[findings[0].start..findings[0].end], escaped);
    }

    #[test]
    fn a_key_split_across_lines_is_one_finding() {
        let (head, rest) = AWS_ACCESS.split_at(4);
        for (sep, what) in [
            ("\n", "a newline"),
            ("\r\n", "CR LF"),
            ("\n    ", "a newline and indentation"),
            ("\\n", "an escaped newline in JSON"),
            ("\\n\t\t", "an escaped newline and tabs"),
        ] {
            let text = format!("aws_access_key_id = {head}{sep}{rest}\nregion = us-east-1");
            let findings = scan_text(&text);
            assert_eq!(findings.len(), 1, "{what}: {findings:?}");
            let f = &findings[0];
            assert_eq!(f.kind, SecretKind::AwsAccessKey, "{what}");
            assert_eq!(
                &text[f.start..f.end],
                format!("{head}{sep}{rest}"),
                "{what}"
            );
            let redacted = redact_text(&text, &findings);
            assert!(
                !redacted.contains(head) && !redacted.contains(rest),
                "{redacted}"
            );
            assert!(scan_text(&redacted).is_empty(), "{redacted}");
        }
        // Inside a JSON document as a tool input carries it.
        let json = format!(r#"{{"AccessKeyId": "{head}\n      {rest}", "x": 1}}"#);
        let findings = scan_text(&json);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, SecretKind::AwsAccessKey);
    }

    /// A key whose prefix starts a line is found when the line before ends in a token too
    /// (proptest `redact_blocks_matches_scan_blocks` found it: joined, the two lines read as
    /// one word, so `sk-` did not start a token, and only the redacted copy showed the key).
    #[test]
    fn a_split_key_after_a_line_ending_in_a_token_is_found() {
        let text = "_0aa0aa45-M_-mCD1A_Ebcnbda0_2_o6\nsk-\nAaAA_a-aAA--AaA--0_a";
        let findings = scan_text(text);
        assert!(
            findings.iter().any(|f| f.kind == SecretKind::OpenAiKey
                && &text[f.start..f.end] == "sk-\nAaAA_a-aAA--AaA--0_a"),
            "{findings:?}"
        );
        let redacted = redact_text(text, &findings);
        assert!(scan_text(&redacted).is_empty(), "{redacted}");
    }

    #[test]
    fn wrapped_keys_of_other_kinds_are_found_whole() {
        for (kind, secret, cut) in [
            (SecretKind::OpenAiKey, OPENAI, 20),
            (SecretKind::GitHubToken, GITHUB, 15),
            (SecretKind::GoogleApiKey, GOOGLE, 30),
            (SecretKind::StripeKey, STRIPE, 12),
        ] {
            let text = format!("token: {}\n  {}\ndone", &secret[..cut], &secret[cut..]);
            let findings = scan_text(&text);
            assert_eq!(findings.len(), 1, "{kind:?}: {findings:?}");
            assert_eq!(findings[0].kind, kind);
            assert_eq!(
                text[findings[0].start..findings[0].end].replace("\n  ", ""),
                secret
            );
        }
        // An AWS secret key wrapped after its assignment.
        let text = format!(
            "aws_secret_access_key = {}\n{}\n",
            &AWS_SECRET[..22],
            &AWS_SECRET[22..]
        );
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, SecretKind::AwsSecretKey);
        assert_eq!(
            text[findings[0].start..findings[0].end].replace('\n', ""),
            AWS_SECRET
        );
    }

    #[test]
    fn fixed_length_keys_are_found_wherever_the_line_breaks() {
        for (kind, pre, secret) in [
            (SecretKind::AwsAccessKey, "id: ", AWS_ACCESS),
            (SecretKind::GoogleApiKey, "key=", GOOGLE),
            (
                SecretKind::AwsSecretKey,
                "AWS_SECRET_ACCESS_KEY=",
                AWS_SECRET,
            ),
        ] {
            for cut in 1..secret.len() {
                for sep in ["\n", "\n    ", "\\n "] {
                    let text = format!("{pre}{}{sep}{}\nnext line", &secret[..cut], &secret[cut..]);
                    let findings = scan_text(&text);
                    assert_eq!(findings.len(), 1, "{text:?}: {findings:?}");
                    assert_eq!(findings[0].kind, kind, "{text:?}");
                    assert_eq!(
                        &text[findings[0].start..findings[0].end],
                        format!("{}{sep}{}", &secret[..cut], &secret[cut..]),
                    );
                }
            }
        }
    }

    #[test]
    fn a_complete_key_at_a_line_end_does_not_swallow_the_next_word() {
        for next in ["export FOO=bar", "done", "  region = us-east-1"] {
            let text = format!("OPENAI_API_KEY={OPENAI}\n{next}");
            let findings = scan_text(&text);
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert_eq!(&text[findings[0].start..findings[0].end], OPENAI, "{next}");
        }
        // `AKIA` alone at a line end, and a line end inside ordinary code, are nothing.
        for text in [
            "AKIA\nis the prefix of long-term AWS key ids",
            "let key_id = prefix\n    .to_uppercase();",
            "sk-\nlearn",
        ] {
            assert!(
                scan_text(text).is_empty(),
                "{text:?}: {:?}",
                scan_text(text)
            );
        }
    }

    #[test]
    fn an_indented_private_key_block_is_one_finding() {
        // A PEM key pasted into YAML: every body line indented.
        let indented = PEM.replace('\n', "\n      ");
        let text = format!("tls:\n  key: |\n      {indented}\n  cert: none");
        let findings = scan_text(&text);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, SecretKind::PrivateKeyBlock);
        assert_eq!(&text[findings[0].start..findings[0].end], indented);
        // And one without base64 padding, whose last body line runs into the END line.
        let unpadded = PEM.replace("3Ef5==\n", "3Ef5\n");
        let findings = scan_text(&unpadded);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!((findings[0].start, findings[0].end), (0, unpadded.len()));
    }

    #[test]
    fn redact_text_tolerates_bad_findings() {
        let text = "héllo wörld";
        let bogus = |start, end| Finding {
            kind: SecretKind::HighEntropy,
            start,
            end,
            masked: String::new(),
        };
        // Off a char boundary, reversed, out of range: all skipped.
        let out = redact_text(
            text,
            &[bogus(2, 4), bogus(5, 1), bogus(8, 9), bogus(99, 100)],
        );
        assert_eq!(out, text);
        // An end past the text is clamped.
        assert_eq!(
            redact_text(text, &[bogus(7, 999)]),
            "héllo [REDACTED:high-entropy string]"
        );
        // Overlapping: redacted once, remainder marked too.
        let out = redact_text("abcdefgh", &[bogus(0, 4), bogus(2, 6)]);
        assert_eq!(
            out,
            "[REDACTED:high-entropy string][REDACTED:high-entropy string]gh"
        );
    }

    fn tool_use(input: String) -> ContentBlock {
        ContentBlock::ToolUse {
            id: "toolu_01".into(),
            name: "Bash".into(),
            input,
        }
    }

    #[test]
    fn redact_blocks_keeps_json_valid_and_catches_nested_keys() {
        // A signature that would look like a secret if it were scanned.
        let signature = format!("{HIGH_ENTROPY}{HIGH_ENTROPY}");
        let input = format!(
            r#"{{"command": "curl -H 'Authorization: Bearer {OPENAI}' https://api.openai.com/v1/models",
                "env": {{"nested": ["x", {{"token": "{GITHUB}", "n": 3}}]}},
                "{STRIPE}": true, "quote": "he said \"hi\"\n"}}"#
        );
        let blocks = vec![
            ContentBlock::text("nothing to see"),
            ContentBlock::Thinking {
                text: "let me check the env".into(),
                signature: Some(signature.clone()),
            },
            tool_use(input.clone()),
            ContentBlock::ToolResult {
                tool_use_id: "toolu_01".into(),
                is_error: false,
                content: vec![ToolResultPart::Text {
                    text: format!("SLACK_BOT_TOKEN={SLACK}\nDONE"),
                }],
            },
            ContentBlock::Other {
                kind: "redacted_thinking".into(),
                json: format!(r#"{{"data":"{signature}"}}"#),
            },
            tool_use(r#"{ "command": "ls -la",  "timeout": 5 }"#.into()),
        ];

        let findings = scan_blocks(&blocks);
        let summary: Vec<(usize, &str, SecretKind)> = findings
            .iter()
            .map(|f| (f.block, f.field, f.finding.kind))
            .collect();
        assert_eq!(summary.len(), 4, "{summary:?}");
        assert!(summary.contains(&(2, "tool_input", SecretKind::OpenAiKey)));
        assert!(summary.contains(&(2, "tool_input", SecretKind::GitHubToken)));
        assert!(summary.contains(&(2, "tool_input", SecretKind::StripeKey)));
        assert!(summary.contains(&(3, "tool_result", SecretKind::SlackToken)));

        let (redacted, n) = redact_blocks(&blocks);
        assert_eq!(n, findings.len());
        assert_eq!(redacted.len(), blocks.len());
        assert_eq!(redacted[0], blocks[0]);
        assert_eq!(
            redacted[1], blocks[1],
            "thinking (and its signature) untouched"
        );
        assert_eq!(
            redacted[4], blocks[4],
            "opaque redacted_thinking data untouched"
        );
        assert_eq!(
            redacted[5], blocks[5],
            "clean tool input kept byte-for-byte"
        );

        let ContentBlock::ToolUse {
            input: red_input, ..
        } = &redacted[2]
        else {
            panic!("{:?}", redacted[2]);
        };
        let value: Value = serde_json::from_str(red_input).expect("still valid JSON");
        for secret in [OPENAI, GITHUB, STRIPE] {
            assert!(!red_input.contains(secret), "{red_input}");
        }
        assert_eq!(
            value["env"]["nested"][1]["token"],
            "[REDACTED:GitHub token]"
        );
        assert_eq!(value["env"]["nested"][1]["n"], 3);
        assert_eq!(value["quote"], "he said \"hi\"\n");
        assert_eq!(value["[REDACTED:Stripe secret key]"], true);
        assert!(value["command"]
            .as_str()
            .unwrap()
            .starts_with("curl -H 'Authorization: Bearer [REDACTED:OpenAI API key]'"));
        assert_eq!(red_input, &canonical_value(&value));

        let ContentBlock::ToolResult { content, .. } = &redacted[3] else {
            panic!();
        };
        assert_eq!(
            content[0],
            ToolResultPart::Text {
                text: "SLACK_BOT_TOKEN=[REDACTED:Slack token]\nDONE".into()
            }
        );

        assert!(scan_blocks(&redacted).is_empty());
        // The original is untouched.
        assert!(matches!(&blocks[2], ContentBlock::ToolUse { input: i, .. } if *i == input));
    }

    #[test]
    fn redact_blocks_other_shapes() {
        let blocks = vec![
            // Invalid JSON tool input: redacted as text.
            tool_use(format!("not json {ANTHROPIC}")),
            // Colliding redacted keys stay distinct.
            tool_use(format!(
                r#"{{"{GITHUB}":1,"{OPENAI}":2,"[REDACTED:GitHub token]":3}}"#
            )),
            ContentBlock::Image {
                media_type: "image/png".into(),
                source: ImageSource::Reference {
                    uri: format!(
                        "https://bucket.s3.amazonaws.com/a.png?X-Amz-Credential={AWS_ACCESS}%2F"
                    ),
                },
            },
            ContentBlock::Other {
                kind: "server_tool_use".into(),
                json: format!(r#"{{"input":{{"q":"{JWT}"}},"signature":"{JWT}"}}"#),
            },
        ];
        let findings = scan_blocks(&blocks);
        let (redacted, n) = redact_blocks(&blocks);
        assert_eq!(n, findings.len());
        assert_eq!(n, 5, "{findings:?}");
        assert_eq!(
            redacted[0],
            tool_use("not json [REDACTED:Anthropic API key]".into())
        );
        let ContentBlock::ToolUse { input, .. } = &redacted[1] else {
            panic!()
        };
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 3, "{input}");
        assert_eq!(value["[REDACTED:GitHub token]"], 3);
        assert_eq!(value["[REDACTED:OpenAI API key]"], 2);
        assert_eq!(value["[REDACTED:GitHub token] #2"], 1);
        let ContentBlock::Other { json, .. } = &redacted[3] else {
            panic!()
        };
        let value: Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["input"]["q"], "[REDACTED:JSON Web Token]");
        assert_eq!(value["signature"], JWT, "opaque signature kept");
        assert!(findings.iter().any(|f| f.block == 2 && f.field == "other"));
    }

    #[test]
    fn duplicate_json_keys_are_scanned() {
        // serde_json keeps the last duplicate; the secret in the first must still be found,
        // and the redacted copy must not carry it.
        let blocks = vec![tool_use(format!(
            r#"{{"token":"{GITHUB}","token":"x","deep":[{{"a":"{SLACK}","a":1}}]}}"#
        ))];
        let findings = scan_blocks(&blocks);
        assert_eq!(findings.len(), 2, "{findings:?}");
        let (redacted, n) = redact_blocks(&blocks);
        assert_eq!(n, 2);
        let ContentBlock::ToolUse { input, .. } = &redacted[0] else {
            panic!()
        };
        assert!(!input.contains(GITHUB) && !input.contains(SLACK), "{input}");
        assert_eq!(input, r#"{"deep":[{"a":1}],"token":"x"}"#);
    }

    #[test]
    fn adversarial_inputs_stay_linear() {
        // Each of these would be quadratic if a failed rule rescanned its run from every
        // occurrence of its prefix. 1 MB each; quadratic would not finish.
        let n = 1 << 20;
        let inputs = [
            "sk-a-".repeat(n / 5),
            "sk-ant-a-".repeat(n / 9),
            "github_pat_a_".repeat(n / 13),
            "xoxb-a-".repeat(n / 7),
            "eyJabc-".repeat(n / 7),
            "aws_secret".repeat(n / 10),
            "postgres://".repeat(n / 11),
            concat!("-----BEGIN ", "PRIVATE KEY", "----- ").repeat(n / 30),
            "AIza-".repeat(n / 5),
            "a".repeat(n),
            format!("{HIGH_ENTROPY}-").repeat(n / 37),
            "0x".repeat(n / 2),
            "é".repeat(n / 2),
            // Wrapped tokens: one match across every break, keys cut at every line.
            format!("sk-1{}", "\nab".repeat(n / 3)),
            "AKIA\n".repeat(n / 5),
            "a\\n  b\n".repeat(n / 8),
            format!("{OPENAI}\n").repeat(n / 42),
        ];
        for input in &inputs {
            let start = std::time::Instant::now();
            let findings = scan_text(input);
            let _ = redact_text(input, &findings);
            assert!(start.elapsed().as_secs() < 20, "{:?}", &input[..20]);
        }
    }

    /// Run with `cargo test --release --lib secrets -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_ten_megabytes() {
        let chunk = format!(
            "commit 3f786850e387550fdab836ed7e6dc881de23001b\nfn scan_text(text: &str) -> Vec<Finding> {{ \
             let x86_64_unknown_linux = \"TestSuiteHandlerForVersion2Compatibility\"; }}\n\
             session 123e4567-e89b-12d3-a456-426614174000 key {OPENAI} {HIGH_ENTROPY}\n\
             The quick brown fox jumps over the lazy dog. https://example.com/a/b?c=d\n"
        );
        let text = chunk.repeat(10_000_000 / chunk.len());
        let start = std::time::Instant::now();
        let findings = scan_text(&text);
        let elapsed = start.elapsed();
        println!(
            "{} MB, {} findings in {elapsed:?}",
            text.len() / 1_000_000,
            findings.len()
        );
        assert!(elapsed.as_millis() < 1000);
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "sk-",
                "sk-ant-",
                "sk-proj-",
                "sk_live_",
                "rk_test_",
                "AKIA",
                "ASIA",
                "AIza",
                "ghp_",
                "github_pat_",
                "xoxb-",
                "https://hooks.slack.com/services/",
                "eyJ",
                ".",
                "-----BEGIN RSA PRIVATE KEY-----",
                "-----END RSA PRIVATE KEY-----",
                "\n",
                "\\n",
                "postgres://",
                "mongodb+srv://",
                "u:",
                ":",
                "@",
                "/",
                "=",
                "aws_secret_access_key = ",
                "SecretAccessKey\": \"",
                "[REDACTED:x]",
                "é",
                "😀",
                "h1:",
                "sha512-",
                "0x",
                "-",
                "_",
                " ",
            ])
            .prop_map(String::from),
            "[A-Za-z0-9_-]{0,48}",
            "[A-Za-z0-9+/]{0,44}",
            "[a-f0-9-]{0,40}",
            "[ \n:=@/.\"'$*]{0,3}",
            any::<String>().prop_map(|s| s.chars().take(8).collect()),
        ]
    }

    fn secretish_text() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..24).prop_map(|v| v.concat())
    }

    fn check_findings(text: &str, findings: &[Finding]) {
        let mut prev_end = 0;
        for f in findings {
            assert!(f.start < f.end && f.end <= text.len());
            assert!(f.start >= prev_end, "overlap or unsorted: {findings:?}");
            assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            assert!(revealed_chars(&f.masked) * 4 <= text[f.start..f.end].chars().count());
            prev_end = f.end;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Do not write regression files into the source tree.
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        })]

        #[test]
        fn never_panics_on_arbitrary_strings(text in any::<String>()) {
            let findings = scan_text(&text);
            check_findings(&text, &findings);
            let redacted = redact_text(&text, &findings);
            prop_assert!(scan_text(&redacted).is_empty());
        }

        #[test]
        fn redacted_text_rescans_clean(text in secretish_text()) {
            let findings = scan_text(&text);
            check_findings(&text, &findings);
            let redacted = redact_text(&text, &findings);
            let again = scan_text(&redacted);
            prop_assert!(again.is_empty(), "{:?} -> {:?}: {:?}", text, redacted, again);
        }

        #[test]
        fn redact_blocks_matches_scan_blocks(
            entries in prop::collection::vec((secretish_text(), secretish_text()), 0..6),
            result in secretish_text(),
        ) {
            let object: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, v)| (k.clone(), Value::Array(vec![Value::String(v.clone()), 1.into()])))
                .collect();
            let blocks = vec![
                tool_use(Value::Object(object).to_string()),
                ContentBlock::ToolResult {
                    tool_use_id: "t".into(),
                    is_error: false,
                    content: vec![ToolResultPart::Text { text: result }],
                },
            ];
            let findings = scan_blocks(&blocks);
            let (redacted, n) = redact_blocks(&blocks);
            prop_assert_eq!(n, findings.len());
            let ContentBlock::ToolUse { input, .. } = &redacted[0] else { panic!() };
            prop_assert!(serde_json::from_str::<Value>(input).is_ok(), "{}", input);
            let again = scan_blocks(&redacted);
            prop_assert!(again.is_empty(), "{:?}", again);
        }

        #[test]
        fn planted_secret_found_anywhere(
            before in secretish_text(),
            after in secretish_text(),
            index in 0usize..20,
        ) {
            let (_, pre, secret, post) = planted()[index].clone();
            // Random neighbours on their own lines, as in a real transcript.
            let text = format!("{before}\n{pre}{secret}{post}\n{after}");
            let findings = scan_text(&text);
            let start = before.len() + 1 + pre.len();
            // Some finding covers the planted secret entirely (it may have merged with a
            // neighbour that also matched).
            prop_assert!(
                findings.iter().any(|f| f.start <= start && f.end >= start + secret.len()),
                "{:?}: {:?}", text, findings
            );
            let redacted = redact_text(&text, &findings);
            prop_assert!(scan_text(&redacted).is_empty());
        }
    }
}
