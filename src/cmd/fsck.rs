//! `tapes fsck`

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct FsckArgs {}

pub fn run(_args: FsckArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let bar = super::progress_bar(store.storage().object_count() as u64, "checking objects");
    let report = tapes::fsck::fsck(&store, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    for problem in &report.problems {
        println!("damaged: {problem}");
    }
    if report.leftovers > 0 {
        println!(
            "note: {} unreferenced objects left by an interrupted import (harmless)",
            report.leftovers
        );
    }
    let shares = match report.shares {
        0 => String::new(),
        n => format!(" and {n} share records"),
    };
    if report.is_clean() {
        println!(
            "ok: {} objects and {} refs{shares} verified",
            report.objects, report.refs
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} problems in {} objects and {} refs{shares}; restore the damaged objects from a teammate or a bundle",
            report.problems.len(),
            report.objects,
            report.refs
        );
        Ok(ExitCode::from(1))
    }
}
