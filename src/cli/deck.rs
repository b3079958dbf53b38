//! `tapes deck`: parses the arguments and runs [`tapes::views::deck`].

use std::path::PathBuf;
use std::process::ExitCode;

use tapes::session::pricing::PriceTable;
use tapes::views::deck::{self, Context, Options, Outcome};

#[derive(clap::Args)]
pub struct DeckArgs {
    /// Start with this in the filter bar, e.g. `project:billing since:7d auth` (keys:
    /// project: model: teammate: status: since: until: cost: vis: is:; other words match
    /// words of the title, prompt, project, model, people and notes by prefix).
    filter: Vec<String>,
    /// Where checkouts write agent files (the agent runs there) and exports and bundles go
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
}

pub fn run(args: DeckArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let dir = super::resume::agent_dir(args.into.as_deref())?;
    let ctx = Context {
        store,
        home: Some(home),
        prices,
        dir,
    };
    let options = Options {
        only: None,
        filter: args.filter.join(" "),
        pick: false,
    };
    match deck::run(ctx, options)? {
        Outcome::Quit => {}
        Outcome::Picked(ids) => {
            for id in ids {
                println!("{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
