//! `tapes web [--bind 127.0.0.1:0] [--open]`: the views in the browser, served on this machine
//! until Ctrl-C (the server is [`tapes::views::web`]).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tapes::session::pricing::PriceTable;
use tapes::views::web::{self, Web};

#[derive(clap::Args)]
pub struct WebArgs {
    /// Where to listen. The default, loopback with a free port, keeps the page on this
    /// machine; every request must carry the token in the printed URL either way.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    open: bool,
}

pub fn run(args: WebArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let web = Arc::new(Web::new(store, prices)?);
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let listener = web::bind(args.bind).await?;
        let addr = listener.local_addr()?;
        let url = web.url(addr);
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {} — reachable from other machines; the token in the URL is all that keeps them out",
                addr.ip()
            );
        }
        // Written once and never again: a closed stdout (`tapes web | head -1`) must not stop
        // the server.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "tapes web: {url}");
            let _ = writeln!(
                out,
                "(the token in the URL is the key to this page; Ctrl-C stops the server)"
            );
            let _ = out.flush();
        }
        if args.open {
            open_browser(&url);
        }
        web::serve(web, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens `url` with the system's opener (`xdg-open`, `open`, `start`); says so when none runs.
fn open_browser(url: &str) {
    let opener: &[&str] = if cfg!(target_os = "macos") {
        &["open"]
    } else if cfg!(windows) {
        &["cmd", "/C", "start", ""]
    } else {
        &["xdg-open"]
    };
    let started = std::process::Command::new(opener[0])
        .args(&opener[1..])
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        eprintln!(
            "could not open a browser ({}: {e}); open the URL above yourself",
            opener[0]
        );
    }
}
