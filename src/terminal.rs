//! Asking the person at the terminal for a secret (a passphrase), without echo.
//!
//! Reads from `/dev/tty`, not stdin, so a command whose stdin is a pipe can still ask; when
//! there is no terminal the caller says how to pass the secret instead (SPEC §5.1).

use std::io::{BufRead, Write};

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("no terminal to ask for a passphrase ({0}); set TAPES_PASSPHRASE instead")]
    NoTerminal(std::io::Error),
    #[error("reading the passphrase from the terminal failed: {0}")]
    Io(std::io::Error),
}

/// Prints `prompt` on the terminal and reads one line with echo off.
pub fn read_hidden(prompt: &str) -> Result<String, TerminalError> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(TerminalError::NoTerminal)?;
    let mut out = &tty;
    out.write_all(prompt.as_bytes())
        .map_err(TerminalError::Io)?;
    out.flush().map_err(TerminalError::Io)?;
    let restore = EchoOff::new(&tty);
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    drop(restore);
    let _ = out.write_all(b"\n");
    read.map_err(TerminalError::Io)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns the terminal's echo off until dropped (a no-op where that is not possible).
struct EchoOff {
    #[cfg(unix)]
    saved: Option<(std::os::fd::RawFd, libc::termios)>,
}

impl EchoOff {
    fn new(tty: &std::fs::File) -> EchoOff {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fd = tty.as_raw_fd();
            // SAFETY: tcgetattr/tcsetattr on an open descriptor with a zeroed termios that
            // tcgetattr fills; a failure leaves the terminal as it was.
            unsafe {
                let mut term: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(fd, &mut term) != 0 {
                    return EchoOff { saved: None };
                }
                let saved = term;
                term.c_lflag &= !libc::ECHO;
                term.c_lflag |= libc::ECHONL;
                if libc::tcsetattr(fd, libc::TCSANOW, &term) != 0 {
                    return EchoOff { saved: None };
                }
                EchoOff {
                    saved: Some((fd, saved)),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tty;
            EchoOff {}
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some((fd, term)) = self.saved {
            // SAFETY: restores the attributes read in `new` on the same open descriptor.
            unsafe {
                libc::tcsetattr(fd, libc::TCSANOW, &term);
            }
        }
    }
}
