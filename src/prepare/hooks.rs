//! Hooks: the user's finishing work, run in the root before it is read
//! (capture), or in a target once an artifact is applied (`goldcap apply
//! --hook`, through [`run_then`]).
//!
//! The step before the pipeline, for gold builds: `--hook PATH` names an
//! executable, a directory of them (run in name order, as
//! diskimage-builder's phase directories) or a built-in (`builtin:NAME`,
//! [`BUILTINS`]). For a chroot each hook runs *inside* it: a child process
//! enters a mount namespace of its own, bind-mounts the host's `/proc`,
//! `/sys` and `/dev` (with `/dev/pts`) onto the root's, chroots and executes
//! the hook through its descriptor (`/proc/self/fd/N`), so the hook needs no
//! copy in the root. The mounts exist only in that namespace: the host's
//! mount table never shows them, and they are gone when the hook and
//! everything it started have exited — after a failure or a signal too.
//! For a live root (`/`) hooks change a running server, so they run on the
//! host only with `--live-hooks`.
//!
//! Hooks get the capture's names in `GOLDCAP_*` variables, never the upload
//! credentials (`RS_TOKEN`, `RS_KEY`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN` are removed). A hook that fails stops the capture
//! before anything is read. This module runs only what the user named; it
//! must never leave a mount behind on the host.

use crate::report::error::{Error, Result};
use crate::signals::Cancel;
use serde::Serialize;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Built-in hooks: name, what it does, the script (`manifests/hooks/`).
pub const BUILTINS: &[(&str, &str, &str)] = &[
    (
        "package-cache",
        "the package manager's own clean (apt, dnf/yum, zypper, apk, pacman)",
        include_str!("../../manifests/hooks/package-cache.sh"),
    ),
    (
        "policy-rc.d",
        "remove the /usr/sbin/policy-rc.d a builder left, which stops services starting on clones",
        include_str!("../../manifests/hooks/policy-rc.d.sh"),
    ),
    (
        "initramfs",
        "rebuild every initramfs, generic (update-initramfs, dracut --no-hostonly)",
        include_str!("../../manifests/hooks/initramfs.sh"),
    ),
];

/// Variables a hook never sees: credentials for the upload.
const SECRET_VARS: &[&str] = &[
    "RS_TOKEN",
    "RS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// The largest hook script read into memory (for its digest).
const HOOK_LIMIT: u64 = 64 << 20;

/// Lines of a hook's output kept for the error message.
const TAIL_LINES: usize = 20;

/// One hook to run.
#[derive(Debug, Clone)]
pub struct Hook {
    /// How it is shown: the file name, or `builtin:NAME`.
    pub name: String,
    pub source: HookSource,
}

#[derive(Debug, Clone)]
pub enum HookSource {
    /// An executable on the host.
    File(PathBuf),
    /// A built-in script.
    Builtin(&'static str),
}

/// What a hook run left for the MANIFEST.
#[derive(Debug, Clone, Serialize)]
pub struct HookRun {
    pub name: String,
    /// The host path, or `builtin:NAME`.
    pub source: String,
    /// sha256 of the executable.
    pub sha256: String,
    /// Where it ran: `chroot` or `host`.
    pub ran_in: &'static str,
    pub seconds: f64,
}

/// Expands one `--hook` value: `builtin:NAME`, an executable file, or a
/// directory whose executables run in name order (other files are
/// skipped, as diskimage-builder does).
pub fn expand(spec: &Path) -> std::result::Result<Vec<Hook>, String> {
    let text = spec.as_os_str().as_bytes();
    if let Some(name) = text.strip_prefix(b"builtin:") {
        let name = String::from_utf8_lossy(name);
        return match BUILTINS.iter().find(|(n, _, _)| *n == name) {
            Some((n, _, script)) => Ok(vec![Hook {
                name: format!("builtin:{n}"),
                source: HookSource::Builtin(script),
            }]),
            None => Err(format!(
                "unknown built-in hook {name:?} (built-ins: {})",
                BUILTINS
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
    }
    let meta = std::fs::metadata(spec).map_err(|e| crate::util::io_reason(&e))?;
    let executable = |m: &std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    if meta.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(spec)
            .map_err(|e| crate::util::io_reason(&e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| executable(&m)))
            .collect();
        names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        return Ok(names
            .into_iter()
            .map(|p| Hook {
                name: p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                source: HookSource::File(p),
            })
            .collect());
    }
    if !executable(&meta) {
        return Err("not an executable file or a directory".into());
    }
    Ok(vec![Hook {
        name: spec.file_name().map_or_else(
            || spec.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        source: HookSource::File(spec.to_path_buf()),
    }])
}

/// Where hooks run.
pub enum Place<'a> {
    /// Inside this root directory (a chroot), with /proc, /sys and /dev.
    Chroot(&'a Path),
    /// On the host itself (a live root).
    Host,
}

/// Runs `hook` with `vars` added to the environment; `line` gets each line
/// of its output (stdout and stderr) as it comes.
pub fn run(
    hook: &Hook,
    place: &Place<'_>,
    vars: &[(String, String)],
    cancel: &Cancel,
    line: &mut dyn FnMut(&str),
) -> Result<HookRun> {
    run_then(hook, place, vars, cancel, line, "nothing was captured")
}

/// [`run`], where a failure says `consequence` (what the caller did not
/// do because of it).
pub fn run_then(
    hook: &Hook,
    place: &Place<'_>,
    vars: &[(String, String)],
    cancel: &Cancel,
    line: &mut dyn FnMut(&str),
    consequence: &str,
) -> Result<HookRun> {
    let (fd, sha256) = executable_fd(hook)?;
    let (reader, writer) = std::io::pipe().map_err(|e| hook_error(hook, "no pipe", &e))?;
    let mut cmd = command(hook, &fd, writer, vars)?;
    let ran_in = enter(&mut cmd, place, fd.as_raw_fd())?;
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| hook_error(hook, "cannot start it", &e))?;
    drop(cmd);
    drop(fd);
    let (status, tail) = watch(hook, child, reader, cancel, line)?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (_, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".to_owned(),
        };
        return Err(anyhow::anyhow!(
            "hook {} {how} after {seconds:.1}s; {consequence}{}",
            hook.name,
            if tail.is_empty() {
                " (it printed nothing)".to_owned()
            } else {
                format!(". Its last output:\n  {}", tail.join("\n  "))
            }
        )
        .into());
    }
    Ok(HookRun {
        name: hook.name.clone(),
        source: match &hook.source {
            HookSource::File(p) => p.display().to_string(),
            HookSource::Builtin(_) => hook.name.clone(),
        },
        sha256,
        ran_in,
        seconds,
    })
}

/// The command that executes the hook through its descriptor, output to
/// `writer`, with `vars` added and the upload credentials removed.
fn command(
    hook: &Hook,
    fd: &OwnedFd,
    writer: std::io::PipeWriter,
    vars: &[(String, String)],
) -> Result<Command> {
    let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    cmd.arg0(&hook.name)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| hook_error(hook, "no pipe", &e))?,
        )
        .stderr(writer);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| SECRET_VARS.contains(&k)) {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// Sets up where the child goes before exec: the chroot with its mounts,
/// or the host; the descriptor `fd` stays open across exec. Where it ran.
fn enter(cmd: &mut Command, place: &Place<'_>, fd: i32) -> Result<&'static str> {
    Ok(match place {
        Place::Chroot(root) => {
            check_mount_points(root)?;
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
            let setup = ChrootSetup::new(root)?;
            // SAFETY: the closure runs in the forked child before exec and
            // makes only async-signal-safe system calls on memory prepared
            // before the fork (CStrings, integers).
            unsafe {
                cmd.pre_exec(move || {
                    keep_open(fd)?;
                    setup.enter()
                });
            }
            "chroot"
        }
        Place::Host => {
            // SAFETY: as above; one fcntl call.
            unsafe {
                cmd.pre_exec(move || keep_open(fd));
            }
            "host"
        }
    })
}

/// Passes the hook's output to `line` until it exits (or a signal stops
/// it); its exit status and last lines.
fn watch(
    hook: &Hook,
    mut child: std::process::Child,
    reader: std::io::PipeReader,
    cancel: &Cancel,
    line: &mut dyn FnMut(&str),
) -> Result<(std::process::ExitStatus, Vec<String>)> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pump = std::thread::spawn(move || {
        for l in BufReader::new(reader).split(b'\n') {
            let Ok(l) = l else { break };
            if tx.send(String::from_utf8_lossy(&l).into_owned()).is_err() {
                break;
            }
        }
    });
    let mut tail = std::collections::VecDeque::new();
    let mut keep = |l: String, line: &mut dyn FnMut(&str)| {
        line(&l);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(crate::input::clip(&l, 300));
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => keep(l, line),
            // The hook closed its output but runs on.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(sig) = cancel.signal() {
            stop(&mut child);
            return Err(Error::Interrupted(
                sig,
                format!("interrupted while the hook {} ran", hook.name),
            ));
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| hook_error(hook, "cannot wait for it", &e))?
        {
            break status;
        }
    };
    // What it printed last; a daemon it left behind may hold the pipe open,
    // so this waits only a moment for the end.
    let until = Instant::now() + Duration::from_millis(500);
    while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        keep(l, line);
    }
    if pump.is_finished() {
        let _ = pump.join();
    }
    Ok((status, tail.into_iter().collect()))
}

fn hook_error(hook: &Hook, what: &str, e: &std::io::Error) -> Error {
    anyhow::anyhow!("hook {}: {what}: {}", hook.name, crate::util::io_reason(e)).into()
}

/// The hook's executable as a descriptor to exec through, and its sha256:
/// the file, opened once (it cannot be swapped between check and run), or
/// a built-in's script in a memfd.
fn executable_fd(hook: &Hook) -> Result<(OwnedFd, String)> {
    let bytes = match &hook.source {
        HookSource::File(p) => {
            let mut f = std::fs::File::open(p)
                .map_err(|e| hook_error(hook, &format!("cannot open {}", p.display()), &e))?;
            let mut v = Vec::new();
            (&mut f)
                .take(HOOK_LIMIT)
                .read_to_end(&mut v)
                .map_err(|e| hook_error(hook, "cannot read it", &e))?;
            let digest = sha256_hex(&v);
            return Ok((OwnedFd::from(f), digest));
        }
        HookSource::Builtin(script) => script.as_bytes(),
    };
    let fd = rustix::fs::memfd_create(hook.name.as_str(), rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| hook_error(hook, "no memfd", &e.into()))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)
        .map_err(|e| hook_error(hook, "cannot write its script", &e))?;
    Ok((OwnedFd::from(f), sha256_hex(bytes)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    crate::util::hex(&sha2::Sha256::digest(bytes))
}

/// Clears close-on-exec on `fd` (in the child), so the kernel can execute
/// it by its `/proc/self/fd` name and an interpreter can open it.
fn keep_open(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on an integer descriptor; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The mount points a chroot hook needs must be real directories of the
/// root (a symlink there could aim the bind mounts elsewhere).
fn check_mount_points(root: &Path) -> Result<()> {
    for d in ["proc", "sys", "dev"] {
        let p = root.join(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::usage(format!(
                    "cannot run hooks in {}: {} is not a directory",
                    root.display(),
                    p.display()
                )));
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "cannot run hooks in {}: {}: {}",
                    root.display(),
                    p.display(),
                    crate::util::io_reason(&e)
                )));
            }
        }
    }
    Ok(())
}

/// What the child does before exec for a chroot hook, prepared before the
/// fork.
struct ChrootSetup {
    root: CString,
    binds: Vec<(CString, CString)>,
}

impl ChrootSetup {
    fn new(root: &Path) -> Result<ChrootSetup> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| Error::usage(format!("{}: holds a NUL byte", p.display())))
        };
        let mut binds = Vec::new();
        for d in ["proc", "sys", "dev"] {
            binds.push((c(&Path::new("/").join(d))?, c(&root.join(d))?));
        }
        Ok(ChrootSetup {
            root: c(root)?,
            binds,
        })
    }

    /// In the child: a private mount namespace, the bind mounts, chroot.
    fn enter(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: system calls with pointers to NUL-terminated strings
        // that live as long as `self`.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            // Nothing mounted here propagates back to the host.
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for (src, dst) in &self.binds {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
            }
            if libc::chroot(self.root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

/// Asks a hook to stop after a signal, then makes sure it has.
fn stop(child: &mut std::process::Child) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_builtins_files_and_directories() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for (name, mode) in [("20-b", 0o755), ("10-a", 0o700), ("README", 0o644)] {
            std::fs::write(d.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let names: Vec<String> = expand(d).unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["10-a", "20-b"]);
        assert_eq!(expand(&d.join("20-b")).unwrap()[0].name, "20-b");
        let e = expand(&d.join("README")).unwrap_err();
        assert!(e.contains("not an executable"), "{e}");
        assert!(
            expand(&d.join("missing"))
                .unwrap_err()
                .contains("No such file")
        );
        let b = expand(Path::new("builtin:package-cache")).unwrap();
        assert_eq!(b[0].name, "builtin:package-cache");
        let e = expand(Path::new("builtin:nope")).unwrap_err();
        assert!(
            e.contains("built-ins: package-cache, policy-rc.d, initramfs"),
            "{e}"
        );
    }
}
