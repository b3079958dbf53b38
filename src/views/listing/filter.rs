//! The filter bar: `project:api model:opus cost:>1 since:7d fix au` parsed into a typed
//! [`Filter`], and the words of a listing row it is matched against (SPEC.md §13: views read
//! derived facts, never change a session).
//!
//! Grammar: tokens separated by spaces; `"double quotes"` keep spaces inside one token (also
//! after a key: `project:"my app"`). A token `key:value` with a known key is a field filter;
//! every other token is free text. Keys (aliases in brackets):
//!
//! | key | value | matches |
//! |---|---|---|
//! | `project:` (`p:`) | text | a word of the project starting with it (`api` matches `billing-api`) |
//! | `model:` (`m:`) | text | a word of any model used starting with it (`opus`, `claude-sonnet`) |
//! | `teammate:` (`by:`, `owner:`, `sharer:`, `who:`) | name | the owner's or sharer's name starts with it |
//! | `status:` (`s:`) | failed, completed, abandoned, unknown, or a unique prefix | the derived status (SPEC.md §13) |
//! | `since:` (`from:`, `after:`) | `7d`, `12h`, … or `YYYY-MM-DD` | started at or after |
//! | `until:` (`before:`, `to:`) | `7d` (that long ago) or `YYYY-MM-DD` (the whole day included) | started before |
//! | `cost:` | `>1`, `>=1`, `<0.5`, `<=2`, `1..5`, `=0` (USD) | the session's cost |
//! | `vis:` (`visibility:`) | private, team, public | who may see it |
//! | `is:` | unread, mine, branch, fork | a flag of the row |
//!
//! Free text matches by word prefix, case-insensitively: every word typed must begin some word
//! of the row (title, first prompt, project, model, agent, owner, sharer, note, tags, status,
//! id), so `fix au` finds "Fix the auth flow". A value that cannot be meant (`cost:>abc`,
//! `status:done`, `since:yesterday`) is a [`FilterError`] naming the accepted forms; an empty
//! value (`project:` while typing) filters nothing yet.

use chrono::NaiveDate;
use serde::Serialize;

use crate::session::status::Status;

/// A parsed filter bar. `Filter::default()` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Filter {
    /// Lowercased word prefixes of the project.
    pub project: Vec<String>,
    /// Lowercased word prefixes of a model.
    pub model: Vec<String>,
    /// Lowercased prefixes of the owner's or sharer's name.
    pub teammate: Vec<String>,
    pub status: Option<Status>,
    /// Started at or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Started before (Unix ms).
    pub to_ms: Option<i64>,
    pub cost: Option<CostRange>,
    pub visibility: Option<VisibilityKind>,
    pub flags: Vec<Flag>,
    /// Free-text words, lowercased and split like the rows' words.
    pub words: Vec<String>,
}

/// `cost:` bounds in USD; both ends inclusive unless `*_exclusive`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostRange {
    pub min: Option<f64>,
    pub min_exclusive: bool,
    pub max: Option<f64>,
    pub max_exclusive: bool,
}

impl CostRange {
    pub fn contains(&self, cost: f64) -> bool {
        let above = match self.min {
            None => true,
            Some(min) if self.min_exclusive => cost > min,
            Some(min) => cost >= min,
        };
        let below = match self.max {
            None => true,
            Some(max) if self.max_exclusive => cost < max,
            Some(max) => cost <= max,
        };
        above && below
    }
}

/// `vis:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VisibilityKind {
    Private,
    Team,
    Public,
}

/// `is:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flag {
    Unread,
    Mine,
    Branch,
    Fork,
}

/// What is wrong with a filter bar, and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("`{key}:` is not a filter; use project:, model:, teammate:, status:, since:, until:, cost:, vis: or is: (put text with a colon in \"quotes\")")]
    UnknownKey { key: String },
    #[error("cost:{value} is not a cost; use >1, >=1, <0.5, <=2, 1..5 or =0 (USD)")]
    BadCost { value: String },
    #[error("cost:{value} is an empty range: {min} is above {max}; swap them")]
    EmptyCost { value: String, min: f64, max: f64 },
    #[error("status:{value} is not a status; use failed, completed, abandoned or unknown")]
    BadStatus { value: String },
    #[error(
        "{key}:{value} is not a time; use a duration (30m, 12h, 7d, 2w) or a day (YYYY-MM-DD, UTC)"
    )]
    BadTime { key: String, value: String },
    #[error("since:{since} is after until:{until}; swap them")]
    EmptyTime { since: String, until: String },
    #[error("vis:{value} is not a visibility; use private, team or public")]
    BadVisibility { value: String },
    #[error("is:{value} is not a flag; use unread, mine, branch or fork")]
    BadFlag { value: String },
    #[error("a \" is not closed; close it or remove it")]
    OpenQuote,
    #[error("teammate:{name} matches nobody here; teammates: {}", if known.is_empty() { "none yet (join or create a team)".to_string() } else { known.join(", ") })]
    UnknownTeammate { name: String, known: Vec<String> },
}

const DAY_MS: i64 = 86_400_000;

impl Filter {
    /// Parses a filter bar; `now_ms` anchors `since:7d`.
    pub fn parse(text: &str, now_ms: i64) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        let mut since_text = None;
        let mut until_text = None;
        for (token, literal) in tokens(text)? {
            let Some((key, value)) = split_key(&token).filter(|_| !literal) else {
                filter.words.extend(words(&token));
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "project" | "p" => filter.project.push(value.to_lowercase()),
                "model" | "m" => filter.model.push(value.to_lowercase()),
                "teammate" | "by" | "owner" | "sharer" | "who" => {
                    filter.teammate.push(value.to_lowercase())
                }
                "status" | "s" => filter.status = Some(parse_status(value)?),
                "since" | "after" | "from" => {
                    filter.from_ms = Some(parse_time(&key, value, now_ms, false)?);
                    since_text = Some(value.to_string());
                }
                "until" | "before" | "to" => {
                    filter.to_ms = Some(parse_time(&key, value, now_ms, true)?);
                    until_text = Some(value.to_string());
                }
                "cost" | "c" => filter.cost = Some(parse_cost(value)?),
                "vis" | "visibility" => {
                    filter.visibility = Some(match value.to_lowercase().as_str() {
                        "private" => VisibilityKind::Private,
                        "team" => VisibilityKind::Team,
                        "public" => VisibilityKind::Public,
                        _ => {
                            return Err(FilterError::BadVisibility {
                                value: value.into(),
                            })
                        }
                    })
                }
                "is" => filter.flags.push(match value.to_lowercase().as_str() {
                    "unread" | "new" => Flag::Unread,
                    "mine" => Flag::Mine,
                    "branch" => Flag::Branch,
                    "fork" => Flag::Fork,
                    _ => {
                        return Err(FilterError::BadFlag {
                            value: value.into(),
                        })
                    }
                }),
                _ => return Err(FilterError::UnknownKey { key }),
            }
        }
        if let (Some(from), Some(to)) = (filter.from_ms, filter.to_ms) {
            if from >= to {
                return Err(FilterError::EmptyTime {
                    since: since_text.unwrap_or_default(),
                    until: until_text.unwrap_or_default(),
                });
            }
        }
        Ok(filter)
    }

    /// Matches everything.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// True when every row `self` accepts is also accepted by `looser` (so, typing on, the
    /// rows matched so far can be filtered again instead of all of them).
    pub fn narrows(&self, looser: &Filter) -> bool {
        fn prefixes_narrow(tight: &[String], loose: &[String]) -> bool {
            // Every loose prefix is extended by some tight one at the same position.
            loose.len() <= tight.len()
                && loose
                    .iter()
                    .zip(tight)
                    .all(|(l, t)| t.starts_with(l.as_str()))
        }
        prefixes_narrow(&self.project, &looser.project)
            && prefixes_narrow(&self.model, &looser.model)
            && prefixes_narrow(&self.teammate, &looser.teammate)
            && prefixes_narrow(&self.words, &looser.words)
            && (looser.status.is_none() || looser.status == self.status)
            && (looser.from_ms.is_none() || looser.from_ms == self.from_ms)
            && (looser.to_ms.is_none() || looser.to_ms == self.to_ms)
            && (looser.cost.is_none() || looser.cost == self.cost)
            && (looser.visibility.is_none() || looser.visibility == self.visibility)
            && looser.flags.iter().all(|f| self.flags.contains(f))
    }
}

/// Splits on whitespace, keeping `"quoted text"` (also `key:"quoted"`) as one token; a token
/// is literal (free text, never `key:value`) when a quote opens before its first `:`.
fn tokens(text: &str) -> Result<Vec<(String, bool)>, FilterError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut literal = false;
    for c in text.chars() {
        match c {
            '"' => {
                if !current.contains(':') {
                    literal = true;
                }
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push((std::mem::take(&mut current), literal));
                }
                literal = false;
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(FilterError::OpenQuote);
    }
    if !current.is_empty() {
        out.push((current, literal));
    }
    Ok(out)
}

/// `key:value` when the part before the first `:` is a word of letters.
fn split_key(token: &str) -> Option<(String, &str)> {
    let (key, value) = token.split_once(':')?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((key.to_ascii_lowercase(), value))
}

fn parse_status(value: &str) -> Result<Status, FilterError> {
    let v = value.to_lowercase();
    let all = [
        Status::Failed,
        Status::Completed,
        Status::Abandoned,
        Status::Unknown,
    ];
    let hits: Vec<Status> = all
        .into_iter()
        .filter(|s| s.as_str().starts_with(&v))
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        _ => Err(FilterError::BadStatus {
            value: value.into(),
        }),
    }
}

/// A duration back from now, or a day (UTC midnight; `end` = the day after, so `until:` a day
/// includes it).
fn parse_time(key: &str, value: &str, now_ms: i64, end: bool) -> Result<i64, FilterError> {
    let bad = || FilterError::BadTime {
        key: key.into(),
        value: value.into(),
    };
    if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let midnight = day.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        let ms = midnight.and_utc().timestamp_millis();
        return Ok(if end { ms + DAY_MS } else { ms });
    }
    let ms = crate::duration::parse_duration_ms(value).map_err(|_| bad())?;
    Ok(now_ms - ms)
}

fn parse_cost(value: &str) -> Result<CostRange, FilterError> {
    let bad = || FilterError::BadCost {
        value: value.into(),
    };
    let number = |s: &str| -> Result<f64, FilterError> {
        let s = s.trim().trim_start_matches('$');
        match s.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
            _ => Err(bad()),
        }
    };
    let mut range = CostRange {
        min: None,
        min_exclusive: false,
        max: None,
        max_exclusive: false,
    };
    if let Some(rest) = value.strip_prefix(">=") {
        range.min = Some(number(rest)?);
    } else if let Some(rest) = value.strip_prefix('>') {
        range.min = Some(number(rest)?);
        range.min_exclusive = true;
    } else if let Some(rest) = value.strip_prefix("<=") {
        range.max = Some(number(rest)?);
    } else if let Some(rest) = value.strip_prefix('<') {
        range.max = Some(number(rest)?);
        range.max_exclusive = true;
    } else if let Some((lo, hi)) = value.split_once("..") {
        let (lo, hi) = (number(lo)?, number(hi)?);
        if lo > hi {
            return Err(FilterError::EmptyCost {
                value: value.into(),
                min: lo,
                max: hi,
            });
        }
        range.min = Some(lo);
        range.max = Some(hi);
    } else {
        let n = number(value.strip_prefix('=').unwrap_or(value))?;
        range.min = Some(n);
        range.max = Some(n);
    }
    Ok(range)
}

/// The words of a text for prefix matching: lowercased, split on anything that is not a
/// letter or digit.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Appends the words of `text` to a haystack, each preceded by one space (so `" word"` finds a
/// word starting with `word`).
pub fn push_words(haystack: &mut String, text: &str) {
    if text.is_ascii() {
        // The common case, byte by byte: no char decoding, no case tables.
        let mut in_word = false;
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                if !in_word {
                    haystack.push(' ');
                    in_word = true;
                }
                haystack.push(char::from(b.to_ascii_lowercase()));
            } else {
                in_word = false;
            }
        }
        return;
    }
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        haystack.push(' ');
        for c in word.chars() {
            haystack.extend(c.to_lowercase());
        }
    }
}

/// Whether some word of `haystack` (built by [`push_words`]) starts with `needle` (`" word"`).
pub fn has_prefix(haystack: &str, needle: &str) -> bool {
    haystack.contains(needle)
}

/// Whether some word of `field` (already lowercase) starts with `prefix`, or the whole field
/// does (so `billing-a` matches `billing-api`).
pub fn field_matches(field: &str, prefix: &str) -> bool {
    if prefix.is_empty() || field.starts_with(prefix) {
        return true;
    }
    field
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| !w.is_empty() && w.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

    #[test]
    fn the_example_bar_parses() {
        let f = Filter::parse("project:api model:opus cost:>1 since:7d fix au", NOW).unwrap();
        assert_eq!(f.project, vec!["api"]);
        assert_eq!(f.model, vec!["opus"]);
        assert_eq!(
            f.cost,
            Some(CostRange {
                min: Some(1.0),
                min_exclusive: true,
                max: None,
                max_exclusive: false
            })
        );
        assert_eq!(f.from_ms, Some(NOW - 7 * DAY_MS));
        assert_eq!(f.words, vec!["fix", "au"]);
        assert!(Filter::parse("", NOW).unwrap().is_empty());
        assert!(Filter::parse("project: ", NOW).unwrap().is_empty());
    }

    #[test]
    fn values_quotes_ranges_and_prefixes() {
        let f = Filter::parse(
            "p:\"my app\" s:comp cost:0.5..2 until:2026-02-14 by:Al vis:team is:fork",
            NOW,
        )
        .unwrap();
        assert_eq!(f.project, vec!["my app"]);
        assert_eq!(f.status, Some(Status::Completed));
        let cost = f.cost.unwrap();
        assert!(cost.contains(0.5) && cost.contains(2.0) && !cost.contains(2.01));
        assert_eq!(f.to_ms, Some(1_771_113_600_000));
        assert_eq!(f.teammate, vec!["al"]);
        assert_eq!(f.visibility, Some(VisibilityKind::Team));
        assert_eq!(f.flags, vec![Flag::Fork]);
        // Text with a colon in quotes, or a non-word key, is free text.
        let f = Filter::parse("\"todo: later\" 10:30", NOW).unwrap();
        assert_eq!(f.words, vec!["todo", "later", "10", "30"]);
    }

    #[test]
    fn bad_values_say_what_would_do() {
        let err = |s: &str| Filter::parse(s, NOW).unwrap_err();
        assert!(matches!(err("cost:>abc"), FilterError::BadCost { .. }));
        assert!(err("cost:>abc").to_string().contains(">1, >=1"));
        assert!(matches!(err("cost:5..1"), FilterError::EmptyCost { .. }));
        assert!(matches!(err("cost:-3"), FilterError::BadCost { .. }));
        assert!(matches!(err("status:done"), FilterError::BadStatus { .. }));
        // `a` could be abandoned only; nothing starts with `x`.
        assert_eq!(
            Filter::parse("status:a", NOW).unwrap().status,
            Some(Status::Abandoned)
        );
        assert!(matches!(
            err("since:yesterday"),
            FilterError::BadTime { .. }
        ));
        assert!(matches!(
            err("since:2026-02-10 until:2026-02-01"),
            FilterError::EmptyTime { .. }
        ));
        assert!(matches!(err("projct:api"), FilterError::UnknownKey { .. }));
        assert!(matches!(
            err("vis:friends"),
            FilterError::BadVisibility { .. }
        ));
        assert!(matches!(err("is:old"), FilterError::BadFlag { .. }));
        assert!(matches!(err("\"open"), FilterError::OpenQuote));
    }

    #[test]
    fn typing_on_narrows() {
        let f = |s: &str| Filter::parse(s, NOW).unwrap();
        assert!(f("fix au").narrows(&f("fix a")));
        assert!(f("fix a").narrows(&f("fix")));
        assert!(f("project:api fix").narrows(&f("project:ap")));
        assert!(!f("fix").narrows(&f("fix a")));
        assert!(!f("fi").narrows(&f("fix")));
        assert!(f("cost:>1 x").narrows(&f("cost:>1")));
        assert!(!f("cost:>2").narrows(&f("cost:>1")));
    }

    #[test]
    fn words_match_by_prefix() {
        let mut hay = String::new();
        push_words(&mut hay, "Fix the AUTH-flow in billing_api");
        assert_eq!(hay, " fix the auth flow in billing api");
        assert!(has_prefix(&hay, " au"));
        assert!(has_prefix(&hay, " fl"));
        assert!(!has_prefix(&hay, " uth"));
        assert!(field_matches("billing-api", "api"));
        assert!(field_matches("billing-api", "billing-a"));
        assert!(field_matches("claude-opus-4-1", "opus"));
        assert!(!field_matches("claude-opus-4-1", "pus"));
    }
}
