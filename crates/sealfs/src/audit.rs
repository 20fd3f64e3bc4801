//! The audit log: one JSON object per line, appended for every access
//! through the mount (and every CLI operation), never holding a value.
//!
//! ```json
//! {"time":"2026-11-28T16:00:00.123Z","source":"mount","op":"open","ref":"global/k",
//!  "uid":1000,"gid":1000,"pid":4242,"exe":"/usr/bin/cat","outcome":"ok"}
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil::PrivateDir;

/// The file name of the default audit log.
pub const AUDIT_FILE: &str = "audit.log";

/// Where a root daemon logs by default: outside every vault directory, in a
/// root-owned 0700 directory (the systemd unit's `LogsDirectory=sealfs`).
pub const SYSTEM_AUDIT_LOG: &str = "/var/log/sealfs/audit.log";

/// The default audit log of the vault in `vault_dir`, for the CLI and the
/// console: `audit.log` beside the vault directory, a sibling of it like the
/// default `identity/` (`<vault-dir>/../audit.log`, computed lexically), so
/// that nothing in the vault directory names refs, uids or programs.
pub fn default_path(vault_dir: &Path) -> PathBuf {
    match vault_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(AUDIT_FILE),
        Some(_) => PathBuf::from(AUDIT_FILE),
        None => vault_dir.join("..").join(AUDIT_FILE),
    }
}

/// The default audit log of `sealfs-mountd`: [`SYSTEM_AUDIT_LOG`] when it
/// runs as root (effective uid 0), else the CLI's [`default_path`].
pub fn daemon_default_path(vault_dir: &Path) -> PathBuf {
    #[cfg(unix)]
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(SYSTEM_AUDIT_LOG);
    }
    default_path(vault_dir)
}

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's group id.
    pub gid: u32,
    /// The caller's process id.
    pub pid: u32,
}

impl Caller {
    /// This process (uid and gid are 0 where the OS has none).
    pub fn current() -> Self {
        #[cfg(unix)]
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        #[cfg(not(unix))]
        let (uid, gid) = (0, 0);
        Caller {
            uid,
            gid,
            pid: std::process::id(),
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `mount`, `cli`, `console`, or `audit` (the log's own rotation).
    pub source: String,
    /// open, consume, write, create, delete, rename, mkdir, rmdir, lookup, get, set, ...
    pub op: String,
    /// The ref, or a path under the mount when it is not a valid ref.
    #[serde(rename = "ref")]
    pub target: String,
    /// Where a rename moved the target to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to: Option<String>,
    /// The caller's user id.
    pub uid: u32,
    /// The caller's group id.
    pub gid: u32,
    /// The caller's process id.
    pub pid: u32,
    /// The caller's executable, if it could be read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
    /// `ok`, `denied`, or `error`.
    pub outcome: String,
    /// Why it was denied or failed (an errno name or a message without values).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// On a record that folds repeats: how many identical denials came
    /// within [`FOLD_WINDOW`] of the first (which was written on its own,
    /// just before); `time` and `pid` are the last one's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repeated: Option<u64>,
}

impl Event {
    /// A successful `op` on `target` by `caller`, stamped now.
    pub fn new(source: &str, op: &str, target: impl Into<String>, caller: Caller) -> Self {
        Event {
            time: crate::clock::rfc3339(SystemTime::now(), true),
            source: source.into(),
            op: op.into(),
            target: target.into(),
            to: None,
            uid: caller.uid,
            gid: caller.gid,
            pid: caller.pid,
            exe: exe_of(caller.pid),
            outcome: "ok".into(),
            detail: None,
            repeated: None,
        }
    }

    /// Whether `other` is the same denial (all but time and pid).
    fn same_denial(&self, other: &Event) -> bool {
        self.outcome == "denied"
            && (
                &self.source,
                &self.op,
                &self.target,
                &self.to,
                &self.exe,
                &self.detail,
            ) == (
                &other.source,
                &other.op,
                &other.target,
                &other.to,
                &other.exe,
                &other.detail,
            )
            && (self.uid, self.gid, &self.outcome) == (other.uid, other.gid, &other.outcome)
    }

    /// Sets where a rename moved the target to.
    pub fn to(mut self, to: impl Into<String>) -> Self {
        self.to = Some(to.into());
        self
    }

    /// Marks the event denied, with why.
    pub fn denied(mut self, why: impl Into<String>) -> Self {
        self.outcome = "denied".into();
        self.detail = Some(why.into());
        self
    }

    /// Marks the event failed, with why.
    pub fn failed(mut self, why: impl Into<String>) -> Self {
        self.outcome = "error".into();
        self.detail = Some(why.into());
        self
    }

    /// One line for a terminal. Every field is [`escaped`]: a name or an
    /// executable cannot end the line, forge another, or move the cursor.
    pub fn render(&self) -> String {
        let e = escaped;
        let mut s = format!(
            "{}  {:<6} {:<8} {}",
            e(&self.time),
            e(&self.source),
            e(&self.op),
            e(&self.target)
        );
        if let Some(to) = &self.to {
            s.push_str(&format!(" -> {}", e(to)));
        }
        s.push_str(&format!(
            "  uid={} gid={} pid={}",
            self.uid, self.gid, self.pid
        ));
        if let Some(exe) = &self.exe {
            s.push_str(&format!(" exe={}", e(exe)));
        }
        s.push_str(&format!("  {}", e(&self.outcome)));
        if let Some(d) = &self.detail {
            s.push_str(&format!(" ({})", e(d)));
        }
        if let Some(n) = self.repeated {
            s.push_str(&format!("  x{n} more"));
        }
        s
    }
}

/// `text` with control characters, bidirectional overrides and
/// zero-width characters written as `\xNN` / `\u{NNNN}`, and `\` as `\\`,
/// so it prints as one inert line.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}') =>
            {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The executable of process `pid`, if it can be read.
pub fn exe_of(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Identical denials within this long of the first are folded into one
/// record with a count (nothing is dropped).
pub const FOLD_WINDOW: Duration = Duration::from_secs(1);

/// An append-only audit log file (0600), optionally rotated at a size.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// [`FOLD_WINDOW`]; tests set their own.
    fold_window: Duration,
}

struct Inner {
    dir: PrivateDir,
    name: std::ffi::OsString,
    file: File,
    /// Bytes in the current file (for rotation).
    size: u64,
    rotate: Option<Rotation>,
    fold: Option<Fold>,
}

#[derive(Debug, Clone, Copy)]
struct Rotation {
    max_size: u64,
    keep: usize,
}

/// The last denial written, and the identical ones that came after it.
struct Fold {
    first: Event,
    since: Instant,
    repeats: Option<Event>,
    count: u64,
}

impl AuditLog {
    /// Opens (creating it 0600) the log at `path`, in a directory owned by
    /// this uid or root. See [`AuditLog::open_checked`].
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_checked(path, false)
    }

    /// Opens the log at `path` for appending. Its directory is created 0700
    /// if missing, then opened once and checked (not a symlink; owned by
    /// this uid or root, or any uid with `allow_foreign_owner`; not
    /// writable by group or others); the file is opened relative to it with
    /// O_NOFOLLOW|O_APPEND|O_CREAT, 0600, and must be a regular file with
    /// one link. A symlinked log is refused, never followed.
    pub fn open_checked(path: &Path, allow_foreign_owner: bool) -> io::Result<Self> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            )
        })?;
        let dir = PrivateDir::create(crate::fsutil::parent_dir(path), allow_foreign_owner)?;
        let file = dir.open_append(name)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_owned(),
            fold_window: FOLD_WINDOW,
            inner: Mutex::new(Inner {
                dir,
                name: name.to_owned(),
                file,
                size,
                rotate: None,
                fold: None,
            }),
        })
    }

    /// Rotates the log when a record would take it past `max_size` bytes:
    /// `audit.log` becomes `audit.log.1` (`.1` becomes `.2`, ... up to
    /// `.keep`, the oldest deleted), and the new file starts with a
    /// `rotate` record. For the one process that owns the log (the daemon).
    pub fn with_rotation(self, max_size: u64, keep: usize) -> Self {
        self.lock().rotate = Some(Rotation {
            max_size: max_size.max(1),
            keep,
        });
        self
    }

    /// The path the log was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Folds within `window` instead of [`FOLD_WINDOW`] (tests, where a
    /// loaded machine must not decide the outcome).
    #[doc(hidden)]
    pub fn with_fold_window(mut self, window: Duration) -> Self {
        self.fold_window = window;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one event as one `write` (O_APPEND keeps lines whole).
    /// A denial identical to the previous one within [`FOLD_WINDOW`] is
    /// counted instead, and written as one folded record when the window
    /// ends or another record comes.
    pub fn append(&self, event: &Event) -> io::Result<()> {
        let mut inner = self.lock();
        let now = Instant::now();
        if let Some(fold) = &mut inner.fold {
            if now.duration_since(fold.since) < self.fold_window && fold.first.same_denial(event) {
                fold.count += 1;
                fold.repeats = Some(event.clone());
                return Ok(());
            }
        }
        inner.flush_fold()?;
        inner.write(event, &self.path)?;
        if event.outcome == "denied" {
            inner.fold = Some(Fold {
                first: event.clone(),
                since: now,
                repeats: None,
                count: 0,
            });
        }
        Ok(())
    }

    /// Writes the folded repeats of a denial whose window has ended (the
    /// daemon calls this a few times a second, so a count never waits long).
    pub fn tick(&self) {
        let mut inner = self.lock();
        let ended = inner
            .fold
            .as_ref()
            .is_some_and(|f| f.since.elapsed() >= self.fold_window);
        if ended {
            if let Err(e) = inner.flush_fold() {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot append to the audit log");
            }
        }
    }

    /// Appends, logging (not returning) a failure: used where the operation
    /// itself must not fail because the log could not be written.
    pub fn record(&self, event: &Event) {
        if let Err(e) = self.append(event) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot append to the audit log");
        }
    }
}

impl Inner {
    /// Writes the repeats of the folded denial, if any, and ends the fold.
    fn flush_fold(&mut self) -> io::Result<()> {
        let Some(fold) = self.fold.take() else {
            return Ok(());
        };
        if let Some(mut last) = fold.repeats {
            last.repeated = Some(fold.count);
            let path = self.dir.join(&self.name);
            self.write(&last, &path)?;
        }
        Ok(())
    }

    fn write(&mut self, event: &Event, path: &Path) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(r) = self.rotate {
            if self.size > 0 && self.size + line.len() as u64 > r.max_size {
                self.rotate_now(r, path)?;
            }
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate_now(&mut self, r: Rotation, path: &Path) -> io::Result<()> {
        let name = self.name.to_string_lossy().into_owned();
        let numbered = |n: usize| format!("{name}.{n}");
        if r.keep == 0 {
            self.dir.remove_file(&self.name)?;
        } else {
            match self.dir.remove_file(numbered(r.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..r.keep).rev() {
                match self.dir.rename(numbered(n), &self.dir, numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            self.dir.rename(&self.name, &self.dir, numbered(1))?;
        }
        self.file = self.dir.open_append(&self.name)?;
        self.size = 0;
        let mut rotated = Event::new(
            "audit",
            "rotate",
            path.display().to_string(),
            Caller::current(),
        );
        rotated.detail = Some(format!(
            "rotated at {} bytes: the previous log is {}.1, {} kept",
            r.max_size, name, r.keep
        ));
        let mut line = serde_json::to_vec(&rotated).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.lock().flush_fold();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_line_cannot_forge_a_line_or_move_the_cursor() {
        let mut e = Event::new(
            "mount",
            "create",
            "global/evil\r2026-01-01  cli    get      global/x\x1b[2J\u{202e}",
            Caller {
                uid: 1,
                gid: 1,
                pid: 1,
            },
        );
        e.exe = Some("/tmp/a\nb\\x0a".into());
        let line = e.render();
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line:?}"
        );
        assert!(line.contains("global/evil\\x0d2026"), "{line}");
        assert!(line.contains("\\x1b[2J\\u{202e}"), "{line}");
        // A literal backslash cannot pass for an escape.
        assert!(line.contains("exe=/tmp/a\\x0ab\\\\x0a"), "{line}");
    }

    /// A denial from a pid no process can have (above any pid_max): the
    /// event's `exe` is read from `/proc/<pid>`, and a real process there
    /// would make two events differ by the machine's process table.
    fn denial(uid: u32, pid: u32) -> Event {
        let pid = u32::MAX - pid;
        Event::new("mount", "open", "global/k", Caller { uid, gid: uid, pid }).denied("ENOENT")
    }

    fn lines(path: &Path) -> Vec<Event> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn identical_denials_fold_into_one_counted_record_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // A window no run can outlast: the fold, not the clock, is tested.
        let log = AuditLog::open(&path)
            .unwrap()
            .with_fold_window(Duration::from_secs(3600));
        for pid in 0..1000 {
            log.record(&denial(1001, pid));
        }
        // Another uid's denial is its own record, and ends the fold.
        log.record(&denial(1002, 1));
        log.record(&denial(1001, 5000));
        log.record(&Event::new(
            "mount",
            "open",
            "global/k",
            Caller {
                uid: 1001,
                gid: 1001,
                pid: 1,
            },
        ));
        drop(log);
        let got = lines(&path);
        let shape: Vec<_> = got
            .iter()
            .map(|e| (e.uid, e.outcome.as_str(), e.repeated))
            .collect();
        assert_eq!(
            shape,
            [
                (1001, "denied", None),
                (1001, "denied", Some(999)),
                (1002, "denied", None),
                (1001, "denied", None),
                (1001, "ok", None),
            ]
        );
        assert_eq!(
            got[1].pid,
            u32::MAX - 999,
            "the folded record is the last one's"
        );
        // Counted: 1 + 999 + 1 + 1 denials by the two uids, as recorded.
        let denials: u64 = got
            .iter()
            .filter(|e| e.outcome == "denied")
            .map(|e| e.repeated.unwrap_or(1))
            .sum();
        assert_eq!(denials, 1 + 999 + 1 + 1);

        // When the window ends, `tick` writes the count without waiting
        // for another record.
        let path = dir.path().join("ticked.log");
        let log = AuditLog::open(&path)
            .unwrap()
            .with_fold_window(Duration::from_millis(50));
        for pid in 0..3 {
            log.record(&denial(1001, pid));
        }
        log.tick();
        assert_eq!(
            lines(&path).len(),
            1,
            "inside the window nothing more is written"
        );
        std::thread::sleep(Duration::from_millis(100));
        log.tick();
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].repeated, Some(2));
        drop(log);
        assert_eq!(lines(&path).len(), 2, "written once");
    }

    #[test]
    fn the_log_rotates_at_its_size_keeping_n_files_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap().with_rotation(2000, 2);
        for i in 0..100 {
            // Distinct targets: nothing folds.
            let e = Event::new(
                "mount",
                "open",
                format!("global/k{i}"),
                Caller {
                    uid: 1,
                    gid: 1,
                    pid: 1,
                },
            );
            log.record(&e);
        }
        drop(log);
        for name in ["audit.log", "audit.log.1", "audit.log.2"] {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 2000, "{name}: {len}");
        }
        assert!(!dir.path().join("audit.log.3").exists());
        let current = lines(&path);
        assert_eq!(current[0].op, "rotate");
        assert_eq!(current.last().unwrap().target, "global/k99");
        let previous = lines(&dir.path().join("audit.log.1"));
        assert_eq!(previous[0].op, "rotate");
        // No record is cut or lost across the boundary.
        let last_prev: usize = previous.last().unwrap().target[8..].parse().unwrap();
        let first_cur: usize = current[1].target[8..].parse().unwrap();
        assert_eq!(first_cur, last_prev + 1);
    }

    #[test]
    fn the_default_log_is_outside_the_vault_directory() {
        assert_eq!(
            default_path(Path::new("/home/a/.local/state/sealfs/vault")),
            Path::new("/home/a/.local/state/sealfs/audit.log")
        );
        assert_eq!(default_path(Path::new("vault")), Path::new("audit.log"));
        assert_eq!(default_path(Path::new("/")), Path::new("/../audit.log"));
        let daemon = daemon_default_path(Path::new("/srv/vault"));
        #[cfg(unix)]
        if nix::unistd::geteuid().is_root() {
            assert_eq!(daemon, Path::new(SYSTEM_AUDIT_LOG));
            return;
        }
        assert_eq!(daemon, Path::new("/srv/audit.log"));
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        let caller = Caller {
            uid: 1,
            gid: 2,
            pid: std::process::id(),
        };
        log.append(&Event::new("mount", "open", "global/k", caller))
            .unwrap();
        log.append(&Event::new("mount", "open", "global/x", caller).denied("EACCES"))
            .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].outcome, "denied");
        assert!(events[0].exe.is_some());
        assert!(events[1].render().contains("denied (EACCES)"));
    }
}
