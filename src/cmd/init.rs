//! `tapes init` and `tapes id`.

use std::process::ExitCode;

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
}

#[derive(clap::Args)]
pub struct IdArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    home.ensure()?;
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

pub fn id(args: IdArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let identity = Identity::load(&home)?;
    if args.json {
        let value = serde_json::json!({
            "node_id": identity.node_id_hex(),
            "age_recipient": identity.age_recipient().to_string(),
            "name": identity.profile.name,
            "email": identity.profile.email,
            "ticket": super::peer::last_ticket(&home),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("name:    {}", identity.profile.name);
        if let Some(email) = &identity.profile.email {
            println!("email:   {email}");
        }
        println!("node id: {}", identity.node_id_hex());
        println!("age:     {}", identity.age_recipient());
        if let Some(ticket) = super::peer::last_ticket(&home) {
            println!("ticket:  {ticket}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
