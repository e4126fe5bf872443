//! A progress bar on stderr for long operations (savepoints, stop,
//! disposal): files and bytes written so far and the elapsed time. Drawn
//! only when stderr is a terminal (or `CAIRN_PROGRESS=always`), so piped
//! output stays clean; `CAIRN_PROGRESS=never` turns it off.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::format;

/// One progress bar.
pub struct Progress {
    enabled: bool,
    start: Instant,
    drawn: bool,
    what: String,
}

/// Whether progress bars are drawn.
pub fn enabled() -> bool {
    match std::env::var("CAIRN_PROGRESS").as_deref() {
        Ok("always") => true,
        Ok("never") => false,
        _ => std::io::stderr().is_terminal(),
    }
}

const WIDTH: usize = 24;

/// The bar's text: `[#####-----] 3/6 files  1.2 MiB  2.3s`.
pub fn render(what: &str, done: u64, total: u64, bytes: u64, elapsed_ms: u64) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as usize) * WIDTH) / total as usize
    };
    let mut bar = "#".repeat(filled);
    bar.push_str(&"-".repeat(WIDTH - filled));
    let count = if total == 0 {
        "waiting for the tasks".to_string()
    } else {
        format!("{done}/{total} files")
    };
    format!(
        "{what} [{bar}] {count}  {}  {:.1}s",
        format::bytes(bytes),
        elapsed_ms as f64 / 1000.0
    )
}

impl Progress {
    pub fn new(what: &str) -> Progress {
        Progress {
            enabled: enabled(),
            start: Instant::now(),
            drawn: false,
            what: what.to_string(),
        }
    }

    /// Redraws the bar.
    pub fn update(&mut self, done: u64, total: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let line = render(&self.what, done, total, bytes, self.start.elapsed().as_millis() as u64);
        eprint!("\r{line}\x1b[K");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders() {
        assert_eq!(
            super::render("savepoint", 3, 6, 1536, 2300),
            "savepoint [############------------] 3/6 files  1.5 KiB  2.3s"
        );
        assert!(super::render("x", 0, 0, 0, 0).contains("waiting for the tasks"));
        assert!(super::render("x", 9, 6, 0, 0).contains("[########################]"));
    }
}
