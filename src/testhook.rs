//! Pause points for tests of a live system changing under a capture.
//!
//! Beside the pipeline. A file that vanishes, shrinks or grows between being
//! listed and being read is a race on a real server; to test goldcap's
//! answer deterministically, a debug build stops at a named point for one
//! entry when `GOLDCAP_TEST_PAUSE=<point>:<root-relative path>` is set:
//! it creates the file named by `GOLDCAP_TEST_PAUSE_FILE` and waits until
//! the test removes it (at most two minutes). Points: `open` (listed, not
//! yet opened) and `read` (opened and measured, body not yet read).
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
}

#[cfg(debug_assertions)]
pub use imp::pause;

/// Pauses if the test asked for `point` at `rel` (no-op in release builds).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn pause(_point: &str, _rel: &[u8]) {}
