//! Who belongs to the fleet, and how a host knows it without trusting etcd.
//!
//! Every host has an Ed25519 signing key beside its age identity; the two
//! public halves are its *host card* (`age1...:<hex>`). Membership is a
//! chain of signed entries in etcd (`chain/<seq>`): entry 0 (`init`) names
//! the founder and is signed by it; the SHA-256 of its body is the *fleet
//! id*, which every host pins when it joins (`sealfs fleet init` pins it on
//! the founder, `sealfs fleet join <fleet-id>` on every other host). Each
//! later entry adds or removes one host, names the hash of the entry before
//! it, and is signed by a host that is a member at that point. A host
//! checks the whole chain from its pin, and pins the newest entry it has
//! verified (sequence number and hash): a chain that is shorter (rolled
//! back), differs at a pinned entry (forked), starts elsewhere (another
//! fleet copied over the prefix), or holds an entry that is unsigned or
//! signed by a non-member is refused.
//!
//! Keyrings are signed by a member too, and name the chain entry whose
//! membership they wrap to (`seq`): the signer must be a member there, every
//! recipient too, and `seq` may not be older than the chain's last removal
//! (so after a revocation, only keys made since count). Each host pins, per
//! scope, the key epoch and key id it has verified, and refuses a lower
//! epoch or another key at the same epoch.
//!
//! The pins live in this host's local vault (`principal:sealfs-fleet`),
//! sealed and anchored against rollback like any secret there.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{b64, FleetError};
use crate::SensitiveBytes;

/// Domain separation of the two kinds of signed record.
pub(super) const CHAIN_DOMAIN: &[u8] = b"sealfs-fleet-chain/v1\0";
/// Entry 0 of a fleet that records its shard count is signed under its
/// own domain: a build from before the count was recorded (which would
/// read the fleet as having 4,096 shards, and could rewrite its index so)
/// finds the signature bad and refuses the fleet.
pub(super) const GENESIS_V2_DOMAIN: &[u8] = b"sealfs-fleet-chain/v2\0";

/// The domain entry 0 `body` is signed under.
pub(super) fn genesis_domain(body: &ChainBody) -> &'static [u8] {
    if body.shard_hex.is_some() {
        GENESIS_V2_DOMAIN
    } else {
        CHAIN_DOMAIN
    }
}
pub(super) const KEYRING_DOMAIN: &[u8] = b"sealfs-fleet-keyring/v1\0";

/// This host's Ed25519 signing key.
pub(super) struct HostSigner(SigningKey);

impl HostSigner {
    /// A new random key.
    pub(super) fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).expect("the OS random source works");
        HostSigner(SigningKey::from_bytes(&seed))
    }

    /// From the 32-byte seed kept in the local vault.
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, FleetError> {
        let seed: [u8; 32] = bytes.try_into().map_err(|_| {
            FleetError::Corrupt("the stored host signing key is not 32 bytes".into())
        })?;
        let seed = Zeroizing::new(seed);
        Ok(HostSigner(SigningKey::from_bytes(&seed)))
    }

    /// The seed, as kept in the local vault.
    pub(super) fn to_secret(&self) -> SensitiveBytes {
        SensitiveBytes::from_slice(self.0.as_bytes())
    }

    /// The public key in hex, as it appears in host cards and records.
    pub(super) fn public_hex(&self) -> String {
        crate::hex::hex(self.0.verifying_key().as_bytes())
    }

    /// Signs `body` for `domain`, base64.
    pub(super) fn sign(&self, domain: &[u8], body: &[u8]) -> String {
        b64().encode(self.0.sign(&[domain, body].concat()).to_bytes())
    }
}

impl std::fmt::Debug for HostSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostSigner({})", self.public_hex())
    }
}

/// A host's public name in the fleet: its age recipient and its Ed25519
/// verifying key, written `age1...:<64 hex digits>` (`sealfs fleet
/// recipient` prints it; `fleet enroll` takes it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostCard {
    /// The age X25519 recipient (`age1...`).
    pub recipient: String,
    /// The Ed25519 verifying key, in hex.
    pub signing_key: String,
}

impl HostCard {
    /// Parses `age1...:<hex>`, checking both halves.
    pub fn parse(s: &str) -> Result<Self, FleetError> {
        let s = s.trim();
        let bad = || FleetError::BadRecipient(s.chars().take(140).collect());
        let (recipient, key) = s.split_once(':').ok_or_else(bad)?;
        super::keys::parse_recipient(recipient).map_err(|_| bad())?;
        let card = HostCard {
            recipient: recipient.to_ascii_lowercase(),
            signing_key: key.to_ascii_lowercase(),
        };
        card.verifying_key().map_err(|_| bad())?;
        Ok(card)
    }

    /// The verifying key; refuses anything but 64 lower-case hex digits
    /// (one spelling per key, so a key cannot come back under another) and
    /// weak (small-order) keys, for which forging is easy.
    fn verifying_key(&self) -> Result<VerifyingKey, FleetError> {
        let canonical = self.signing_key.len() == 64
            && self
                .signing_key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && self.recipient == self.recipient.to_ascii_lowercase();
        let bytes = crate::hex::unhex(&self.signing_key)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .filter(|_| canonical)
            .ok_or_else(|| forged("a host card", "it is not in its one canonical form"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| forged("a host card", "its signing key is not an Ed25519 key"))?;
        if key.is_weak() {
            return Err(forged("a host card", "its signing key is a weak key"));
        }
        Ok(key)
    }
}

impl std::fmt::Display for HostCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.recipient, self.signing_key)
    }
}

fn forged(what: &str, why: &str) -> FleetError {
    FleetError::Forged(format!("{what}: {why}"))
}

/// What a chain entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Op {
    /// Entry 0: the fleet starts with its founder.
    Init,
    /// A host is enrolled.
    Add,
    /// A host is revoked.
    Remove,
    /// A scope is granted to some members only, or to every member again
    /// (`sealfs fleet grant`); `member` is the signer's own card.
    Audience,
}

/// One entry of the membership chain, as signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChainBody {
    /// Entry 0: a random nonce, so two fleets never share an id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) nonce: String,
    /// Later entries: the fleet id (the hash of entry 0's body).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) fleet: String,
    pub(super) seq: u64,
    /// The hash of the previous entry's body ("" for entry 0).
    pub(super) prev: String,
    pub(super) op: Op,
    pub(super) member: HostCard,
    /// The signing key (hex) of the member who signed this entry.
    pub(super) signer: String,
    pub(super) time_ms: u64,
    /// Entry 0: how many hex digits name an index shard in this fleet
    /// (absent: 3, the layout of fleets made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) shard_hex: Option<u8>,
    /// Entry 0 and removals: the commitment ([`super::keys::FleetKey::commitment`]) of the
    /// fleet's grant key from this entry on, a new key that every member
    /// then (and every host enrolled later) has wrapped to it at
    /// `grant/<id>/<recipient>`, and that seals the keys of scopes every
    /// member reads. Absent (a fleet or removal from before grant keys):
    /// no grant key, and keyrings wrap scope keys to each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) grant: Option<String>,
    /// Audience entries: the scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<String>,
    /// Audience entries: the recipients of the members the scope is
    /// granted to (absent: every member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) audience: Option<BTreeSet<String>>,
}

/// A signed record as stored in etcd: the body's exact bytes and the
/// signature over them.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Signed {
    pub(super) body: String,
    pub(super) sig: String,
}

impl Signed {
    pub(super) fn encode(signer: &HostSigner, domain: &[u8], body: &impl Serialize) -> Vec<u8> {
        let body = serde_json::to_string(body).expect("a record serialises");
        let sig = signer.sign(domain, body.as_bytes());
        serde_json::to_vec(&Signed { body, sig }).expect("a record serialises")
    }

    pub(super) fn parse(what: &str, raw: &[u8]) -> Result<Self, FleetError> {
        serde_json::from_slice(raw).map_err(|_| forged(what, "not a signed record"))
    }

    fn verify(&self, what: &str, domain: &[u8], key: &VerifyingKey) -> Result<(), FleetError> {
        let sig = b64()
            .decode(&self.sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| forged(what, "its signature is malformed"))?;
        key.verify_strict(&[domain, self.body.as_bytes()].concat(), &sig)
            .map_err(|_| forged(what, "its signature does not verify"))
    }
}

/// The SHA-256 of `bytes`, in hex.
pub(super) fn hash(bytes: &[u8]) -> String {
    crate::hex::hex(&Sha256::digest(bytes))
}

#[derive(Debug, Clone)]
struct Member {
    card: HostCard,
    key: VerifyingKey,
    added: u64,
    removed: Option<u64>,
}

/// The fleet's membership as verified from the chain: every host that ever
/// belonged, with the entries that added and removed it.
#[derive(Debug, Clone)]
pub(super) struct Membership {
    pub(super) fleet_id: String,
    /// The hash of each entry, by sequence number.
    hashes: Vec<String>,
    /// By signing key (hex).
    members: BTreeMap<String, Member>,
    /// The sequence number of the last removal (0: none yet).
    pub(super) last_removal: u64,
    /// The etcd revision that created the last removal's entry, when it
    /// was read from etcd (not from the cache).
    pub(super) removal_rev: Option<i64>,
    /// How many hex digits name an index shard (fixed at entry 0).
    pub(super) shard_hex: u8,
    /// Where each grant era starts (entry 0 and every removal), and the id
    /// of its grant key, if it has one.
    eras: Vec<(u64, Option<String>)>,
    /// By scope: its last audience entry (the entry and the audience it
    /// names).
    audiences: BTreeMap<String, ScopeAudience>,
}

/// A scope's last audience entry ([`Op::Audience`]).
#[derive(Debug, Clone)]
pub(super) struct ScopeAudience {
    /// The entry.
    pub(super) seq: u64,
    /// The members (recipients) it names; `None`: every member.
    pub(super) audience: Option<BTreeSet<String>>,
}

impl Membership {
    /// Checks entry 0 against the pinned fleet id.
    pub(super) fn genesis(fleet_id: &str, raw: &[u8]) -> Result<Self, FleetError> {
        let what = "the membership chain";
        let signed = Signed::parse(what, raw)?;
        let found = hash(signed.body.as_bytes());
        if found != fleet_id {
            return Err(FleetError::OtherFleet {
                pinned: fleet_id.to_owned(),
                found,
            });
        }
        let body: ChainBody = serde_json::from_str(&signed.body)
            .map_err(|_| forged(what, "entry 0 is not a chain entry"))?;
        if body.seq != 0 || body.op != Op::Init || body.signer != body.member.signing_key {
            return Err(forged(what, "entry 0 does not start a fleet"));
        }
        let key = body.member.verifying_key()?;
        signed.verify(what, genesis_domain(&body), &key)?;
        let shard_hex = match body.shard_hex {
            None => super::keys::LEGACY_SHARD_HEX,
            Some(h) if h == super::keys::LEGACY_SHARD_HEX || h == super::keys::SHARD_HEX => h,
            Some(h) => {
                return Err(FleetError::Etcd(format!(
                    "this fleet names its index shards with {h} hex digits, which this build of sealfs does not know: upgrade it"
                )))
            }
        };
        Ok(Membership {
            fleet_id: fleet_id.to_owned(),
            shard_hex,
            hashes: vec![found],
            members: BTreeMap::from([(
                body.member.signing_key.clone(),
                Member {
                    card: body.member,
                    key,
                    added: 0,
                    removed: None,
                },
            )]),
            last_removal: 0,
            removal_rev: None,
            eras: vec![(0, body.grant)],
            audiences: BTreeMap::new(),
        })
    }

    /// Checks and applies the next entry.
    pub(super) fn apply(&mut self, raw: &[u8]) -> Result<(), FleetError> {
        let seq = self.seq() + 1;
        let what = format!("entry {seq} of the membership chain");
        let signed = Signed::parse(&what, raw)?;
        let body: ChainBody =
            serde_json::from_str(&signed.body).map_err(|_| forged(&what, "not a chain entry"))?;
        if body.seq != seq || body.fleet != self.fleet_id || body.prev != self.head() {
            return Err(forged(&what, "it does not follow the entry before it"));
        }
        let signer = self
            .current(&body.signer)
            .ok_or_else(|| forged(&what, "it is not signed by a member"))?;
        signed.verify(&what, CHAIN_DOMAIN, &signer.key)?;
        let card = body.member;
        match body.op {
            Op::Init => return Err(forged(&what, "a second start of the fleet")),
            Op::Add => {
                if self.members.contains_key(&card.signing_key)
                    || self
                        .members
                        .values()
                        .any(|m| m.card.recipient == card.recipient)
                {
                    return Err(forged(&what, "it adds a host that was a member before"));
                }
                let key = card.verifying_key()?;
                self.members.insert(
                    card.signing_key.clone(),
                    Member {
                        card,
                        key,
                        added: seq,
                        removed: None,
                    },
                );
            }
            Op::Remove => {
                let m = self
                    .members
                    .get_mut(&card.signing_key)
                    .filter(|m| m.removed.is_none() && m.card == card)
                    .ok_or_else(|| forged(&what, "it removes a host that is not a member"))?;
                m.removed = Some(seq);
                self.last_removal = seq;
                self.removal_rev = None;
                // The removed host knew the grant key before: a new one,
                // or none (a removal written by a build before grant keys).
                self.eras.push((seq, body.grant));
            }
            Op::Audience => {
                let scope = body
                    .scope
                    .filter(|s| s.parse::<crate::VaultScope>().is_ok())
                    .ok_or_else(|| forged(&what, "it names no scope"))?;
                if card.signing_key != body.signer || card != signer.card {
                    return Err(forged(&what, "it does not carry its signer's card"));
                }
                // Only a member the scope is granted to changes who it is
                // granted to (anyone, once none of them is left).
                if let Some(now) = self.audience_now(&scope) {
                    if !now.is_empty() && !now.contains(&card.recipient) {
                        return Err(forged(
                            &what,
                            "it is signed by a member the scope is not granted to",
                        ));
                    }
                }
                if let Some(a) = &body.audience {
                    let members = self.recipients_at(self.seq());
                    if a.is_empty() || !a.is_subset(&members) {
                        return Err(forged(
                            &what,
                            "it grants the scope to a host that is not a member",
                        ));
                    }
                }
                self.audiences.insert(
                    scope,
                    ScopeAudience {
                        seq,
                        audience: body.audience,
                    },
                );
            }
        }
        self.hashes.push(hash(signed.body.as_bytes()));
        Ok(())
    }

    /// The id of the grant key in force after entry `seq`: the one named by
    /// the last removal (or entry 0) at or before it; `None` if that entry
    /// named none.
    pub(super) fn grant_at(&self, seq: u64) -> Option<&str> {
        self.eras
            .iter()
            .rev()
            .find(|(start, _)| *start <= seq)
            .and_then(|(_, id)| id.as_deref())
    }

    /// The last audience entry of `scope`, if it has one.
    pub(super) fn scope_audience(&self, scope: &str) -> Option<&ScopeAudience> {
        self.audiences.get(scope)
    }

    /// The members (recipients) `scope` is granted to now, if not every
    /// member: its last audience entry's, less the hosts revoked since.
    pub(super) fn audience_now(&self, scope: &str) -> Option<BTreeSet<String>> {
        let a = self.audiences.get(scope)?.audience.as_ref()?;
        let members = self.recipients_at(self.seq());
        Some(a.intersection(&members).cloned().collect())
    }

    /// The scopes an audience entry names (granted to some members, or to
    /// every member again).
    pub(super) fn restricted_scopes(&self) -> impl Iterator<Item = &String> {
        self.audiences.keys()
    }

    /// The recipient of the member, or former member, with this signing key.
    pub(super) fn recipient_of(&self, signing_key: &str) -> Option<&str> {
        self.members
            .get(signing_key)
            .map(|m| m.card.recipient.as_str())
    }

    /// The ids of the grant keys of every era before the current one.
    pub(super) fn past_grants(&self) -> Vec<String> {
        let current = self.eras.len().saturating_sub(1);
        self.eras[..current]
            .iter()
            .filter_map(|(_, id)| id.clone())
            .collect()
    }

    /// The id of the grant key in force now.
    pub(super) fn grant(&self) -> Option<&str> {
        self.grant_at(self.seq())
    }

    /// The sequence number of the newest entry.
    pub(super) fn seq(&self) -> u64 {
        self.hashes.len() as u64 - 1
    }

    /// The hash of the newest entry.
    pub(super) fn head(&self) -> &str {
        self.hashes.last().expect("entry 0 is always there")
    }

    /// The hash of entry `seq`, if the chain reaches it.
    pub(super) fn hash_at(&self, seq: u64) -> Option<&str> {
        self.hashes
            .get(usize::try_from(seq).ok()?)
            .map(String::as_str)
    }

    fn current(&self, signing_key: &str) -> Option<&Member> {
        self.members
            .get(signing_key)
            .filter(|m| m.removed.is_none())
    }

    fn member_at(&self, signing_key: &str, seq: u64) -> Option<&Member> {
        self.members
            .get(signing_key)
            .filter(|m| m.added <= seq && m.removed.is_none_or(|r| r > seq))
    }

    /// The cards of the hosts that are members now.
    pub(super) fn cards(&self) -> impl Iterator<Item = &HostCard> {
        self.members
            .values()
            .filter(|m| m.removed.is_none())
            .map(|m| &m.card)
    }

    /// The recipients of the members after entry `seq`.
    pub(super) fn recipients_at(&self, seq: u64) -> BTreeSet<String> {
        self.members
            .values()
            .filter(|m| m.added <= seq && m.removed.is_none_or(|r| r > seq))
            .map(|m| m.card.recipient.clone())
            .collect()
    }

    /// Whether `recipient` is a member now.
    pub(super) fn has_recipient(&self, recipient: &str) -> bool {
        self.cards().any(|c| c.recipient == recipient)
    }

    /// The card of the member, or former member, with `recipient`.
    pub(super) fn card_of(&self, recipient: &str) -> Option<(&HostCard, bool)> {
        self.members
            .values()
            .find(|m| m.card.recipient == recipient)
            .map(|m| (&m.card, m.removed.is_none()))
    }

    /// Checks a record signed by `signer` on behalf of the membership after
    /// entry `seq`: the entry exists, the signer was a member there, and the
    /// signature verifies.
    pub(super) fn verify_signed(
        &self,
        what: &str,
        domain: &[u8],
        signed: &Signed,
        signer: &str,
        seq: u64,
    ) -> Result<(), FleetError> {
        if seq > self.seq() {
            return Err(forged(
                what,
                "it names a membership entry the chain does not hold",
            ));
        }
        let m = self
            .member_at(signer, seq)
            .ok_or_else(|| forged(what, "it is not signed by a member"))?;
        signed.verify(what, domain, &m.key)
    }

    /// Refuses a chain that is behind `pin` or forked from it.
    pub(super) fn check_pin(&self, pin: &FleetPin) -> Result<(), FleetError> {
        if pin.fleet_id != self.fleet_id {
            return Err(FleetError::OtherFleet {
                pinned: pin.fleet_id.clone(),
                found: self.fleet_id.clone(),
            });
        }
        match self.hash_at(pin.seq) {
            None => Err(forged(
                "the membership chain",
                &format!(
                    "it ends at entry {}, and this host has seen entry {}",
                    self.seq(),
                    pin.seq
                ),
            )),
            Some(h) if h != pin.head => Err(forged(
                "the membership chain",
                &format!(
                    "entry {} differs from the one this host has seen (a fork)",
                    pin.seq
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// What a host pins of the fleet: its id and the newest chain entry it has
/// verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FleetPin {
    pub(super) fleet_id: String,
    pub(super) seq: u64,
    pub(super) head: String,
    /// The chain's last removal as this host first saw it: its entry and
    /// the etcd revision that created it. Records a rotation on this host
    /// takes over must be older, however that entry is written again
    /// later (to move the line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) removal: Option<(u64, i64)>,
}

impl FleetPin {
    /// A pin of `m`'s newest entry (and of its last removal, if `m` read
    /// it from etcd).
    pub(super) fn of(m: &Membership) -> Self {
        FleetPin {
            fleet_id: m.fleet_id.clone(),
            seq: m.seq(),
            head: m.head().to_owned(),
            removal: m
                .removal_rev
                .filter(|_| m.last_removal > 0)
                .map(|r| (m.last_removal, r)),
        }
    }

    /// The join token: `<fleet id>:<seq>:<hash>`, naming one chain entry
    /// (the one that enrolled the host) for `sealfs fleet join`.
    pub(super) fn token(&self) -> String {
        format!("{}:{}:{}", self.fleet_id, self.seq, self.head)
    }

    /// Parses a join token.
    pub(super) fn parse_token(s: &str) -> Result<Self, FleetError> {
        let s = s.trim();
        let bad = || FleetError::BadJoinToken(s.chars().take(160).collect());
        // A fourth part, if any, is an etcd login sealed to the joining
        // host (`fleet enroll --etcd-user`), taken by `login_of_token`.
        let mut parts = s.split(':');
        let (Some(id), Some(seq), Some(head), _, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let hex64 = |t: &str| {
            t.len() == 64
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex64(id) || !hex64(head) {
            return Err(bad());
        }
        Ok(FleetPin {
            fleet_id: id.to_owned(),
            seq: seq.parse().map_err(|_| bad())?,
            head: head.to_owned(),
            removal: None,
        })
    }
}

/// What a host pins of a scope: the newest key epoch and key id it has
/// verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ScopePin {
    pub(super) scope: String,
    pub(super) epoch: u64,
    pub(super) key_id: String,
    /// Whether this host has seen the keyring of this epoch without the
    /// keys its rotation replaced: once it has, a keyring of the epoch
    /// that carries them again (replayed) is refused.
    #[serde(default)]
    pub(super) settled: bool,
}

/// A new chain entry's body; a removal names the new grant key's id.
pub(super) fn entry(
    m: &Membership,
    op: Op,
    member: HostCard,
    signer: &HostSigner,
    grant: Option<String>,
) -> ChainBody {
    ChainBody {
        nonce: String::new(),
        fleet: m.fleet_id.clone(),
        seq: m.seq() + 1,
        prev: m.head().to_owned(),
        op,
        member,
        signer: signer.public_hex(),
        time_ms: crate::clock::now_ms(),
        shard_hex: None,
        grant,
        scope: None,
        audience: None,
    }
}

/// A new audience entry: `scope` granted to `audience` (`None`: every
/// member), signed by `signer`, whose card is `me`.
pub(super) fn audience_entry(
    m: &Membership,
    me: HostCard,
    signer: &HostSigner,
    scope: &crate::VaultScope,
    audience: Option<BTreeSet<String>>,
) -> ChainBody {
    let mut body = entry(m, Op::Audience, me, signer, None);
    body.scope = Some(scope.to_string());
    body.audience = audience;
    body
}

/// Entry 0 of a new fleet founded by `me`, whose first grant key has the
/// id `grant`.
pub(super) fn genesis_entry(me: HostCard, signer: &HostSigner, grant: Option<String>) -> ChainBody {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS random source works");
    ChainBody {
        nonce: crate::hex::hex(&nonce),
        fleet: String::new(),
        seq: 0,
        prev: String::new(),
        op: Op::Init,
        signer: signer.public_hex(),
        member: me,
        time_ms: crate::clock::now_ms(),
        shard_hex: Some(super::keys::SHARD_HEX),
        grant,
        scope: None,
        audience: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &HostSigner) -> HostCard {
        let id = super::super::keys::HostIdentity::generate();
        HostCard {
            recipient: id.recipient(),
            signing_key: s.public_hex(),
        }
    }

    fn chain() -> (Vec<Vec<u8>>, HostSigner, HostCard) {
        let a = HostSigner::generate();
        let ca = card(&a);
        let body = genesis_entry(ca.clone(), &a, None);
        let g = Signed::encode(&a, genesis_domain(&body), &body);
        (vec![g], a, ca)
    }

    fn id_of(raw: &[u8]) -> String {
        hash(Signed::parse("x", raw).unwrap().body.as_bytes())
    }

    /// Entry 0 fixes how index shards are named: four hex digits in a
    /// fleet made now, three in one made before that was recorded (no
    /// field), and a count this build does not know is an error.
    #[test]
    fn entry_0_fixes_the_shard_names_and_older_fleets_keep_theirs() {
        use super::super::keys::{shard_in, LEGACY_SHARD_HEX, SHARD_HEX};
        let a = HostSigner::generate();
        let ca = card(&a);
        let signed = |hex: Option<u8>, domain: &[u8]| {
            let mut body = genesis_entry(ca.clone(), &a, None);
            body.shard_hex = hex;
            Signed::encode(&a, domain, &body)
        };
        let genesis = |hex: Option<u8>| {
            let body = ChainBody {
                shard_hex: hex,
                ..genesis_entry(ca.clone(), &a, None)
            };
            let raw = Signed::encode(&a, genesis_domain(&body), &body);
            Membership::genesis(&id_of(&raw), &raw)
        };
        assert_eq!(
            genesis_entry(ca.clone(), &a, None).shard_hex,
            Some(SHARD_HEX)
        );
        assert_eq!(genesis(Some(4)).unwrap().shard_hex, 4);
        assert_eq!(genesis(None).unwrap().shard_hex, LEGACY_SHARD_HEX);
        let err = genesis(Some(5)).unwrap_err().to_string();
        assert!(err.contains("5 hex digits"), "{err}");
        // An entry 0 that records the count is signed under its own
        // domain, so an older build, which checks entry 0 under the first
        // one, refuses the fleet (and cannot rewrite its index as one of
        // 4,096 shards); the count cannot be taken off or put on an entry
        // 0 signed under the other domain.
        let new = signed(Some(4), GENESIS_V2_DOMAIN);
        let old_build_check = Signed::parse("x", &new).unwrap().verify(
            "x",
            CHAIN_DOMAIN,
            &ca.verifying_key().unwrap(),
        );
        assert!(old_build_check.is_err());
        for raw in [
            signed(Some(4), CHAIN_DOMAIN),
            signed(None, GENESIS_V2_DOMAIN),
        ] {
            assert!(Membership::genesis(&id_of(&raw), &raw).is_err());
        }
        // The older names are what older builds computed: the first two
        // bytes of the hash, modulo 4,096.
        let scope = crate::VaultScope::Global;
        for key in ["k", "db_password", ""] {
            let (old, new) = (shard_in(&scope, key, 3), shard_in(&scope, key, 4));
            assert_eq!(old.len(), 3);
            assert_eq!(new.len(), 4);
            let n = u16::from_str_radix(&new, 16).unwrap();
            assert_eq!(old, format!("{:03x}", n % 4096));
        }
    }

    #[test]
    fn a_chain_verifies_from_its_pin_and_refuses_strangers() {
        let (mut raws, a, ca) = chain();
        let id = id_of(&raws[0]);
        let mut m = Membership::genesis(&id, &raws[0]).unwrap();
        let b = HostSigner::generate();
        let cb = card(&b);
        raws.push(Signed::encode(
            &a,
            CHAIN_DOMAIN,
            &entry(&m, Op::Add, cb.clone(), &a, None),
        ));
        m.apply(&raws[1]).unwrap();
        assert!(m.has_recipient(&cb.recipient));
        // b removes a; a can sign nothing more.
        let rm = Signed::encode(
            &b,
            CHAIN_DOMAIN,
            &entry(&m, Op::Remove, ca.clone(), &b, None),
        );
        m.apply(&rm).unwrap();
        assert_eq!(m.last_removal, 2);
        let x = HostSigner::generate();
        let late = Signed::encode(&a, CHAIN_DOMAIN, &entry(&m, Op::Add, card(&x), &a, None));
        assert!(matches!(m.clone().apply(&late), Err(FleetError::Forged(_))));
        // Not re-admitted, even by a member.
        let back = Signed::encode(&b, CHAIN_DOMAIN, &entry(&m, Op::Add, ca, &b, None));
        assert!(matches!(m.clone().apply(&back), Err(FleetError::Forged(_))));
        // A stranger's entry, and another fleet's start.
        let s = Signed::encode(&x, CHAIN_DOMAIN, &entry(&m, Op::Add, card(&x), &x, None));
        assert!(matches!(m.clone().apply(&s), Err(FleetError::Forged(_))));
        let (other, _, _) = chain();
        assert!(matches!(
            Membership::genesis(&id, &other[0]),
            Err(FleetError::OtherFleet { .. })
        ));
        // Pins: behind and forked chains are refused.
        let pin = FleetPin::of(&m);
        m.check_pin(&pin).unwrap();
        let mut short = Membership::genesis(&id, &raws[0]).unwrap();
        short.apply(&raws[1]).unwrap();
        assert!(matches!(short.check_pin(&pin), Err(FleetError::Forged(_))));
        let fork = Signed::encode(
            &b,
            CHAIN_DOMAIN,
            &entry(&short, Op::Add, card(&x), &b, None),
        );
        short.apply(&fork).unwrap();
        assert!(short
            .check_pin(&pin)
            .unwrap_err()
            .to_string()
            .contains("fork"));
    }

    /// Each removal starts a grant era with the key its entry names; an
    /// addition keeps the era's key; a removal that names none (written
    /// by a build without grant keys) leaves the fleet with none, never
    /// with the key the removed host knew.
    #[test]
    fn the_grant_key_changes_at_every_removal_and_only_there() {
        let a = HostSigner::generate();
        let ca = card(&a);
        let body = genesis_entry(ca.clone(), &a, Some("g0".into()));
        let raw = Signed::encode(&a, genesis_domain(&body), &body);
        let mut m = Membership::genesis(&id_of(&raw), &raw).unwrap();
        assert_eq!(m.grant(), Some("g0"));
        let (b, c) = (HostSigner::generate(), HostSigner::generate());
        let (cb, cc) = (card(&b), card(&c));
        let add = |m: &mut Membership, cx: &HostCard, g: Option<&str>| {
            let e = entry(m, Op::Add, cx.clone(), &a, g.map(str::to_owned));
            m.apply(&Signed::encode(&a, CHAIN_DOMAIN, &e)).unwrap();
        };
        let remove = |m: &mut Membership, cx: &HostCard, g: Option<&str>| {
            let e = entry(m, Op::Remove, cx.clone(), &a, g.map(str::to_owned));
            m.apply(&Signed::encode(&a, CHAIN_DOMAIN, &e)).unwrap();
        };
        // An addition naming a key (no build writes that) changes nothing.
        add(&mut m, &cb, Some("sneaked"));
        assert_eq!(m.grant(), Some("g0"));
        remove(&mut m, &cb, Some("g2"));
        add(&mut m, &cc, None);
        assert_eq!(
            (m.grant_at(1), m.grant_at(2), m.grant()),
            (Some("g0"), Some("g2"), Some("g2"))
        );
        remove(&mut m, &cc, None);
        assert_eq!((m.grant_at(3), m.grant()), (Some("g2"), None));
    }

    #[test]
    fn a_host_card_round_trips_and_garbage_is_refused() {
        let (_, _, c) = chain();
        assert_eq!(HostCard::parse(&c.to_string()).unwrap(), c);
        for bad in ["", "age1x", &c.recipient, &format!("{}:zz", c.recipient)] {
            assert!(HostCard::parse(bad).is_err(), "{bad}");
        }
    }
}
