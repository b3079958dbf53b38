//! `tapes init` and `tapes id`.

use std::process::ExitCode;

use anyhow::Context;

use tapes::home::Home;
use tapes::identity::{Identity, Profile};
use tapes::store::Store;

#[derive(clap::Args)]
pub struct InitArgs {
    /// Your display name, shown to teammates (default: $USER).
    #[arg(long)]
    name: Option<String>,
    /// Your email, optional; invites can be restricted to it.
    #[arg(long)]
    email: Option<String>,
    /// Use the identity in this file (made by `tapes id export`) instead of a new one: this
    /// device becomes the same node. The passphrase comes from $TAPES_PASSPHRASE or is asked.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "email"])]
    from: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IdArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<IdCommand>,
}

#[derive(clap::Subcommand)]
pub enum IdCommand {
    /// Write this identity (both secret keys) to a passphrase-protected file, to move it to
    /// another device with `tapes init --from FILE`. e.g. `tapes id export -o alice.tapes-id`
    Export {
        /// The file to write (refused if it exists).
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
    },
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    home.ensure()?;
    if let Some(from) = &args.from {
        return init_from(&home, from);
    }
    if Identity::exists(&home) {
        let identity = Identity::load(&home)?;
        println!("already initialized in {}", home.root().display());
        println!("node id: {}", identity.node_id_hex());
        return Ok(ExitCode::SUCCESS);
    }
    let name = args
        .name
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "anonymous".into());
    let identity = Identity::generate(Profile {
        name,
        email: args.email,
    })?;
    identity.save(&home)?;
    let store = Store::open(&home.store_dir())?;
    store.set_local_owner(&tapes::protocol::MemberId(
        identity.verifying_key().to_bytes(),
    ))?;
    println!("initialized tapes in {}", home.root().display());
    println!("node id: {}", identity.node_id_hex());
    println!("age:     {}", identity.age_recipient());
    println!("next: `tapes import ~/.claude/projects` to bring in your sessions");
    Ok(ExitCode::SUCCESS)
}

/// `tapes init --from FILE`: this device becomes the node the file holds.
fn init_from(home: &Home, from: &std::path::Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let passphrase = passphrase(&format!("passphrase for {}: ", from.display()), false)?;
    let identity = Identity::import_sealed(from, &bytes, passphrase)?;
    if Identity::exists(home) {
        let current = Identity::load(home)?;
        if current.node_id_hex() == identity.node_id_hex() {
            println!(
                "already initialized with this identity in {}",
                home.root().display()
            );
            println!("node id: {}", current.node_id_hex());
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!(
            "{} already holds another identity (node id {}); use a fresh TAPES_HOME for {}",
            home.root().display(),
            current.node_id_hex(),
            identity.node_id_hex()
        );
    }
    identity.save(home)?;
    let store = Store::open(&home.store_dir())?;
    store.set_local_owner(&tapes::protocol::MemberId(
        identity.verifying_key().to_bytes(),
    ))?;
    println!(
        "initialized tapes in {} as {}",
        home.root().display(),
        identity.profile.name
    );
    println!(
        "node id: {} (the same node as the device it was exported from)",
        identity.node_id_hex()
    );
    println!("next: `tapes remote add` / `tapes fetch` to bring your sessions here");
    Ok(ExitCode::SUCCESS)
}

/// A passphrase from $TAPES_PASSPHRASE, else asked on the terminal without echo (twice when
/// `confirm`). Never printed or logged.
fn passphrase(prompt: &str, confirm: bool) -> anyhow::Result<age::secrecy::SecretString> {
    if let Ok(value) = std::env::var("TAPES_PASSPHRASE") {
        if value.is_empty() {
            anyhow::bail!("TAPES_PASSPHRASE is empty; set a passphrase");
        }
        return Ok(value.into());
    }
    let first = tapes::terminal::read_hidden(prompt)?;
    if first.is_empty() {
        anyhow::bail!("an empty passphrase would protect nothing; nothing was written");
    }
    if confirm && tapes::terminal::read_hidden("again: ")? != first {
        anyhow::bail!("the two passphrases differ; nothing was written");
    }
    Ok(first.into())
}

pub fn id(args: IdArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let identity = Identity::load(&home)?;
    if let Some(IdCommand::Export { output }) = &args.command {
        if output.exists() {
            anyhow::bail!(
                "{} exists; choose another file (nothing was written)",
                output.display()
            );
        }
        let passphrase = passphrase("passphrase to protect the export: ", true)?;
        let sealed = identity.export_sealed(passphrase)?;
        tapes::identity::write_secret(output, &sealed)?;
        println!(
            "wrote {} (node id {}, protected by your passphrase; mode 0600)",
            output.display(),
            identity.node_id_hex()
        );
        println!(
            "on the other device: `tapes init --from {}`",
            output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let value = serde_json::json!({
            "node_id": identity.node_id_hex(),
            "age_recipient": identity.age_recipient().to_string(),
            "name": identity.profile.name,
            "email": identity.profile.email,
            "ticket": super::peer::last_ticket(&home),
            "network": tapes::peer::network::process_mode().text(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("name:    {}", identity.profile.name);
        if let Some(email) = &identity.profile.email {
            println!("email:   {email}");
        }
        println!("node id: {}", identity.node_id_hex());
        println!("age:     {}", identity.age_recipient());
        println!(
            "network: {}",
            tapes::peer::network::process_mode().describe()
        );
        if let Some(ticket) = super::peer::last_ticket(&home) {
            println!("ticket:  {ticket}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
