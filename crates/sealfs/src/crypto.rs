//! Keys, object ids and the sealed envelope. Pure functions over bytes: no
//! files, no index. The byte format is documented in `docs/format.md`.
//!
//! From the 32-byte device identity and the vault's random id, HKDF-SHA256
//! derives three independent values, each under its own `info` label:
//! the AES-256-GCM sealing key, the HMAC-SHA256 key that turns `(scope, key,
//! version)` into object ids, and an 8-byte key id written into every envelope.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::identity::DeviceIdentity;
pub(crate) use crate::ids::KeyId;
use crate::ids::ObjectId;
use crate::scope::VaultRef;
use crate::secret::SensitiveBytes;

/// The first bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"SLFS";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
pub(crate) const ALG_AES_256_GCM: u8 = 1;
use crate::ids::KEY_ID_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// magic(4) format(1) alg(1) key id(8) record version(8) nonce(12)
pub const HEADER_LEN: usize = 4 + 1 + 1 + KEY_ID_LEN + 8 + NONCE_LEN;
/// The part of the header that is bound into the additional data.
const BOUND_HEADER_LEN: usize = HEADER_LEN - NONCE_LEN;
/// Bytes an envelope adds to the plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

const INFO_SEAL: &[u8] = b"sealfs v1 seal key";
const INFO_INDEX_SEAL: &[u8] = b"sealfs v2 index seal key";
const INFO_NAME_ID: &[u8] = b"sealfs v2 name id key";
const INFO_ANCHOR: &[u8] = b"sealfs v2 anchor key";
const INFO_OBJECT_ID: &[u8] = b"sealfs v1 object id key";
const INFO_KEY_ID: &[u8] = b"sealfs v1 key id";

/// Why an envelope did not open. Authentication failures carry no detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("blob is truncated or not a sealfs envelope")]
    Malformed,
    #[error("blob has unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedFormat(u8),
    #[error("blob uses unknown algorithm {0}")]
    UnsupportedAlgorithm(u8),
    #[error("blob was sealed under key {found}, but this vault's key is {expected}")]
    WrongKey { found: KeyId, expected: KeyId },
    #[error(
        "blob is version {found} but the slot is at version {expected} (stale or replayed blob)"
    )]
    VersionMismatch { found: u64, expected: u64 },
    #[error("authentication failed: the blob was modified or belongs to another slot")]
    Authentication,
}

/// The keys of one vault, derived from the device identity.
pub struct KeyRing {
    seal: Aes256Gcm,
    object_ids: Zeroizing<[u8; 32]>,
    key_id: KeyId,
    /// Seals index records (names and metadata) and the vault record.
    index: Aes256Gcm,
    /// Keys the lookup ids of index records (HMAC of kind and name).
    names: Zeroizing<[u8; 32]>,
    /// Authenticates the rollback anchor kept beside the identity.
    anchor: Zeroizing<[u8; 32]>,
}

impl KeyRing {
    /// `salt` is the vault's random id, so two vaults sharing an identity
    /// still have unrelated keys.
    pub fn derive(identity: &DeviceIdentity, salt: &[u8]) -> KeyRing {
        let hk = Hkdf::<Sha256>::new(Some(salt), identity.expose());
        let mut seal = Zeroizing::new([0u8; 32]);
        let mut object_ids = Zeroizing::new([0u8; 32]);
        let mut key_id = [0u8; KEY_ID_LEN];
        // `expand` fails only for outputs over 255 * 32 bytes.
        hk.expand(INFO_SEAL, seal.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(INFO_OBJECT_ID, object_ids.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(INFO_KEY_ID, &mut key_id)
            .expect("8 bytes is a valid HKDF length");
        let mut index = Zeroizing::new([0u8; 32]);
        let mut names = Zeroizing::new([0u8; 32]);
        let mut anchor = Zeroizing::new([0u8; 32]);
        for (info, out) in [
            (INFO_INDEX_SEAL, &mut index),
            (INFO_NAME_ID, &mut names),
            (INFO_ANCHOR, &mut anchor),
        ] {
            hk.expand(info, out.as_mut())
                .expect("32 bytes is a valid HKDF length");
        }
        KeyRing {
            seal: Aes256Gcm::new(seal.as_ref().into()),
            object_ids,
            key_id: KeyId(key_id),
            index: Aes256Gcm::new(index.as_ref().into()),
            names,
            anchor,
        }
    }

    /// The lookup id of an index record: HMAC-SHA256 of a one-byte kind and
    /// the record's name. Without the identity, ids cannot be tied to names.
    pub fn name_id(&self, kind: u8, name: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.names.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"sealfs name id v2");
        mac.update(&[kind]);
        mac.update(name);
        mac.finalize().into_bytes().into()
    }

    /// Seals an index record stored under lookup id `id`: nonce, then
    /// AES-256-GCM of `plaintext` with the id (and a label) as additional
    /// data, so a record moved to another id fails to open.
    pub fn seal_record(&self, id: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .index
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &record_aad(id),
                &mut out[NONCE_LEN..],
            )
            .expect("records are far below the AES-GCM limit");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a record sealed by [`KeyRing::seal_record`] for `id`.
    pub fn open_record(&self, id: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = Zeroizing::new(body.to_vec());
        self.index
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &record_aad(id),
                plain.as_mut(),
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plain)
    }

    /// HMAC-SHA256 of `data` under the anchor key.
    pub fn anchor_mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.anchor.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"sealfs anchor v2");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Checks an anchor MAC in constant time.
    pub fn verify_anchor_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.anchor.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"sealfs anchor v2");
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }

    /// The key id derived with these keys, written into every envelope.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// HMAC-SHA256 of the slot and version: a backend that sees ids cannot
    /// confirm guessed names, and every version of a slot has its own id.
    pub fn object_id(&self, r: &VaultRef, version: u64) -> ObjectId {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.object_ids.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"sealfs object id v1");
        mac.update(&slot_bytes(r, version));
        ObjectId::from_digest(&mac.finalize().into_bytes())
    }

    /// Seals `plaintext` for `r` at `version` under a fresh random nonce.
    pub fn seal(&self, r: &VaultRef, version: u64, plaintext: &SensitiveBytes) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        self.seal_with_nonce(r, version, plaintext, nonce)
    }

    /// [`KeyRing::seal`] with a given nonce: the one sealing code path, open
    /// to known-answer tests. A nonce must never be reused under a key.
    fn seal_with_nonce(
        &self,
        r: &VaultRef,
        version: u64,
        plaintext: &SensitiveBytes,
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(ALG_AES_256_GCM);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        let aad = aad(&out[..BOUND_HEADER_LEN], r, version);
        out.extend_from_slice(plaintext.expose());
        let tag = self
            .seal
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[HEADER_LEN..])
            .expect("plaintext length is far below the AES-GCM limit");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a blob that the index says holds `r` at `version`.
    pub fn open(
        &self,
        r: &VaultRef,
        version: u64,
        blob: &[u8],
    ) -> Result<SensitiveBytes, CryptoError> {
        let header = parse_header(blob)?;
        if header.key_id != self.key_id {
            return Err(CryptoError::WrongKey {
                found: header.key_id,
                expected: self.key_id,
            });
        }
        if header.version != version {
            return Err(CryptoError::VersionMismatch {
                found: header.version,
                expected: version,
            });
        }
        let body = &blob[HEADER_LEN..blob.len() - TAG_LEN];
        let tag = Tag::from_slice(&blob[blob.len() - TAG_LEN..]);
        let aad = aad(&blob[..BOUND_HEADER_LEN], r, version);
        let mut plain = SensitiveBytes::from_slice(body);
        self.seal
            .decrypt_in_place_detached(
                Nonce::from_slice(&header.nonce),
                &aad,
                plain.expose_mut(),
                tag,
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plain)
    }
}

/// The clear fields of an envelope. Nothing here is trusted before the tag
/// has been checked; it only lets errors be specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key_id: KeyId,
    pub version: u64,
    pub nonce: [u8; NONCE_LEN],
}

/// The clear fields of `blob`, once its magic, format and algorithm are
/// checked; nothing is authenticated.
pub fn parse_header(blob: &[u8]) -> Result<Header, CryptoError> {
    if blob.len() < OVERHEAD || blob[..4] != MAGIC {
        return Err(CryptoError::Malformed);
    }
    if blob[4] != FORMAT_VERSION {
        return Err(CryptoError::UnsupportedFormat(blob[4]));
    }
    if blob[5] != ALG_AES_256_GCM {
        return Err(CryptoError::UnsupportedAlgorithm(blob[5]));
    }
    let key_id = KeyId(blob[6..14].try_into().expect("8 bytes"));
    let version = u64::from_be_bytes(blob[14..22].try_into().expect("8 bytes"));
    let nonce = blob[22..34].try_into().expect("12 bytes");
    Ok(Header {
        key_id,
        version,
        nonce,
    })
}

/// `len(scope) scope len(key) key version`: lengths are u16 big-endian, so no
/// two slots encode to the same bytes.
fn slot_bytes(r: &VaultRef, version: u64) -> Vec<u8> {
    let scope = r.scope().to_string();
    let key = r.key().as_str();
    let mut out = Vec::with_capacity(2 + scope.len() + 2 + key.len() + 8);
    for part in [scope.as_bytes(), key.as_bytes()] {
        let len = u16::try_from(part.len()).expect("names are at most 137 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&version.to_be_bytes());
    out
}

fn record_aad(id: &[u8]) -> Vec<u8> {
    let mut out = b"sealfs index record v2\0".to_vec();
    out.extend_from_slice(id);
    out
}

fn aad(bound_header: &[u8], r: &VaultRef, version: u64) -> Vec<u8> {
    let mut out = bound_header.to_vec();
    out.extend_from_slice(&slot_bytes(r, version));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::{hex, unhex};

    fn ring(seed: u8, salt: &[u8]) -> KeyRing {
        KeyRing::derive(&DeviceIdentity::from_bytes([seed; 32]), salt)
    }

    fn r(s: &str) -> VaultRef {
        VaultRef::parse(s).unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        let k = ring(1, b"vault");
        let value = SensitiveBytes::from_slice(b"multi\nline\0binary\xff");
        let blob = k.seal(&r("global/a"), 3, &value);
        assert_eq!(blob.len(), OVERHEAD + value.len());
        assert_eq!(
            k.open(&r("global/a"), 3, &blob).unwrap().expose(),
            value.expose()
        );
    }

    #[test]
    fn every_flipped_byte_fails() {
        let k = ring(1, b"vault");
        let blob = k.seal(&r("global/a"), 1, &SensitiveBytes::from_slice(b"secret"));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(k.open(&r("global/a"), 1, &bad).is_err(), "byte {i}");
        }
        assert_eq!(
            k.open(&r("global/a"), 1, &blob[..blob.len() - 1])
                .unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            k.open(&r("global/a"), 1, &blob[..10]).unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn slot_and_version_are_bound() {
        let k = ring(1, b"vault");
        let blob = k.seal(&r("global/a"), 1, &SensitiveBytes::from_slice(b"secret"));
        assert_eq!(
            k.open(&r("global/b"), 1, &blob).unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            k.open(&r("principal:a/a"), 1, &blob).unwrap_err(),
            CryptoError::Authentication
        );
        assert!(matches!(
            k.open(&r("global/a"), 2, &blob).unwrap_err(),
            CryptoError::VersionMismatch {
                found: 1,
                expected: 2
            }
        ));
    }

    #[test]
    fn other_identity_or_vault_is_a_key_error() {
        let blob = ring(1, b"vault").seal(&r("global/a"), 1, &SensitiveBytes::from_slice(b"s"));
        assert!(matches!(
            ring(2, b"vault").open(&r("global/a"), 1, &blob),
            Err(CryptoError::WrongKey { .. })
        ));
        assert!(matches!(
            ring(1, b"other").open(&r("global/a"), 1, &blob),
            Err(CryptoError::WrongKey { .. })
        ));
    }

    #[test]
    fn object_ids_are_keyed_and_distinct() {
        let k = ring(1, b"vault");
        let a1 = k.object_id(&r("global/a"), 1);
        assert_eq!(a1, k.object_id(&r("global/a"), 1));
        assert_ne!(a1, k.object_id(&r("global/a"), 2));
        assert_ne!(a1, k.object_id(&r("global/b"), 1));
        assert_ne!(a1, ring(2, b"vault").object_id(&r("global/a"), 1));
        assert_eq!(a1.as_str().len(), 64);
    }

    #[test]
    fn slot_encoding_is_injective() {
        // "principal:a" + "b.c" vs "principal:a" + "b" ... lengths prefix both parts.
        assert_ne!(
            slot_bytes(&r("principal:ab/c"), 1),
            slot_bytes(&r("principal:a/bc"), 1)
        );
    }

    fn unhex_str(s: &str) -> Vec<u8> {
        unhex(s).unwrap()
    }

    /// RFC 5869, test case 1 (HKDF-SHA256), through the crate we derive with.
    #[test]
    fn hkdf_sha256_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = unhex_str("000102030405060708090a0b0c");
        let info = unhex_str("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    /// The GCM specification's test case 16 (AES-256, 96-bit IV, with AAD).
    #[test]
    fn aes_256_gcm_known_answer() {
        let key = unhex_str("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv = unhex_str("cafebabefacedbaddecaf888");
        let aad = unhex_str("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let mut buf = unhex_str(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let cipher = Aes256Gcm::new(key.as_slice().into());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&iv), &aad, &mut buf)
            .unwrap();
        assert_eq!(
            hex(&buf),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        );
        assert_eq!(hex(&tag), "76fc6ece0f4e1768cddf8853bb2d551b");
    }

    /// Pins the envelope byte format: same identity, salt, nonce, slot and
    /// plaintext must give these exact bytes (docs/format.md).
    #[test]
    fn envelope_known_answer() {
        let k = ring(1, b"vault");
        let blob = k.seal_with_nonce(
            &r("global/a"),
            1,
            &SensitiveBytes::from_slice(b"secret"),
            [2; 12],
        );
        assert_eq!(&blob[..4], b"SLFS");
        assert_eq!(blob[4..6], [1, 1]);
        assert_eq!(&blob[6..14], &k.key_id().0);
        assert_eq!(blob[14..22], 1u64.to_be_bytes());
        assert_eq!(blob[22..34], [2; 12]);
        assert_eq!(
            k.open(&r("global/a"), 1, &blob).unwrap().expose(),
            b"secret"
        );
        assert_eq!(
            hex(&blob[34..]),
            PINNED_CIPHERTEXT_AND_TAG,
            "the envelope format changed"
        );
        assert_eq!(k.key_id().to_hex(), PINNED_KEY_ID);
    }

    const PINNED_CIPHERTEXT_AND_TAG: &str = "2f3bcd17348997a156929c2b816d71ebdf493162b1a2";
    const PINNED_KEY_ID: &str = "692c72c08f5d987a";

    /// Each byte range fails with its own error: the header's clear fields
    /// by their checks, nonce, ciphertext and tag by the AEAD.
    #[test]
    fn every_byte_of_header_nonce_ciphertext_and_tag_is_authenticated() {
        let k = ring(3, b"v");
        let slot = r("session:s/k");
        let blob = k.seal(&slot, 7, &SensitiveBytes::from_slice(b"0123456789"));
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                let err = k.open(&slot, 7, &bad).unwrap_err();
                let ok = match i {
                    0..4 => err == CryptoError::Malformed,
                    4 => matches!(err, CryptoError::UnsupportedFormat(_)),
                    5 => matches!(err, CryptoError::UnsupportedAlgorithm(_)),
                    6..14 => matches!(err, CryptoError::WrongKey { .. }),
                    14..22 => matches!(err, CryptoError::VersionMismatch { .. }),
                    _ => err == CryptoError::Authentication,
                };
                assert!(ok, "byte {i} bit {bit}: {err:?}");
            }
        }
    }

    /// The clear header is bound into the AEAD too, not only checked: with
    /// the checks out of the way (the AEAD called directly), any change to
    /// a bound header byte still fails authentication.
    #[test]
    fn the_header_is_in_the_additional_data() {
        let k = ring(3, b"v");
        let slot = r("global/k");
        let blob = k.seal(&slot, 7, &SensitiveBytes::from_slice(b"0123456789"));
        let (nonce, body) = (
            &blob[22..HEADER_LEN],
            &blob[HEADER_LEN..blob.len() - TAG_LEN],
        );
        let tag = Tag::from_slice(&blob[blob.len() - TAG_LEN..]);
        let attempt = |header: &[u8]| {
            let mut plain = body.to_vec();
            k.seal.decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &aad(header, &slot, 7),
                &mut plain,
                tag,
            )
        };
        assert!(attempt(&blob[..BOUND_HEADER_LEN]).is_ok());
        for i in 0..BOUND_HEADER_LEN {
            let mut header = blob[..BOUND_HEADER_LEN].to_vec();
            header[i] ^= 0x01;
            assert!(attempt(&header).is_err(), "header byte {i} is not bound");
        }
    }

    /// The envelope fuzz target's seed is a real envelope under the
    /// target's key, so mutations of it reach the AEAD rather than stopping
    /// at the key-id check (fuzz/fuzz_targets/envelope.rs).
    #[test]
    fn the_fuzz_seed_is_a_real_envelope() {
        let k = KeyRing::derive(&DeviceIdentity::from_bytes([7; 32]), b"fuzz");
        let seed = include_bytes!("../../../fuzz/corpus/envelope/sealed");
        assert_eq!(
            k.open(&r("global/fuzz"), 1, seed).unwrap().expose(),
            b"fuzz seed value"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            vec![0, 1, 0xab, 0xff]
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
