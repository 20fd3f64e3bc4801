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

use super::{BackendError, BackendKind, ObjectId};

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

/// The keychain backend (its `BlobBackend` impl is macOS only; the calls
/// to `security` below are plain code, run on every platform by the tests
/// against a stand-in program that records what it was given).
#[cfg(any(target_os = "macos", all(test, unix)))]
pub struct MacosKeychain {
    service: String,
    timeout: std::time::Duration,
    program: std::path::PathBuf,
}

#[cfg(any(target_os = "macos", all(test, unix)))]
impl MacosKeychain {
    /// The keychain items of the vault in `ctx`, through `/usr/bin/security`.
    pub fn new(ctx: &super::BackendContext) -> Self {
        MacosKeychain {
            service: service(&ctx.vault_id),
            timeout: ctx.options.timeout,
            program: "/usr/bin/security".into(),
        }
    }

    /// Runs `security` with `stdin`, killed after the timeout.
    fn security(
        &self,
        args: &[String],
        stdin: &[u8],
    ) -> Result<(Option<i32>, Vec<u8>), BackendError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let io = |op: &'static str| {
            move |source| BackendError::Io {
                backend: KIND,
                op,
                source,
            }
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("running security"))?;
        let _ = child.stdin.take().expect("piped").write_all(stdin);
        let deadline = Instant::now() + self.timeout;
        loop {
            if child
                .try_wait()
                .map_err(io("waiting for security"))?
                .is_some()
            {
                let out = child.wait_with_output().map_err(io("reading security"))?;
                return Ok((out.status.code(), out.stdout));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Timeout {
                    backend: KIND,
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn put(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        let cmd = add_command(&self.service, id, blob);
        let (code, _) = self.security(&["-i".to_owned()], cmd.as_bytes())?;
        status_error(code, id, "add").map_or(Ok(()), Err)
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        let (code, out) = self.security(&find_args(&self.service, id), b"")?;
        if let Some(e) = status_error(code, id, "find") {
            return Err(e);
        }
        decode_password(&out)
    }

    fn delete(&self, id: &ObjectId) -> Result<bool, BackendError> {
        let (code, _) = self.security(&delete_args(&self.service, id), b"")?;
        match status_error(code, id, "delete") {
            None => Ok(true),
            Some(BackendError::NotFound(_)) => Ok(false),
            Some(e) => Err(e),
        }
    }
}

#[cfg(target_os = "macos")]
impl crate::backend::BlobBackend for MacosKeychain {
    fn kind(&self) -> BackendKind {
        KIND
    }

    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        self.put(id, blob)
    }

    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        self.get(id)
    }

    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
        self.delete(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ObjectId {
        ObjectId::parse(&"0f".repeat(32)).unwrap()
    }

    /// The real put/get/delete code runs a stand-in `security` that keeps
    /// the item in a file and records every argv and stdin it was given:
    /// the blob (in base64, as the keychain stores it) reaches stdin and
    /// never an argument, and the round trip gives the blob back.
    #[cfg(unix)]
    #[test]
    fn the_blob_travels_on_stdin_never_in_arguments() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("security");
        std::fs::write(
            &fake,
            r#"#!/bin/sh
here=$(dirname "$0")
printf '%s\n' "$*" >>"$here/argv"
input=$(cat)
printf '%s\n' "$input" >>"$here/stdin"
case "$1" in
  -i) printf '%s' "$input" | sed 's/.*-w "\([^"]*\)".*/\1/' >"$here/item" ;;
  find-generic-password) [ -f "$here/item" ] || exit 44; cat "$here/item"; echo ;;
  delete-generic-password) [ -f "$here/item" ] || exit 44; rm "$here/item" ;;
  *) exit 1 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o700)).unwrap();
        let keychain = MacosKeychain {
            service: service("abcd"),
            timeout: std::time::Duration::from_secs(10),
            program: fake,
        };
        let blob = b"\x00sealed blob\xffbytes of the secret";
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        assert!(matches!(
            keychain.get(&id()),
            Err(BackendError::NotFound(_))
        ));
        keychain.put(&id(), blob).unwrap();
        assert_eq!(keychain.get(&id()).unwrap(), blob);
        assert!(keychain.delete(&id()).unwrap());
        assert!(!keychain.delete(&id()).unwrap());
        let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
        let stdin = std::fs::read_to_string(dir.path().join("stdin")).unwrap();
        assert_eq!(argv.lines().count(), 5, "{argv}");
        assert!(!argv.contains(&b64), "the blob reached argv: {argv}");
        assert!(
            argv.contains("sealfs:abcd") && argv.contains(id().as_str()),
            "{argv}"
        );
        assert!(
            stdin
                .lines()
                .any(|l| l.starts_with("add-generic-password -U ") && l.contains(&b64)),
            "the blob never reached stdin: {stdin}"
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
