//! The relay's part of the teams' audit logs (SPEC.md §18.2): the relay writes its own chain
//! of entries for what members did at it — fetched a team's session, deposited one — signed
//! with the relay's node key (the key a member records when it registers the team or syncs
//! with the relay), and keeps every entry sealed to the team (`TSEAL1`, §9.6: sealing needs
//! only the team's public recipient), so the relay's data says who came, never in the clear.
//! Members fetch them with `Request::Audit` and merge them (`peer::audit_sync`).
//!
//! Backend records: `audit/<team>/<relay>/<seq, 20 digits>` → the sealed entry;
//! `audit-head/<team>` → `seq u64le ‖ entry id` of the relay's newest entry (plain: a count).

use tapes_protocol::audit::{AuditAction, AuditEntry, EntryId, SignedAuditEntry};
use tapes_protocol::{MemberId, SessionId, TeamId};

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
    /// the peer holds (`have`), for current members only.
    pub fn audit_entries(
        &self,
        peer: &MemberId,
        team: &TeamId,
        have: &[(MemberId, u64)],
    ) -> Result<Vec<Vec<u8>>, RelayError> {
        let chain = self.team_chain(team)?;
        if chain.head().manifest.member(peer).is_none() {
            return Err(RelayError::NotMember(team.short()));
        }
        let Some(key) = self.audit_key.get() else {
            return Ok(Vec::new());
        };
        let writer = MemberId(key.verifying_key().to_bytes());
        let from = have
            .iter()
            .find(|(w, _)| *w == writer)
            .map_or(0, |(_, n)| *n);
        let head = self
            .backend()
            .get(&head_key(team))?
            .and_then(|v| Some(u64::from_le_bytes(v.bytes.get(..8)?.try_into().ok()?)));
        let Some(last) = head else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for seq in from..=last {
            match self.backend().get(&entry_key(team, &writer, seq))? {
                Some(v) => out.push(v.bytes),
                None => break,
            }
        }
        Ok(out)
    }
}
