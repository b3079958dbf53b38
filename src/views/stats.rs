//! What a person or a team spends: totals for a period, the change against the period before,
//! and breakdowns by member, model, project and day.
//!
//! Counting rules (SPEC.md, "Search index and analytics"):
//!
//! - A session belongs to the period that contains its start (first message timestamp).
//! - History is counted once. Sessions are taken oldest first (start, then record creation,
//!   then id); each contributes only the nodes no earlier session in scope already has (node
//!   ids are content hashes, so the same history fetched from several members, or a branch's
//!   shared prefix, is the same nodes). Tokens and cost are summed over those nodes, each
//!   priced by its own model. A session that contributes no node of its own (its whole history
//!   is already counted) is not counted as a session either.
//! - Shared history is attributed to the session (and so the member, project and day) that
//!   had it first.
//! - The member of a session is its owner (a session without one belongs to this store's
//!   identity); names come from the team manifests this store holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{TimeZone, Utc};
use serde::Serialize;
use tapes_protocol::{MemberId, NodeId, SessionId, TeamId};

use crate::session::pricing::{self, PriceTable};
use crate::session::{SessionRecord, Visibility};
use crate::store::{Store, StoreError};
use crate::team::{self, TeamError};

const DAY_MS: i64 = 86_400_000;

/// Which sessions the numbers cover.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `None`: every session in the store. `Some`: sessions owned by these members, plus
    /// sessions shared with `team`.
    pub members: Option<HashSet<MemberId>>,
    pub team: Option<TeamId>,
    /// Display names of members.
    pub names: HashMap<MemberId, String>,
    /// This store's identity (owner of sessions that name none).
    pub local: Option<MemberId>,
}

impl Scope {
    /// Every session in the store, with member names from every team the store knows.
    pub fn all(store: &Store) -> Result<Scope, TeamError> {
        let mut scope = Scope {
            local: store.local_owner()?,
            ..Scope::default()
        };
        for chain in team::list(store)? {
            for version in chain.versions() {
                for m in &version.manifest.members {
                    scope.names.insert(m.id, m.name.clone());
                }
            }
        }
        Ok(scope)
    }

    /// The sessions of one team: owned by anyone who was ever a member (so history stays
    /// counted after someone leaves), or shared with the team.
    pub fn team(store: &Store, input: Option<&str>) -> Result<Scope, TeamError> {
        let chain = team::resolve(store, input)?;
        let mut scope = Scope::all(store)?;
        let mut members = HashSet::new();
        for version in chain.versions() {
            for m in &version.manifest.members {
                members.insert(m.id);
            }
        }
        scope.members = Some(members);
        scope.team = Some(chain.team_id());
        Ok(scope)
    }

    fn owner(&self, record: &SessionRecord) -> Option<MemberId> {
        record.owner.or(self.local)
    }

    fn includes(&self, record: &SessionRecord) -> bool {
        let Some(members) = &self.members else {
            return true;
        };
        if let (Some(team), Visibility::Team(t)) = (self.team, record.visibility) {
            if team == t {
                return true;
            }
        }
        self.owner(record).is_some_and(|o| members.contains(&o))
    }

    fn member_label(&self, owner: Option<MemberId>) -> (String, String) {
        match owner {
            None => ("".into(), "(unknown)".into()),
            Some(id) => {
                let label = match self.names.get(&id) {
                    Some(name) if !name.is_empty() => name.clone(),
                    _ if Some(id) == self.local => "you".to_string(),
                    _ => id.short(),
                };
                (id.to_hex(), label)
            }
        }
    }
}

/// Sessions, cost and tokens of one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub sessions: u64,
    /// USD.
    pub cost: f64,
    pub tokens: u64,
    pub avg_cost: f64,
}

/// Change of each total against the previous period, in percent (`None` when the previous
/// period had nothing to compare with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Deltas {
    pub sessions: Option<f64>,
    pub cost: Option<f64>,
    pub tokens: Option<f64>,
    pub avg_cost: Option<f64>,
}

/// One line of a breakdown.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Member id (hex), normalized model, project, or day (`YYYY-MM-DD`).
    pub key: String,
    pub label: String,
    pub sessions: u64,
    pub cost: f64,
    pub tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub from_ms: i64,
    pub to_ms: i64,
    pub current: Totals,
    pub previous: Totals,
    pub change: Deltas,
    /// Biggest first.
    pub by_member: Vec<Row>,
    pub by_model: Vec<Row>,
    pub by_project: Vec<Row>,
    /// Every day of the period, oldest first (zeros included).
    pub by_day: Vec<Row>,
    /// Models with usage but no price (their cost counts as 0).
    pub unpriced: Vec<String>,
    /// Sessions in the period whose whole history was already counted in another session.
    pub duplicate_sessions: u64,
}

#[derive(Default)]
struct Acc {
    sessions: u64,
    cost: f64,
    tokens: u64,
}

impl Acc {
    fn totals(&self) -> Totals {
        Totals {
            sessions: self.sessions,
            cost: self.cost,
            tokens: self.tokens,
            avg_cost: if self.sessions == 0 {
                0.0
            } else {
                self.cost / self.sessions as f64
            },
        }
    }
}

fn change(now: f64, before: f64) -> Option<f64> {
    if before == 0.0 {
        None
    } else {
        Some((now - before) / before * 100.0)
    }
}

/// `YYYY-MM-DD` (UTC) of a timestamp.
pub fn day(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Stats for the period `[now − period, now)` against `[now − 2·period, now − period)`.
pub fn compute(
    store: &Store,
    scope: &Scope,
    prices: &PriceTable,
    now_ms: i64,
    period_ms: i64,
) -> Result<Stats, StoreError> {
    let from = now_ms - period_ms;
    let previous_from = from - period_ms;
    let started = |r: &SessionRecord| r.summary.started_ms.unwrap_or(r.created_ms);
    let mut sessions: Vec<(SessionId, SessionRecord)> = store
        .sessions()?
        .into_iter()
        .filter(|(_, r)| scope.includes(r) && started(r) < now_ms)
        .collect();
    sessions.sort_by(|a, b| {
        started(&a.1)
            .cmp(&started(&b.1))
            .then(a.1.created_ms.cmp(&b.1.created_ms))
            .then(a.0.cmp(&b.0))
    });

    let mut seen: HashSet<NodeId> = HashSet::new();
    let (mut current, mut previous) = (Acc::default(), Acc::default());
    let mut by_member: BTreeMap<String, (String, Acc)> = BTreeMap::new();
    let mut by_model: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_project: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_day: BTreeMap<String, Acc> = BTreeMap::new();
    let mut unpriced: BTreeMap<String, ()> = BTreeMap::new();
    let mut duplicates = 0;

    for (_, record) in &sessions {
        // Walk back from the head until history already counted: ancestors of a counted node
        // were counted with it.
        let mut own = Vec::new();
        let mut next = Some(record.head);
        while let Some(id) = next {
            if !seen.insert(id) {
                break;
            }
            let node = store.node(&id)?;
            next = node.body.parent;
            own.push(node);
        }
        let t = started(record);
        if t < previous_from {
            continue;
        }
        if own.is_empty() {
            if t >= from {
                duplicates += 1;
            }
            continue;
        }
        let mut cost = 0.0;
        let mut tokens = 0;
        let mut models: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for node in &own {
            let Some(usage) = node.meta.usage else {
                continue;
            };
            let c = match prices.cost(&node.body.model, &usage) {
                Some(c) => c,
                None => {
                    if !usage.is_zero() {
                        unpriced.insert(
                            if node.body.model.is_empty() {
                                "(no model)".into()
                            } else {
                                node.body.model.clone()
                            },
                            (),
                        );
                    }
                    0.0
                }
            };
            cost += c;
            tokens += usage.total();
            let key = pricing::normalize(&node.body.model);
            let entry = models
                .entry(if key.is_empty() {
                    "(no model)".into()
                } else {
                    key
                })
                .or_default();
            entry.0 += c;
            entry.1 += usage.total();
        }
        let bucket = if t >= from {
            &mut current
        } else {
            &mut previous
        };
        bucket.sessions += 1;
        bucket.cost += cost;
        bucket.tokens += tokens;
        if t < from {
            continue;
        }
        let add = |acc: &mut Acc, c: f64, tk: u64| {
            acc.sessions += 1;
            acc.cost += c;
            acc.tokens += tk;
        };
        let (key, label) = scope.member_label(scope.owner(record));
        add(
            &mut by_member
                .entry(key)
                .or_insert_with(|| (label, Acc::default()))
                .1,
            cost,
            tokens,
        );
        for (model, (c, tk)) in models {
            add(by_model.entry(model).or_default(), c, tk);
        }
        let project = if record.summary.project.is_empty() {
            "(none)".to_string()
        } else {
            record.summary.project.clone()
        };
        add(by_project.entry(project).or_default(), cost, tokens);
        add(by_day.entry(day(t)).or_default(), cost, tokens);
    }

    // Metadata-only shares (SPEC.md §11.4): sessions whose content is not here count from
    // their signed summaries, once per session, in the period of their start.
    let held: HashSet<SessionId> = sessions.iter().map(|(id, _)| *id).collect();
    let mut summarized: HashSet<SessionId> = HashSet::new();
    for s in summaries_in(store, scope)? {
        if held.contains(&s.session) || !summarized.insert(s.session) {
            continue;
        }
        let t = s.started_ms.unwrap_or(s.shared_ms);
        if t < previous_from || t >= now_ms {
            continue;
        }
        let cost = s.cost_usd().unwrap_or(0.0);
        if s.cost_micro_usd.is_none() && !s.usage.is_zero() {
            unpriced.insert(
                if s.model.is_empty() {
                    "(no model)".into()
                } else {
                    s.model.clone()
                },
                (),
            );
        }
        let tokens = s.usage.total();
        let bucket = if t >= from {
            &mut current
        } else {
            &mut previous
        };
        bucket.sessions += 1;
        bucket.cost += cost;
        bucket.tokens += tokens;
        if t < from {
            continue;
        }
        let add = |acc: &mut Acc| {
            acc.sessions += 1;
            acc.cost += cost;
            acc.tokens += tokens;
        };
        let (key, label) = scope.member_label(Some(s.sharer));
        add(&mut by_member
            .entry(key)
            .or_insert_with(|| (label, Acc::default()))
            .1);
        let model = pricing::normalize(&s.model);
        add(by_model
            .entry(if model.is_empty() {
                "(no model)".into()
            } else {
                model
            })
            .or_default());
        let project = if s.project.is_empty() {
            "(none)".to_string()
        } else {
            s.project.clone()
        };
        add(by_project.entry(project).or_default());
        add(by_day.entry(day(t)).or_default());
    }

    let rows = |map: BTreeMap<String, Acc>| -> Vec<Row> {
        let mut rows: Vec<Row> = map
            .into_iter()
            .map(|(key, a)| Row {
                label: key.clone(),
                key,
                sessions: a.sessions,
                cost: a.cost,
                tokens: a.tokens,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.cost
                .total_cmp(&a.cost)
                .then(b.sessions.cmp(&a.sessions))
                .then(b.tokens.cmp(&a.tokens))
                .then(a.key.cmp(&b.key))
        });
        rows
    };
    let mut members: Vec<Row> = by_member
        .into_iter()
        .map(|(key, (label, a))| Row {
            key,
            label,
            sessions: a.sessions,
            cost: a.cost,
            tokens: a.tokens,
        })
        .collect();
    members.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then(b.cost.total_cmp(&a.cost))
            .then(a.label.cmp(&b.label))
    });
    let mut days = Vec::new();
    let mut d = from.div_euclid(DAY_MS) * DAY_MS;
    while d < now_ms {
        let key = day(d);
        let a = by_day.remove(&key).unwrap_or_default();
        days.push(Row {
            label: key.clone(),
            key,
            sessions: a.sessions,
            cost: a.cost,
            tokens: a.tokens,
        });
        d += DAY_MS;
    }
    let (cur, prev) = (current.totals(), previous.totals());
    Ok(Stats {
        from_ms: from,
        to_ms: now_ms,
        current: cur,
        previous: prev,
        change: Deltas {
            sessions: change(cur.sessions as f64, prev.sessions as f64),
            cost: change(cur.cost, prev.cost),
            tokens: change(cur.tokens as f64, prev.tokens as f64),
            avg_cost: change(cur.avg_cost, prev.avg_cost),
        },
        by_member: members,
        by_model: rows(by_model),
        by_project: rows(by_project),
        by_day: days,
        unpriced: unpriced.into_keys().collect(),
        duplicate_sessions: duplicates,
    })
}

/// The summaries of metadata-only shares in `scope`: shared with its team or by one of its
/// members (every one when the scope is the whole store).
fn summaries_in(
    store: &Store,
    scope: &Scope,
) -> Result<Vec<tapes_protocol::summary::ShareSummary>, StoreError> {
    let all = match crate::share::all_summaries(store) {
        Ok(all) => all,
        Err(crate::share::ShareError::Store(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the summaries of metadata-only shares");
            Vec::new()
        }
    };
    Ok(all
        .into_iter()
        .filter(|s| match &scope.members {
            None => true,
            Some(members) => {
                members.contains(&s.summary.sharer)
                    || matches!(s.summary.audience, crate::share::Audience::Team(t) if Some(t) == scope.team)
            }
        })
        .map(|s| s.summary)
        .collect())
}

/// `▁▂▃▄▅▆▇█` for a series (all `▁` when everything is 0).
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().cloned().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 || *v <= 0.0 {
                BARS[0]
            } else {
                let i = ((v / max) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_max() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▃▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn change_needs_a_previous_value() {
        assert_eq!(change(12.0, 10.0), Some(20.0));
        assert_eq!(change(5.0, 0.0), None);
        assert_eq!(day(1_771_059_600_000), "2026-02-14");
    }
}
