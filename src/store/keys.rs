//! The store's key space (SPEC.md §4.1): every ref name tapes writes is spelled here and
//! nowhere else. A ref key is a namespace prefix followed by hex ids (or a user's name for
//! remotes and settings), so a prefix scan lists one namespace, one team, one session's shares.
//!
//! | namespace | key | value | owner module |
//! |---|---|---|---|
//! | sessions | `session/<session>` | session record | `session` |
//! | entry signatures | `sig/<session>` | signed session entry | `access` |
//! | shares | `share/<session>/<audience>` | signed share record | `share` |
//! | read marks | `read/<session>/<audience>` | empty | `share` |
//! | team chains | `team/<team>/v/<version, 20 digits>`, `team/<team>/head`, `team/<team>/fork` | manifests | `teams` |
//! | invites | `invite/<hash>` | invite record | `teams` |
//! | remotes | `remote/<name>` | remote spec | `cmd::remote` |
//! | settings | `config/<key>` | value text | `outgoing`, `cmd::share` |
//! | pending joins | `pending-join/<team>` | join request | `cmd::team` |
//! | relay sync tracking | `relay-sync/<relay>/<scope>/<session>`, `relay-teams/<relay>` | what was deposited | `peer::relay_client` |
//! | relay state (on a relay) | `relay/team/<team>`, `relay/s/<scope>/<session>`, `relay/ids/<scope>/<session>`, `relay/usage/<scope>`, `relay/join/<team>/<member>`, `relay/expired/<scope>`, `relay/buried/<session>` | deposits, quotas, mailbox, retention, tombstones | `relay::state`, `relay::retention`, `relay::tombstones` |
//! | agent files | `agent-file/<source kind>/<agent session id>` | agent-file record | `resume::mapping` |
//! | audit log | `audit/<team>/<writer>/<seq, 20 digits>`, `audit-head/<team>/<writer>` | signed audit entry; the writer's newest seq and entry id | `audit` |
//! | relay audit | `relay-audit/<relay>/<team>` | count u64le of this node's own audit entries the relay took | `peer::audit_sync` |
//! | tombstones | `tombstone/<session>` | local tombstone of a removed session | `session::tombstone` |
//! | session generation | `generation/sessions` | epoch [16] \|\| count u64le, moved by the backend with every session ref change | `store::generation` |
//! | access generation | `generation/access` | epoch [16] \|\| count u64le, moved by the backend with every session, signature, share, team or setting ref change | `share::access` |

use tapes_protocol::{MemberId, SessionId, TeamId};

pub const SESSION: &[u8] = b"session/";
pub const SIG: &[u8] = b"sig/";
pub const SHARE: &[u8] = b"share/";
pub const READ: &[u8] = b"read/";
pub const TEAM: &[u8] = b"team/";
pub const INVITE: &[u8] = b"invite/";
pub const REMOTE: &str = "remote/";
pub const CONFIG: &str = "config/";
pub const PENDING_JOIN: &[u8] = b"pending-join/";
pub const RELAY_SYNC: &str = "relay-sync/";
pub const RELAY_TEAMS: &str = "relay-teams/";
pub const RELAY_TEAM: &[u8] = b"relay/team/";
pub const RELAY_USAGE: &str = "relay/usage/";
pub const AGENT_FILE: &[u8] = b"agent-file/";
pub const AUDIT: &str = "audit/";
pub const AUDIT_HEAD: &str = "audit-head/";
pub const RELAY_AUDIT: &str = "relay-audit/";
pub const TOMBSTONE: &[u8] = b"tombstone/";
/// The session generation (`store::generation`), written only by the backend.
pub const GENERATION: &[u8] = b"generation/sessions";
/// The access generation (`share::access`, SPEC.md §15.2): moved by the backend with every
/// ref change a peer's view may depend on ([`moves_access`]), so a cached view is checked in
/// one read.
pub const ACCESS_GENERATION: &[u8] = b"generation/access";

/// The access log (`store::generation::access_log_entry`): what each recent change of the
/// [`ACCESS_GENERATION`] touched, written by the backend in the same transaction.
pub const ACCESS_LOG: &[u8] = b"generation/access-log/";

/// The session whose record (`session/<id>`), signature (`sig/<id>`) or share
/// (`share/<id>/…`) ref `key` is.
pub fn session_of(key: &[u8]) -> Option<SessionId> {
    let rest = [SESSION, SIG, SHARE]
        .iter()
        .find_map(|prefix| key.strip_prefix(*prefix))?;
    let hex = rest.get(..2 * SessionId::LEN)?;
    if rest.len() > hex.len() && rest[hex.len()] != b'/' {
        return None;
    }
    std::str::from_utf8(hex).ok()?.parse().ok()
}

/// Does a change of ref `key` move the [`ACCESS_GENERATION`]? Sessions, their signatures,
/// shares, team chains and settings (`share.paths` changes what a record looks like outside).
pub fn moves_access(key: &[u8]) -> bool {
    [SESSION, SIG, SHARE, TEAM, CONFIG.as_bytes()]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !key.ends_with(b"/") {
            key.push(b'/');
        }
        key.extend_from_slice(part);
    }
    key
}

/// `session/<id>`.
pub fn session(id: &SessionId) -> Vec<u8> {
    join(&[SESSION, id.to_hex().as_bytes()])
}

/// `sig/<id>`.
pub fn sig(id: &SessionId) -> Vec<u8> {
    join(&[SIG, id.to_hex().as_bytes()])
}

/// `share/<session>/<audience>`.
pub fn share(session: &SessionId, audience: &str) -> Vec<u8> {
    join(&[SHARE, session.to_hex().as_bytes(), audience.as_bytes()])
}

/// `share/<session>/`: every share of one session.
pub fn shares_of(session: &SessionId) -> Vec<u8> {
    let mut key = join(&[SHARE, session.to_hex().as_bytes()]);
    key.push(b'/');
    key
}

/// `read/<session>/<audience>`.
pub fn read(session: &SessionId, audience: &str) -> Vec<u8> {
    join(&[READ, session.to_hex().as_bytes(), audience.as_bytes()])
}

/// `team/<team>/v/<version>`, zero-padded so versions sort.
pub fn team_version(team: &TeamId, version: u64) -> Vec<u8> {
    let mut key = team_versions(team);
    key.extend_from_slice(format!("{version:020}").as_bytes());
    key
}

/// `team/<team>/v/`: every version of one team's chain.
pub fn team_versions(team: &TeamId) -> Vec<u8> {
    let mut key = join(&[TEAM, team.to_hex().as_bytes(), b"v"]);
    key.push(b'/');
    key
}

/// `team/<team>/head`.
pub fn team_head(team: &TeamId) -> Vec<u8> {
    join(&[TEAM, team.to_hex().as_bytes(), b"head"])
}

/// `team/<team>/fork`.
pub fn team_fork(team: &TeamId) -> Vec<u8> {
    join(&[TEAM, team.to_hex().as_bytes(), b"fork"])
}

/// The team of a `team/<team>/head` key; None for any other key.
pub fn team_of_head(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(TEAM)?)
        .ok()?
        .strip_suffix("/head")
}

/// `invite/<hash hex>` (or a prefix of it, to find an invite by a short id).
pub fn invite(hash_hex: &str) -> Vec<u8> {
    join(&[INVITE, hash_hex.as_bytes()])
}

/// `remote/<name>`.
pub fn remote(name: &str) -> Vec<u8> {
    format!("{REMOTE}{name}").into_bytes()
}

/// `config/<key>`.
pub fn config(key: &str) -> Vec<u8> {
    format!("{CONFIG}{key}").into_bytes()
}

/// `pending-join/<team>`.
pub fn pending_join(team: &TeamId) -> Vec<u8> {
    join(&[PENDING_JOIN, team.to_hex().as_bytes()])
}

/// `relay-sync/<relay>/<scope>/<session>`.
pub fn relay_sync(relay: &MemberId, scope: &str, session: &SessionId) -> Vec<u8> {
    format!(
        "{RELAY_SYNC}{}/{scope}/{}",
        relay.to_hex(),
        session.to_hex()
    )
    .into_bytes()
}

/// `relay-teams/<relay>`.
pub fn relay_teams(relay: &MemberId) -> Vec<u8> {
    format!("{RELAY_TEAMS}{}", relay.to_hex()).into_bytes()
}

/// `relay/team/<team>` (on a relay).
pub fn relay_team(team: &TeamId) -> Vec<u8> {
    join(&[RELAY_TEAM, team.to_hex().as_bytes()])
}

/// `relay/s/<scope>/`: the deposits of one scope (on a relay).
pub fn relay_deposits(scope: &str) -> Vec<u8> {
    format!("relay/s/{scope}/").into_bytes()
}

/// `relay/ids/<scope>/<session>` (on a relay).
pub fn relay_ids(scope: &str, session: &SessionId) -> Vec<u8> {
    format!("relay/ids/{scope}/{}", session.to_hex()).into_bytes()
}

/// `relay/usage/<scope>` (on a relay).
pub fn relay_usage(scope: &str) -> Vec<u8> {
    format!("{RELAY_USAGE}{scope}").into_bytes()
}

/// `relay/join/<team>/`: one team's join mailbox (on a relay).
pub fn relay_joins(team: &TeamId) -> Vec<u8> {
    format!("relay/join/{}/", team.to_hex()).into_bytes()
}

/// `agent-file/<source kind>/<source id>`.
pub fn agent_file(source_kind: &str, source_id: &str) -> Vec<u8> {
    join(&[AGENT_FILE, source_kind.as_bytes(), source_id.as_bytes()])
}

/// `tombstone/<session>`: a session `tapes rm` removed (SPEC.md §3.5).
pub fn tombstone(session: &SessionId) -> Vec<u8> {
    join(&[TOMBSTONE, session.to_hex().as_bytes()])
}

/// `read/<session>/`: every read mark of one session.
pub fn reads_of(session: &SessionId) -> Vec<u8> {
    let mut key = join(&[READ, session.to_hex().as_bytes()]);
    key.push(b'/');
    key
}

/// `audit/<team>/<writer>/<seq>`, zero-padded so a writer's entries sort by seq.
pub fn audit_entry(team: &TeamId, writer: &MemberId, seq: u64) -> Vec<u8> {
    let mut key = audit_writer(team, writer);
    key.extend_from_slice(format!("{seq:020}").as_bytes());
    key
}

/// `audit/<team>/<writer>/`: one writer's chain in one team's log.
pub fn audit_writer(team: &TeamId, writer: &MemberId) -> Vec<u8> {
    format!("{AUDIT}{}/{}/", team.to_hex(), writer.to_hex()).into_bytes()
}

/// `audit/<team>/`: one team's log (`audit/` for every team's).
pub fn audit_team(team: &TeamId) -> Vec<u8> {
    format!("{AUDIT}{}/", team.to_hex()).into_bytes()
}

/// `audit-head/<team>/<writer>`: the newest entry of a writer's chain this store has seen.
pub fn audit_head(team: &TeamId, writer: &MemberId) -> Vec<u8> {
    format!("{AUDIT_HEAD}{}/{}", team.to_hex(), writer.to_hex()).into_bytes()
}

/// `relay-audit/<relay>/<team>`: how many of this node's own entries of `team`'s audit log
/// the relay has taken (u64le).
pub fn relay_audit(relay: &MemberId, team: &TeamId) -> Vec<u8> {
    format!("{RELAY_AUDIT}{}/{}", relay.to_hex(), team.to_hex()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_the_spec_table_says() {
        let s = SessionId([0x11; 16]);
        let t = TeamId([0x22; 32]);
        let hex_s = "11".repeat(16);
        let hex_t = "22".repeat(32);
        assert_eq!(session(&s), format!("session/{hex_s}").into_bytes());
        assert_eq!(sig(&s), format!("sig/{hex_s}").into_bytes());
        assert_eq!(
            share(&s, "public"),
            format!("share/{hex_s}/public").into_bytes()
        );
        assert_eq!(shares_of(&s), format!("share/{hex_s}/").into_bytes());
        assert_eq!(
            read(&s, "public"),
            format!("read/{hex_s}/public").into_bytes()
        );
        assert_eq!(
            team_version(&t, 7),
            format!("team/{hex_t}/v/00000000000000000007").into_bytes()
        );
        assert_eq!(team_head(&t), format!("team/{hex_t}/head").into_bytes());
        assert_eq!(team_fork(&t), format!("team/{hex_t}/fork").into_bytes());
        assert_eq!(invite("abcd"), b"invite/abcd".to_vec());
        assert_eq!(remote("nas"), b"remote/nas".to_vec());
        assert_eq!(config("share.paths"), b"config/share.paths".to_vec());
        assert_eq!(
            pending_join(&t),
            format!("pending-join/{hex_t}").into_bytes()
        );
        assert_eq!(relay_team(&t), format!("relay/team/{hex_t}").into_bytes());
        assert_eq!(tombstone(&s), format!("tombstone/{hex_s}").into_bytes());
        assert_eq!(reads_of(&s), format!("read/{hex_s}/").into_bytes());
        let m = MemberId([0x33; 32]);
        let hex_m = "33".repeat(32);
        assert_eq!(
            audit_entry(&t, &m, 7),
            format!("audit/{hex_t}/{hex_m}/00000000000000000007").into_bytes()
        );
        assert_eq!(
            audit_head(&t, &m),
            format!("audit-head/{hex_t}/{hex_m}").into_bytes()
        );
        assert_eq!(
            agent_file("claude", "u/agent-1"),
            b"agent-file/claude/u/agent-1".to_vec()
        );
    }
}
