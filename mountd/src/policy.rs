//! Who may read or write which scope. Decided per request from the caller's
//! uid and groups; no kernel permission checks, no caching across callers.
//!
//! Built-in rules, then the grants of an optional policy file
//! (`docs/policy.md`):
//! 1. uid 0 and the vault's owner: read-write everywhere;
//! 2. `principal:<id>`: the user whose login name is `<id>` (or whose uid is
//!    `<id>` when numeric): read-write;
//! 3. `session:<id>`: the uid that created the session: read-write;
//! 4. policy grants, per scope pattern, to users or groups: read,
//!    read-write, or create (read-write, and creating such sessions).
//!
//! Who may create `session:<id>` with `mkdir`: root and the vault owner,
//! the user whose namespace the id is in (`<login>.<tag>` or `<uid>.<tag>`,
//! the owner being everything before the first dot), and a `create` grant.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealfs::VaultScope;
use serde::Deserialize;

/// What a caller may do in a scope. Ordered: `None < Read < ReadWrite <
/// Create`; `Create` (session scopes only) is read-write plus making
/// sessions the grant's pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    None,
    Read,
    ReadWrite,
    Create,
}

impl Access {
    pub fn can_read(self) -> bool {
        self >= Access::Read
    }

    pub fn can_write(self) -> bool {
        self >= Access::ReadWrite
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read policy file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("policy file {path}: grant {index}: {message}")]
    Grant {
        path: String,
        index: usize,
        message: String,
    },
}

/// A user or group in a grant: a name or a numeric id.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum NameOrId {
    Id(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    scope: String,
    #[serde(default)]
    users: Vec<NameOrId>,
    #[serde(default)]
    groups: Vec<NameOrId>,
    access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    grant: Vec<GrantFile>,
}

/// A scope pattern: the scope text with `*` matching any run of characters
/// (`global`, `principal:*`, `session:ci-*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern(String);

impl ScopePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty scope pattern".into());
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-:*".contains(&b));
        if !ok {
            return Err(format!(
                "invalid scope pattern {s:?}: only scope characters and `*`"
            ));
        }
        if !s.contains('*') {
            s.parse::<VaultScope>().map_err(|e| e.to_string())?;
        }
        Ok(ScopePattern(s.to_owned()))
    }

    pub fn matches(&self, scope: &VaultScope) -> bool {
        glob(self.0.as_bytes(), scope.to_string().as_bytes())
    }
}

/// `*`-only glob match, iterative with backtracking to the last star.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    scope: ScopePattern,
    uids: Vec<u32>,
    gids: Vec<u32>,
    access: Access,
}

/// The grants of a policy file, with names resolved to ids at load time.
/// The default (no file, or a file that failed to reload) grants nothing:
/// only the built-in rules apply.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
    /// Grants skipped at load because a user or group they name does not
    /// exist (any more): one line each, for the log.
    skipped: Vec<String>,
}

/// Two policies are the same when they grant the same: what was skipped
/// at load is a diagnostic, not part of the policy (the resolved form has
/// no skipped grants to report).
impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.grants == other.grants
    }
}

impl Eq for Policy {}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_owned(),
            message: match e.span() {
                Some(span) => format!(
                    "line {}: {}",
                    text[..span.start.min(text.len())].matches('\n').count() + 1,
                    e.message()
                ),
                None => e.message().to_owned(),
            },
        })?;
        let mut grants = Vec::new();
        let mut skipped = Vec::new();
        for (i, g) in file.grant.into_iter().enumerate() {
            let err = |message: String| PolicyError::Grant {
                path: origin.to_owned(),
                index: i + 1,
                message,
            };
            let scope = ScopePattern::parse(&g.scope).map_err(err)?;
            if g.access == Access::Create && !g.scope.starts_with("session:") {
                return Err(err(format!(
                    "access \"create\" is for session scopes (`session:<pattern>`), not {:?}",
                    g.scope
                )));
            }
            if g.users.is_empty() && g.groups.is_empty() {
                return Err(err("names no users and no groups".into()));
            }
            // A user or group that does not exist (any more): the grant is
            // skipped, never widened or narrowed, and the rest applies.
            let missing: Vec<String> = g
                .users
                .iter()
                .filter(|u| resolve_user(u).is_none())
                .map(|u| format!("unknown user {}", show(u)))
                .chain(
                    g.groups
                        .iter()
                        .filter(|g| resolve_group(g).is_none())
                        .map(|g| format!("unknown group {}", show(g))),
                )
                .collect();
            if !missing.is_empty() {
                skipped.push(format!(
                    "policy file {origin}: grant {} skipped: {}",
                    i + 1,
                    missing.join(", ")
                ));
                continue;
            }
            let uids = g.users.iter().filter_map(resolve_user).collect();
            let gids = g.groups.iter().filter_map(resolve_group).collect();
            grants.push(Grant {
                scope,
                uids,
                gids,
                access: g.access,
            });
        }
        Ok(Policy { grants, skipped })
    }

    /// The grants skipped at load (a user or group that does not exist).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The policy as resolved, in the policy file's own syntax with numeric
    /// ids (`-v` logs it at load): parsing it gives this policy back.
    pub fn to_toml(&self) -> String {
        let ids = |ids: &[u32]| {
            ids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        for g in &self.grants {
            let access = match g.access {
                Access::None => "none",
                Access::Read => "read",
                Access::ReadWrite => "read-write",
                Access::Create => "create",
            };
            out.push_str(&format!(
                "[[grant]]\nscope = \"{}\"\nusers = [{}]\ngroups = [{}]\naccess = \"{access}\"\n\n",
                g.scope.0,
                ids(&g.uids),
                ids(&g.gids)
            ));
        }
        out
    }

    /// Whether any grant names a group (callers' supplementary groups are
    /// only looked up then).
    pub fn uses_groups(&self) -> bool {
        self.grants.iter().any(|g| !g.gids.is_empty())
    }

    fn granted(&self, who: &Who<'_>, scope: &VaultScope) -> Access {
        self.grants
            .iter()
            .filter(|g| g.scope.matches(scope))
            .filter(|g| g.uids.contains(&who.uid) || g.gids.iter().any(|gid| who.in_group(*gid)))
            .map(|g| g.access)
            .max()
            .unwrap_or(Access::None)
    }
}

fn show(n: &NameOrId) -> String {
    match n {
        NameOrId::Id(id) => id.to_string(),
        NameOrId::Name(name) => format!("{name:?}"),
    }
}

#[cfg(unix)]
fn resolve_user(u: &NameOrId) -> Option<u32> {
    match u {
        NameOrId::Id(id) => Some(*id),
        NameOrId::Name(name) => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    }
}

#[cfg(unix)]
fn resolve_group(g: &NameOrId) -> Option<u32> {
    match g {
        NameOrId::Id(id) => Some(*id),
        NameOrId::Name(name) => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    }
}

#[cfg(not(unix))]
fn resolve_user(u: &NameOrId) -> Option<u32> {
    match u {
        NameOrId::Id(id) => Some(*id),
        NameOrId::Name(_) => None,
    }
}

#[cfg(not(unix))]
fn resolve_group(g: &NameOrId) -> Option<u32> {
    resolve_user(g)
}

/// The caller as the rules see it.
pub struct Who<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, when known.
    pub groups: &'a [u32],
}

impl Who<'_> {
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// How long a uid -> login name lookup is trusted: a user deleted and its
/// uid given to someone else stops matching `principal:<old name>` within
/// this.
pub const NAME_TTL: Duration = Duration::from_secs(3);

/// The overflow uid (`nobody`): what a file owned by an unmapped uid shows
/// in a user namespace. Never the vault's owner.
pub const OVERFLOW_UID: u32 = 65534;

/// Applies the built-in rules and a policy. Caches uid -> login name for
/// [`NAME_TTL`].
pub struct Rules {
    /// The vault directory's owner, when it may act as one: `None` for the
    /// overflow uid or a uid without a name.
    owner_uid: Option<u32>,
    names: Mutex<HashMap<u32, (Option<String>, Instant)>>,
}

impl Rules {
    /// `owner_uid` owns the vault directory; it is trusted as the vault's
    /// owner only if it is a real user (has a name, is not the overflow
    /// uid): a bind mount into a container can show any owner.
    pub fn new(owner_uid: u32) -> Self {
        let real =
            owner_uid == 0 || (owner_uid != OVERFLOW_UID && lookup_name(owner_uid).is_some());
        if !real {
            tracing::warn!(
                owner_uid,
                "the vault directory's owner is the overflow uid or has no name: it gets no owner rights (root still has them)"
            );
        }
        Rules {
            owner_uid: real.then_some(owner_uid),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The vault owner the rules trust, if any.
    pub fn owner_uid(&self) -> Option<u32> {
        self.owner_uid
    }

    /// Whether `who` is root or the vault's owner: everything is allowed.
    pub fn is_admin(&self, uid: u32) -> bool {
        uid == 0 || Some(uid) == self.owner_uid
    }

    /// What `who` may do in `scope`; `scope_owner` is the uid that created
    /// a session scope, if recorded.
    pub fn access(
        &self,
        policy: &Policy,
        who: &Who<'_>,
        scope: &VaultScope,
        scope_owner: Option<u32>,
    ) -> Access {
        if self.is_admin(who.uid) {
            return Access::ReadWrite;
        }
        let own = match scope {
            VaultScope::Principal(id) => self.is_principal(who.uid, id.as_str()),
            VaultScope::Session(_) => scope_owner == Some(who.uid),
            VaultScope::Global => false,
        };
        if own {
            return Access::ReadWrite;
        }
        policy.granted(who, scope)
    }

    /// Whether `who` may create `session:<id>`: root and the vault owner,
    /// the user whose namespace `id` is in, or a `create` grant.
    pub fn may_create_session(&self, policy: &Policy, who: &Who<'_>, id: &sealfs::ScopeId) -> bool {
        self.is_admin(who.uid)
            || self.in_own_namespace(who.uid, id.as_str())
            || policy.granted(who, &VaultScope::Session(id.clone())) == Access::Create
    }

    /// Whether `who` may create `session:<id>` where scopes record no owner
    /// (the fleet): root and the vault owner, or a `create` grant; not the
    /// namespace rule, which rests on the maker owning what it makes.
    pub fn may_create_unowned_session(
        &self,
        policy: &Policy,
        who: &Who<'_>,
        id: &sealfs::ScopeId,
    ) -> bool {
        self.is_admin(who.uid)
            || policy.granted(who, &VaultScope::Session(id.clone())) == Access::Create
    }

    /// `<login>.<tag>` or `<uid>.<tag>` (canonical decimal): the owner is
    /// everything before the first dot, so each id has one candidate
    /// owner. A login name with a dot in it uses the uid form.
    pub fn in_own_namespace(&self, uid: u32, id: &str) -> bool {
        let Some((owner, tag)) = id.split_once('.') else {
            return false;
        };
        !tag.is_empty()
            && !owner.is_empty()
            && (owner == uid.to_string() || self.login_name(uid).as_deref() == Some(owner))
    }

    /// `principal:<id>` belongs to the user named `id`, or with uid `id`
    /// in canonical decimal (`principal:01001` is nobody's).
    pub fn is_principal(&self, uid: u32, id: &str) -> bool {
        id == uid.to_string() || self.login_name(uid).as_deref() == Some(id)
    }

    fn login_name(&self, uid: u32) -> Option<String> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match names.get(&uid) {
            Some((name, at)) if now.duration_since(*at) < NAME_TTL => name.clone(),
            _ => {
                if names.len() > 4096 {
                    names.retain(|_, (_, at)| now.duration_since(*at) < NAME_TTL);
                }
                let name = lookup_name(uid);
                names.insert(uid, (name.clone(), now));
                name
            }
        }
    }

    /// Forgets cached user names (on policy reload).
    pub fn forget_names(&self) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(unix)]
fn lookup_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(not(unix))]
fn lookup_name(_uid: u32) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> VaultScope {
        s.parse().unwrap()
    }

    #[test]
    fn glob_patterns() {
        let p = |s| ScopePattern::parse(s).unwrap();
        assert!(p("global").matches(&scope("global")));
        assert!(!p("global").matches(&scope("session:global")));
        assert!(p("principal:*").matches(&scope("principal:alice")));
        assert!(!p("principal:*").matches(&scope("session:alice")));
        assert!(p("session:ci-*").matches(&scope("session:ci-42")));
        assert!(!p("session:ci-*").matches(&scope("session:dev-1")));
        assert!(p("*").matches(&scope("session:x")));
        assert!(p("*:a*b").matches(&scope("principal:axxb")));
        assert!(!p("*:a*b").matches(&scope("principal:axxbc")));
        assert!(ScopePattern::parse("glob/al").is_err());
        assert!(ScopePattern::parse("team:x").is_err());
        assert!(ScopePattern::parse("").is_err());
    }

    #[test]
    fn policy_grants_by_uid_and_gid() {
        let policy = Policy::parse(
            "test",
            r#"
[[grant]]
scope = "global"
users = [1001, "root"]
access = "read"

[[grant]]
scope = "session:ci-*"
groups = [2000]
access = "read-write"
"#,
        )
        .unwrap();
        let rules = Rules::new(1);
        let who = |uid, gid| Who {
            uid,
            gid,
            groups: &[],
        };
        assert_eq!(
            rules.access(&policy, &who(1001, 1001), &scope("global"), None),
            Access::Read
        );
        assert_eq!(
            rules.access(&policy, &who(1002, 1002), &scope("global"), None),
            Access::None
        );
        assert_eq!(
            rules.access(&policy, &who(1002, 2000), &scope("session:ci-1"), None),
            Access::ReadWrite
        );
        assert_eq!(
            rules.access(&policy, &who(1002, 2000), &scope("session:x"), None),
            Access::None
        );
        let sup = Who {
            uid: 1003,
            gid: 1003,
            groups: &[2000],
        };
        assert_eq!(
            rules.access(&policy, &sup, &scope("session:ci-9"), None),
            Access::ReadWrite
        );
        // Built-in rules.
        assert_eq!(
            rules.access(&policy, &who(1, 1), &scope("principal:bob"), None),
            Access::ReadWrite
        );
        assert_eq!(
            rules.access(&policy, &who(0, 0), &scope("global"), None),
            Access::ReadWrite
        );
        assert_eq!(
            rules.access(&policy, &who(1005, 1), &scope("principal:1005"), None),
            Access::ReadWrite
        );
        assert_eq!(
            rules.access(&policy, &who(1005, 1), &scope("principal:1006"), None),
            Access::None
        );
        assert_eq!(
            rules.access(&policy, &who(1007, 1), &scope("session:s"), Some(1007)),
            Access::ReadWrite
        );
        assert_eq!(
            rules.access(&policy, &who(1008, 1), &scope("session:s"), Some(1007)),
            Access::None
        );
        assert!(rules.is_principal(0, "root"));
        // Numeric ids are canonical decimal only.
        assert!(!rules.is_principal(1005, "01005"));
        assert!(!rules.is_principal(1005, "+1005"));
        assert_eq!(
            rules.access(&policy, &who(1005, 1), &scope("principal:01005"), None),
            Access::None
        );
    }

    #[test]
    fn a_grant_naming_a_missing_user_or_group_is_skipped_and_the_rest_applies() {
        let policy = Policy::parse(
            "p.toml",
            "[[grant]]\nscope = \"global\"\nusers = [1, \"no-such-user-xyz\"]\naccess = \"read\"\n\n\
             [[grant]]\nscope = \"principal:*\"\ngroups = [\"no-such-group-xyz\"]\naccess = \"read\"\n\n\
             [[grant]]\nscope = \"global\"\nusers = [2]\naccess = \"read\"\n",
        )
        .unwrap();
        assert_eq!(
            policy.skipped(),
            [
                "policy file p.toml: grant 1 skipped: unknown user \"no-such-user-xyz\"",
                "policy file p.toml: grant 2 skipped: unknown group \"no-such-group-xyz\""
            ]
        );
        let rules = Rules::new(0);
        let who = |uid, gid| Who {
            uid,
            gid,
            groups: &[],
        };
        let global = "global".parse().unwrap();
        // The resolved form grants the same (skipped grants are not in it).
        assert_eq!(Policy::parse("again", &policy.to_toml()).unwrap(), policy);
        // Skipped whole: uid 1, named beside the missing user, gets nothing.
        assert_eq!(
            rules.access(&policy, &who(1, 1), &global, None),
            Access::None
        );
        assert_eq!(
            rules.access(&policy, &who(2, 2), &global, None),
            Access::Read
        );
    }

    #[test]
    fn an_owner_that_is_the_overflow_uid_or_nameless_is_not_the_vault_owner() {
        assert!(!Rules::new(OVERFLOW_UID).is_admin(OVERFLOW_UID));
        assert!(!Rules::new(4_000_000).is_admin(4_000_000));
        assert!(Rules::new(4_000_000).is_admin(0));
        assert!(Rules::new(0).is_admin(0));
    }

    #[test]
    fn bad_policies_are_clear_errors() {
        // Each error names the file and the grant (by number, or by line
        // where the TOML itself is wrong) and says what is wrong.
        let ok = "[[grant]]\nscope = \"global\"\nusers = [1]\naccess = \"read\"\n\n";
        for (text, needle) in [
            (format!("{ok}[[grant]]\nscope = \"global\"\naccess = \"read\"\n"), "policy file p.toml: grant 2: names no users and no groups"),
            (format!("{ok}[[grant]]\nscope = \"global\"\nusers = [1]\naccess = \"write\"\n"), "policy file p.toml: line 9: unknown variant `write`"),
            (format!("{ok}[[grant]]\nscope = \"nope:x\"\nusers = [1]\naccess = \"read\"\n"), "policy file p.toml: grant 2: invalid scope"),
            (format!("{ok}[[grant]]\nscope = \"global\"\nusers = [1]\naccess = \"create\"\n"), "policy file p.toml: grant 2: access \"create\" is for session scopes"),
            (format!("{ok}[[grant]]\nscope = \"global\"\nusers = [1]\naccess = \"read\"\nextra = 1\n"), "policy file p.toml: line 10: unknown field `extra`"),
            (format!("{ok}[grant\n"), "policy file p.toml: line 6: "),
        ] {
            let e = Policy::parse("p.toml", &text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn the_resolved_form_parses_back_to_the_same_policy() {
        let policy = Policy::parse(
            "test",
            "[[grant]]\nscope = \"session:ci-*\"\nusers = [\"root\", 7]\ngroups = [0]\naccess = \"read-write\"\n\n\
             [[grant]]\nscope = \"*\"\ngroups = [12]\naccess = \"none\"\n",
        )
        .unwrap();
        let text = policy.to_toml();
        assert!(text.contains("users = [0, 7]"), "{text}");
        assert_eq!(Policy::parse("again", &text).unwrap(), policy, "{text}");
        assert_eq!(Policy::default().to_toml(), "");
    }
}
