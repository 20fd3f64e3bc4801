//! Moving plaintext out of a config file: find the fields that hold
//! secrets in the clear, and replace each with a `*_vault_ref` field in
//! place (same position, comments and formatting kept).

use toml_edit::{DocumentMut, Item, Key, Table, TableLike, Value};

use super::REF_SUFFIX;
use crate::scope::{SecretKey, VaultRef, VaultScope};

/// The words that mark a field as holding a secret, unless told otherwise.
pub const SECRET_WORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "dsn",
];

/// A field holding a plaintext secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainField {
    /// The path of tables to it, then its key.
    pub path: Vec<String>,
    /// The ref its value is stored under.
    pub vault_ref: VaultRef,
}

impl PlainField {
    /// Its dotted name, `a.b.field`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// The dotted name of the field that replaces it.
    pub fn ref_field_dotted(&self) -> String {
        let (_, parents) = self.path.split_last().expect("a field has a name");
        let mut parts = parents.to_vec();
        parts.push(self.ref_field());
        parts.join(".")
    }

    /// The name of the field that replaces it: `field_vault_ref`.
    pub fn ref_field(&self) -> String {
        format!(
            "{}{REF_SUFFIX}",
            self.path.last().expect("a field has a name")
        )
    }
}

/// Which fields hold secrets: by default a name with one of
/// [`SECRET_WORDS`] as a word (`api_key`, `db-password`, `apiKey`,
/// `auth_token`); with patterns, a field whose dotted name or own name
/// is one of them.
#[derive(Debug, Clone, Default)]
pub struct FieldFilter {
    /// Exact dotted names or field names; empty for the default words.
    pub patterns: Vec<String>,
}

impl FieldFilter {
    fn matches(&self, path: &[String]) -> bool {
        let name = path.last().expect("a field has a name");
        if name.ends_with(REF_SUFFIX) {
            return false;
        }
        if !self.patterns.is_empty() {
            let dotted = path.join(".");
            return self.patterns.iter().any(|p| *p == dotted || p == name);
        }
        words_of(name)
            .iter()
            .any(|w| SECRET_WORDS.contains(&w.as_str()))
    }
}

/// `apiKey`, `api_key`, `api-key`, `API_KEY` → `["api", "key"]`; `apikey`
/// also gives `key` (a word glued to its prefix).
fn words_of(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            words.push(std::mem::take(&mut cur));
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase();
        cur.push(c.to_ascii_lowercase());
    }
    words.push(cur);
    words.retain(|w| !w.is_empty());
    let glued: Vec<String> = words
        .iter()
        .filter_map(|w| {
            ["key", "token", "secret", "password"]
                .iter()
                .find(|s| w.len() > s.len() && w.ends_with(*s) && w.starts_with("api"))
                .map(|s| (*s).to_owned())
        })
        .collect();
    words.extend(glued);
    words
}

/// The key a field's value is stored under: its dotted name, lowercased,
/// with anything a key cannot hold as `_`.
fn key_for(path: &[String]) -> Option<SecretKey> {
    let mut key: String = path
        .join(".")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    key.truncate(128);
    SecretKey::new(key).ok().filter(|k| !k.is_reserved())
}

/// Every field of `doc` that `filter` picks and that holds a non-empty
/// string, in document order, with the ref (in `scope`) its value goes to.
/// A field whose `*_vault_ref` twin exists already is left alone.
pub fn find_plaintext(
    doc: &DocumentMut,
    filter: &FieldFilter,
    scope: &VaultScope,
) -> Vec<PlainField> {
    let mut out = Vec::new();
    walk(doc.as_table(), &mut Vec::new(), filter, scope, &mut out);
    out
}

fn walk(
    table: &dyn TableLike,
    path: &mut Vec<String>,
    filter: &FieldFilter,
    scope: &VaultScope,
    out: &mut Vec<PlainField>,
) {
    for (name, item) in table.iter() {
        path.push(name.to_owned());
        match item {
            Item::Table(t) => walk(t, path, filter, scope, out),
            Item::Value(Value::InlineTable(t)) => walk(t, path, filter, scope, out),
            Item::Value(Value::String(s)) if !s.value().is_empty() && filter.matches(path) => {
                let twin = format!("{name}{REF_SUFFIX}");
                if table.get(&twin).is_none() {
                    if let Some(key) = key_for(path) {
                        out.push(PlainField {
                            path: path.clone(),
                            vault_ref: VaultRef::new(scope.clone(), key),
                        });
                    }
                }
            }
            _ => {}
        }
        path.pop();
    }
}

/// The plaintext value of `field` in `doc`.
pub fn plaintext_of<'d>(doc: &'d DocumentMut, field: &PlainField) -> Option<&'d str> {
    let (name, parents) = field.path.split_last()?;
    let mut table: &dyn TableLike = doc.as_table();
    for p in parents {
        table = match table.get(p)? {
            Item::Table(t) => t,
            Item::Value(Value::InlineTable(t)) => t,
            _ => return None,
        };
    }
    table.get(name)?.as_str()
}

/// Replaces `field` by `field_vault_ref = "<ref>"` where it stands: the
/// same place among its table's entries, its comments and spacing kept.
pub fn replace_with_ref(doc: &mut DocumentMut, field: &PlainField) -> bool {
    let Some((name, parents)) = field.path.split_last() else {
        return false;
    };
    let new_name = field.ref_field();
    let text = field.vault_ref.to_string();
    let mut table = doc.as_table_mut();
    for (i, p) in parents.iter().enumerate() {
        table = match table.get_mut(p) {
            Some(Item::Table(t)) => t,
            Some(Item::Value(Value::InlineTable(t))) => {
                // Inline tables hold only values from here down.
                let mut inline = t;
                for q in &parents[i + 1..] {
                    inline = match inline.get_mut(q) {
                        Some(Value::InlineTable(t)) => t,
                        _ => return false,
                    };
                }
                return rename_inline(inline, name, &new_name, &text);
            }
            _ => return false,
        };
    }
    rename_in(table, name, &new_name, &text)
}

fn new_value(old: &Value, text: &str) -> Value {
    let mut v = Value::from(text);
    *v.decor_mut() = old.decor().clone();
    v
}

fn renamed(old: &Key, new_name: &str) -> Key {
    Key::new(new_name)
        .with_leaf_decor(old.leaf_decor().clone())
        .with_dotted_decor(old.dotted_decor().clone())
}

fn rename_in(t: &mut Table, name: &str, new_name: &str, text: &str) -> bool {
    let entries: Vec<(Key, Item)> = t
        .iter()
        .filter_map(|(k, _)| t.get_key_value(k).map(|(k, i)| (k.clone(), i.clone())))
        .collect();
    let Some(Item::Value(old)) = t.get(name) else {
        return false;
    };
    let value = new_value(old, text);
    t.clear();
    for (k, item) in entries {
        if k.get() == name {
            t.insert_formatted(&renamed(&k, new_name), Item::Value(value.clone()));
        } else {
            t.insert_formatted(&k, item);
        }
    }
    true
}

fn rename_inline(t: &mut toml_edit::InlineTable, name: &str, new_name: &str, text: &str) -> bool {
    let entries: Vec<(Key, Value)> = t
        .iter()
        .filter_map(|(k, _)| {
            t.get_key_value(k)
                .and_then(|(k, i)| i.as_value().map(|v| (k.clone(), v.clone())))
        })
        .collect();
    let Some(old) = t.get(name) else {
        return false;
    };
    let value = new_value(old, text);
    t.clear();
    for (k, v) in entries {
        if k.get() == name {
            t.insert_formatted(&renamed(&k, new_name), value.clone());
        } else {
            t.insert_formatted(&k, v);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_words_are_found_as_words() {
        for (name, hit) in [
            ("api_key", true),
            ("apiKey", true),
            ("API_KEY", true),
            ("apikey", true),
            ("db-password", true),
            ("auth_token", true),
            ("sentry_dsn", true),
            ("monkey", false),
            ("keyboard_layout", false),
            ("tokenizer", false),
            ("openai_api_key_vault_ref", false),
        ] {
            let path = vec![name.to_owned()];
            assert_eq!(FieldFilter::default().matches(&path), hit, "{name}");
        }
    }

    #[test]
    fn a_field_is_replaced_where_it_stands() {
        let text = "# top\n[db]\nhost = \"h\" # the host\n# the password\npassword = \"hunter2\" # old\nport = 5432\ninline = { token = \"t\", n = 1 }\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        let found = find_plaintext(&doc, &FieldFilter::default(), &VaultScope::Global);
        let names: Vec<String> = found.iter().map(PlainField::dotted).collect();
        assert_eq!(names, ["db.password", "db.inline.token"]);
        assert_eq!(plaintext_of(&doc, &found[0]), Some("hunter2"));
        for f in &found {
            assert!(replace_with_ref(&mut doc, f));
        }
        assert_eq!(
            doc.to_string(),
            "# top\n[db]\nhost = \"h\" # the host\n# the password\npassword_vault_ref = \"global/db.password\" # old\nport = 5432\ninline = { token_vault_ref = \"global/db.inline.token\", n = 1 }\n"
        );
        // Nothing left to move.
        assert!(find_plaintext(&doc, &FieldFilter::default(), &VaultScope::Global).is_empty());
    }
}
