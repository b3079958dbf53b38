//! `tapes share`, `tapes unshare`, `tapes shared`, `tapes config`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tapes::duration::parse_duration_ms;
use tapes::identity::Identity;
use tapes::protocol::SessionId;
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
    /// Share only a signed summary (title, project, model, messages, tokens, cost, status,
    /// duration): no message ever leaves this machine. Sharing again without it shares the
    /// content.
    #[arg(long)]
    metadata_only: bool,
    /// With --metadata-only: include the first prompt in the summary.
    #[arg(long, requires = "metadata_only")]
    with_first_prompt: bool,
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
    /// Only what this teammate shared (a name or its start, any case).
    #[arg(long)]
    sharer: Option<String>,
    /// Only sessions of this project (a word of its name or its start: `api` finds
    /// `billing-api`).
    #[arg(long)]
    project: Option<String>,
    /// Only what was shared within this long (30m, 12h, 7d, 2w).
    #[arg(long)]
    since: Option<String>,
    /// Print as JSON (one array, every field).
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
    /// default|none|<url>,…` (iroh's public relays and lookup, LAN only, or your own relays),
    /// or `sync.content.<project> team|none` (none: the project's content never leaves this
    /// machine; sharing one of its sessions shares its summary only, push and bundle refuse).
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
    let prices = tapes::session::pricing::PriceTable::load(home.root())?;
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
        let result = if args.metadata_only {
            share::share_metadata_only(
                &store,
                &me,
                &id,
                &options,
                args.with_first_prompt,
                &prices,
                now,
            )
        } else {
            share::share(&store, &me, &id, &options, now)
        };
        match result {
            Ok(done) if done.metadata_only => {
                let to = match options.audience {
                    Audience::Public => "everyone with the link".to_string(),
                    Audience::Team(t) => format!("team {}", team_name(&store, &t)),
                };
                if let Some(policy) = &done.content_policy {
                    println!(
                        "project {} keeps its content on this machine (sync.content.{} = none): shared only the summary of {} with {to}; `tapes config set sync.content.{} team` lets its content travel",
                        policy.project, policy.project, id.short(), policy.project
                    );
                } else {
                    println!(
                        "shared the summary of {} with {to}: title, project, model, messages, tokens, cost, status, duration{}; no message leaves this machine",
                        id.short(),
                        if args.with_first_prompt { ", first prompt" } else { "" }
                    );
                }
            }
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
    use tapes::views::listing::{self, Filter};
    let (home, store) = super::open_store()?;
    // Sharing needs an identity: without one nothing can be shared with you.
    Identity::load(&home)?;
    let prices = tapes::session::pricing::PriceTable::load(home.root())?;
    let now = tapes::now_ms();
    let snapshot = listing::Snapshot::load(&store, listing::Facts::Summaries, &prices, now)?;
    let feed = snapshot.shared_with_me();
    let mut filter = Filter::default();
    if let Some(sharer) = &args.sharer {
        filter.teammate.push(sharer.trim().to_lowercase());
    }
    if let Some(project) = &args.project {
        filter.project.push(project.trim().to_lowercase());
    }
    if let Some(since) = &args.since {
        filter.from_ms =
            Some(now - parse_duration_ms(since).map_err(|e| anyhow::anyhow!("--since: {e}"))?);
    }
    if let Err(listing::FilterError::UnknownTeammate { known, .. }) = feed.check(&filter) {
        let known: Vec<&String> = known.iter().filter(|n| n.as_str() != "you").collect();
        bail!(
            "--sharer {}: no teammate has that name; {}",
            args.sharer.as_deref().unwrap_or_default(),
            if known.is_empty() {
                "you have no teammates yet (join or create a team)".to_string()
            } else {
                format!(
                    "teammates here: {}",
                    known
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let indices = feed.matching(&filter);
    if args.json {
        let views = tapes::audit::view_counts(&store)?;
        let rows: Vec<serde_json::Value> = indices
            .iter()
            .filter_map(|&i| feed.get(i))
            .map(|row| {
                let mut v = listing::row_json(row, now);
                if let (Some(map), Some(s)) = (v.as_object_mut(), &row.share) {
                    // The share's own fields at the top level, as before.
                    map.insert("session".into(), row.id.to_hex().into());
                    map.insert("sharer".into(), s.sharer.to_hex().into());
                    map.insert("sharer_name".into(), s.sharer_name.clone().into());
                    map.insert(
                        "audience".into(),
                        match &s.audience {
                            listing::Shown::Team { id, .. } => id.to_hex(),
                            _ => "public".to_string(),
                        }
                        .into(),
                    );
                    map.insert("audience_name".into(), s.audience.label().into());
                    map.insert(
                        "title".into(),
                        serde_json::to_value(&s.title).unwrap_or_default(),
                    );
                    map.insert("title_shown".into(), row.title.clone().into());
                    map.insert("shared_ms".into(), s.shared_ms.into());
                    map.insert(
                        "expires_ms".into(),
                        serde_json::to_value(s.expires_ms).unwrap_or_default(),
                    );
                    map.insert("unread".into(), s.unread.into());
                    map.insert(
                        "view_count".into(),
                        views.get(&row.id).copied().unwrap_or(0).into(),
                    );
                    map.insert("content_shared".into(), row.present.into());
                    map.insert(
                        "group".into(),
                        listing::group_of(s.shared_ms, now, listing::local_offset_secs())
                            .label()
                            .into(),
                    );
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if feed.is_empty() {
        println!("nothing is shared with you yet");
    } else if indices.is_empty() {
        println!(
            "none of the {} shared with you matches; `tapes shared` lists them all",
            tapes::views::render::plural(feed.len(), "session")
        );
    } else {
        print!(
            "{}",
            listing::text::shared_feed(
                &feed,
                &indices,
                now,
                listing::local_offset_secs(),
                tapes::views::table::terminal_width()
            )
        );
    }
    if args.mark_read {
        let listed: std::collections::HashSet<SessionId> = indices
            .iter()
            .filter_map(|&i| feed.get(i))
            .map(|r| r.id)
            .collect();
        let my_id = snapshot.me;
        let my_teams: Vec<_> = snapshot
            .teams
            .iter()
            .filter(|t| t.mine)
            .map(|t| t.id)
            .collect();
        if let Some(me) = my_id {
            for s in share::shared_with_me(&store, &me, &my_teams, now)? {
                if listed.contains(&s.record.session) {
                    share::mark_read(&store, &s.record)?;
                }
            }
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
