//! `tapes fsck [--repair]`

use std::process::ExitCode;

use tapes::home::Home;

#[derive(clap::Args)]
#[command(
    after_help = "e.g. `tapes fsck`, then `tapes fsck --repair` if it says the database is damaged"
)]
pub struct FsckArgs {
    /// Salvage everything readable (pack files, the journal, what the database still yields)
    /// into a fresh store that takes the damaged one's place; the damaged one is kept beside
    /// it. Sessions that cannot be restored whole are listed.
    #[arg(long)]
    repair: bool,
}

pub fn run(args: FsckArgs) -> anyhow::Result<ExitCode> {
    if args.repair {
        return repair();
    }
    let store = match super::open_store() {
        Ok((_home, store)) => store,
        Err(open_error) => {
            let home = Home::locate()?;
            let dir = home.store_dir();
            if !dir.is_dir() {
                return Err(open_error);
            }
            return diagnose(&dir, &open_error);
        }
    };
    let bar = super::progress_bar(store.storage().object_count() as u64, "checking objects");
    let report = tapes::store::fsck::fsck(&store, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    for problem in &report.problems {
        println!("damaged: {problem}");
    }
    if report.leftovers > 0 {
        println!(
            "note: {} left by an interrupted import (harmless)",
            tapes::views::render::plural(report.leftovers as usize, "unreferenced object")
        );
    }
    let shares = match report.shares {
        0 => String::new(),
        n => format!(
            " and {}",
            tapes::views::render::plural(n as usize, "share record")
        ),
    };
    if report.is_clean() {
        println!(
            "ok: {} and {}{shares} verified",
            tapes::views::render::plural(report.objects as usize, "object"),
            tapes::views::render::plural(report.refs as usize, "ref")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} in {} and {}{shares}; restore the damaged objects from a teammate or a bundle, or `tapes fsck --repair` to keep everything else in a fresh store",
            tapes::views::render::plural(report.problems.len(), "problem"),
            tapes::views::render::plural(report.objects as usize, "object"),
            tapes::views::render::plural(report.refs as usize, "ref")
        );
        Ok(ExitCode::from(1))
    }
}

/// The store does not open: say what is damaged and what survives.
fn diagnose(dir: &std::path::Path, open_error: &anyhow::Error) -> anyhow::Result<ExitCode> {
    let diagnosis = tapes::store::fsck::diagnose(dir)?;
    println!(
        "damaged: the store at {} does not open: {open_error:#}",
        dir.display()
    );
    print_damage(&diagnosis);
    println!(
        "{} whole in the pack files and the journal; {} would lose nodes that only the damaged database held",
        match diagnosis.recoverable.len() {
            1 => "1 session survives".to_string(),
            n => format!("{n} sessions survive"),
        },
        diagnosis.incomplete.len()
    );
    println!(
        "`tapes fsck --repair` moves them into a fresh store (the damaged one is kept beside it)"
    );
    Ok(ExitCode::from(1))
}

fn print_damage(diagnosis: &tapes::store::fsck::Diagnosis) {
    if let Some(e) = &diagnosis.db_error {
        println!("damaged: database {}", e);
    }
    for (path, why) in &diagnosis.damaged_packs {
        println!("damaged: pack {}: {why}", path.display());
    }
    if !diagnosis.journal_damage.is_empty() {
        let offsets: Vec<String> = diagnosis
            .journal_damage
            .iter()
            .map(|o| o.to_string())
            .collect();
        println!(
            "damaged: {} (at byte {} {})",
            tapes::views::render::plural(offsets.len(), "journal entry"),
            if offsets.len() == 1 {
                "offset"
            } else {
                "offsets"
            },
            offsets.join(", ")
        );
    }
    for (id, missing) in &diagnosis.incomplete {
        println!(
            "damaged: session {}: node {} survives nowhere",
            id.short(),
            missing.short()
        );
    }
}

fn repair() -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let dir = home.store_dir();
    if !dir.is_dir() {
        anyhow::bail!("no store at {} to repair", dir.display());
    }
    let bar = super::progress_bar(0, "salvaging objects");
    let report = tapes::store::fsck::repair(&dir, tapes::now_ms(), |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    print_damage(&report.diagnosis);
    println!(
        "repaired: {} and {} in a fresh store at {}; {} restored whole",
        tapes::views::render::plural(report.objects as usize, "object"),
        tapes::views::render::plural(report.refs as usize, "ref"),
        dir.display(),
        tapes::views::render::plural(report.diagnosis.recoverable.len(), "session")
    );
    if report.bad_objects > 0 {
        println!(
            "left behind: {} that {} not verify",
            tapes::views::render::plural(report.bad_objects as usize, "object"),
            if report.bad_objects == 1 {
                "does"
            } else {
                "do"
            }
        );
    }
    if !report.diagnosis.incomplete.is_empty() {
        println!(
            "lost: {} whose nodes survive nowhere (listed above); restore them from a teammate, a relay or a bundle",
            tapes::views::render::plural(report.diagnosis.incomplete.len(), "session")
        );
    }
    println!("the damaged store is kept at {}", report.kept_at.display());
    Ok(if report.diagnosis.incomplete.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
