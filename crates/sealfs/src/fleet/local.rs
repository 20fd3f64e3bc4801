//! This host's fleet credentials (age identity, signing key, etcd user,
//! password and TLS files) and its trust pins, kept in its local vault in
//! `principal:sealfs-fleet`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::HostIdentity;
use super::trust::{HostCard, HostSigner};
use super::{EtcdTls, FleetError};
use crate::{SecretKey, SensitiveBytes, Vault, VaultError, VaultRef, VaultScope};

/// Local-vault refs of this host's fleet credentials.
pub(super) const LOCAL_SCOPE: &str = "principal:sealfs-fleet";
pub(super) const IDENTITY_KEY: &str = "age-identity";
pub(super) const SIGNING_KEY: &str = "signing-key";
/// The key of this host's etcd user name in `principal:sealfs-fleet`.
pub const ETCD_USER_KEY: &str = "etcd-user";
/// The key of this host's etcd password in `principal:sealfs-fleet`.
pub const ETCD_PASSWORD_KEY: &str = "etcd-password";

/// The local-vault ref of this host's etcd password.
pub fn password_ref() -> VaultRef {
    VaultRef::new(
        LOCAL_SCOPE.parse::<VaultScope>().expect("a valid scope"),
        SecretKey::new(ETCD_PASSWORD_KEY).expect("a valid key"),
    )
}
pub(super) const ETCD_TLS_CA_KEY: &str = "etcd-tls-ca";
pub(super) const ETCD_TLS_CERT_KEY: &str = "etcd-tls-cert";
/// The key of this host's etcd client private key in
/// `principal:sealfs-fleet`.
pub const ETCD_TLS_KEY_KEY: &str = "etcd-tls-key";

pub(super) fn local_ref(key: &str) -> VaultRef {
    VaultRef::new(
        LOCAL_SCOPE.parse().expect("a valid scope"),
        SecretKey::new(key).expect("a valid key"),
    )
}

/// This host's age identity from its local vault, created on first use.
pub fn host_identity(local: &Vault) -> Result<HostIdentity, FleetError> {
    let r = local_ref(IDENTITY_KEY);
    match local.get(&r) {
        Ok(text) => HostIdentity::parse(text.expose()),
        Err(VaultError::NotFound(_)) => {
            let id = HostIdentity::generate();
            local.put(&r, id.to_secret())?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// This host's Ed25519 signing key from its local vault, created on first
/// use.
pub(super) fn host_signer(local: &Vault) -> Result<HostSigner, FleetError> {
    let r = local_ref(SIGNING_KEY);
    match local.get(&r) {
        Ok(seed) => HostSigner::parse(seed.expose()),
        Err(VaultError::NotFound(_)) => {
            let s = HostSigner::generate();
            local.put(&r, s.to_secret())?;
            Ok(s)
        }
        Err(e) => Err(e.into()),
    }
}

/// This host's card (`age1...:<hex>`), its name in the fleet; the keys
/// behind it are created on first use.
pub fn host_card(local: &Vault) -> Result<HostCard, FleetError> {
    Ok(HostCard {
        recipient: host_identity(local)?.recipient(),
        signing_key: host_signer(local)?.public_hex(),
    })
}

/// The local-vault key of a pin: `pin-<kind>-<hash of what it is for>`
/// (the prefix and, for a scope, the scope), within the key grammar.
pub(super) fn pin_key(kind: &str, parts: &[&str]) -> String {
    let h = super::trust::hash(parts.join("\0").as_bytes());
    format!("pin-{kind}-{}", &h[..32])
}

/// A pin kept in the local vault, if any.
pub(super) fn load_pin<T: DeserializeOwned>(
    local: &Vault,
    key: &str,
) -> Result<Option<T>, FleetError> {
    match local.get(&local_ref(key)) {
        Ok(v) => serde_json::from_slice(v.expose())
            .map(Some)
            .map_err(|e| FleetError::Corrupt(format!("this host's pin {key}: {e}"))),
        Err(VaultError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Keeps a pin in the local vault.
pub(super) fn store_pin<T: Serialize>(local: &Vault, key: &str, pin: &T) -> Result<(), FleetError> {
    let bytes = serde_json::to_vec(pin).expect("a pin serialises");
    local.put(&local_ref(key), SensitiveBytes::from(bytes))?;
    Ok(())
}

/// etcd user and password kept in the local vault, if any.
pub fn stored_credentials(local: &Vault) -> Result<Option<(String, SensitiveBytes)>, FleetError> {
    let user = match local.get(&local_ref(ETCD_USER_KEY)) {
        Ok(u) => String::from_utf8_lossy(u.expose()).trim().to_owned(),
        Err(VaultError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let password = local.get(&local_ref(ETCD_PASSWORD_KEY))?;
    Ok(Some((user, password)))
}

/// Stores the etcd credentials in the local vault (never in argv).
pub fn store_credentials(
    local: &Vault,
    user: &str,
    password: SensitiveBytes,
) -> Result<(), FleetError> {
    local.put(
        &local_ref(ETCD_USER_KEY),
        SensitiveBytes::from_slice(user.as_bytes()),
    )?;
    local.put(&local_ref(ETCD_PASSWORD_KEY), password)?;
    Ok(())
}

/// The etcd user of the host `recipient` under `prefix` (made by `fleet
/// enroll --etcd-user`): `sealfs-` and 16 hex digits of a hash of the two,
/// so `fleet revoke` finds it from the signed membership alone, never from
/// a record an etcd writer could change.
pub fn host_etcd_user(prefix: &str, recipient: &str) -> String {
    let h = super::trust::hash(
        ["sealfs etcd user", prefix, recipient]
            .join("\0")
            .as_bytes(),
    );
    format!("sealfs-{}", &h[..16])
}

/// The etcd login a join token carries (`fleet enroll --etcd-user` sealed
/// it to this host), for the token's fleet under `prefix`, if it carries
/// one. Nothing is stored: `fleet join` uses it, and stores it
/// ([`store_credentials`]) once the join has verified the fleet with it.
/// Refused unless sealed to this host for that fleet and prefix, and
/// naming this host's own user there.
pub fn login_of_token(
    local: &Vault,
    token: &str,
    prefix: &str,
) -> Result<Option<(String, SensitiveBytes)>, FleetError> {
    use base64::Engine;
    let token = token.trim();
    let pin = super::trust::FleetPin::parse_token(token)?;
    let Some(sealed) = token.split(':').nth(3) else {
        return Ok(None);
    };
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| FleetError::BadJoinToken(token.chars().take(160).collect()))?;
    let me = host_identity(local)?;
    let login = me
        .open_login(&sealed, &pin.fleet_id, prefix)
        .filter(|(user, _)| *user == host_etcd_user(prefix, &me.recipient()));
    login.map(Some).ok_or_else(|| {
        FleetError::Auth(format!(
            "the etcd login in this join token is not for this host under --etcd-prefix {prefix}: \
             use the token `sealfs fleet enroll --etcd-user` printed for this host's card"
        ))
    })
}

/// etcd's CA and this host's client certificate and key, if stored.
pub fn stored_tls(local: &Vault) -> Result<Option<EtcdTls>, FleetError> {
    let ca = match local.get(&local_ref(ETCD_TLS_CA_KEY)) {
        Ok(ca) => ca.expose().to_vec(),
        Err(VaultError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let cert = local.get(&local_ref(ETCD_TLS_CERT_KEY))?.expose().to_vec();
    let key = local.get(&local_ref(ETCD_TLS_KEY_KEY))?;
    Ok(Some(EtcdTls { ca, cert, key }))
}

/// Stores etcd's CA and this host's client certificate and key in the
/// local vault; the CA is written last, so a half-stored set is never
/// used (the CA marks a set as present, and reading it needs all three).
pub fn store_tls(local: &Vault, tls: EtcdTls) -> Result<(), FleetError> {
    local.put(&local_ref(ETCD_TLS_KEY_KEY), tls.key)?;
    local.put(
        &local_ref(ETCD_TLS_CERT_KEY),
        SensitiveBytes::from(tls.cert),
    )?;
    local.put(&local_ref(ETCD_TLS_CA_KEY), SensitiveBytes::from(tls.ca))?;
    Ok(())
}
