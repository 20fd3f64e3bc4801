//! macOS: sealed blobs as generic-password items of the login keychain,
//! through the `security` command.
//!
//! Item: service `sealfs:<vault id>`, account = object id, password = the
//! blob in base64. The password never appears in an argument list: writes
//! go through `security -i`, which reads its command line from stdin. Exit
//! status 44 (`errSecItemNotFound`) is "not found"; no message text is
//! matched. The command building and the status mapping below are plain
//! functions, tested on every platform; only running `security` is macOS.

use base64::Engine;

use super::{BackendContext, BackendError, BackendKind, ObjectId};

const KIND: BackendKind = BackendKind::MacosKeychain;
/// `security` exits with this when the item does not exist.
pub const EXIT_NOT_FOUND: i32 = 44;

/// The keychain service name of a vault's items.
pub fn service(vault_id: &str) -> String {
    format!("sealfs:{vault_id}")
}

/// Arguments to print an item's password (`find-generic-password -w`).
pub fn find_args(service: &str, id: &ObjectId) -> Vec<String> {
    [
        "find-generic-password",
        "-s",
        service,
        "-a",
        id.as_str(),
        "-w",
    ]
    .map(String::from)
    .to_vec()
}

/// Arguments to delete an item.
pub fn delete_args(service: &str, id: &ObjectId) -> Vec<String> {
    ["delete-generic-password", "-s", service, "-a", id.as_str()]
        .map(String::from)
        .to_vec()
}

/// The line fed to `security -i` on stdin to add or replace (`-U`) an item.
/// Service and account are hex and `sealfs:`; the base64 alphabet needs no
/// quoting, but every word is quoted anyway.
pub fn add_command(service: &str, id: &ObjectId, blob: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!(
        "add-generic-password -U -l \"sealfs sealed secret\" -s \"{service}\" -a \"{}\" -w \"{b64}\"\n",
        id.as_str()
    )
}

/// Decodes what `find-generic-password -w` printed.
pub fn decode_password(stdout: &[u8]) -> Result<Vec<u8>, BackendError> {
    let text = std::str::from_utf8(stdout)
        .map_err(|_| other("the keychain returned a non-text password"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim_end_matches('\n'))
        .map_err(|_| other("the keychain item does not hold a sealfs blob"))
}

/// Maps the exit status of a `security` call.
pub fn status_error(code: Option<i32>, id: &ObjectId, op: &'static str) -> Option<BackendError> {
    match code {
        Some(0) => None,
        Some(EXIT_NOT_FOUND) => Some(BackendError::NotFound(id.clone())),
        Some(c) => Some(other(&format!(
            "`security` {op} failed with exit status {c}"
        ))),
        None => Some(other(&format!("`security` {op} was killed"))),
    }
}

fn other(message: &str) -> BackendError {
    BackendError::Other {
        backend: KIND,
        message: message.to_owned(),
    }
}

/// The keychain backend (its `BlobBackend` impl is macOS only).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub struct MacosKeychain {
    service: String,
    timeout: std::time::Duration,
}

impl MacosKeychain {
    pub fn new(ctx: &BackendContext) -> Self {
        MacosKeychain {
            service: service(&ctx.vault_id),
            timeout: ctx.options.timeout,
        }
    }
}

#[cfg(target_os = "macos")]
mod run {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::BlobBackend;

    /// Runs `security` with `stdin`, killed after `timeout`.
    fn security(
        args: &[String],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<(Option<i32>, Vec<u8>), BackendError> {
        let mut child = Command::new("/usr/bin/security")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BackendError::Io {
                backend: KIND,
                op: "running security",
                source,
            })?;
        let _ = child.stdin.take().expect("piped").write_all(stdin);
        let deadline = Instant::now() + timeout;
        loop {
            if child
                .try_wait()
                .map_err(|source| BackendError::Io {
                    backend: KIND,
                    op: "waiting for security",
                    source,
                })?
                .is_some()
            {
                let out = child
                    .wait_with_output()
                    .map_err(|source| BackendError::Io {
                        backend: KIND,
                        op: "reading security",
                        source,
                    })?;
                return Ok((out.status.code(), out.stdout));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Timeout {
                    backend: KIND,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    impl BlobBackend for MacosKeychain {
        fn kind(&self) -> BackendKind {
            KIND
        }

        fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
            let cmd = add_command(&self.service, id, blob);
            let (code, _) = security(&["-i".to_owned()], cmd.as_bytes(), self.timeout)?;
            status_error(code, id, "add").map_or(Ok(()), Err)
        }

        fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
            let (code, out) = security(&find_args(&self.service, id), b"", self.timeout)?;
            if let Some(e) = status_error(code, id, "find") {
                return Err(e);
            }
            decode_password(&out)
        }

        fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
            let (code, _) = security(&delete_args(&self.service, id), b"", self.timeout)?;
            match status_error(code, id, "delete") {
                None => Ok(true),
                Some(BackendError::NotFound(_)) => Ok(false),
                Some(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ObjectId {
        ObjectId::parse(&"0f".repeat(32)).unwrap()
    }

    #[test]
    fn the_blob_travels_on_stdin_never_in_arguments() {
        let blob = b"\x00sealed\xffbytes";
        let svc = service("abcd");
        for args in [find_args(&svc, &id()), delete_args(&svc, &id())] {
            assert!(args.iter().all(|a| !a.contains("c2VhbGVk")), "{args:?}");
            assert!(
                args.contains(&"sealfs:abcd".to_owned())
                    && args.contains(&id().as_str().to_owned())
            );
        }
        let line = add_command(&svc, &id(), blob);
        assert!(line.starts_with("add-generic-password -U "), "{line}");
        assert!(line.ends_with("\"\n"));
        let b64 = line
            .rsplit("-w \"")
            .next()
            .unwrap()
            .trim_end_matches("\"\n");
        assert_eq!(
            decode_password(format!("{b64}\n").as_bytes()).unwrap(),
            blob
        );
    }

    #[test]
    fn exit_status_44_is_not_found() {
        assert!(status_error(Some(0), &id(), "find").is_none());
        assert!(matches!(
            status_error(Some(EXIT_NOT_FOUND), &id(), "find"),
            Some(BackendError::NotFound(_))
        ));
        assert!(matches!(
            status_error(Some(1), &id(), "find"),
            Some(BackendError::Other { .. })
        ));
        assert!(decode_password(b"not base64!").is_err());
    }
}
