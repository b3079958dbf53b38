//! `tapes deck`: the full-screen terminal view of my sessions, what is shared with me and my
//! team (the team-sharing RFC's three views; SPEC.md §13 derived facts, §11 shares, §10
//! lineage), with a filter bar applied as you type, a preview of the transcript, the lineage
//! of the selection and the actions of the CLI on it (share after the secret gate, SPEC.md
//! §11.2; unshare; branch and fork; checkout and resume, SPEC.md §17; export and bundle,
//! SPEC.md §12). `tapes search -i` is the same deck over the sessions a search found, in pick
//! mode (quitting prints the marked ids).
//!
//! The parts: [`app`] is the state and its keys (no terminal: tests drive it and draw it into
//! ratatui's `TestBackend`), [`ui`] draws it, [`preview`] lays out transcripts, [`actions`]
//! calls the library functions the CLI commands call. [`run`] owns the terminal: raw mode and
//! the alternate screen on stderr (stdout stays free for picked ids), restored on every exit —
//! a return, an error or a panic — and left for the time an agent runs on a resume.

pub mod actions;
pub mod app;
pub mod preview;
pub mod ui;

use std::io::IsTerminal;

use crossterm::event::{self, Event};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

pub use actions::{ActionError, Context};
pub use app::{App, FactSource, Options, Outcome, Request, Tab};

use crate::views::listing::ListingError;
use crate::views::search::{self, SearchIndex};

/// Why the deck could not run.
#[derive(Debug, thiserror::Error)]
pub enum DeckError {
    #[error("`tapes deck` needs a terminal on stderr; for scripts use `tapes sessions`, `tapes shared` or `tapes stats` (with --json)")]
    NotATerminal,
    #[error("the terminal refused full-screen mode ({0}); try another terminal, or use `tapes sessions`")]
    Terminal(std::io::Error),
    #[error(transparent)]
    Listing(#[from] ListingError),
}

/// Where status and cost come from: the search index, brought up to date first (as `tapes
/// search` does); if it cannot be opened, the records' summaries.
pub fn facts_for(ctx: &Context) -> FactSource {
    match SearchIndex::open(&search::index_dir(&ctx.store)) {
        Ok(index) => FactSource::Index(Box::new(index)),
        Err(e) => {
            tracing::warn!(error = %e, "search index unavailable; status and cost from summaries");
            FactSource::Summaries
        }
    }
}

/// Puts the terminal back as it was, whatever happens (drop, error or panic).
struct Screen;

impl Screen {
    fn enter() -> Result<Screen, DeckError> {
        enable_raw_mode().map_err(DeckError::Terminal)?;
        let screen = Screen;
        execute!(std::io::stderr(), EnterAlternateScreen).map_err(DeckError::Terminal)?;
        Ok(screen)
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stderr(),
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the deck until the user quits; returns how it ended (the picked ids in pick mode).
pub fn run(ctx: Context, options: Options) -> Result<Outcome, DeckError> {
    if !std::io::stderr().is_terminal() {
        return Err(DeckError::NotATerminal);
    }
    let facts = facts_for(&ctx);
    // The first frame comes at once; the rows when the store has been read.
    let mut app = App::open(ctx, facts, options, crate::now_ms());
    // A panic restores the terminal before its message is printed (by the hook that was
    // there, which ours calls); afterwards the default hook is back.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    let result = session(&mut app);
    let _ = std::panic::take_hook();
    result
}

fn session(app: &mut App) -> Result<Outcome, DeckError> {
    loop {
        let screen = Screen::enter()?;
        // Buffered: each frame reaches the terminal in one write at its end, never half drawn.
        let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stderr());
        let mut terminal =
            Terminal::new(CrosstermBackend::new(out)).map_err(DeckError::Terminal)?;
        terminal.clear().map_err(DeckError::Terminal)?;
        let request = loop {
            terminal
                .draw(|frame| ui::draw(frame, app))
                .map_err(DeckError::Terminal)?;
            if let Some(outcome) = app.outcome() {
                return Ok(outcome.clone());
            }
            if let Some(request) = app.take_request() {
                break request;
            }
            // While background work runs, wake up to draw what it brings.
            if app.busy()
                && !event::poll(std::time::Duration::from_millis(100))
                    .map_err(DeckError::Terminal)?
            {
                app.tick();
                continue;
            }
            match event::read().map_err(DeckError::Terminal)? {
                Event::Key(key) => app.on_key(key),
                Event::Resize(_, _) => {}
                _ => {}
            }
            app.tick();
        };
        // Leave the screen for the agent, then come back.
        drop(terminal);
        drop(screen);
        let result = carry_out(app, request);
        app.finish_request(result);
    }
}

/// Does a [`Request`] with the terminal back in normal mode.
fn carry_out(app: &App, request: Request) -> Result<String, ActionError> {
    match request {
        Request::Resume { id, platform } => {
            let ctx = &app.ctx;
            let (done, line) = actions::checkout(ctx, &id, platform, crate::now_ms())?;
            eprintln!("{line}");
            let Some(command) = &done.command else {
                return Ok(line);
            };
            if done.theirs {
                eprintln!(
                    "note: session {} is someone else's; resuming sends its content to your own {platform} model provider",
                    id.short()
                );
            }
            eprintln!(
                "starting {} (the deck comes back when it exits)",
                command.display()
            );
            let status = command.run()?;
            actions::after_resume(ctx, &done, status, crate::now_ms())
        }
    }
}

#[cfg(test)]
mod tests;
