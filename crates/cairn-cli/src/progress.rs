//! A progress bar on stderr for long operations (savepoints, stop,
//! disposal, and the offline tools: rewrite, reseal, fsck, gc, inspect):
//! units done (files, key groups) and bytes so far and the elapsed time.
//! Drawn only when stderr is a terminal (or `CAIRN_PROGRESS=always`), so
//! piped output stays clean; `CAIRN_PROGRESS=never` turns it off.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::format;

/// One progress bar.
pub struct Progress {
    enabled: bool,
    start: Instant,
    drawn: bool,
    what: String,
    /// When the bar was last drawn (redraws are at most every `REDRAW`).
    last: Option<Instant>,
}

/// How often a bar fed by many small steps is redrawn.
const REDRAW: Duration = Duration::from_millis(100);

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
    render_units(what, done, total, "files", "waiting for the tasks", bytes, elapsed_ms)
}

/// [`render`] counting `unit`s, saying `empty` while the total is unknown.
pub fn render_units(what: &str, done: u64, total: u64, unit: &str, empty: &str, bytes: u64, elapsed_ms: u64) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as usize) * WIDTH) / total as usize
    };
    let mut bar = "#".repeat(filled);
    bar.push_str(&"-".repeat(WIDTH - filled));
    let count = if total == 0 {
        empty.to_string()
    } else {
        format!("{done}/{total} {unit}")
    };
    format!(
        "{what} [{bar}] {count}  {}  {:.1}s",
        format::bytes(bytes),
        elapsed_ms as f64 / 1000.0
    )
}

impl Progress {
    pub fn new(what: &str) -> Progress {
        Self::with(what, enabled())
    }

    /// A bar drawn only if `enabled`.
    pub fn with(what: &str, enabled: bool) -> Progress {
        Progress {
            enabled,
            start: Instant::now(),
            drawn: false,
            what: what.to_string(),
            last: None,
        }
    }

    /// Redraws the bar of offline work (`what` may change between phases),
    /// at most every 100 ms unless the work is complete.
    pub fn update_units(&mut self, what: &str, done: u64, total: u64, unit: &str, bytes: u64) {
        if !self.enabled {
            return;
        }
        let complete = total > 0 && done >= total;
        if what != self.what {
            self.finish();
            self.what = what.to_string();
            self.start = Instant::now();
        } else if !complete && self.last.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last = Some(Instant::now());
        let line = render_units(
            &self.what,
            done,
            total,
            unit,
            "starting",
            bytes,
            self.start.elapsed().as_millis() as u64,
        );
        eprint!("\r{line}\x1b[K");
        let _ = std::io::stderr().flush();
        self.drawn = true;
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
        assert_eq!(
            super::render_units("fsck: verifying", 1, 4, "files", "starting", 2048, 500),
            "fsck: verifying [######------------------] 1/4 files  2.0 KiB  0.5s"
        );
        assert!(super::render_units("gc", 0, 0, "files", "starting", 0, 0).contains("starting"));
    }

    #[test]
    fn a_disabled_bar_draws_nothing() {
        let mut p = super::Progress::with("x", false);
        p.update_units("x", 1, 2, "files", 10);
        assert!(!p.drawn);
    }
}
