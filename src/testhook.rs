//! Pause points for tests of a live system changing under a capture.
//!
//! Beside the pipeline. A file that vanishes, shrinks or grows between being
//! listed and being read is a race on a real server; to test goldcap's
//! answer deterministically, a debug build stops at a named point for one
//! entry when `GOLDCAP_TEST_PAUSE=<point>:<root-relative path>` is set:
//! it creates the file named by `GOLDCAP_TEST_PAUSE_FILE` and waits until
//! the test removes it (at most two minutes). Points: `open` (a regular
//! file listed, not yet opened), `read` (opened and measured, body not yet
//! read) and `attrs` (anything else, before its extended attributes are
//! read).
//!
//! Some choices leave no trace in the archive (which read path a file
//! took); a debug build writes their counts as `name value` lines to the
//! file named by `GOLDCAP_TEST_COUNTS`, so a test can tell that the path it
//! means to exercise was taken.
//!
//! Release builds compile this to nothing: it must never change what a
//! user's binary does.

#[cfg(debug_assertions)]
mod imp {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    fn spec() -> &'static Option<(Vec<u8>, std::path::PathBuf)> {
        static SPEC: OnceLock<Option<(Vec<u8>, std::path::PathBuf)>> = OnceLock::new();
        SPEC.get_or_init(|| {
            use std::os::unix::ffi::OsStringExt;
            let spec = std::env::var_os("GOLDCAP_TEST_PAUSE")?.into_vec();
            let file = std::env::var_os("GOLDCAP_TEST_PAUSE_FILE")?;
            Some((spec, file.into()))
        })
    }

    /// Pauses if the test asked for `point` at `rel`.
    pub fn pause(point: &str, rel: &[u8]) {
        let Some((spec, file)) = spec() else { return };
        if *spec != [point.as_bytes(), b":", rel].concat() {
            return;
        }
        if std::fs::write(file, b"paused\n").is_err() {
            return;
        }
        let start = Instant::now();
        while file.exists() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Appends `name value` to the counts file, if a test asked for one.
    pub fn count(name: &str, value: u64) {
        use std::io::Write as _;
        let Some(path) = std::env::var_os("GOLDCAP_TEST_COUNTS") else {
            return;
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut f) = f {
            let _ = writeln!(f, "{name} {value}");
        }
    }
}

#[cfg(debug_assertions)]
pub use imp::{count, pause};

/// Pauses if the test asked for `point` at `rel` (no-op in release builds).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn pause(_point: &str, _rel: &[u8]) {}

/// Records a count for tests (no-op in release builds).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn count(_name: &str, _value: u64) {}
