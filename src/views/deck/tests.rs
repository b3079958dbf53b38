//! The deck as a state machine: keys in, frames out (ratatui's `TestBackend`), over a real
//! store of sample sessions in a temporary directory.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{App, Dialog, FactSource, Mode, Options, Outcome, Tab};
use super::{ui, Context};
use crate::import::ingest::{ingest, Incoming};
use crate::session::pricing::PriceTable;
use crate::session::sample::{self, Shape};
use crate::store::Store;

const HOUR: i64 = 3_600_000;

struct Fixture {
    dir: tempfile::TempDir,
    store: std::sync::Arc<Store>,
}

fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let shape = Shape {
        tool_rounds: 3,
        start_ms: crate::now_ms() - 30 * HOUR,
    };
    let batch: Vec<Incoming> = (0..n)
        .map(|i| Incoming {
            session: sample::session(7, i, shape),
            path: String::new(),
        })
        .collect();
    ingest(&store, &batch, crate::now_ms()).unwrap();
    Fixture { dir, store }
}

fn app(f: &Fixture, options: Options) -> App {
    let ctx = Context {
        store: f.store.clone(),
        home: None,
        prices: PriceTable::defaults(),
        dir: f.dir.path().to_path_buf(),
    };
    App::new(ctx, FactSource::Chains, options, crate::now_ms()).unwrap()
}

/// The frame as text, one line per row.
fn screen(app: &mut App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    terminal.draw(|frame| ui::draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    buffer
        .content
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn press(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn ctrl(app: &mut App, c: char) {
    app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

#[test]
fn opens_on_my_sessions_with_tabs_filter_bar_and_preview() {
    let f = fixture(12);
    let mut app = app(&f, Options::default());
    let s = screen(&mut app);
    assert!(s.contains("My sessions (12)"), "{s}");
    assert!(s.contains("Shared with me (0)"), "{s}");
    assert!(s.contains("Team dashboard"), "{s}");
    assert!(s.contains("press / to filter"), "{s}");
    assert!(s.contains("12 of 12 sessions"), "{s}");
    assert!(s.contains("── #0 user"), "{s}");
    // Tool calls are folded to one line each.
    assert!(s.contains("▸ "), "{s}");
    assert_eq!(app.visible(), 12);
}

#[test]
fn the_filter_applies_as_you_type_by_word_prefix() {
    let f = fixture(30);
    let mut app = app(&f, Options::default());
    let billing = app.panes[0]
        .listing
        .rows()
        .iter()
        .filter(|r| r.project == "billing-api")
        .count();
    assert!(billing > 0 && billing < 30);
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.mode(), &Mode::Filter);
    type_text(&mut app, "project:bil");
    assert_eq!(app.visible(), billing);
    let s = screen(&mut app);
    assert!(s.contains(&format!("{billing} of 30 sessions")), "{s}");
    assert!(s.contains("project:bil▏"), "{s}");
    // Free text: a word prefix of the prompt ("Refactor …", "Write tests …", …).
    ctrl(&mut app, 'u');
    assert_eq!(app.visible(), 30);
    type_text(&mut app, "refac");
    let refactor = app.panes[0]
        .listing
        .rows()
        .iter()
        .filter(|r| r.first_prompt.starts_with("Refactor"))
        .count();
    assert_eq!(app.visible(), refactor);
    // Esc leaves the bar and keeps the filter; Ctrl-U in the list clears it.
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), &Mode::List);
    assert_eq!(app.filter_text(), "refac");
    ctrl(&mut app, 'u');
    assert_eq!(app.filter_text(), "");
    assert_eq!(app.visible(), 30);
    let s = screen(&mut app);
    assert!(s.contains("30 of 30 sessions"), "{s}");
}

#[test]
fn a_bad_filter_value_says_so_in_place_and_keeps_the_rows() {
    let f = fixture(10);
    let mut app = app(&f, Options::default());
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "cost:>abc");
    assert!(app
        .filter_error()
        .is_some_and(|e| e.contains("is not a cost")));
    assert_eq!(app.visible(), 10, "the rows stay as they were");
    let s = screen(&mut app);
    assert!(s.contains("✗ cost:>abc is not a cost; use >1, >=1"), "{s}");
    // An unknown teammate names who is here.
    ctrl(&mut app, 'u');
    assert!(app.filter_error().is_none());
    type_text(&mut app, "by:zed");
    let e = app.filter_error().unwrap_or_default().to_string();
    assert!(e.contains("teammate:zed matches nobody here"), "{e}");
    ctrl(&mut app, 'u');
    type_text(&mut app, "status:done");
    assert!(screen(&mut app).contains("status:done is not a status"));
}

#[test]
fn tab_switches_views_and_the_team_tab_has_a_dashboard() {
    let f = fixture(5);
    let mut app = app(&f, Options::default());
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab(), Tab::Shared);
    let s = screen(&mut app);
    assert!(s.contains("nothing is shared with you yet"), "{s}");
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab(), Tab::Team);
    assert!(screen(&mut app).contains("loading…"));
    let start = std::time::Instant::now();
    while !app.tick() {
        assert!(start.elapsed().as_secs() < 30, "the dashboard never came");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let s = screen(&mut app);
    assert!(s.contains("cost per day"), "{s}");
    assert!(s.contains("sessions 5"), "{s}");
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab(), Tab::Mine);
}

#[test]
fn enter_reads_the_preview_which_scrolls_and_unfolds() {
    let f = fixture(3);
    let mut app = app(&f, Options::default());
    let folded = screen(&mut app);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.mode(), &Mode::Preview);
    press(&mut app, KeyCode::Char('t'));
    let open = screen(&mut app);
    assert_ne!(folded, open);
    assert!(open.contains("t folds"), "{open}");
    press(&mut app, KeyCode::PageDown);
    screen(&mut app);
    assert!(app.scroll > 0, "the preview scrolled");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), &Mode::List);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.scroll, 0, "a new selection starts at the top");
}

#[test]
fn q_quits_and_pick_mode_returns_the_marked_sessions() {
    let f = fixture(4);
    let mut app1 = app(&f, Options::default());
    press(&mut app1, KeyCode::Char('q'));
    assert_eq!(app1.outcome(), Some(&Outcome::Quit));

    let mut app2 = app(
        &f,
        Options {
            pick: true,
            ..Options::default()
        },
    );
    let first = app2.current().unwrap().id;
    press(&mut app2, KeyCode::Char(' '));
    let second = app2.current().unwrap().id;
    press(&mut app2, KeyCode::Char(' '));
    press(&mut app2, KeyCode::Esc);
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(app2.outcome(), Some(&Outcome::Picked(want)));
}

#[test]
fn search_results_restrict_the_deck() {
    let f = fixture(6);
    let all = app(&f, Options::default());
    let ids: Vec<_> = all.panes[0].listing.rows()[..2]
        .iter()
        .map(|r| r.id)
        .collect();
    let mut app = app(
        &f,
        Options {
            only: Some(ids),
            filter: String::new(),
            pick: true,
        },
    );
    assert_eq!(app.visible(), 2);
    assert!(screen(&mut app).contains("My sessions (2)"));
}

#[test]
fn branch_makes_a_new_session_and_the_lineage_shows_it() {
    let f = fixture(3);
    let mut app = app(&f, Options::default());
    let source = app.current().unwrap().id;
    press(&mut app, KeyCode::Char('b'));
    assert!(matches!(app.mode(), Mode::Dialog(Dialog::Copy { .. })));
    assert!(screen(&mut app).contains("Enter branches"));
    type_text(&mut app, "2");
    press(&mut app, KeyCode::Enter);
    let notice = app.notice().unwrap().clone();
    assert!(!notice.error, "{}", notice.text);
    assert!(
        notice
            .text
            .starts_with(&format!("branched {}", source.short())),
        "{}",
        notice.text
    );
    assert_eq!(app.panes[0].listing.len(), 4);
    press(&mut app, KeyCode::Char('l'));
    assert_eq!(app.mode(), &Mode::Lineage);
    let s = screen(&mut app);
    assert!(s.contains("branch at #2 by you"), "{s}");
    assert!(s.contains(&source.short()), "{s}");
    press(&mut app, KeyCode::Esc);
    // Forking your own session is refused with the library's hint, in place.
    press(&mut app, KeyCode::Char('f'));
    press(&mut app, KeyCode::Enter);
    let notice = app.notice().unwrap();
    assert!(
        notice.error && notice.text.contains("You own this session"),
        "{}",
        notice.text
    );
}

#[test]
fn share_shows_the_gate_first_and_needs_an_identity() {
    let f = fixture(2);
    let mut app = app(&f, Options::default());
    press(&mut app, KeyCode::Char('s'));
    let s = screen(&mut app);
    assert!(s.contains("secret scan:"), "{s}");
    assert!(s.contains("public (anyone with the link)"), "{s}");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), &Mode::List);
    assert!(app.notice().unwrap().text.contains("cancelled"));
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('a'));
    let notice = app.notice().unwrap();
    assert!(
        notice.error && notice.text.contains("tapes init"),
        "{}",
        notice.text
    );
    // Nothing is shared, so there is nothing to unshare.
    press(&mut app, KeyCode::Char('u'));
    assert!(app.notice().unwrap().text.contains("not shared"));
}

#[test]
fn export_and_checkout_write_files_where_the_deck_runs() {
    let f = fixture(2);
    let mut app = app(&f, Options::default());
    let id = app.current().unwrap().id;
    press(&mut app, KeyCode::Char('e'));
    let s = screen(&mut app);
    assert!(s.contains(&format!("tapes-{}.json▏", id.short())), "{s}");
    press(&mut app, KeyCode::Enter);
    let notice = app.notice().unwrap().clone();
    assert!(!notice.error, "{}", notice.text);
    assert!(f
        .dir
        .path()
        .join(format!("tapes-{}.json", id.short()))
        .is_file());

    press(&mut app, KeyCode::Char('c'));
    press(&mut app, KeyCode::Char('4')); // file
    press(&mut app, KeyCode::Enter);
    let notice = app.notice().unwrap().clone();
    assert!(!notice.error, "{}", notice.text);
    assert!(notice.text.starts_with("wrote "), "{}", notice.text);
}

#[test]
fn a_session_that_disappears_while_shown_says_so() {
    let f = fixture(3);
    let mut app = app(&f, Options::default());
    let id = app.current().unwrap().id;
    let key = crate::session::session_ref_key(&id);
    let raw = f.store.session_raw(&id).unwrap();
    f.store
        .commit(
            &[],
            &[crate::store::backend::RefUpdate {
                key,
                expected: raw,
                new: None,
            }],
        )
        .unwrap();
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Up);
    let s = screen(&mut app);
    assert!(s.contains("is no longer in this store"), "{s}");
    // Reloading drops it from the list.
    press(&mut app, KeyCode::Char('R'));
    assert_eq!(app.visible(), 2);
}

#[test]
fn keys_typed_while_the_store_is_read_apply_when_the_rows_arrive() {
    let f = fixture(20);
    let ctx = Context {
        store: f.store.clone(),
        home: None,
        prices: PriceTable::defaults(),
        dir: f.dir.path().to_path_buf(),
    };
    let mut app = App::open(ctx, FactSource::Chains, Options::default(), crate::now_ms());
    // The first frame does not wait for the store.
    let s = screen(&mut app);
    assert!(s.contains("My sessions"), "{s}");
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "project:bil");
    let start = std::time::Instant::now();
    while app.loading() {
        app.tick();
        assert!(start.elapsed().as_secs() < 30, "the store was never read");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let billing = app.panes[0]
        .listing
        .rows()
        .iter()
        .filter(|r| r.project == "billing-api")
        .count();
    assert_eq!(app.visible(), billing);
    assert!(screen(&mut app).contains(&format!("{billing} of 20 sessions")));
}
