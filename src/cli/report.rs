//! How network results read (`tapes fetch`, `sync`, `storage sync`): a fetch's counts and cost,
//! byte sizes, what a relay sync did. Shared by the peer and storage commands.

use tapes::peer::client::FetchReport;
use tapes::views::render;

/// `2 round trips, 1.2 KiB sent, 3.4 KiB received`.
pub fn cost(report: &FetchReport) -> String {
    format!(
        "{}, {} sent, {} received",
        render::plural(report.round_trips as usize, "round trip"),
        human_bytes(report.bytes_sent),
        human_bytes(report.bytes_received)
    )
}

pub fn describe(name: &str, report: &FetchReport) -> String {
    let cost = cost(report);
    if report.is_empty() {
        return format!("{name}: up to date ({cost})");
    }
    let mut parts = Vec::new();
    if report.new_sessions > 0 {
        parts.push(render::plural(report.new_sessions as usize, "new session"));
    }
    if report.updated_sessions > 0 {
        parts.push(format!("{} updated", report.updated_sessions));
    }
    parts.push(render::plural(report.nodes as usize, "node"));
    if report.shares > 0 {
        parts.push(render::plural(report.shares as usize, "share record"));
    }
    if report.manifests > 0 {
        parts.push(render::plural(report.manifests as usize, "team manifest"));
    }
    format!("{name}: {} ({cost})", parts.join(", "))
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Prints what a sync with a relay did; true when something failed.
pub fn print_relay_sync(name: &str, report: &tapes::peer::relay_client::RelaySyncReport) -> bool {
    let sent = !report.deposited.is_empty() || report.manifests_sent > 0;
    if report.fetched.is_empty() && sent {
        // "up to date" would be wrong with deposits below: only the fetch brought nothing.
        println!("{name}: nothing new to fetch ({})", cost(&report.fetched));
    } else {
        println!("{}", describe(name, &report.fetched));
    }
    for rejected in &report.fetched.rejected {
        eprintln!("  rejected: {rejected}");
    }
    if report.manifests_sent > 0 {
        println!(
            "  sent {}",
            render::plural(report.manifests_sent, "team manifest")
        );
    }
    for (id, scope, nodes) in &report.deposited {
        let ended = report
            .ended
            .iter()
            .find(|(s, sc, _)| s == id && sc == scope)
            .map(|(_, _, revoked)| *revoked);
        match ended {
            Some(true) => println!(
                "  unshared {} for {} at the relay: it no longer serves it",
                id.short(),
                scope_name(scope)
            ),
            Some(false) => println!(
                "  share of {} for {} expired: told the relay, which no longer serves it",
                id.short(),
                scope_name(scope)
            ),
            None if report.summaries.contains(&(*id, *scope)) => println!(
                "  shared {} for {} as its summary only (metadata only): the relay holds no message of it",
                id.short(),
                scope_name(scope)
            ),
            None => println!(
                "  deposited {} for {}: {}",
                id.short(),
                scope_name(scope),
                render::plural(*nodes as usize, "new node")
            ),
        }
    }
    for (team, who, accepted) in &report.joins_answered {
        println!(
            "  {} the join request of {who} for team {} (it waited at the relay)",
            if *accepted { "accepted" } else { "refused" },
            team.short()
        );
    }
    for (item, e) in report.failures() {
        eprintln!("  error: {item}: {e}");
    }
    report.has_failures()
}

pub fn scope_name(scope: &tapes::protocol::sync::Scope) -> String {
    match scope {
        tapes::protocol::sync::Scope::Team(t) => format!("team {}", t.short()),
        tapes::protocol::sync::Scope::Public => "the public".into(),
    }
}
