//! Config indirection: config files hold refs in fields named `*_vault_ref`,
//! never raw secrets. This module finds those fields at any depth, resolves
//! them through a vault, and edits them without disturbing the rest of the
//! file (comments, order and formatting are kept by `toml_edit`).

use std::fs;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::fsutil;
use crate::scope::VaultRef;
use crate::secret::SensitiveBytes;
use crate::vault::{Vault, VaultError};

mod import;
pub use import::{
    find_plaintext, plaintext_of, replace_with_ref, FieldFilter, PlainField, SECRET_WORDS,
};

/// Fields whose name ends with this hold a vault ref.
pub const REF_SUFFIX: &str = "_vault_ref";

/// Why reading, resolving or editing a config file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file could not be written.
    #[error("cannot write config {path}")]
    Write {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config {path} is not valid TOML: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A `*_vault_ref` field does not hold a usable ref.
    #[error("config field `{field}`: {problem}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// Why the field cannot be used.
        problem: FieldProblem,
    },
    /// The secret a field refers to could not be read from the vault.
    #[error("config field `{field}` refers to {vault_ref}")]
    Resolve {
        /// Dotted path of the field.
        field: String,
        /// The ref the field holds.
        vault_ref: VaultRef,
        /// Why the vault could not give the secret.
        #[source]
        source: Box<VaultError>,
    },
    /// A field name given to edit is not dotted bare keys ending in
    /// `_vault_ref`.
    #[error("invalid field name {0:?}: expected dotted bare keys ending in `{REF_SUFFIX}`, e.g. `model_provider.openai_api_key{REF_SUFFIX}`")]
    BadFieldName(String),
    /// A field cannot be set because a part of its path exists and is not a
    /// table.
    #[error("cannot set `{field}`: `{parent}` exists and is not a table")]
    NotATable {
        /// The field to set.
        field: String,
        /// The part of its path that is not a table.
        parent: String,
    },
}

/// Why one `*_vault_ref` field cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// The field holds another kind of TOML item than a string; the
    /// text names it.
    #[error("expected a string ref, found {0}")]
    NotAString(&'static str),
    /// The string is not a valid vault ref.
    ///
    /// The text is not shown: a mistaken raw secret in a ref field must not
    /// be echoed into logs or terminals.
    #[error("not a valid vault ref (expected `<scope>/<key>`, e.g. `global/openai_api_key`; the value is not shown in case it is a secret)")]
    InvalidRef,
}

/// One `*_vault_ref` field found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefField {
    /// Dotted path, with `[i]` for array elements: `servers[0].db_password_vault_ref`.
    pub field: String,
    /// The ref the field holds, or why it holds none.
    pub vault_ref: Result<VaultRef, FieldProblem>,
}

/// A field resolved to its secret.
pub struct ResolvedRef {
    /// Dotted path of the field.
    pub field: String,
    /// The ref the field holds.
    pub vault_ref: VaultRef,
    /// The secret's value.
    pub value: SensitiveBytes,
}

/// What [`check_refs`] found for one field.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefStatus {
    /// The secret exists and opens (a read-once secret is only looked up:
    /// reading it would consume it).
    Resolved,
    /// No such secret (or no vault).
    Missing,
    /// The field does not hold a valid ref.
    Invalid(FieldProblem),
    /// The store failed to answer for this ref.
    Error(crate::StoreError),
}

impl RefStatus {
    /// `resolved`, `missing`, `invalid` or `error`: the status in JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefStatus::Resolved => "resolved",
            RefStatus::Missing => "missing",
            RefStatus::Invalid(_) => "invalid",
            RefStatus::Error(_) => "error",
        }
    }
}

/// One field checked against a store.
#[derive(Debug)]
pub struct RefCheck {
    /// Dotted path of the field.
    pub field: String,
    /// The ref it holds, when it holds a valid one.
    pub vault_ref: Option<VaultRef>,
    /// What the check found.
    pub status: RefStatus,
}

/// Every `*_vault_ref` field of `doc`, checked against `store` (`None`:
/// there is no vault, so every valid ref is missing). Unlike
/// [`resolve_config_refs`] it does not stop at the first problem.
pub fn check_refs(store: Option<&dyn crate::SecretStore>, doc: &DocumentMut) -> Vec<RefCheck> {
    find_vault_refs(doc)
        .into_iter()
        .map(|f| {
            let (vault_ref, status) = match f.vault_ref {
                Err(problem) => (None, RefStatus::Invalid(problem)),
                Ok(r) => {
                    let status = match store {
                        None => RefStatus::Missing,
                        Some(s) => match s.entry(&r) {
                            Ok(None) => RefStatus::Missing,
                            Ok(Some(e)) if e.once => RefStatus::Resolved,
                            // Decrypting proves the secret is usable, not
                            // just listed.
                            Ok(Some(_)) => match s.read(&r) {
                                Ok(_) => RefStatus::Resolved,
                                Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                                    RefStatus::Missing
                                }
                                Err(e) => RefStatus::Error(e),
                            },
                            Err(e) => RefStatus::Error(e),
                        },
                    };
                    (Some(r), status)
                }
            };
            RefCheck {
                field: f.field,
                vault_ref,
                status,
            }
        })
        .collect()
}

/// Reads and parses a TOML file, keeping its formatting.
pub fn load_document(path: &Path) -> Result<DocumentMut, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_document(path, &text)
}

fn parse_document(path: &Path, text: &str) -> Result<DocumentMut, ConfigError> {
    text.parse::<DocumentMut>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        // toml_edit's message spans several lines with a caret diagram;
        // keep one line.
        message: e.message().trim().to_owned(),
    })
}

/// Every `*_vault_ref` field in `doc`, in document order.
pub fn find_vault_refs(doc: &DocumentMut) -> Vec<RefField> {
    let mut out = Vec::new();
    walk_table(doc.as_table(), "", &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(table: &dyn TableLike, prefix: &str, out: &mut Vec<RefField>) {
    for (key, item) in table.iter() {
        let path = join(prefix, key);
        if key.ends_with(REF_SUFFIX) {
            out.push(RefField {
                field: path.clone(),
                vault_ref: ref_of(item),
            });
        }
        walk_item(item, &path, out);
    }
}

fn walk_item(item: &Item, path: &str, out: &mut Vec<RefField>) {
    match item {
        Item::Table(t) => walk_table(t, path, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                walk_table(t, &format!("{path}[{i}]"), out);
            }
        }
        Item::Value(v) => walk_value(v, path, out),
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &str, out: &mut Vec<RefField>) {
    match v {
        Value::InlineTable(t) => walk_table(t, path, out),
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn ref_of(item: &Item) -> Result<VaultRef, FieldProblem> {
    let kind = match item {
        Item::Value(Value::String(s)) => {
            return VaultRef::parse(s.value()).map_err(|_| FieldProblem::InvalidRef)
        }
        Item::Value(v) => v.type_name(),
        Item::Table(_) => "table",
        Item::ArrayOfTables(_) => "array of tables",
        Item::None => "nothing",
    };
    Err(FieldProblem::NotAString(kind))
}

/// Loads `path` and resolves every `*_vault_ref` field through `vault`.
/// The first field that is invalid or whose secret is missing is an error
/// naming that field.
pub fn resolve_config_refs(vault: &Vault, path: &Path) -> Result<Vec<ResolvedRef>, ConfigError> {
    let doc = load_document(path)?;
    find_vault_refs(&doc)
        .into_iter()
        .map(|f| {
            let vault_ref = f.vault_ref.map_err(|problem| ConfigError::Field {
                field: f.field.clone(),
                problem,
            })?;
            let value = vault
                .get(&vault_ref)
                .map_err(|source| ConfigError::Resolve {
                    field: f.field.clone(),
                    vault_ref: vault_ref.clone(),
                    source: Box::new(source),
                })?;
            Ok(ResolvedRef {
                field: f.field,
                vault_ref,
                value,
            })
        })
        .collect()
}

/// Splits `model_provider.openai_api_key_vault_ref` into bare-key segments,
/// the last of which must end in `_vault_ref`.
pub fn parse_field_name(field: &str) -> Result<Vec<&str>, ConfigError> {
    let segments: Vec<&str> = field.split('.').collect();
    let bare = |s: &&str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let last_ok = segments
        .last()
        .is_some_and(|l| l.len() > REF_SUFFIX.len() && l.ends_with(REF_SUFFIX));
    if segments.iter().all(bare) && last_ok {
        Ok(segments)
    } else {
        Err(ConfigError::BadFieldName(field.to_owned()))
    }
}

/// Sets `field = "<vault_ref>"` in `doc`, creating tables on the way and
/// keeping the decoration (comments, spacing) of a value it replaces.
pub fn set_ref_field(
    doc: &mut DocumentMut,
    field: &str,
    vault_ref: &VaultRef,
) -> Result<(), ConfigError> {
    let segments = parse_field_name(field)?;
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    for (i, seg) in parents.iter().enumerate() {
        let not_a_table = || ConfigError::NotATable {
            field: field.to_owned(),
            parent: segments[..=i].join("."),
        };
        if table.get(seg).is_none() {
            table.insert(seg, Item::Table(toml_edit::Table::new()));
        }
        table = match table.get_mut(seg).expect("just inserted") {
            Item::Table(t) => t,
            Item::Value(Value::InlineTable(t)) => t,
            _ => return Err(not_a_table()),
        };
    }
    let text = vault_ref.to_string();
    match table.get_mut(last) {
        Some(Item::Value(v)) => {
            let decor = v.decor().clone();
            *v = Value::from(text);
            *v.decor_mut() = decor;
        }
        Some(Item::None) | None => {
            table.insert(last, toml_edit::value(text));
        }
        Some(_) => {
            return Err(ConfigError::NotATable {
                field: field.to_owned(),
                parent: field.to_owned(),
            })
        }
    }
    Ok(())
}

/// A parsed config file and where it lives, for read-modify-write.
pub struct ConfigFile {
    path: PathBuf,
    doc: DocumentMut,
    mode: Option<u32>,
}

impl ConfigFile {
    /// Loads `path`; a file that does not exist yet starts empty. A symlink
    /// is followed so that its target is what gets rewritten.
    pub fn load_or_new(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        match fs::canonicalize(path) {
            Ok(real) => {
                let doc = load_document(&real)?;
                let meta = fs::metadata(&real).map_err(read_err)?;
                #[cfg(unix)]
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    Some(meta.permissions().mode() & 0o7777)
                };
                #[cfg(not(unix))]
                let mode = {
                    let _ = meta;
                    None
                };
                Ok(ConfigFile {
                    path: real,
                    doc,
                    mode,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new file needs an existing directory; find out now, not
                // after the secret has been stored.
                if !fsutil::parent_dir(path).is_dir() {
                    return Err(read_err(e));
                }
                Ok(ConfigFile {
                    path: path.to_owned(),
                    doc: DocumentMut::new(),
                    mode: None,
                })
            }
            Err(e) => Err(read_err(e)),
        }
    }

    /// The parsed document, to edit before [`save`](Self::save).
    pub fn document_mut(&mut self) -> &mut DocumentMut {
        &mut self.doc
    }

    /// Replaces the file atomically, keeping its mode.
    pub fn save(&self) -> Result<(), ConfigError> {
        fsutil::write_atomic(
            fsutil::parent_dir(&self.path),
            &self.path,
            self.doc.to_string().as_bytes(),
            self.mode,
        )
        .map_err(|source| ConfigError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> DocumentMut {
        text.parse().unwrap()
    }

    /// Found by `cargo fuzz` (target `config`): toml_edit 0.23 panicked
    /// ("all items have spans") on this file instead of returning an error.
    #[test]
    fn a_file_that_crashed_the_toml_parser_is_a_clear_error() {
        let bytes = include_bytes!("../../../../fuzz/regressions/config-toml-edit-span-panic");
        let text = std::str::from_utf8(bytes).unwrap();
        let err = parse_document(Path::new("evil.toml"), text).unwrap_err();
        assert!(err.to_string().contains("evil.toml"), "{err}");
    }

    #[test]
    fn finds_refs_at_any_depth() {
        let d = doc(r#"
top_vault_ref = "global/a"
plain = "x"
[model_provider]
openai_api_key_vault_ref = "vault://principal:alice/k"
inline = { db_vault_ref = "session:s1/db" }
[[servers]]
token_vault_ref = 42
[[servers]]
list = [{ x_vault_ref = "global/Bad" }]
"#);
        let found = find_vault_refs(&d);
        let fields: Vec<_> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "top_vault_ref",
                "model_provider.openai_api_key_vault_ref",
                "model_provider.inline.db_vault_ref",
                "servers[0].token_vault_ref",
                "servers[1].list[0].x_vault_ref"
            ]
        );
        assert_eq!(
            found[1].vault_ref.as_ref().unwrap().to_string(),
            "principal:alice/k"
        );
        assert_eq!(found[3].vault_ref, Err(FieldProblem::NotAString("integer")));
        assert_eq!(found[4].vault_ref, Err(FieldProblem::InvalidRef));
    }

    #[test]
    fn set_keeps_everything_else_byte_identical() {
        let text = "# header comment\n[model_provider] # trailing\nname = \"openai\" # keep me\nold_vault_ref = \"global/old\" # ref comment\n\n[other]\nx = 1\n";
        let mut d = doc(text);
        let r = VaultRef::parse("global/new").unwrap();
        set_ref_field(&mut d, "model_provider.old_vault_ref", &r).unwrap();
        assert_eq!(d.to_string(), text.replace("global/old", "global/new"));
        set_ref_field(&mut d, "model_provider.api_vault_ref", &r).unwrap();
        let out = d.to_string();
        assert!(out.starts_with(
            "# header comment\n[model_provider] # trailing\nname = \"openai\" # keep me\n"
        ));
        assert!(out.contains("api_vault_ref = \"global/new\""));
        assert!(out.ends_with("[other]\nx = 1\n"));
    }

    #[test]
    fn set_creates_tables_and_refuses_non_tables() {
        let mut d = doc("scalar = 1\n");
        let r = VaultRef::parse("global/k").unwrap();
        set_ref_field(&mut d, "a.b.k_vault_ref", &r).unwrap();
        let found = find_vault_refs(&d);
        assert_eq!(found[0].field, "a.b.k_vault_ref");
        assert!(matches!(
            set_ref_field(&mut d, "scalar.k_vault_ref", &r),
            Err(ConfigError::NotATable { .. })
        ));
    }

    #[test]
    fn field_names_are_checked() {
        for bad in [
            "",
            "a",
            "a.",
            ".a_vault_ref",
            "a..b_vault_ref",
            "_vault_ref",
            "a b_vault_ref",
            "a.\"b\"_vault_ref",
        ] {
            assert!(parse_field_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_field_name("a.b_vault_ref").unwrap(),
            ["a", "b_vault_ref"]
        );
    }
}
