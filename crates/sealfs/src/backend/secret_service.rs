//! Linux: sealed blobs as items of the freedesktop Secret Service
//! (gnome-keyring, KWallet), spoken to over D-Bus by the `secret-service`
//! crate with an encrypted transport session.
//!
//! Each blob is one item in the default collection with the attributes
//! `application=sealfs`, `sealfs-vault=<vault id>`, `sealfs-object=<object id>`
//! and the label "sealfs sealed secret": never a secret's name or value.
//!
//! One connection is kept open by a worker thread; every call waits for it
//! at most the configured timeout, so a keyring that wants to show an unlock
//! prompt (and never gets a display) yields a clear `Timeout` instead of a
//! hang. After a timeout the stuck worker is abandoned and the next call
//! starts a fresh one. "Not found" comes from an empty search result, never
//! from matching message text.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use secret_service::blocking::SecretService;
use secret_service::EncryptionType;

use super::{BackendContext, BackendError, BackendKind, BlobBackend, ObjectId};

const KIND: BackendKind = BackendKind::SecretService;
/// The `application` attribute of every item.
pub const APPLICATION: &str = "sealfs";
/// The label of every item.
pub const LABEL: &str = "sealfs sealed secret";
const CONTENT_TYPE: &str = "application/octet-stream";

type Job = Box<dyn FnOnce(Result<&SecretService<'static>, BackendError>) + Send>;

/// The worker's end: a connection made on first use, reused after.
fn worker(jobs: mpsc::Receiver<Job>, bus: Option<String>) {
    let mut conn: Option<SecretService<'static>> = None;
    for job in jobs {
        if conn.is_none() {
            match connect(bus.as_deref()) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        job(Ok(conn.as_ref().expect("connected above")));
    }
}

fn connect(bus: Option<&str>) -> Result<SecretService<'static>, BackendError> {
    let unavailable = |e: &dyn std::fmt::Display| BackendError::Unavailable {
        backend: KIND,
        reason: e.to_string(),
    };
    let conn = match bus {
        Some(addr) => zbus::blocking::connection::Builder::address(addr)
            .and_then(|b| b.build())
            .map_err(|e| unavailable(&e))?,
        None => zbus::blocking::Connection::session().map_err(|e| unavailable(&e))?,
    };
    SecretService::connect_with_existing(EncryptionType::Dh, conn).map_err(map_err)
}

fn map_err(e: secret_service::Error) -> BackendError {
    use secret_service::Error as E;
    match e {
        E::Locked => BackendError::Locked {
            backend: KIND,
            reason: "the collection is locked; unlock the keyring (log in, or `gnome-keyring-daemon --unlock`)".into(),
        },
        E::Prompt | E::PromptDisconnected => BackendError::Locked {
            backend: KIND,
            reason: "an unlock prompt was needed and was not answered".into(),
        },
        E::Unavailable => BackendError::Unavailable {
            backend: KIND,
            reason: "no Secret Service provider on the session bus".into(),
        },
        other => BackendError::Other {
            backend: KIND,
            message: other.to_string(),
        },
    }
}

/// The Secret Service backend, talking to the keyring through one worker
/// thread.
pub struct LinuxSecretService {
    jobs: Mutex<mpsc::Sender<Job>>,
    bus: Option<String>,
    timeout: Duration,
    vault_id: String,
}

impl LinuxSecretService {
    /// Prepares the backend; the first call connects.
    pub fn connect(ctx: &BackendContext) -> Result<Self, BackendError> {
        let bus = ctx.options.session_bus.clone();
        Ok(LinuxSecretService {
            jobs: Mutex::new(spawn_worker(bus.clone())?),
            bus,
            timeout: ctx.options.timeout,
            vault_id: ctx.vault_id.clone(),
        })
    }

    /// Runs `f` on the worker's connection, waiting at most the timeout.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SecretService<'static>) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(conn.and_then(f));
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.send(job).is_err() {
            return Err(BackendError::Other {
                backend: KIND,
                message: "the D-Bus worker thread is gone".into(),
            });
        }
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(_) => {
                // The worker is stuck (a prompt that never comes back):
                // leave it, and give later calls a fresh one.
                if let Ok(fresh) = spawn_worker(self.bus.clone()) {
                    *jobs = fresh;
                }
                Err(BackendError::Timeout {
                    backend: KIND,
                    timeout: self.timeout,
                })
            }
        }
    }

    fn attributes(&self, id: &ObjectId) -> Vec<(String, String)> {
        attributes(&self.vault_id, id)
    }
}

/// The attributes of the item holding object `id` of vault `vault_id`.
pub fn attributes(vault_id: &str, id: &ObjectId) -> Vec<(String, String)> {
    vec![
        ("application".into(), APPLICATION.into()),
        ("sealfs-vault".into(), vault_id.into()),
        ("sealfs-object".into(), id.as_str().into()),
    ]
}

fn as_map(attrs: &[(String, String)]) -> HashMap<&str, &str> {
    attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn spawn_worker(bus: Option<String>) -> Result<mpsc::Sender<Job>, BackendError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("sealfs-dbus".into())
        .spawn(move || worker(rx, bus))
        .map_err(|source| BackendError::Io {
            backend: KIND,
            op: "starting the D-Bus worker",
            source,
        })?;
    Ok(tx)
}

impl BlobBackend for LinuxSecretService {
    fn kind(&self) -> BackendKind {
        KIND
    }

    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        let attrs = self.attributes(id);
        let blob = blob.to_vec();
        self.call(move |ss| {
            let collection = ss.get_default_collection().map_err(map_err)?;
            if collection.is_locked().map_err(map_err)? {
                return Err(map_err(secret_service::Error::Locked));
            }
            collection
                .create_item(LABEL, as_map(&attrs), &blob, true, CONTENT_TYPE)
                .map(drop)
                .map_err(map_err)
        })
    }

    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        let attrs = self.attributes(id);
        let missing = id.clone();
        self.call(move |ss| {
            let found = ss.search_items(as_map(&attrs)).map_err(map_err)?;
            match (found.unlocked.first(), found.locked.is_empty()) {
                (Some(item), _) => item.get_secret().map_err(map_err),
                (None, false) => Err(map_err(secret_service::Error::Locked)),
                (None, true) => Err(BackendError::NotFound(missing)),
            }
        })
    }

    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
        let attrs = self.attributes(id);
        self.call(move |ss| {
            let found = ss.search_items(as_map(&attrs)).map_err(map_err)?;
            if !found.locked.is_empty() {
                return Err(map_err(secret_service::Error::Locked));
            }
            let any = !found.unlocked.is_empty();
            for item in &found.unlocked {
                item.delete().map_err(map_err)?;
            }
            Ok(any)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_name_the_product_vault_and_object_only() {
        let id = ObjectId::parse(&"ab".repeat(32)).unwrap();
        let attrs = attributes("v1", &id);
        assert_eq!(attrs.len(), 3);
        assert!(attrs
            .iter()
            .any(|(k, v)| k == "sealfs-object" && v == id.as_str()));
        assert!(!LABEL.contains('/'));
    }
}
