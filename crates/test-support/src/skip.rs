//! What a test does when a real component it needs (FUSE, gnome-keyring,
//! etcd, Chromium, TLS tools, root for a tmpfs) is missing: it fails. A
//! person who wants a partial run opts out with `SEALFS_ALLOW_SKIP=1`; the
//! test then records itself in the skip list, which `scripts/test.sh` prints
//! loudly at the end of the run.

use std::io::Write;
use std::path::PathBuf;

/// The file the skips of one run are appended to. `scripts/test.sh` empties
/// it first and prints it last; without the script it sits in the target
/// directory.
pub fn skip_list() -> PathBuf {
    match std::env::var_os("SEALFS_SKIP_LIST") {
        Some(p) => PathBuf::from(p),
        // The test binary is `<target>/<profile>/deps/<name>`; cargo's
        // scratch space for tests is `<target>/tmp`.
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("tmp")))
            .unwrap_or_else(std::env::temp_dir)
            .join("sealfs-skipped.txt"),
    }
}

/// Whether the person running the tests opted out of the real components.
pub fn skips_allowed() -> bool {
    std::env::var("SEALFS_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// `component` cannot run here. Panics (the test fails) unless skips were
/// allowed explicitly; then the calling test is added to the skip list and
/// the caller returns.
#[track_caller]
pub fn missing(component: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    assert!(
        skips_allowed(),
        "{test} needs {component}, which is not usable here: run scripts/setup.sh \
         (as root), or opt out of a full run with SEALFS_ALLOW_SKIP=1"
    );
    let line = format!("{test}: needs {component}\n");
    eprint!("SKIPPED {line}");
    let list = skip_list();
    if let Some(dir) = list.parent() {
        std::fs::create_dir_all(dir).expect("create the skip list's directory");
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&list)
        .expect("open the skip list");
    f.write_all(line.as_bytes()).expect("write the skip list");
}

/// Whether every tool in `bins` is on PATH; if not, [`missing`] decides
/// between failing and a recorded skip.
#[track_caller]
pub fn have_tools(bins: &[&str]) -> bool {
    let have = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    let missing_bins: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if missing_bins.is_empty() {
        return true;
    }
    missing(&format!("{} on PATH", missing_bins.join(", ")));
    false
}

/// Whether this process is root; if not, [`missing`] decides.
#[track_caller]
pub fn have_root(for_what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    missing(&format!("root ({for_what})"));
    false
}
