//! The team chain state machine: applies manifests one at a time and decides what a peer
//! must believe about a team (SPEC.md §9.3).
//!
//! It accepts exactly the next version, signed per [`crate::manifest::verify_successor`]. It
//! refuses a replay of an older version (rollback), a manifest whose previous id it does not
//! know, a gap, a manifest of another team, and — when two different valid manifests claim the
//! same version — it enters the *forked* state: both sides are refused until an owner of the
//! version before the split signs a manifest that continues one side. That manifest resolves
//! the fork for everyone who sees it, whichever side they had.

use crate::id::{ManifestId, TeamId};
use crate::manifest::{verify_genesis, verify_successor, ManifestError, SignedManifest, TeamRole};

/// What applying a manifest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It became the new head.
    Appended,
    /// It is the current head already; nothing changed.
    AlreadyKnown,
    /// It resolved a fork: the chain now continues the side it names.
    Resolved,
}

/// Two valid manifests claim the same version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The last version both sides agree on.
    pub base: u64,
    /// The other side's manifest at version `base + 1` (ours is in the chain).
    pub theirs: SignedManifest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamChain {
    versions: Vec<SignedManifest>,
    fork: Option<Fork>,
}

impl TeamChain {
    /// Starts a chain from a verified genesis manifest.
    pub fn new(genesis: SignedManifest) -> Result<TeamChain, ManifestError> {
        verify_genesis(&genesis)?;
        Ok(TeamChain {
            versions: vec![genesis],
            fork: None,
        })
    }

    /// Rebuilds a chain from stored versions (0, 1, 2, …), verifying every link.
    pub fn from_versions(
        versions: Vec<SignedManifest>,
        fork: Option<Fork>,
    ) -> Result<TeamChain, ManifestError> {
        let mut iter = versions.into_iter();
        let genesis = iter
            .next()
            .ok_or_else(|| ManifestError::Malformed("a team needs its version 0".into()))?;
        let mut chain = TeamChain::new(genesis)?;
        for next in iter {
            chain.apply(next)?;
        }
        if let Some(fork) = &fork {
            let base = chain
                .versions
                .get(fork.base as usize)
                .filter(|_| (fork.base as usize) + 1 < chain.versions.len())
                .ok_or_else(|| {
                    ManifestError::Malformed(format!(
                        "fork record names base version {} this chain cannot fork at",
                        fork.base
                    ))
                })?;
            verify_successor(base, &fork.theirs)?;
        }
        chain.fork = fork;
        Ok(chain)
    }

    pub fn team_id(&self) -> TeamId {
        self.versions[0].manifest.team_id()
    }

    /// The newest accepted manifest. While forked this is our side's tip, which is not
    /// authoritative: check [`TeamChain::fork`].
    pub fn head(&self) -> &SignedManifest {
        self.versions.last().unwrap_or(&self.versions[0])
    }

    pub fn versions(&self) -> &[SignedManifest] {
        &self.versions
    }

    pub fn fork(&self) -> Option<&Fork> {
        self.fork.as_ref()
    }

    /// Members who left (or were removed) while the current key epoch was in force: they may
    /// hold its key, so nothing new may be sealed to it until someone rotates. Empty when the
    /// current key is known only to current members.
    pub fn rotation_owed(&self) -> Vec<crate::manifest::Member> {
        let head = &self.head().manifest;
        let since = self
            .versions
            .iter()
            .position(|v| v.manifest.epoch == head.epoch)
            .unwrap_or(0);
        let mut gone: Vec<crate::manifest::Member> = Vec::new();
        for v in &self.versions[since..] {
            for m in &v.manifest.members {
                if head.member(&m.id).is_none() && !gone.iter().any(|g| g.id == m.id) {
                    gone.push(m.clone());
                }
            }
        }
        gone
    }

    /// Applies `next` (see the module comment for the rules).
    pub fn apply(&mut self, next: SignedManifest) -> Result<Applied, ManifestError> {
        next.manifest.check_shape()?;
        let team = self.team_id();
        let found = next.manifest.team_id();
        if found != team {
            return Err(ManifestError::WrongTeam {
                expected: team,
                found,
            });
        }
        if let Some(fork) = self.fork.clone() {
            return self.apply_while_forked(&fork, next);
        }
        let head = self.head();
        let (version, head_version) = (next.manifest.version, head.manifest.version);
        if version <= head_version {
            let known = &self.versions[version as usize];
            if known.id() == next.id() {
                return if version == head_version {
                    Ok(Applied::AlreadyKnown)
                } else {
                    Err(ManifestError::Rollback {
                        offered: version,
                        current: head_version,
                    })
                };
            }
            // A different manifest for a version we have: a forgery, or a fork.
            let base = &self.versions[version as usize - 1];
            verify_successor(base, &next)?;
            let fork = Fork {
                base: version - 1,
                theirs: next,
            };
            let error = fork_error(&fork, known.id());
            self.fork = Some(fork);
            return Err(error);
        }
        if version > head_version + 1 {
            return Err(ManifestError::Gap {
                offered: version,
                current: head_version,
            });
        }
        if next.manifest.prev != Some(head.id()) {
            return Err(ManifestError::UnknownPrev {
                version,
                prev: next.manifest.prev.unwrap_or(ManifestId([0; 32])),
                prev_version: head_version,
            });
        }
        verify_successor(head, &next)?;
        self.versions.push(next);
        Ok(Applied::Appended)
    }

    fn apply_while_forked(
        &mut self,
        fork: &Fork,
        next: SignedManifest,
    ) -> Result<Applied, ManifestError> {
        let ours_id = self.versions[fork.base as usize + 1].id();
        let continues_ours = next.manifest.prev == Some(self.head().id());
        let continues_theirs = next.manifest.prev == Some(fork.theirs.id());
        if !(continues_ours || continues_theirs) {
            return Err(fork_error(fork, ours_id));
        }
        let tip = if continues_ours {
            self.head()
        } else {
            &fork.theirs
        };
        verify_successor(tip, &next)?;
        let base = &self.versions[fork.base as usize].manifest;
        let by_base_owner = next.signatures.iter().any(|s| {
            base.member(&s.signer)
                .is_some_and(|m| m.role == TeamRole::Owner)
        });
        if !by_base_owner {
            return Err(fork_error(fork, ours_id));
        }
        if continues_theirs {
            self.versions.truncate(fork.base as usize + 1);
            self.versions.push(fork.theirs.clone());
        }
        self.versions.push(next);
        self.fork = None;
        Ok(Applied::Resolved)
    }
}

fn fork_error(fork: &Fork, ours: ManifestId) -> ManifestError {
    ManifestError::Forked {
        version: fork.base + 1,
        base: fork.base,
        a: ours,
        b: fork.theirs.id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::{genesis, member, next};
    use crate::manifest::TeamRole::{Admin, Member, Owner};

    fn team_of_three() -> (TeamChain, SignedManifest) {
        let g = genesis();
        let v1 = next(
            &g,
            vec![member(1, Owner), member(2, Admin), member(3, Member)],
            0,
            1,
        );
        let mut chain = TeamChain::new(g).unwrap();
        assert_eq!(chain.apply(v1.clone()).unwrap(), Applied::Appended);
        (chain, v1)
    }

    #[test]
    fn replays_rollbacks_gaps_and_unknown_previous_ids_are_refused() {
        let (mut chain, v1) = team_of_three();
        let genesis = chain.versions()[0].clone();
        assert_eq!(chain.apply(v1.clone()).unwrap(), Applied::AlreadyKnown);
        let v2 = next(
            &v1,
            vec![
                member(1, Owner),
                member(2, Admin),
                member(3, Member),
                member(4, Member),
            ],
            0,
            2,
        );
        chain.apply(v2.clone()).unwrap();
        assert!(matches!(
            chain.apply(v1.clone()),
            Err(ManifestError::Rollback {
                offered: 1,
                current: 2
            })
        ));
        assert!(matches!(
            chain.apply(genesis),
            Err(ManifestError::Rollback {
                offered: 0,
                current: 2
            })
        ));
        let v3 = next(&v2, v2.manifest.members.clone(), 0, 1);
        let v4 = next(&v3, v3.manifest.members.clone(), 0, 1);
        assert!(matches!(
            chain.apply(v4),
            Err(ManifestError::Gap {
                offered: 4,
                current: 2
            })
        ));
        // A version 3 whose previous id is not our version 2.
        let mut stray = next(&v2, v2.manifest.members.clone(), 0, 1);
        stray.manifest.prev = Some(ManifestId([7; 32]));
        stray.signatures = vec![stray.manifest.sign(&crate::manifest::tests::key(1))];
        assert!(matches!(
            chain.apply(stray),
            Err(ManifestError::UnknownPrev { version: 3, .. })
        ));
        assert_eq!(chain.head().manifest.version, 2);
    }

    #[test]
    fn a_fork_is_refused_on_both_sides_until_an_owner_resolves_it() {
        let (mut chain, v1) = team_of_three();
        // Owner and admin each add someone on top of version 1.
        let a = next(
            &v1,
            vec![
                member(1, Owner),
                member(2, Admin),
                member(3, Member),
                member(4, Member),
            ],
            0,
            1,
        );
        let b = next(
            &v1,
            vec![
                member(1, Owner),
                member(2, Admin),
                member(3, Member),
                member(5, Member),
            ],
            0,
            2,
        );
        chain.apply(a.clone()).unwrap();
        assert!(matches!(
            chain.apply(b.clone()),
            Err(ManifestError::Forked {
                version: 2,
                base: 1,
                ..
            })
        ));
        assert!(chain.fork().is_some());
        // The admin cannot resolve, and nothing builds on either side meanwhile.
        let by_admin = next(&b, b.manifest.members.clone(), 0, 2);
        assert!(matches!(
            chain.apply(by_admin),
            Err(ManifestError::Forked { .. })
        ));
        // The owner continues the other side, taking in both additions.
        let mut union = b.manifest.members.clone();
        union.push(member(4, Member));
        let resolution = next(&b, union, 0, 1);
        assert_eq!(chain.apply(resolution.clone()).unwrap(), Applied::Resolved);
        assert!(chain.fork().is_none());
        assert_eq!(chain.versions()[2], b);
        assert_eq!(chain.head(), &resolution);
    }

    #[test]
    fn a_forged_second_version_is_a_forgery_not_a_fork() {
        let (mut chain, v1) = team_of_three();
        let forged = next(&v1, vec![member(1, Owner), member(3, Owner)], 1, 3);
        assert!(matches!(
            chain.apply(forged),
            Err(ManifestError::SignerNotAdmin { .. })
        ));
        let a = next(&v1, v1.manifest.members.clone(), 0, 1);
        chain.apply(a).unwrap();
        let forged_dup = next(
            &v1,
            vec![member(1, Owner), member(2, Admin), member(3, Owner)],
            0,
            3,
        );
        assert!(matches!(
            chain.apply(forged_dup),
            Err(ManifestError::SignerNotAdmin { .. })
        ));
        assert!(chain.fork().is_none());
    }

    #[test]
    fn from_versions_verifies_every_link() {
        let (chain, _) = team_of_three();
        let rebuilt = TeamChain::from_versions(chain.versions().to_vec(), None).unwrap();
        assert_eq!(rebuilt, chain);
        let mut swapped = chain.versions().to_vec();
        swapped.swap(0, 1);
        assert!(TeamChain::from_versions(swapped, None).is_err());
    }
}
