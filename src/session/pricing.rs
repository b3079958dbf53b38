//! What a session cost: a price table per model, with user overrides.
//!
//! Prices are USD per 1,000,000 tokens in four kinds: input, output, cache read and cache write.
//! The cost of a node is
//!
//! ```text
//! cost = (input·p_in + output·p_out + cache_read·p_cache_read + cache_write·p_cache_write) / 1e6
//! ```
//!
//! where `input` is [`Usage::input_tokens`], which in tapes is already the *base* input (tokens
//! neither read from nor written to the cache: importers subtract cached tokens where a source
//! reports them inclusively, SPEC.md §2.5), so nothing is subtracted here.
//!
//! Model names are normalized before lookup ([`normalize`]): lowercased, provider prefixes
//! (`models/`, `anthropic/`, `us.anthropic.`, …) and version/date suffixes (`-20250929`,
//! `@20250929`, `-2025-11-13`, Bedrock's `-v1:0`) stripped. A name is priced by the longest
//! table key that equals it or is a prefix of it ending at a `-` and followed only by version
//! numbers or release words (`preview`, `latest`, `exp`, `instruct`): so `claude-sonnet-4-5-…` finds
//! `claude-sonnet-4-5`, `gemini-3-pro-preview` finds `gemini-3-pro` and `claude-opus-4-20250514`
//! finds `claude-opus-4`, but `gemini-3-pro-image-preview` (another model) matches nothing.
//! A model no key matches costs 0 and is reported as *unpriced* (SPEC.md §13).
//!
//! The defaults ([`DEFAULT_PRICES`]) are the providers' list prices when this was written;
//! they drift. `$TAPES_HOME/prices.json` (same shape, see [`PriceTable::parse_overrides`]) is
//! merged over them: a key there replaces the default of that key and adds new ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tapes_protocol::Usage;

/// The file in `$TAPES_HOME` whose entries override the defaults.
pub const OVERRIDE_FILE: &str = "prices.json";

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Price {
    /// What `usage` costs at this price, in USD.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_tokens as f64 * self.cache_read
            + usage.cache_write_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// List prices (USD per 1M tokens) of current Anthropic, OpenAI and Google models. OpenAI and
/// Google do not bill cache writes separately: their cache-write price is the input price.
pub const DEFAULT_PRICES: &str = r#"{
  "claude-opus-4-6":        {"input": 5.0,  "output": 25.0, "cache_read": 0.5,   "cache_write": 6.25},
  "claude-opus-4-5":        {"input": 5.0,  "output": 25.0, "cache_read": 0.5,   "cache_write": 6.25},
  "claude-opus-4-1":        {"input": 15.0, "output": 75.0, "cache_read": 1.5,   "cache_write": 18.75},
  "claude-opus-4":          {"input": 15.0, "output": 75.0, "cache_read": 1.5,   "cache_write": 18.75},
  "claude-sonnet-4-6":      {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-sonnet-4-5":      {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-sonnet-4":        {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-haiku-4-5":       {"input": 1.0,  "output": 5.0,  "cache_read": 0.1,   "cache_write": 1.25},
  "claude-3-7-sonnet":      {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-3-5-sonnet":      {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-3-5-haiku":       {"input": 0.8,  "output": 4.0,  "cache_read": 0.08,  "cache_write": 1.0},
  "claude-3-opus":          {"input": 15.0, "output": 75.0, "cache_read": 1.5,   "cache_write": 18.75},
  "claude-3-sonnet":        {"input": 3.0,  "output": 15.0, "cache_read": 0.3,   "cache_write": 3.75},
  "claude-3-haiku":         {"input": 0.25, "output": 1.25, "cache_read": 0.03,  "cache_write": 0.3},
  "gpt-4o":                 {"input": 2.5,  "output": 10.0, "cache_read": 1.25,  "cache_write": 2.5},
  "gpt-4o-mini":            {"input": 0.15, "output": 0.6,  "cache_read": 0.075, "cache_write": 0.15},
  "gpt-4.1":                {"input": 2.0,  "output": 8.0,  "cache_read": 0.5,   "cache_write": 2.0},
  "gpt-4.1-mini":           {"input": 0.4,  "output": 1.6,  "cache_read": 0.1,   "cache_write": 0.4},
  "gpt-4.1-nano":           {"input": 0.1,  "output": 0.4,  "cache_read": 0.025, "cache_write": 0.1},
  "gpt-5":                  {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 1.25},
  "gpt-5-mini":             {"input": 0.25, "output": 2.0,  "cache_read": 0.025, "cache_write": 0.25},
  "gpt-5-nano":             {"input": 0.05, "output": 0.4,  "cache_read": 0.005, "cache_write": 0.05},
  "gpt-5-codex":            {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 1.25},
  "gpt-5.1":                {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 1.25},
  "gpt-5.1-codex":          {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 1.25},
  "gpt-5.1-codex-mini":     {"input": 0.25, "output": 2.0,  "cache_read": 0.025, "cache_write": 0.25},
  "gpt-5.2":                {"input": 1.75, "output": 14.0, "cache_read": 0.175, "cache_write": 1.75},
  "gpt-5.2-codex":          {"input": 1.75, "output": 14.0, "cache_read": 0.175, "cache_write": 1.75},
  "gpt-5.3-codex":          {"input": 1.75, "output": 14.0, "cache_read": 0.175, "cache_write": 1.75},
  "codex-mini":             {"input": 1.5,  "output": 6.0,  "cache_read": 0.375, "cache_write": 1.5},
  "o3":                     {"input": 2.0,  "output": 8.0,  "cache_read": 0.5,   "cache_write": 2.0},
  "o4-mini":                {"input": 1.1,  "output": 4.4,  "cache_read": 0.275, "cache_write": 1.1},
  "gemini-2.0-flash":       {"input": 0.1,  "output": 0.4,  "cache_read": 0.025, "cache_write": 0.1},
  "gemini-2.0-flash-lite":  {"input": 0.075,"output": 0.3,  "cache_read": 0.01875, "cache_write": 0.075},
  "gemini-2.5-pro":         {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 1.25},
  "gemini-2.5-flash":       {"input": 0.3,  "output": 2.5,  "cache_read": 0.03,  "cache_write": 0.3},
  "gemini-2.5-flash-lite":  {"input": 0.1,  "output": 0.4,  "cache_read": 0.01,  "cache_write": 0.1},
  "gemini-3-pro":           {"input": 2.0,  "output": 12.0, "cache_read": 0.2,   "cache_write": 2.0},
  "gemini-3-flash":         {"input": 0.5,  "output": 3.0,  "cache_read": 0.05,  "cache_write": 0.5}
}"#;

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read the price file {path}: {source}; check the path (or remove it to use the built-in prices)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the price file {path} is not valid: {reason}; expected {{\"model\": {{\"input\": 3.0, \"output\": 15.0, \"cache_read\": 0.3, \"cache_write\": 3.75}}}} in USD per 1M tokens")]
    Invalid { path: String, reason: String },
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    Default,
    Override,
}

/// The prices in use: the defaults with any overrides merged over them.
#[derive(Debug, Clone)]
pub struct PriceTable {
    entries: BTreeMap<String, (Price, PriceSource)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: f64,
    output: f64,
    /// Defaults to the input price: cached tokens billed as plain input.
    cache_read: Option<f64>,
    cache_write: Option<f64>,
}

impl PriceTable {
    /// The built-in table.
    pub fn defaults() -> PriceTable {
        let parsed = parse_entries(DEFAULT_PRICES, "built-in prices")
            .unwrap_or_else(|e| panic!("the built-in price table is invalid: {e}"));
        PriceTable {
            entries: parsed
                .into_iter()
                .map(|(k, p)| (k, (p, PriceSource::Default)))
                .collect(),
        }
    }

    /// The defaults, merged with `$TAPES_HOME/prices.json` when that file exists.
    pub fn load(home: &Path) -> Result<PriceTable, PricingError> {
        let mut table = PriceTable::defaults();
        let path = home.join(OVERRIDE_FILE);
        if path.exists() {
            table.merge_file(&path)?;
        }
        Ok(table)
    }

    /// Merges the entries of a price file over this table.
    pub fn merge_file(&mut self, path: &Path) -> Result<usize, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let overrides = PriceTable::parse_overrides(&text, &path.display().to_string())?;
        let n = overrides.len();
        for (key, price) in overrides {
            self.entries.insert(key, (price, PriceSource::Override));
        }
        Ok(n)
    }

    /// Parses an override file: a JSON object from model name to
    /// `{"input", "output", "cache_read"?, "cache_write"?}` (USD per 1M tokens; missing cache
    /// prices default to the input price). Keys are normalized like model names; keys starting
    /// with `_` are comments.
    pub fn parse_overrides(text: &str, what: &str) -> Result<Vec<(String, Price)>, PricingError> {
        parse_entries(text, what)
    }

    /// The price of `model`, by exact or longest-prefix match of its normalized name.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.lookup(model).map(|(_, p, _)| p)
    }

    /// The table key `model` resolves to, its price and where that price came from.
    pub fn lookup(&self, model: &str) -> Option<(&str, Price, PriceSource)> {
        let name = normalize(model);
        if name.is_empty() {
            return None;
        }
        if let Some((k, (p, s))) = self.entries.get_key_value(&name) {
            return Some((k.as_str(), *p, *s));
        }
        self.entries
            .iter()
            .filter(|(key, _)| {
                name.starts_with(key.as_str())
                    && name.as_bytes().get(key.len()) == Some(&b'-')
                    && is_variant_suffix(&name[key.len() + 1..])
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(k, (p, s))| (k.as_str(), *p, *s))
    }

    /// What `usage` of `model` cost; `None` when the model is not priced.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }

    /// Every entry, by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Price, PriceSource)> {
        self.entries.iter().map(|(k, (p, s))| (k.as_str(), p, *s))
    }
}

/// Whether what follows a table key (after its `-`) only names a release of that same model:
/// version numbers (`1`, `05-20`, `001`) and release words (`preview`, `latest`, `exp`,
/// `experimental`, `instruct`). Any other word names a different model (`gemini-3-pro-image-preview` is
/// an image model, not `gemini-3-pro`), which stays unpriced rather than priced as another.
fn is_variant_suffix(rest: &str) -> bool {
    !rest.is_empty()
        && rest.split('-').all(|word| {
            (!word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()))
                || matches!(
                    word,
                    "preview" | "latest" | "exp" | "experimental" | "instruct"
                )
        })
}

fn parse_entries(text: &str, what: &str) -> Result<Vec<(String, Price)>, PricingError> {
    let invalid = |reason: String| PricingError::Invalid {
        path: what.to_string(),
        reason,
    };
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a JSON object: {e}")))?;
    let mut out = Vec::new();
    for (key, value) in raw {
        if key.starts_with('_') {
            continue;
        }
        let entry: PriceEntry =
            serde_json::from_value(value).map_err(|e| invalid(format!("entry `{key}`: {e}")))?;
        let price = Price {
            input: entry.input,
            output: entry.output,
            cache_read: entry.cache_read.unwrap_or(entry.input),
            cache_write: entry.cache_write.unwrap_or(entry.input),
        };
        for (name, v) in [
            ("input", price.input),
            ("output", price.output),
            ("cache_read", price.cache_read),
            ("cache_write", price.cache_write),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(format!(
                    "entry `{key}`: {name} must be a non-negative number"
                )));
            }
        }
        let normalized = normalize(&key);
        if normalized.is_empty() {
            return Err(invalid(format!("entry `{key}` has no model name")));
        }
        out.push((normalized, price));
    }
    Ok(out)
}

/// A model name reduced to its family key: lowercase, no provider prefix, no date or version
/// suffix. `us.anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5`,
/// `models/gemini-2.5-pro` → `gemini-2.5-pro`, `gpt-5-1-codex-2025-11-13` → `gpt-5.1-codex`.
pub fn normalize(model: &str) -> String {
    let mut name = model.trim().to_ascii_lowercase();
    // Path-like prefixes: `models/…`, `anthropic/…`, `publishers/google/models/…`.
    if let Some(pos) = name.rfind('/') {
        name = name[pos + 1..].to_string();
    }
    // Bedrock: `us.anthropic.` / `eu.anthropic.` / `anthropic.` / `global.anthropic.`.
    if let Some(pos) = name.find("anthropic.") {
        name = name[pos + "anthropic.".len()..].to_string();
    }
    loop {
        let before = name.len();
        // `@20250929` (Vertex), `@latest`.
        if let Some(pos) = name.find('@') {
            name.truncate(pos);
        }
        // Bedrock `-v1:0`, `-v2`.
        if let Some(pos) = name.rfind("-v") {
            let rest = &name[pos + 2..];
            if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == ':') {
                name.truncate(pos);
            }
        }
        // `-20250929`.
        if let Some(pos) = name.rfind('-') {
            let rest = &name[pos + 1..];
            if rest.len() == 8 && rest.chars().all(|c| c.is_ascii_digit()) {
                name.truncate(pos);
            }
        }
        // `-2025-11-13`.
        if name.len() >= 11 {
            let tail = &name[name.len() - 11..];
            let b = tail.as_bytes();
            if b[0] == b'-'
                && b[5] == b'-'
                && b[8] == b'-'
                && tail[1..5].chars().all(|c| c.is_ascii_digit())
                && tail[6..8].chars().all(|c| c.is_ascii_digit())
                && tail[9..].chars().all(|c| c.is_ascii_digit())
            {
                name.truncate(name.len() - 11);
            }
        }
        if name.len() == before {
            break;
        }
    }
    // `gpt-5-1-codex` is how some logs spell `gpt-5.1-codex`.
    let b = name.as_bytes();
    if name.starts_with("gpt-")
        && b.len() >= 7
        && b[4].is_ascii_digit()
        && b[5] == b'-'
        && b[6].is_ascii_digit()
        && (b.len() == 7 || b[7] == b'-')
    {
        name.replace_range(5..6, ".");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_provider_prefixes_and_dates() {
        for (raw, want) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("Claude-Sonnet-4-5@20250929", "claude-sonnet-4-5"),
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5",
            ),
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "claude-3-5-haiku",
            ),
            ("models/gemini-2.5-pro", "gemini-2.5-pro"),
            ("openai/gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-5-1-codex-2025-11-13", "gpt-5.1-codex"),
            ("gpt-5.3-codex", "gpt-5.3-codex"),
            ("gpt-4o-mini", "gpt-4o-mini"),
            ("", ""),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }

    #[test]
    fn longest_prefix_family_match_and_unknown_models() {
        let t = PriceTable::defaults();
        assert_eq!(
            t.lookup("claude-opus-4-1-20250805").map(|l| l.0),
            Some("claude-opus-4-1")
        );
        assert_eq!(
            t.lookup("claude-opus-4-20250514").map(|l| l.0),
            Some("claude-opus-4")
        );
        assert_eq!(
            t.lookup("gpt-4o-mini-2024-07-18").map(|l| l.0),
            Some("gpt-4o-mini")
        );
        assert_eq!(t.lookup("gpt-4o-2024-08-06").map(|l| l.0), Some("gpt-4o"));
        assert_eq!(
            t.lookup("gemini-2.5-flash-preview-05-20").map(|l| l.0),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            t.lookup("gemini-3-pro-preview").map(|l| l.0),
            Some("gemini-3-pro")
        );
        // A prefix must end at a `-`: `gpt-4` is not a price for `gpt-4o`-like names it does
        // not list, and made-up models are unpriced.
        assert_eq!(t.lookup("llama-3-70b"), None);
        assert_eq!(t.lookup(""), None);
    }

    #[test]
    fn a_family_key_does_not_swallow_a_different_model() {
        let t = PriceTable::defaults();
        // Another model whose name starts with a priced one: unpriced, not priced as it.
        for other in [
            "gemini-3-pro-image-preview",
            "models/gemini-3-pro-image-preview",
            "gemini-2.5-flash-image",
            "gemini-2.5-flash-tts",
        ] {
            assert_eq!(t.lookup(other).map(|l| l.0), None, "{other}");
            assert_eq!(t.cost(other, &Usage::default()), None, "{other}");
        }
        // Dated, versioned and preview releases of a priced model still match it.
        for (variant, key) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5",
            ),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
            ("gemini-3-pro-preview", "gemini-3-pro"),
            ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
            ("gemini-2.0-flash-001", "gemini-2.0-flash"),
            ("gemini-2.0-flash-exp", "gemini-2.0-flash"),
        ] {
            assert_eq!(t.lookup(variant).map(|l| l.0), Some(key), "{variant}");
        }
        assert_eq!(t.cost("llama-3-70b", &Usage::default()), None);
        assert_eq!(t.lookup(""), None);
    }

    #[test]
    fn cost_is_per_million_over_four_kinds() {
        // claude-sonnet-4-5: 3 in, 15 out, 0.30 cache read, 3.75 cache write per 1M.
        // 1000·3 + 500·15 + 20000·0.3 + 4000·3.75 = 3000 + 7500 + 6000 + 15000 = 31500 → $0.0315
        let usage = Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_read_tokens: 20_000,
            cache_write_tokens: 4_000,
        };
        let cost = PriceTable::defaults()
            .cost("claude-sonnet-4-5-20250929", &usage)
            .unwrap();
        assert!((cost - 0.0315).abs() < 1e-12, "{cost}");
    }

    #[test]
    fn overrides_merge_over_defaults_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(OVERRIDE_FILE),
            r#"{"_note": "ours", "claude-sonnet-4-5-20250929": {"input": 1, "output": 2},
                "llama-3-70b": {"input": 0.5, "output": 0.5, "cache_read": 0, "cache_write": 0}}"#,
        )
        .unwrap();
        let t = PriceTable::load(dir.path()).unwrap();
        let (key, price, source) = t.lookup("claude-sonnet-4-5").unwrap();
        assert_eq!((key, source), ("claude-sonnet-4-5", PriceSource::Override));
        assert_eq!(
            price,
            Price {
                input: 1.0,
                output: 2.0,
                cache_read: 1.0,
                cache_write: 1.0
            }
        );
        assert!(t.price("llama-3-70b-instruct").is_some());
        assert_eq!(t.lookup("claude-opus-4-6").unwrap().2, PriceSource::Default);

        for bad in [
            "[1, 2]",
            r#"{"m": {"input": -1, "output": 2}}"#,
            r#"{"m": {"input": 1}}"#,
            r#"{"m": {"input": 1, "output": 2, "typo": 3}}"#,
        ] {
            std::fs::write(dir.path().join(OVERRIDE_FILE), bad).unwrap();
            let err = PriceTable::load(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("is not valid") && err.contains("expected"),
                "{err}"
            );
        }
    }
}
