//! [`Writer`]: who wrote a value, kept (sealed) with each version of a
//! secret so that `sealfs history` can say where a value came from.

use serde::{Deserialize, Serialize};

/// Who wrote a value: the way in, the uid, and the executable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Writer {
    /// The way the value came in.
    pub source: WriteSource,
    /// The uid that wrote it (the caller's, through the mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The writing process's executable, as the kernel named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// The way a value came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WriteSource {
    /// A program using the library directly.
    #[default]
    Library,
    /// The `sealfs` command line.
    Cli,
    /// The mount (`sealfs-mountd`).
    Mount,
    /// The operator console.
    Console,
}

impl WriteSource {
    /// The lowercase name shown by `sealfs history`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteSource::Library => "library",
            WriteSource::Cli => "cli",
            WriteSource::Mount => "mount",
            WriteSource::Console => "console",
        }
    }
}

impl Writer {
    /// This process, writing through `source`: its real uid and its
    /// executable.
    pub fn this_process(source: WriteSource) -> Writer {
        #[cfg(unix)]
        let uid = Some(nix::unistd::getuid().as_raw());
        #[cfg(not(unix))]
        let uid = None;
        Writer {
            source,
            uid,
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
        }
    }
}
