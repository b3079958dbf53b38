//! The `tapes` command line: a thin layer over the `tapes` library.
//!
//! Parsing arguments and printing results live here; every capability is a library call, so
//! examples and tests drive the same code the CLI does.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tapes",
    version,
    about = "git for AI-agent sessions, peer to peer"
)]
#[command(
    after_help = "Data lives in $TAPES_HOME (default ~/.tapes). RUST_LOG or -v turn up logging."
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How long to wait for a peer or relay to answer before reporting it unreachable
    /// (e.g. 5s, 30s; default 5s).
    #[arg(long, global = true, value_name = "DURATION")]
    timeout: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this machine's identity (ed25519 node key + age key) and store.
    Init(cli::init::InitArgs),
    /// Print what a teammate needs to add you.
    Id(cli::init::IdArgs),
    /// Import agent transcripts: Claude Code, Codex, Gemini CLI, a tapes database, messages JSON.
    Import(cli::import::ImportArgs),
    /// List sessions.
    Sessions(cli::sessions::SessionsArgs),
    /// Show a session's transcript.
    Show(cli::sessions::ShowArgs),
    /// Show a session's node chain (ids, roles, sizes, parents), newest first.
    Log(cli::sessions::LogArgs),
    /// Verify every object hash, parent link and ref; exits non-zero on damage.
    Fsck(cli::fsck::FsckArgs),
    /// Remove a session (its messages go at `tapes gc`; `--undo` until then); `--everywhere`
    /// also asks peers and relays to drop it.
    Rm(cli::rm::RmArgs),
    /// Delete from disk the messages no session uses any more (after `tapes rm`).
    Gc(cli::rm::GcArgs),
    /// Branch your own session: a new session sharing its first N messages.
    Branch(cli::lineage::BranchArgs),
    /// Fork someone else's visible session into a new session you own.
    Fork(cli::lineage::ForkArgs),
    /// Remotes to pull from and push to: add, list, remove.
    #[command(subcommand)]
    Remote(cli::remote::RemoteCommand),
    /// Pull one of your sessions from a remote and track it in this project.
    Pull(cli::transfer::PullArgs),
    /// Push tracked sessions (default: the current one) to a remote, with the turns your
    /// agent added.
    Push(cli::transfer::PushArgs),
    /// Write a session where an agent (claude, codex, gemini) resumes it, or as a JSON file.
    Checkout(cli::resume::CheckoutArgs),
    /// The project's tracked sessions: agent file, new turns not pushed, remote ahead or not.
    Status(cli::resume::StatusArgs),
    /// Answer teammates over iroh until Ctrl-C: fetches, pushes, join requests.
    Serve(cli::peer::ServeArgs),
    /// Fetch what peers share with you (team shares, public shares, manifests).
    Fetch(cli::peer::FetchArgs),
    /// Run a relay (an always-on peer that holds no team key), or register a team on one.
    Relay(cli::relay::RelayArgs),
    /// Where sessions live: local, cloud (a relay) or hybrid; status and sync.
    #[command(subcommand)]
    Storage(cli::storage::StorageCommand),
    /// Fetch from peers, then push your own shared sessions they lack.
    Sync(cli::peer::SyncArgs),
    /// Teammates on this LAN (mDNS): who they are, their teams, whether they are remotes.
    Peers(cli::peers::PeersArgs),
    /// Share sessions with a team or publicly, after a secret scan.
    Share(cli::share::ShareArgs),
    /// Stop sharing a session (access ends from now on).
    Unshare(cli::share::UnshareArgs),
    /// What teammates shared with you, newest first (● = unread).
    Shared(cli::share::SharedArgs),
    /// Who shared, unshared, fetched, deposited, deleted what, when (the teams' access logs);
    /// `tapes audit verify` checks their hash chains and signatures.
    Audit(cli::audit::AuditArgs),
    /// Settings, e.g. `tapes config set default-visibility.<project> team`.
    #[command(subcommand)]
    Config(cli::share::ConfigCommand),
    /// Teams: create, invite, join, members, remove, leave, promote.
    #[command(subcommand)]
    Team(cli::team::TeamCommand),
    /// Bundles for air-gapped transfer: create, verify, import.
    #[command(subcommand)]
    Bundle(cli::bundle::BundleCommand),
    /// Export sessions as JSON, JSONL or CSV for other tools.
    Export(cli::export::ExportArgs),
    /// Full-text search over messages, with filters; prints ids when piped.
    Search(cli::search::SearchArgs),
    /// Full screen: my sessions, shared with me, the team dashboard; filter, preview, lineage
    /// and actions (share, unshare, branch, fork, checkout/resume, export, bundle).
    Deck(cli::deck::DeckArgs),
    /// The same views in the browser: a local page with charts and lineage, and a JSON API
    /// (`/api/sessions`, `/api/shared`, `/api/team`, `/api/stats`, `/api/session/<id>`).
    Web(cli::web::WebArgs),
    /// Sessions, cost and tokens for a period, with breakdowns (by member across a team).
    Stats(cli::search::StatsArgs),
    /// The price table used for costs (USD per 1M tokens) and user overrides.
    Pricing(cli::search::PricingArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, e.g. into `man -l -`.
    Man,
}

fn main() -> ExitCode {
    tapes::allocator::purge_freed_memory_at_once();
    // `tapes sessions | head` should end quietly like any Unix tool, not panic on the closed
    // pipe: restore the default SIGPIPE action that Rust's runtime ignores.
    #[cfg(unix)]
    // SAFETY: called before any thread exists; only resets a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = parse();
    init_logging(cli.verbose);
    if let Some(text) = &cli.timeout {
        match tapes::duration::parse_duration_ms(text) {
            Ok(ms) if ms > 0 => tapes::peer::network::set_connect_timeout(
                std::time::Duration::from_millis(ms as u64),
            ),
            _ => {
                eprintln!("error: --timeout {text}: use a duration such as 5s, 30s or 2m");
                return ExitCode::from(2);
            }
        }
    }
    // The network mode (`network.relays`, SPEC §15.7) is read from the home when first needed.
    if let Ok(home) = tapes::home::Home::locate() {
        tapes::peer::network::init(home.root());
    }
    // Commands that change what a hybrid or cloud provider syncs (SPEC.md §16.11).
    // Commands that talk to the relay (or report on it) themselves: no second sync after them.
    let syncs_itself = matches!(
        cli.command,
        Command::Storage(_)
            | Command::Serve(_)
            | Command::Sync(_)
            | Command::Fetch(_)
            | Command::Relay(_)
    );
    let wrote = matches!(
        cli.command,
        Command::Import(_)
            | Command::Share(_)
            | Command::Unshare(_)
            | Command::Branch(_)
            | Command::Fork(_)
            | Command::Team(_)
            | Command::Checkout(_)
            | Command::Deck(_)
    );
    let result = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut with_examples(Cli::command(), ""),
                "tapes",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(with_examples(Cli::command(), ""))
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Init(args) => cli::init::init(args),
        Command::Id(args) => cli::init::id(args),
        Command::Import(args) => cli::import::run(args, cli.verbose),
        Command::Sessions(args) => cli::sessions::list(args),
        Command::Show(args) => cli::sessions::show(args),
        Command::Log(args) => cli::sessions::log(args),
        Command::Fsck(args) => cli::fsck::run(args),
        Command::Rm(args) => cli::rm::run(args),
        Command::Gc(args) => cli::rm::gc(args),
        Command::Team(command) => cli::team::run(command),
        Command::Bundle(command) => cli::bundle::run(command),
        Command::Export(args) => cli::export::run(args),
        Command::Search(args) => cli::search::search(args),
        Command::Deck(args) => cli::deck::run(args),
        Command::Web(args) => cli::web::run(args),
        Command::Stats(args) => cli::search::stats(args),
        Command::Pricing(args) => cli::search::pricing(args),
        Command::Share(args) => cli::share::share(args),
        Command::Unshare(args) => cli::share::unshare(args),
        Command::Shared(args) => cli::share::shared(args),
        Command::Config(command) => cli::share::config(command),
        Command::Audit(args) => cli::audit::run(args),
        Command::Branch(args) => cli::lineage::branch(args),
        Command::Fork(args) => cli::lineage::fork(args),
        Command::Remote(command) => cli::remote::run(command),
        Command::Pull(args) => cli::transfer::pull(args),
        Command::Push(args) => cli::transfer::push(args),
        Command::Checkout(args) => cli::resume::checkout(args),
        Command::Status(args) => cli::resume::status(args),
        Command::Serve(args) => cli::peer::serve(args),
        Command::Fetch(args) => cli::peer::fetch(args),
        Command::Sync(args) => cli::peer::sync(args),
        Command::Peers(args) => cli::peers::run(args),
        Command::Relay(args) => cli::relay::run(args),
        Command::Storage(command) => cli::storage::run(command),
    };
    let result = if syncs_itself {
        result
    } else {
        cli::storage::after_command(result, wrote)
    };
    match result {
        Ok(code) => code,
        // 1 for anything that went wrong at run time; clap uses 2 for wrong usage.
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The arguments, parsed by the clap command that carries every command's help example.
fn parse() -> Cli {
    let matches = with_examples(Cli::command(), "").get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit())
}

/// `command` with an `Example: ...` line at the end of every subcommand's help, from
/// [`tapes::help::EXAMPLES`] (after any help text the command already has). `path` is the
/// command's own path (`""` for `tapes` itself).
fn with_examples(mut command: clap::Command, path: &str) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        command = command.mut_subcommand(&name, |sub| {
            let sub = with_examples(sub, &sub_path);
            let Some(example) = tapes::help::example(&sub_path) else {
                return sub;
            };
            let text = match sub.get_after_help() {
                Some(existing) => format!("{existing}\n\nExample: {example}"),
                None => format!("Example: {example}"),
            };
            sub.after_help(text)
        });
    }
    command
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already shows (typed errors often include their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // Without -v only tapes' own warnings: iroh's and its dependencies' lines (relay
    // retries, lookup failures) are for -v, not for a user who did not ask.
    let default = match verbose {
        0 => "off,tapes=warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

// See `tapes::allocator`.
#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every help example parses as a real invocation: its command exists and its flags and
    /// arguments are ones that command takes.
    #[test]
    fn every_help_example_parses() {
        for (path, example) in tapes::help::EXAMPLES {
            // Up to a shell redirection or pipe, which belongs to the shell, not to tapes.
            let words: Vec<&str> = example
                .split_whitespace()
                .take_while(|w| !matches!(*w, ">" | "|"))
                .collect();
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("the example for `{path}` does not parse: {example}\n{e}");
            }
        }
    }

    /// Every command and subcommand has an example (clap's own `help` aside).
    #[test]
    fn every_command_has_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name()).trim().to_string();
                if tapes::help::example(&sub_path).is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
    }
}
