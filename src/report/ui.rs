//! What a person sees on stderr: warnings as they happen, a progress bar on a
//! terminal, otherwise one summary line.
//!
//! Sits beside the pipeline, fed by [`crate::report`] and the tar writer.
//! stdout is reserved for machine output (`--json`); this module must never
//! write to stdout, and never print an unescaped path.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Writes a line to stderr. A closed stderr (`2>&1 | head -1`) must not
/// abort a capture, so write errors are ignored.
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Gives a running progress bar its total (from another thread).
#[derive(Clone)]
pub struct Total {
    bar: ProgressBar,
    style: ProgressStyle,
}

impl Total {
    /// Sets the estimated total: the bar and its ETA appear.
    pub fn set(&self, total: u64) {
        self.bar
            .set_length(total.max(self.bar.position() + self.bar.position() / 20));
        self.bar.set_style(self.style.clone());
    }
}

/// Verbosity and the optional progress bar.
pub struct Ui {
    verbosity: i8,
    interactive: bool,
    bar: Option<ProgressBar>,
    total: Option<Total>,
    entries: Arc<AtomicU64>,
}

impl Ui {
    /// `verbosity`: −1 quiet (errors only), 0 normal, ≥1 verbose.
    /// `interactive`: stderr is a terminal, so a progress bar may be drawn.
    pub fn new(verbosity: i8, interactive: bool) -> Ui {
        Ui {
            verbosity,
            interactive,
            bar: None,
            total: None,
            entries: Arc::new(AtomicU64::new(0)),
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprint_line(line)),
            None => eprint_line(line),
        }
    }

    /// A warning (printed unless quiet).
    pub fn warn(&self, msg: &str) {
        if self.verbosity >= 0 {
            self.print(&format!("goldcap: warning: {msg}"));
        }
    }

    /// A detail (printed with `-v`).
    pub fn info(&self, msg: &str) {
        if self.verbosity >= 1 {
            self.print(&format!("goldcap: {msg}"));
        }
    }

    /// A suggestion for a person (the next command): printed on a terminal
    /// or with `-v`, never into a log a script reads.
    pub fn hint(&self, msg: &str) {
        if self.verbosity >= 1 || (self.interactive && self.verbosity >= 0) {
            self.print(msg);
        }
    }

    /// A line that is always printed unless quiet (the summary).
    pub fn say(&self, msg: &str) {
        if self.verbosity >= 0 {
            self.print(msg);
        }
    }

    /// Starts the progress bar when interactive; `total` is the estimated
    /// number of content bytes (ETA shown only when known).
    pub fn start_progress(&mut self, total: Option<u64>, what: &str) {
        if !self.interactive || self.verbosity < 0 {
            return;
        }
        let entries = Arc::clone(&self.entries);
        let key = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", entries.load(Ordering::Relaxed));
        };
        let estimate = format!(
            "{{spinner}} {what} [{{wide_bar}}] {{bytes}}/~{{total_bytes}}, {{entries}} entries, {{binary_bytes_per_sec}}, ETA {{eta}}"
        );
        let spinner = format!(
            "{{spinner}} {what} {{bytes}}, {{entries}} entries, {{binary_bytes_per_sec}}, {{elapsed}}"
        );
        let style = |template: &str| {
            // Unwrap expectation: the templates are constants and valid.
            ProgressStyle::with_template(template)
                .expect("valid template")
                .with_key("entries", key.clone())
        };
        let (with_total, without) = (style(&estimate), style(&spinner));
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(8))
            .with_style(if total.is_some() {
                with_total.clone()
            } else {
                without
            });
        bar.enable_steady_tick(Duration::from_millis(250));
        self.total = Some(Total {
            bar: bar.clone(),
            style: with_total,
        });
        self.bar = Some(bar);
    }

    /// A bar for a transfer of a known size (an upload, a check): exact
    /// bytes against exact size, no entries.
    pub fn start_transfer(&mut self, size: u64, what: &str) {
        if !self.interactive || self.verbosity < 0 {
            return;
        }
        let template = format!(
            "{{spinner}} {what} [{{wide_bar}}] {{bytes}}/{{total_bytes}}, {{binary_bytes_per_sec}}, ETA {{eta}}"
        );
        // Unwrap expectation: the template is a constant and valid.
        let style = ProgressStyle::with_template(&template).expect("valid template");
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr_with_hz(8))
            .with_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    /// A handle another thread can give the bar its total through, once
    /// counted; `None` without a bar.
    pub fn total_handle(&self) -> Option<Total> {
        self.total.clone()
    }

    /// Content bytes read.
    pub fn add_bytes(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if bar.length().is_some_and(|len| bar.position() > len) {
                bar.set_length(bar.position() + bar.position() / 20);
            }
        }
    }

    /// One more entry archived.
    pub fn add_entry(&self) {
        if self.bar.is_some() {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes the progress bar.
    pub fn finish_progress(&mut self) {
        self.total = None;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.finish_progress();
    }
}

/// `n` and the noun, singular for one: `1 item`, `2 items`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes as a short human string (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_in_the_singular() {
        assert_eq!(count(1, "item", "items"), "1 item");
        assert_eq!(count(0, "item", "items"), "0 items");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
