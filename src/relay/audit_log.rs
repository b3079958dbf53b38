//! The relay's part of the teams' audit logs (SPEC.md §18.2): the relay writes its own chain
//! of entries for what members did at it — fetched a team's session, deposited one — signed
//! with the relay's node key (the key a member records when it registers the team or syncs
//! with the relay), and keeps every entry sealed to the team (`TSEAL1`, §9.6: sealing needs
//! only the team's public recipient), so the relay's data says who came, never in the clear.
//! Members fetch them with `Request::Audit` and merge them (`peer::audit_sync`).
//!
//! Members deposit their own chains too (`Request::AuditDeposit`, §18.3): sealed, filed under
//! the depositing connection's node id, create-only.
//!
//! Backend records: `audit/<team>/<writer>/<seq, 20 digits>` → the sealed entry (the relay's
//! own or a member's); `audit-head/<team>` → `seq u64le ‖ entry id` of the relay's newest entry
//! (plain: a count); `audit-writers/<team>/<member>` → empty, the members who deposited.

use tapes_protocol::audit::{AuditAction, AuditEntry, EntryId, SignedAuditEntry};
use tapes_protocol::{MemberId, SessionId, TeamId};

use tapes_protocol::sync::MAX_AUDIT_DEPOSIT;

use super::backend::Written;
use super::state::RelayState;
use super::RelayError;

fn entry_key(team: &TeamId, writer: &MemberId, seq: u64) -> String {
    format!("audit/{}/{}/{seq:020}", team.to_hex(), writer.to_hex())
}

fn head_key(team: &TeamId) -> String {
    format!("audit-head/{}", team.to_hex())
}

impl RelayState {
    /// Gives the relay the key its audit entries are signed with (once, at start).
    pub fn set_audit_key(&self, key: ed25519_dalek::SigningKey) {
        let _ = self.audit_key.set(key);
    }

    fn team_chain(
        &self,
        team: &TeamId,
    ) -> Result<tapes_protocol::team_chain::TeamChain, RelayError> {
        self.teams()
            .into_iter()
            .find(|c| c.team_id() == *team)
            .ok_or_else(|| RelayError::NotRegistered(team.short()))
    }

    /// Appends an entry to the relay's chain in `team`'s log, sealed. Best effort: an entry
    /// that cannot be written is reported on the log, never a reason to fail the request.
    pub fn audit_record(
        &self,
        team: &TeamId,
        action: AuditAction,
        actor: &MemberId,
        actor_name: &str,
        session: &SessionId,
    ) {
        if let Err(e) = self.try_audit_record(team, action, actor, actor_name, session) {
            tracing::warn!(error = %e, "the relay could not append to the audit log");
        }
    }

    fn try_audit_record(
        &self,
        team: &TeamId,
        action: AuditAction,
        actor: &MemberId,
        actor_name: &str,
        session: &SessionId,
    ) -> Result<(), RelayError> {
        let Some(key) = self.audit_key.get() else {
            return Ok(());
        };
        let chain = self.team_chain(team)?;
        let writer = MemberId(key.verifying_key().to_bytes());
        for _ in 0..16 {
            let current = self.backend().get(&head_key(team))?;
            let previous = current.as_ref().and_then(|v| {
                let seq = u64::from_le_bytes(v.bytes.get(..8)?.try_into().ok()?);
                let id: [u8; 32] = v.bytes.get(8..40)?.try_into().ok()?;
                Some((seq, EntryId(id)))
            });
            let entry = AuditEntry {
                team: *team,
                writer,
                seq: previous.map_or(0, |(s, _)| s + 1),
                prev: previous.map(|(_, id)| id),
                at_ms: crate::now_ms(),
                action,
                actor: *actor,
                actor_name: actor_name.to_string(),
                session: Some(*session),
                detail: "at the relay".into(),
            };
            let signed = SignedAuditEntry::sign(entry, key);
            let sealed = crate::team::keyring::seal_encoded(&chain, &signed.encode())
                .map_err(|e| RelayError::Malformed(e.to_string()))?;
            // The entry first (its key is new), then the head: a crash between leaves an
            // entry past the head, which the next write replaces.
            let at = entry_key(team, &writer, signed.entry.seq);
            let leftover = self.backend().get(&at)?;
            if self.backend().put(&at, sealed, leftover.as_ref())? == Written::Lost {
                continue;
            }
            let mut head = signed.entry.seq.to_le_bytes().to_vec();
            head.extend_from_slice(&signed.id().0);
            match self
                .backend()
                .put(&head_key(team), head, current.as_ref())?
            {
                Written::Done => return Ok(()),
                Written::Lost => continue,
            }
        }
        Err(RelayError::Busy)
    }

    /// `Request::Audit` from `peer`: the sealed entries of `team`'s log at this relay past what
    /// the peer holds (`have`), for current members only: the relay's own chain and the chains
    /// members deposited, each writer's in seq order up to its first gap. The relay's own chain
    /// is served up to its head only: an entry past the head is what a crash between writing
    /// the entry and its head leaves, and the next append replaces it; served, it would fork
    /// the chain at every member who took it.
    pub fn audit_entries(
        &self,
        peer: &MemberId,
        team: &TeamId,
        have: &[(MemberId, u64)],
    ) -> Result<Vec<Vec<u8>>, RelayError> {
        self.member_of(peer, team)?;
        let mut writers = std::collections::BTreeSet::new();
        let own = self
            .audit_key
            .get()
            .map(|key| MemberId(key.verifying_key().to_bytes()));
        writers.extend(own);
        // How many entries of the relay's own chain are committed (its head's seq + 1).
        let committed = match self.backend().get(&head_key(team))? {
            Some(v) => v
                .bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, |b| u64::from_le_bytes(b) + 1),
            None => 0,
        };
        let listed = writers_key(team, None);
        for (key, _) in self.backend().list(&listed)? {
            if let Some(w) = hex::decode(&key[listed.len()..])
                .ok()
                .and_then(|b| MemberId::from_slice(&b))
            {
                writers.insert(w);
            }
        }
        let mut out = Vec::new();
        for writer in writers {
            let prefix = format!("audit/{}/{}/", team.to_hex(), writer.to_hex());
            let mut entries: Vec<(u64, Vec<u8>)> = self
                .backend()
                .list(&prefix)?
                .into_iter()
                .filter_map(|(key, v)| Some((key[prefix.len()..].parse().ok()?, v.bytes)))
                .collect();
            let mut next = have
                .iter()
                .find(|(w, _)| *w == writer)
                .map_or(0, |(_, n)| *n);
            entries.sort_by_key(|(seq, _)| *seq);
            for (seq, bytes) in entries {
                if seq < next {
                    continue;
                }
                if seq > next || (Some(writer) == own && seq >= committed) {
                    break;
                }
                out.push(bytes);
                next += 1;
            }
        }
        Ok(out)
    }

    /// `Request::AuditDeposit` from `peer`: its own entries `first, first + 1, …` of `team`'s
    /// log, sealed to the team (the relay cannot read them; members check them on merge).
    /// Filed under the connection's node id, create-only; a deposit that would leave a gap is
    /// refused. Returns how many were new.
    pub fn audit_deposit(
        &self,
        peer: &MemberId,
        team: &TeamId,
        first: u64,
        entries: Vec<Vec<u8>>,
    ) -> Result<usize, RelayError> {
        self.member_of(peer, team)?;
        if entries.len() > MAX_AUDIT_DEPOSIT {
            return Err(RelayError::Malformed(format!(
                "{} audit entries in one deposit; at most {MAX_AUDIT_DEPOSIT}",
                entries.len()
            )));
        }
        if first > 0
            && self
                .backend()
                .get(&entry_key(team, peer, first - 1))?
                .is_none()
        {
            return Err(RelayError::Malformed(format!(
                "audit entries from seq {first} would leave a gap: this relay holds fewer of yours; send them from the first it lacks"
            )));
        }
        let listed = writers_key(team, Some(peer));
        if self.backend().get(&listed)?.is_none() {
            // Lost: another deposit of the same member listed it at the same moment.
            let _ = self.backend().put(&listed, Vec::new(), None)?;
        }
        let mut new = 0;
        for (i, sealed) in entries.into_iter().enumerate() {
            let key = entry_key(team, peer, first + i as u64);
            if self.backend().get(&key)?.is_some() {
                continue;
            }
            if self.backend().put(&key, sealed, None)? == Written::Done {
                new += 1;
            }
        }
        Ok(new)
    }

    fn member_of(&self, peer: &MemberId, team: &TeamId) -> Result<(), RelayError> {
        let chain = self.team_chain(team)?;
        if chain.head().manifest.member(peer).is_none() {
            return Err(RelayError::NotMember(team.short()));
        }
        Ok(())
    }
}

/// `audit-writers/<team>/<member>`: the members whose deposited chains the relay keeps for
/// `team` (its listing is one level deep); `None`: the prefix.
fn writers_key(team: &TeamId, writer: Option<&MemberId>) -> String {
    match writer {
        Some(w) => format!("audit-writers/{}/{}", team.to_hex(), w.to_hex()),
        None => format!("audit-writers/{}/", team.to_hex()),
    }
}
