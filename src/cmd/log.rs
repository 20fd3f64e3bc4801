//! `audit-log`: the audit log, readably or as raw JSON lines, optionally
//! following it across rotations.

use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use sealfs::audit;
use sealfs::cli_common::VaultArgs;

use crate::output::{write_stdout, Status};

pub(super) fn audit_log(v: &VaultArgs, follow: bool, json: bool) -> Result<Status> {
    use std::io::{BufRead, Seek};
    let path = v.audit_path()?;
    let file = match sealfs::open_read_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !follow => return Ok(Status::Done),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the audit log {}", path.display()))
        }
    };
    let mut reader = io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .context("cannot read the audit log")?;
        if n == 0 || !line.ends_with('\n') {
            if !follow {
                return Ok(Status::Done);
            }
            // A partial line is re-read whole once its writer finishes it.
            reader.seek_relative(-(n as i64))?;
            // Rotated (the path names another file now): the old file is
            // read to its end (this EOF), then the new one from its start.
            if n == 0 && rotated(reader.get_ref(), &path) {
                match sealfs::open_read_nofollow(&path) {
                    Ok(f) => {
                        reader = io::BufReader::new(f);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("cannot open the audit log {}", path.display())
                        })
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        let out = if json {
            line.clone()
        } else {
            match serde_json::from_str::<audit::Event>(line.trim_end()) {
                Ok(e) => format!("{}\n", e.render()),
                Err(_) => format!("(unreadable line) {}\n", audit::escaped(line.trim_end())),
            }
        };
        write_stdout(out.as_bytes())?;
        let _ = reader.stream_position();
    }
}

/// Whether `path` names another file than `open` (the log was rotated).
fn rotated(open: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (open.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (open, path);
        false
    }
}
