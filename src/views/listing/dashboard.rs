//! The Team dashboard: sessions, cost, average cost and tokens for a period with the change
//! against the period before, cost by day, member and model, and the latest shares to the team.
//! The numbers are [`crate::views::stats::compute`]'s (SPEC.md §13: history counted once,
//! attributed to whoever had it first); this module only picks the scope and adds the shares.

use serde::Serialize;
use tapes_protocol::TeamId;

use super::{ListingError, SessionRow, Snapshot};
use crate::session::pricing::PriceTable;
use crate::store::Store;
use crate::views::stats::{self, Scope, Stats};

/// What the Team tab and `/api/stats` show.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    /// The team shown; `None` with no team (then: every session in this store).
    pub team: Option<TeamId>,
    /// The team's name, `your teams` for several, or `this store`.
    pub scope: String,
    pub members: usize,
    pub period_ms: i64,
    pub stats: Stats,
    /// Newest first.
    pub recent_shares: Vec<SessionRow>,
}

/// The dashboard for `team` (a name or id prefix; `None`: every team I am in, or the whole
/// store when I am in none) over the last `period_ms`.
pub fn team_dashboard(
    store: &Store,
    snapshot: &Snapshot,
    team: Option<&str>,
    prices: &PriceTable,
    period_ms: i64,
) -> Result<Dashboard, ListingError> {
    let (scope, team_id, label, members) = match team {
        Some(input) => {
            let scope = Scope::team(store, Some(input))?;
            let id = scope.team;
            let name = id.map_or_else(|| input.to_string(), |id| snapshot.team_name(&id));
            let members = scope.members.as_ref().map_or(0, |m| m.len());
            (scope, id, name, members)
        }
        None => {
            let mine: Vec<&super::TeamInfo> = snapshot.teams.iter().filter(|t| t.mine).collect();
            let mut scope = Scope::all(store)?;
            match mine.as_slice() {
                [] => (scope, None, "this store".to_string(), 0),
                [one] => {
                    let scope = Scope::team(store, Some(&one.id.to_hex()))?;
                    let members = scope.members.as_ref().map_or(0, |m| m.len());
                    (scope, Some(one.id), one.name.clone(), members)
                }
                several => {
                    let members: std::collections::HashSet<_> = several
                        .iter()
                        .flat_map(|t| t.members.iter().copied())
                        .collect();
                    let n = members.len();
                    scope.members = Some(members);
                    (scope, None, "your teams".to_string(), n)
                }
            }
        }
    };
    let stats = stats::compute(store, &scope, prices, snapshot.now_ms, period_ms)?;
    let recent_shares = match team_id {
        Some(id) => snapshot
            .team_shares(usize::MAX)
            .into_iter()
            .filter(|r| {
                r.share.as_ref().is_some_and(
                    |s| matches!(&s.audience, super::Shown::Team { id: t, .. } if *t == id),
                )
            })
            .take(10)
            .collect(),
        None => snapshot.team_shares(10),
    };
    Ok(Dashboard {
        team: team_id,
        scope: label,
        members,
        period_ms,
        stats,
        recent_shares,
    })
}
