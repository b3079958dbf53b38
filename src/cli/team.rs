//! `tapes team …`: create, invite, join, accept, list, members, remove, leave, promote.
//!
//! Until peers talk over iroh, the join exchange travels in files: `tapes team join CODE`
//! writes a signed request, the inviter runs `tapes team accept REQUEST`, and the joiner
//! finishes with `tapes team join --answer ANSWER`. The messages are the same ones the network
//! will carry.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use tapes::duration::parse_duration_ms;
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::protocol::join::{self, JoinRequest, JoinResponse};
use tapes::protocol::manifest::TeamRole;
use tapes::team::{self, InviteOptions};

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create a team; you are its owner. Prints the team id.
    Create { name: String },
    /// Make an invite code (or revoke one with --revoke).
    Invite(InviteArgs),
    /// List the invites you issued.
    Invites {
        #[arg(long)]
        team: Option<String>,
    },
    /// Ask to join with an invite code (writes a request file), or finish with --answer.
    Join(JoinArgs),
    /// As the inviter: check a join request and write the answer for the joiner.
    Accept {
        /// The request file the joiner sent.
        request: PathBuf,
        /// Where to write the answer (default: next to the request, `.answer`).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Your teams.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Members of a team and their roles.
    Members {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (owner/admin); the team key rotates so they cannot read what follows.
    Remove {
        /// Name, email or node id prefix.
        member: String,
        #[arg(long)]
        team: Option<String>,
    },
    /// Leave a team; the team key rotates.
    Leave {
        #[arg(long)]
        team: Option<String>,
    },
    /// Start a new key epoch for the current members (after someone left).
    Rotate {
        #[arg(long)]
        team: Option<String>,
    },
    /// As an owner: end a fork by continuing one side.
    Resolve {
        #[arg(long, value_parser = ["ours", "theirs"])]
        keep: String,
        #[arg(long)]
        team: Option<String>,
    },
    /// Change a member's role.
    Promote {
        member: String,
        #[arg(long, value_parser = ["member", "admin", "owner"])]
        role: String,
        #[arg(long)]
        team: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct InviteArgs {
    /// Only someone whose tapes identity has this email may use it (same as --email).
    #[arg(value_name = "EMAIL", conflicts_with_all = ["email", "revoke"])]
    email_arg: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// How long the code works (30m, 12h, 7d, 2w, 1y).
    #[arg(long, default_value = "7d")]
    expires: String,
    /// How many people may join with it.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// Only someone whose tapes identity has this email may use it.
    #[arg(long)]
    email: Option<String>,
    /// The role joiners get.
    #[arg(long, default_value = "member", value_parser = ["member", "admin"])]
    role: String,
    /// An address where you can be reached (host:port); repeatable.
    #[arg(long = "addr")]
    addrs: Vec<String>,
    /// Revoke an invite: its code or the short id `tapes team invites` shows.
    #[arg(long, conflicts_with_all = ["uses", "email", "addrs"])]
    revoke: Option<String>,
}

#[derive(clap::Args)]
pub struct JoinArgs {
    /// The invite code.
    #[arg(required_unless_present = "answer")]
    code: Option<String>,
    /// Where to write the request (default: ./join-<team>.request).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Finish joining with the answer file the inviter sent back.
    #[arg(long, conflicts_with = "code")]
    answer: Option<PathBuf>,
    /// Do not try to reach the inviter's node; write the request file to hand over.
    #[arg(long)]
    offline: bool,
}

fn identity(home: &Home) -> anyhow::Result<Identity> {
    Ok(Identity::load(home)?)
}

pub fn run(command: TeamCommand) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let now = tapes::now_ms();
    match command {
        TeamCommand::Create { name } => {
            let me = identity(&home)?;
            let chain = team::create(&store, &me, &name, now)?;
            println!(
                "created team \"{name}\" ({}); you are its owner",
                chain.team_id()
            );
            println!("next: `tapes team invite` to add teammates");
        }
        TeamCommand::Invite(args) => invite(&home, &store, args, now)?,
        TeamCommand::Invites { team } => {
            let chain = team::resolve(&store, team.as_deref())?;
            for r in team::invites(&store, &chain.team_id())? {
                let state = if r.revoked {
                    "revoked".to_string()
                } else if r.expires_ms.is_some_and(|t| now >= t) {
                    "expired".to_string()
                } else if r.uses >= r.max_uses {
                    "spent".to_string()
                } else {
                    format!("open until {}", tapes::views::render::time(r.expires_ms))
                };
                let email = r
                    .email
                    .as_deref()
                    .map(|e| format!(" for {e}"))
                    .unwrap_or_default();
                println!(
                    "{}  {}  {}/{} used  {}{email}",
                    r.id(),
                    r.role.as_str(),
                    r.uses,
                    r.max_uses,
                    state
                );
            }
        }
        TeamCommand::Join(args) => return join_cmd(&home, &store, args, now),
        TeamCommand::Accept { request, out } => {
            let me = identity(&home)?;
            let bytes = std::fs::read(&request)
                .with_context(|| format!("reading {}", request.display()))?;
            let req: JoinRequest = join::decode(&bytes).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a tapes join request (damaged or another file)",
                    request.display()
                )
            })?;
            let response = team::accept_join(&store, &me, &req, now)?;
            if matches!(response, JoinResponse::Accepted { .. }) {
                tapes::audit::membership(
                    &store,
                    &me,
                    &req.body.team,
                    tapes::audit::AuditAction::Join,
                    &req.body.member.id,
                    &req.body.member.name,
                );
            }
            let out = out.unwrap_or_else(|| request.with_extension("answer"));
            std::fs::write(&out, join::encode(&response))
                .with_context(|| format!("writing {}", out.display()))?;
            match &response {
                JoinResponse::Accepted { .. } => {
                    println!(
                        "accepted {} into the team; send them {}",
                        req.body.member.name,
                        out.display()
                    )
                }
                JoinResponse::Refused(reason) => {
                    println!(
                        "refused {}: {reason}; the answer in {} tells them why",
                        req.body.member.name,
                        out.display()
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        }
        TeamCommand::List { json } => {
            let list = team::list(&store)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|c| {
                        let m = &c.head().manifest;
                        serde_json::json!({"id": c.team_id().to_hex(), "name": m.name, "version": m.version,
                            "members": m.members.len(), "epoch": m.epoch, "forked": c.fork().is_some()})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!("no teams yet; `tapes team create NAME` or `tapes team join CODE`");
            } else {
                for c in list {
                    let m = &c.head().manifest;
                    let fork = if c.fork().is_some() {
                        "  FORKED: an owner must resolve"
                    } else {
                        ""
                    };
                    println!(
                        "{}  {}  {}  version {}{fork}",
                        c.team_id().short(),
                        m.name,
                        tapes::views::render::plural(m.members.len(), "member"),
                        m.version
                    );
                }
            }
        }
        TeamCommand::Members { team, json } => {
            let chain = team::resolve(&store, team.as_deref())?;
            let m = &chain.head().manifest;
            if json {
                println!("{}", serde_json::to_string_pretty(&m.members)?);
            } else {
                println!(
                    "team \"{}\" ({}), version {}, key epoch {}",
                    m.name,
                    chain.team_id().short(),
                    m.version,
                    m.epoch
                );
                for member in &m.members {
                    let email = member
                        .email
                        .as_deref()
                        .map(|e| format!(" <{e}>"))
                        .unwrap_or_default();
                    println!(
                        "  {:<6} {}  {}{email}",
                        member.role.as_str(),
                        member.id.short(),
                        member.name
                    );
                }
                if let Some(fork) = chain.fork() {
                    println!("FORKED after version {}: an owner of that version must sign a change on top of one side", fork.base);
                }
            }
        }
        TeamCommand::Remove { member, team } => {
            let me = identity(&home)?;
            let mut chain = team::resolve(&store, team.as_deref())?;
            let target = team::find_member(&chain.head().manifest, &member)?.clone();
            if target.id.as_bytes() == me.verifying_key().as_bytes() {
                bail!("that is you; use `tapes team leave`");
            }
            team::remove(&store, &me, &mut chain, &target.id, now)?;
            tapes::audit::membership(
                &store,
                &me,
                &chain.team_id(),
                tapes::audit::AuditAction::Remove,
                &target.id,
                &target.name,
            );
            println!(
                "removed {} ({}); team key rotated to epoch {}: they cannot open anything shared from now on",
                target.name,
                target.id.short(),
                chain.head().manifest.epoch
            );
        }
        TeamCommand::Leave { team } => {
            let me = identity(&home)?;
            let mut chain = team::resolve(&store, team.as_deref())?;
            let name = chain.head().manifest.name.clone();
            team::leave(&store, &me, &mut chain, now)?;
            tapes::audit::membership(
                &store,
                &me,
                &chain.team_id(),
                tapes::audit::AuditAction::Remove,
                &tapes::protocol::MemberId(me.verifying_key().to_bytes()),
                &me.profile.name,
            );
            println!("left team \"{name}\"; the remaining members rotate its key before sharing anything new");
        }
        TeamCommand::Rotate { team } => {
            let me = identity(&home)?;
            let mut chain = team::resolve(&store, team.as_deref())?;
            team::rotate(&store, &me, &mut chain, now)?;
            println!("team key rotated to epoch {}", chain.head().manifest.epoch);
        }
        TeamCommand::Resolve { keep, team } => {
            let me = identity(&home)?;
            let mut chain = team::resolve(&store, team.as_deref())?;
            let side = if keep == "ours" {
                team::Side::Ours
            } else {
                team::Side::Theirs
            };
            team::resolve_fork(&store, &me, &mut chain, side, now)?;
            println!(
                "fork resolved: the team continues at version {}",
                chain.head().manifest.version
            );
        }
        TeamCommand::Promote { member, role, team } => {
            let me = identity(&home)?;
            let mut chain = team::resolve(&store, team.as_deref())?;
            let target = team::find_member(&chain.head().manifest, &member)?.clone();
            let role =
                TeamRole::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?;
            team::set_role(&store, &me, &mut chain, &target.id, role, now)?;
            println!(
                "{} is now {} of \"{}\"",
                target.name,
                role.as_str(),
                chain.head().manifest.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn invite(
    home: &Home,
    store: &tapes::store::Store,
    args: InviteArgs,
    now: i64,
) -> anyhow::Result<()> {
    if let Some(code) = args.revoke {
        let record = team::revoke(store, &code)?;
        println!("revoked invite {}", record.id());
        return Ok(());
    }
    if let Some(email) = args.email_arg.as_deref().filter(|e| !e.contains('@')) {
        bail!("`{email}` is not an email address; `tapes team invite <email>` limits the invite to that person (pick the team with --team {email})");
    }
    let me = identity(home)?;
    let chain = team::resolve(store, args.team.as_deref())?;
    let expires =
        parse_duration_ms(&args.expires).map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
    let options = InviteOptions {
        expires_ms: Some(now + expires),
        max_uses: args.uses,
        email: args.email.or(args.email_arg),
        role: TeamRole::parse(&args.role).unwrap_or(TeamRole::Member),
        // Where `tapes serve` last listened, so `tapes team join <code>` can reach us.
        addrs: if args.addrs.is_empty() {
            let mut addrs: Vec<String> = super::peer::last_ticket(home).into_iter().collect();
            // The relays this node is reached through, so an invite made before `tapes serve`
            // ran works once we are online (SPEC §15.7).
            if addrs.is_empty() {
                for relay in tapes::peer::network::process_mode().dial_relays_text() {
                    addrs.push(relay);
                }
            }
            // And the relays we sync with: a join request waits there while we are offline.
            for (_, relay) in super::remote::relays(store)? {
                addrs.extend(team::relay_hints(&me, &relay.ticket()));
            }
            addrs
        } else {
            args.addrs
        },
    };
    let (code, record) = team::invite(store, &me, &chain, options, now)?;
    println!("{code}");
    eprintln!(
        "invite {} to \"{}\": {}, expires {}{}; the joiner runs `tapes team join <code>`",
        record.id(),
        chain.head().manifest.name,
        tapes::views::render::plural(record.max_uses as usize, "use"),
        tapes::views::render::time(record.expires_ms),
        record
            .email
            .as_deref()
            .map(|e| format!(", only for {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn join_cmd(
    home: &Home,
    store: &tapes::store::Store,
    args: JoinArgs,
    now: i64,
) -> anyhow::Result<ExitCode> {
    let me = identity(home)?;
    if let Some(answer) = args.answer {
        let bytes =
            std::fs::read(&answer).with_context(|| format!("reading {}", answer.display()))?;
        let response: JoinResponse = join::decode(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a tapes join answer (damaged or another file)",
                answer.display()
            )
        })?;
        // The team we asked to join, remembered when the request was made.
        let pending = team::pending_joins(store)?;
        let team = match &response {
            JoinResponse::Accepted { manifests } => {
                let first = manifests
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("the answer holds no team"))?;
                tapes::protocol::manifest::SignedManifest::decode(first)?
                    .manifest
                    .team_id()
            }
            JoinResponse::Refused(reason) => bail!("join refused: {reason}"),
        };
        if !pending.contains(&team) {
            bail!("this answer is for team {}, which you did not ask to join; run `tapes team join <code>` first", team.short());
        }
        let chain = team::complete_join(store, &me, &team, response)?;
        team::forget_pending_join(store, &team)?;
        let m = &chain.head().manifest;
        println!(
            "joined team \"{}\" ({}) with {}",
            m.name,
            chain.team_id().short(),
            tapes::views::render::plural(m.members.len(), "member")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let code = args.code.unwrap_or_default();
    let (invite, request) = team::join_request(&me, &code, now)?;
    if args.out.is_none() && !args.offline {
        // Straight to the inviter's `tapes serve` when it can be reached.
        match super::peer::join_online(store, &me, &invite, &request) {
            Ok(Some(chain)) => {
                let m = &chain.head().manifest;
                println!(
                    "joined team \"{}\" ({}) with {}",
                    m.name,
                    chain.team_id().short(),
                    tapes::views::render::plural(m.members.len(), "member")
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(None) => {}
            // Accepted through a relay while we were away: the answer waits there.
            Err(e)
                if invite.addrs.iter().any(|h| h.starts_with("relay:"))
                    && e.downcast_ref::<team::TeamError>().is_some_and(|t| {
                        matches!(
                            t,
                            team::TeamError::Refused(
                                tapes::protocol::join::JoinRefusal::AlreadyMember
                            )
                        )
                    }) => {}
            Err(e) => return Err(e),
        }
        // The inviter is away: leave the request at a relay the invite names, if any.
        for hint in &invite.addrs {
            let Some(ticket) = hint.strip_prefix("relay:") else {
                continue;
            };
            let Ok(relay) = tapes::peer::addr::PeerAddr::parse(ticket) else {
                continue;
            };
            match super::peer::join_via_relay(store, &me, &invite, &request, &relay) {
                Ok(Some(chain)) => {
                    let m = &chain.head().manifest;
                    println!(
                        "joined team \"{}\" ({}) with {} (the answer waited at relay {})",
                        m.name,
                        chain.team_id().short(),
                        tapes::views::render::plural(m.members.len(), "member"),
                        relay.id.short()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(None) => {
                    println!(
                        "the inviter is offline; your request waits at relay {}",
                        relay.id.short()
                    );
                    println!("it is accepted at the inviter's next sync; then run the same `tapes team join <code>` again");
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => eprintln!("the relay did not take the request: {e:#}"),
            }
        }
        eprintln!("writing a request file to hand over instead");
    }
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("join-{}.request", invite.team.short())));
    // The request carries the invite secret: 0600 like every other secret file.
    write_private(&out, &join::encode(&request))
        .with_context(|| format!("writing {}", out.display()))?;
    team::remember_pending_join(store, &invite.team, &invite.team_name)?;
    println!(
        "join request for \"{}\" written to {}",
        invite.team_name,
        out.display()
    );
    println!(
        "send it to the inviter ({}); they run `tapes team accept {}`",
        invite.inviter.short(),
        out.display()
    );
    println!("then finish with `tapes team join --answer <answer file>`");
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open; make sure it is private before writing.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
