//! Scopes, secret keys and refs: the grammar every other part relies on.
//!
//! ```text
//! scope := "global" | "principal:" id | "session:" id
//! id    := 1..=128 bytes of [A-Za-z0-9._@-], not "." or ".."
//! key   := 1..=128 bytes of [a-z0-9._-],     not "." or ".."
//! ref   := ["vault://"] scope "/" key
//! ```
//!
//! Validation lives in the constructors, so an invalid scope, key or ref cannot
//! be built at all. Nothing is trimmed: surrounding white space is an error.

use std::fmt;
use std::str::FromStr;

/// Longest scope id and longest key, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Why a scope, key or ref was rejected. Messages quote the offending input
/// with `{:?}` so that control characters and white space are visible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefError {
    /// The scope is not `global`, `principal:<id>` or `session:<id>`; holds
    /// the text given.
    #[error("invalid scope {0:?}: expected `global`, `principal:<id>` or `session:<id>`")]
    UnknownScope(String),
    /// The id of a principal or session scope breaks the name rules.
    #[error("invalid scope id {id:?}: {why}")]
    BadScopeId {
        /// The id given.
        id: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The secret key breaks the name rules.
    #[error("invalid secret key {key:?}: {why}")]
    BadKey {
        /// The key given.
        key: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The ref has no `/` between scope and key; holds the text given.
    #[error("invalid ref {0:?}: expected `<scope>/<key>`, e.g. `global/openai_api_key`")]
    BadRef(String),
}

impl RefError {
    /// The reason without the rejected text, for places where that text
    /// could be a secret typed into the wrong field (the web console).
    pub fn without_input(&self) -> String {
        match self {
            RefError::UnknownScope(_) => {
                "the scope must be `global`, `principal:<id>` or `session:<id>`".to_owned()
            }
            RefError::BadScopeId { why, .. } => format!("the scope id: {why}"),
            RefError::BadKey { why, .. } => format!("the key: {why}"),
            RefError::BadRef(_) => {
                "expected `<scope>/<key>`, e.g. `global/openai_api_key`".to_owned()
            }
        }
    }
}

/// The name rules shared by scope ids and keys.
fn check_name(s: &str, allowed: fn(u8) -> bool, charset: &'static str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_NAME_LEN {
        return Err("longer than 128 bytes");
    }
    if s == "." || s == ".." {
        return Err("`.` and `..` are reserved");
    }
    if !s.bytes().all(allowed) {
        return Err(charset);
    }
    Ok(())
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-')
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
}

/// The id of a principal or session scope.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(String);

impl ScopeId {
    /// `id` as a scope id, if it keeps the name rules.
    pub fn new(id: impl Into<String>) -> Result<Self, RefError> {
        let id = id.into();
        match check_name(&id, id_byte, "only A-Z a-z 0-9 . _ @ - are allowed") {
            Ok(()) => Ok(ScopeId(id)),
            Err(why) => Err(RefError::BadScopeId { id, why }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The id prefix of the principal scopes sealfs reserves for itself.
pub(crate) const RESERVED_PREFIX: &str = "sealfs-";

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VaultScope {
    /// `global`: the one scope every vault has.
    Global,
    /// `principal:<id>`: the secrets of one user.
    Principal(ScopeId),
    /// `session:<id>`: a scope made for one session (a CI job, a run).
    Session(ScopeId),
}

impl VaultScope {
    /// `principal:<id>`, validating `id`.
    pub fn principal(id: impl Into<String>) -> Result<Self, RefError> {
        Ok(VaultScope::Principal(ScopeId::new(id)?))
    }

    /// `session:<id>`, validating `id`.
    pub fn session(id: impl Into<String>) -> Result<Self, RefError> {
        Ok(VaultScope::Session(ScopeId::new(id)?))
    }

    /// `global`, `principal` or `session`.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultScope::Global => "global",
            VaultScope::Principal(_) => "principal",
            VaultScope::Session(_) => "session",
        }
    }

    /// Scopes sealfs keeps for itself: `principal:sealfs-*` (the fleet's
    /// host identity, etcd credentials and client key live in
    /// `principal:sealfs-fleet`). The mount never serves or lists them, to
    /// anyone, whatever the policy grants; the CLI reaches them.
    pub fn is_reserved(&self) -> bool {
        matches!(self, VaultScope::Principal(id) if id.as_str().starts_with(RESERVED_PREFIX))
    }

    /// The id of a principal or session scope.
    pub fn id(&self) -> Option<&ScopeId> {
        match self {
            VaultScope::Global => None,
            VaultScope::Principal(id) | VaultScope::Session(id) => Some(id),
        }
    }
}

impl fmt::Display for VaultScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultScope::Global => f.write_str("global"),
            VaultScope::Principal(id) => write!(f, "principal:{id}"),
            VaultScope::Session(id) => write!(f, "session:{id}"),
        }
    }
}

impl FromStr for VaultScope {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, RefError> {
        if s == "global" {
            return Ok(VaultScope::Global);
        }
        match s.split_once(':') {
            Some(("principal", id)) => VaultScope::principal(id),
            Some(("session", id)) => VaultScope::session(id),
            _ => Err(RefError::UnknownScope(s.to_owned())),
        }
    }
}

/// The name of a secret within its scope.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey(String);

impl SecretKey {
    /// The name the mount gives each scope's directory of earlier versions:
    /// no secret is stored under it.
    pub const HISTORY_DIR: &'static str = ".history";

    /// Whether no secret may be stored under this key (see
    /// [`SecretKey::HISTORY_DIR`]).
    pub fn is_reserved(&self) -> bool {
        self.0 == Self::HISTORY_DIR
    }

    /// `key` as a secret key, if it keeps the name rules.
    pub fn new(key: impl Into<String>) -> Result<Self, RefError> {
        let key = key.into();
        match check_name(&key, key_byte, "only a-z 0-9 . _ - are allowed") {
            Ok(()) => Ok(SecretKey(key)),
            Err(why) => Err(RefError::BadKey { key, why }),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for SecretKey {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        SecretKey::new(s)
    }
}

/// The address of one secret: `<scope>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaultRef {
    scope: VaultScope,
    key: SecretKey,
}

impl VaultRef {
    /// The optional prefix of a ref written as a URI.
    pub const URI_PREFIX: &'static str = "vault://";

    /// The ref of `key` in `scope`.
    pub fn new(scope: VaultScope, key: SecretKey) -> Self {
        VaultRef { scope, key }
    }

    /// Parses `<scope>/<key>` or `vault://<scope>/<key>`.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        s.parse()
    }

    /// The scope the secret lives in.
    pub fn scope(&self) -> &VaultScope {
        &self.scope
    }

    /// The secret's name within its scope.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The secret's name, giving up the ref.
    pub fn into_key(self) -> SecretKey {
        self.key
    }
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope, self.key)
    }
}

impl FromStr for VaultRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, RefError> {
        let body = s.strip_prefix(Self::URI_PREFIX).unwrap_or(s);
        // Scope ids never contain '/', so the first '/' ends the scope; a second
        // '/' would fall into the key, whose charset rejects it.
        let (scope, key) = body
            .split_once('/')
            .ok_or_else(|| RefError::BadRef(s.to_owned()))?;
        Ok(VaultRef {
            scope: scope.parse()?,
            key: key.parse()?,
        })
    }
}

impl serde::Serialize for VaultRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_input_never_repeat_it() {
        for bad in [
            "sk-live-PASTED",
            "PASTED/k",
            "principal:sk live PASTED/k",
            "global/sk-live-PASTED!",
        ] {
            let e = VaultRef::parse(bad).unwrap_err();
            assert!(e.to_string().contains("PASTED"), "{e}");
            let msg = e.without_input();
            assert!(!msg.contains("PASTED") && !msg.is_empty(), "{msg}");
        }
    }

    #[test]
    fn valid_refs_parse_and_round_trip() {
        for text in [
            "global/openai_api_key",
            "principal:alice/github_token",
            "session:run-42/db_password",
            "principal:Alice.Smith@example.com/k",
            "global/a.b-c_d.0",
            "session:.../x",
        ] {
            let r = VaultRef::parse(text).unwrap();
            assert_eq!(r.to_string(), text);
            assert_eq!(VaultRef::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn uri_form_parses_to_the_same_ref() {
        assert_eq!(
            VaultRef::parse("vault://principal:alice/github_token").unwrap(),
            VaultRef::parse("principal:alice/github_token").unwrap()
        );
    }

    #[test]
    fn boundary_lengths() {
        let k128 = "k".repeat(128);
        let k129 = "k".repeat(129);
        assert!(SecretKey::new(k128.clone()).is_ok());
        assert!(SecretKey::new(k129.clone()).is_err());
        assert!(ScopeId::new(k128).is_ok());
        assert!(ScopeId::new(k129).is_err());
    }

    #[test]
    fn invalid_forms_are_rejected_with_a_reason() {
        // Each form, with the part it names and the reason it gives.
        let bad = [
            ("", "invalid ref \"\": expected `<scope>/<key>`"),
            ("/", "invalid scope \"\": expected `global`"),
            ("global", "invalid ref \"global\": expected `<scope>/<key>`"),
            ("global/", "invalid secret key \"\": must not be empty"),
            ("/key", "invalid scope \"\": expected `global`"),
            (
                "global/Key",
                "invalid secret key \"Key\": only a-z 0-9 . _ - are allowed",
            ),
            (
                "global/..",
                "invalid secret key \"..\": `.` and `..` are reserved",
            ),
            (
                "global/.",
                "invalid secret key \".\": `.` and `..` are reserved",
            ),
            (
                "global/a/b",
                "invalid secret key \"a/b\": only a-z 0-9 . _ - are allowed",
            ),
            (
                "global/a\0b",
                "invalid secret key \"a\\0b\": only a-z 0-9 . _ - are allowed",
            ),
            (
                "global/ key",
                "invalid secret key \" key\": only a-z 0-9 . _ - are allowed",
            ),
            (
                "global/key ",
                "invalid secret key \"key \": only a-z 0-9 . _ - are allowed",
            ),
            (
                " global/key",
                "invalid scope \" global\": expected `global`",
            ),
            (
                "global/key\n",
                "invalid secret key \"key\\n\": only a-z 0-9 . _ - are allowed",
            ),
            ("principal:/key", "invalid scope id \"\": must not be empty"),
            (
                "principal:../key",
                "invalid scope id \"..\": `.` and `..` are reserved",
            ),
            (
                "principal:./key",
                "invalid scope id \".\": `.` and `..` are reserved",
            ),
            (
                "principal:a b/key",
                "invalid scope id \"a b\": only A-Z a-z 0-9 . _ @ - are allowed",
            ),
            (
                "principal:a\0/key",
                "invalid scope id \"a\\0\": only A-Z a-z 0-9 . _ @ - are allowed",
            ),
            (
                "principal/key",
                "invalid scope \"principal\": expected `global`",
            ),
            (
                "session/key",
                "invalid scope \"session\": expected `global`",
            ),
            ("team:x/key", "invalid scope \"team:x\": expected `global`"),
            ("Global/key", "invalid scope \"Global\": expected `global`"),
            (
                "global:x/key",
                "invalid scope \"global:x\": expected `global`",
            ),
            (
                "vault:///global/key",
                "invalid scope \"\": expected `global`",
            ),
            (
                "vault://",
                "invalid ref \"vault://\": expected `<scope>/<key>`",
            ),
            (
                "vault:/global/key",
                "invalid scope \"vault:\": expected `global`",
            ),
            (
                "principal:a:b/key",
                "invalid scope id \"a:b\": only A-Z a-z 0-9 . _ @ - are allowed",
            ),
        ];
        for (text, needle) in bad {
            let err = VaultRef::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
        let long = format!("global/{}", "k".repeat(129));
        assert!(VaultRef::parse(&long).is_err());
        let long_id = format!("session:{}/k", "i".repeat(129));
        assert!(VaultRef::parse(&long_id).is_err());
    }

    #[test]
    fn constructors_validate() {
        assert!(VaultScope::principal("..").is_err());
        assert!(VaultScope::session("").is_err());
        assert!(VaultScope::session("a/b").is_err());
        assert!(SecretKey::new("UPPER").is_err());
        assert_eq!(
            VaultScope::principal("bob").unwrap().to_string(),
            "principal:bob"
        );
    }

    #[test]
    fn error_quotes_invisible_characters() {
        let err = VaultRef::parse("global/key\t").unwrap_err().to_string();
        assert!(err.contains("\\t"), "{err}");
    }
}
