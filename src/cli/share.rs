//! `tapes share`, `tapes unshare`, `tapes shared`, `tapes config`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tapes::duration::parse_duration_ms;
use tapes::identity::Identity;
use tapes::protocol::{MemberId, SessionId};
use tapes::share::{self, Audience, ShareError, ShareOptions};
use tapes::store::Store;
use tapes::team;

#[derive(clap::Args)]
pub struct ShareArgs {
    /// Sessions to share (ids or unique prefixes); read one per line from stdin when none are
    /// given, so `tapes search … | tapes share` works.
    ids: Vec<String>,
    /// The team to share with (name or id prefix); default: the project's default visibility,
    /// or your only team.
    #[arg(long, conflicts_with = "public")]
    team: Option<String>,
    /// Anyone with the link may see it.
    #[arg(long)]
    public: bool,
    /// A note for the audience (published with the share; scanned for secrets like the session).
    #[arg(long)]
    note: Option<String>,
    /// A title for the share (default: the session's); scanned for secrets too.
    #[arg(long)]
    title: Option<String>,
    /// Access ends after this long (30m, 12h, 7d, 2w, 1y); sharing again without it keeps
    /// the earlier share's expiry (and title and note).
    #[arg(long)]
    expires: Option<String>,
    #[command(flatten)]
    gate: super::GateArgs,
}

#[derive(clap::Args)]
pub struct UnshareArgs {
    id: String,
    /// Only this team's share (default: every share of the session).
    #[arg(long, conflicts_with = "public")]
    team: Option<String>,
    /// Only the public share.
    #[arg(long)]
    public: bool,
}

#[derive(clap::Args)]
pub struct SharedArgs {
    #[arg(long)]
    json: bool,
    /// Mark everything listed as read.
    #[arg(long)]
    mark_read: bool,
}

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Set a value: `default-visibility.<project> private|team|team:<name>|public`,
    /// `share.paths name|full` (how much of a working directory travels in what you send:
    /// the project's name, the default, or the full path), or `network.relays
    /// default|none|<url>,…` (iroh's public relays and lookup, LAN only, or your own relays).
    Set {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    List,
}

fn ids_from(args: &[String]) -> anyhow::Result<Vec<String>> {
    if !args.is_empty() {
        return Ok(args.to_vec());
    }
    if std::io::stdin().is_terminal() {
        bail!("name the sessions to share, or pipe ids in (`tapes search … | tapes share`)");
    }
    let mut ids = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading session ids from stdin")?;
        if let Some(id) = line.split_whitespace().next() {
            ids.push(id.to_string());
        }
    }
    if ids.is_empty() {
        bail!("no session ids on stdin");
    }
    Ok(ids)
}

/// Where a public share is read: the page of each relay remote that serves one (the relay
/// publishes it once the share reaches it, at the next `tapes storage sync`), or that none does.
fn public_page_line(store: &Store, id: &tapes::protocol::SessionId) -> anyhow::Result<String> {
    let pages: Vec<String> = super::remote::relays(store)?
        .into_iter()
        .filter_map(|(_, addr)| addr.page)
        .map(|page| format!("{page}/s/{}", id.to_hex()))
        .collect();
    Ok(match pages.as_slice() {
        [] => "no relay with a public page is configured, so there is no web page for it; teammates fetch it by id (`tapes storage configure --relay <ticket>` adds a relay)".to_string(),
        [one] => format!("readable at {one} (once the relay has it: `tapes storage sync`)"),
        many => format!("readable at {} (once the relays have it: `tapes storage sync`)", many.join(" and ")),
    })
}

/// The audience for a session: explicit flags, else the project's default visibility, else
/// the only team.
fn audience(store: &Store, args: &ShareArgs, project: &str) -> anyhow::Result<Audience> {
    if args.public {
        return Ok(Audience::Public);
    }
    if let Some(team) = &args.team {
        return Ok(Audience::Team(team::resolve(store, Some(team))?.team_id()));
    }
    match tapes::settings::get(store, &format!("{}{project}", tapes::settings::DEFAULT_VISIBILITY))?.as_deref() {
        Some("public") => Ok(Audience::Public),
        Some("private") => bail!("project {project} is private by default (`tapes config`); pass --team or --public to share anyway"),
        Some(team) if team.starts_with("team:") => Ok(Audience::Team(team::resolve(store, Some(&team[5..]))?.team_id())),
        _ => match team::resolve(store, None) {
            Ok(chain) => Ok(Audience::Team(chain.team_id())),
            Err(team::TeamError::NoTeams) => bail!("you are in no team; pass --public, or create or join a team first"),
            Err(e) => Err(e.into()),
        },
    }
}

pub fn share(args: ShareArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let me = Identity::load(&home)?;
    let now = tapes::now_ms();
    let expires_ms = match &args.expires {
        Some(text) => {
            Some(now + parse_duration_ms(text).map_err(|e| anyhow::anyhow!("--expires: {e}"))?)
        }
        None => None,
    };
    let mut failed = false;
    for input in ids_from(&args.ids)? {
        let id = store.resolve_session(&input)?;
        if args.gate.dry_run {
            dry_run(&store, &id, &args)?;
            continue;
        }
        let record = store
            .session(&id)?
            .ok_or_else(|| anyhow::anyhow!("session {input} vanished"))?;
        let options = ShareOptions {
            audience: audience(&store, &args, &record.summary.project)?,
            title: args.title.clone(),
            note: args.note.clone(),
            expires_ms,
            secrets: args.gate.policy(),
        };
        match share::share(&store, &me, &id, &options, now) {
            Ok(done) => {
                let to = match options.audience {
                    Audience::Public => "everyone with the link".to_string(),
                    Audience::Team(t) => format!("team {}", team_name(&store, &t)),
                };
                let texts = match done.redacted_texts {
                    0 => String::new(),
                    n => format!(
                        " ({} redacted in its note and title)",
                        tapes::views::render::plural(n, "possible secret")
                    ),
                };
                if done.session == id {
                    println!("shared {} with {to}{texts}", id.short());
                } else {
                    println!(
                        "shared a redacted copy {} of {} with {to} ({} redacted; the original is untouched){texts}",
                        done.session.short(),
                        id.short(),
                        tapes::views::render::plural(done.redacted_spans, "span")
                    );
                }
                if options.audience == Audience::Public {
                    println!("{}", public_page_line(&store, &done.session)?);
                }
            }
            Err(e @ ShareError::Secrets { .. }) => {
                eprintln!("error: {e}");
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn dry_run(store: &Store, id: &SessionId, args: &ShareArgs) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    if let Some(title) = &args.title {
        texts.push(("title", title.as_str()));
    }
    if let Some(note) = &args.note {
        texts.push(("note", note.as_str()));
    }
    let findings = tapes::share::gate::scan_session(store, id, None, &texts)?;
    println!("{}", findings.dry_run(tapes::share::gate::Exit::Share));
    Ok(())
}

fn team_name(store: &Store, team: &tapes::protocol::TeamId) -> String {
    team::load(store, team)
        .map(|c| format!("\"{}\"", c.head().manifest.name))
        .unwrap_or_else(|_| team.short())
}

pub fn unshare(args: UnshareArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let me = Identity::load(&home)?;
    let id = store.resolve_session(&args.id)?;
    let audience = if args.public {
        Some(Audience::Public)
    } else if let Some(team) = &args.team {
        Some(Audience::Team(team::resolve(&store, Some(team))?.team_id()))
    } else {
        None
    };
    let n = share::unshare(&store, &me, &id, audience, tapes::now_ms())?;
    println!(
        "unshared {} ({} revoked; access ends now)",
        id.short(),
        tapes::views::render::plural(n, "share")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn shared(args: SharedArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let me = Identity::load(&home)?;
    let my_id = MemberId(me.verifying_key().to_bytes());
    let my_teams: Vec<_> = team::list(&store)?
        .into_iter()
        .filter(|c| c.head().manifest.member(&my_id).is_some())
        .map(|c| c.team_id())
        .collect();
    let list = share::shared_with_me(&store, &my_id, &my_teams, tapes::now_ms())?;
    if args.json {
        let mut rows = Vec::new();
        for s in &list {
            let r = &s.record;
            rows.push(serde_json::json!({
                "session": r.session.to_hex(), "sharer": r.sharer.to_hex(), "sharer_name": r.sharer_name,
                "audience": match r.audience { Audience::Public => "public".to_string(), Audience::Team(t) => t.to_hex() },
                "title": r.title, "note": r.note, "shared_ms": r.shared_ms, "expires_ms": r.expires_ms,
                "unread": !share::is_read(&store, r)?,
            }));
        }
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if list.is_empty() {
        println!("nothing is shared with you yet");
    } else {
        for s in &list {
            let r = &s.record;
            let mark = if share::is_read(&store, r)? {
                " "
            } else {
                "●"
            };
            let title = r.title.clone().unwrap_or_default();
            let note = r
                .note
                .as_deref()
                .map(|n| format!("  \"{n}\""))
                .unwrap_or_default();
            println!(
                "{mark} {}  {}  {} shared {}{note}",
                tapes::views::render::time(Some(r.shared_ms)),
                r.session.short(),
                r.sharer_name,
                title
            );
        }
    }
    if args.mark_read {
        for s in &list {
            share::mark_read(&store, &s.record)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    match command {
        ConfigCommand::Set { key, value } if key == tapes::peer::network::SETTING => {
            let mode = tapes::peer::network::NetworkMode::parse(&value)?;
            mode.save(_home.root())?;
            println!("{key} = {}", mode.text());
            println!("network: {}", mode.describe());
            if std::env::var_os(tapes::peer::network::ENV).is_some() {
                eprintln!(
                    "note: {} is set in this environment and overrides the setting",
                    tapes::peer::network::ENV
                );
            }
        }
        ConfigCommand::Get { key } if key == tapes::peer::network::SETTING => {
            println!("{}", tapes::peer::network::process_mode().text());
        }
        ConfigCommand::Set { key, value } => {
            tapes::settings::set(&store, &key, &value)?;
            println!("{key} = {value}");
        }
        ConfigCommand::Get { key } => match tapes::settings::get(&store, &key)? {
            Some(v) => println!("{v}"),
            None => bail!("`{key}` is not set"),
        },
        ConfigCommand::List => {
            println!(
                "{} = {}",
                tapes::peer::network::SETTING,
                tapes::peer::network::process_mode().text()
            );
            for (key, value) in tapes::settings::list(&store)? {
                println!("{key} = {value}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
