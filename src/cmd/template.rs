//! `sealfs template set|list|show|render|delete`: whole files with secrets
//! inside, stored sealed in the vault ([`sealfs::template`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use sealfs::cli_common::VaultArgs;
use sealfs::template::{self, Template, MAX_RENDERED_SIZE, MAX_TEMPLATE_SIZE};
use sealfs::{ErrorKind, SecretKey, SensitiveBytes, StoreError};
use serde::Serialize;

use super::record;
use super::secret::open_existing;
use crate::args::TemplateCommand;
use crate::output::{note, write_json, write_stdout, Status};

pub(super) fn run(v: &VaultArgs, command: TemplateCommand) -> Result<Status> {
    match command {
        TemplateCommand::Set { name, from } => {
            let source = read_source(&name, from.as_deref())?;
            set(v, &name, source)?;
        }
        TemplateCommand::List { json } => list(v, json)?,
        TemplateCommand::Show { name } => {
            let t = load(v, &name)?;
            record(v, "show", &target(&name), None);
            write_stdout(t.source().expose())?;
        }
        TemplateCommand::Render { name } => {
            let t = load(v, &name)?;
            let store = v.open_store_once(false)?;
            let result = template::render_from(store.as_dyn(), &t, MAX_RENDERED_SIZE);
            // As through the mount: the template, then each ref it read
            // (or the one that failed).
            let failure = match &result {
                Ok(_) => None,
                Err(template::RenderError::Read { source, .. }) => Some(match source {
                    template::RefReadError::Missing => ErrorKind::NotFound,
                    template::RefReadError::Store(e) => e.kind(),
                    _ => ErrorKind::InvalidInput,
                }),
                Err(_) => Some(ErrorKind::InvalidInput),
            };
            record(v, "render", &target(&name), failure);
            match &result {
                Ok(_) => t
                    .refs()
                    .iter()
                    .for_each(|r| record(v, "render", &r.to_string(), None)),
                Err(template::RenderError::Read { vault_ref, .. }) => {
                    record(v, "render", &vault_ref.to_string(), failure)
                }
                Err(_) => {}
            }
            let out = result.map_err(|e| anyhow::anyhow!("cannot render template {name}: {e}"))?;
            write_stdout(out.expose())?;
        }
        TemplateCommand::Delete { name } => {
            let store = v.open_store_once(true)?;
            let result = store.as_dyn().delete(&template::template_ref(&name));
            record(
                v,
                "delete",
                &target(&name),
                result.as_ref().err().map(StoreError::kind),
            );
            match result {
                Err(e) if e.kind() == ErrorKind::NotFound => bail!("no template {name}"),
                r => r?,
            }
        }
    }
    Ok(Status::Done)
}

/// How the audit log names template `name`.
fn target(name: &SecretKey) -> String {
    format!("template:{name}")
}

/// The template source from `from` (a file; `-` or none: stdin).
fn read_source(name: &SecretKey, from: Option<&Path>) -> Result<SensitiveBytes> {
    let too_large =
        || anyhow::anyhow!("template {name} is over the limit of {MAX_TEMPLATE_SIZE} bytes");
    match from {
        Some(path) if path != Path::new("-") => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            SensitiveBytes::read_limited(file, MAX_TEMPLATE_SIZE)
                .with_context(|| format!("cannot read {}", path.display()))?
                .ok_or_else(too_large)
        }
        _ => SensitiveBytes::read_limited(std::io::stdin().lock(), MAX_TEMPLATE_SIZE)
            .context("cannot read the template from stdin")?
            .ok_or_else(too_large),
    }
}

/// Checks and stores template `name`; notes the refs that are not there
/// (yet), since the template cannot be opened until they are.
pub(super) fn set(v: &VaultArgs, name: &SecretKey, source: SensitiveBytes) -> Result<()> {
    if source.is_empty() {
        bail!("refusing to store an empty template {name}");
    }
    let t = Template::parse(source).map_err(|e| anyhow::anyhow!("template {name} refused: {e}"))?;
    let refs = t.refs();
    let store = v.open_store_once(true)?;
    local_only(&store)?;
    let options = sealfs::PutOptions {
        writer: Some(sealfs::Writer::this_process(sealfs::WriteSource::Cli)),
        ..sealfs::PutOptions::default()
    };
    let value = SensitiveBytes::from_slice(t.source().expose());
    let result = store
        .as_dyn()
        .put_with(&template::template_ref(name), value, options);
    record(
        v,
        "set",
        &target(name),
        result.as_ref().err().map(StoreError::kind),
    );
    result.with_context(|| format!("cannot store template {name}"))?;
    for r in refs {
        if !store.as_dyn().exists(&r)? {
            note(&format!(
                "template {name} reads {r}, which does not exist: it cannot be opened or rendered until it does"
            ));
        }
    }
    Ok(())
}

/// Templates live in local vaults: the fleet has no reserved scopes to
/// keep them in (it shares scopes by audience).
fn local_only(store: &sealfs::cli_common::Store) -> Result<()> {
    if store.local().is_none() {
        bail!("templates are kept in local vaults only, not in the fleet (--backend etcd)");
    }
    Ok(())
}

fn load(v: &VaultArgs, name: &SecretKey) -> Result<Template> {
    let Some(store) = open_existing(v)? else {
        bail!("no template {name}");
    };
    template::load(store.as_dyn(), name)?.ok_or_else(|| anyhow::anyhow!("no template {name}"))
}

#[derive(Serialize)]
struct TemplateJson {
    name: String,
    refs: Vec<String>,
}

fn list(v: &VaultArgs, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    if let Some(store) = open_existing(v)? {
        for name in template::names(store.as_dyn())? {
            let refs = match template::load(store.as_dyn(), &name) {
                Ok(Some(t)) => t.refs().iter().map(ToString::to_string).collect(),
                Ok(None) => continue,
                // One that cannot be used is said, and the rest listed.
                Err(
                    e
                    @ (template::LoadError::Corrupt { .. } | template::LoadError::ReadOnce { .. }),
                ) => {
                    note(&e.to_string());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            rows.push(TemplateJson {
                name: name.to_string(),
                refs,
            });
        }
    }
    if json {
        return write_json(&rows);
    }
    let mut out = String::new();
    for row in &rows {
        out.push_str(&format!("{}\t{}\n", row.name, row.refs.join(" ")));
    }
    write_stdout(out.as_bytes())
}

/// The largest .env file `import --env-file` reads.
const MAX_ENV_FILE: usize = 1024 * 1024;

/// `sealfs import --env-file FILE --template NAME`: each variable's value
/// stored as `<scope>/<name>`, and template NAME that renders the file.
/// Everything is checked before anything is stored; a re-run changes
/// nothing. With `replace`, the file is overwritten and removed, but only
/// once the stored template renders it byte for byte.
pub(super) fn import_env(
    v: &VaultArgs,
    path: &Path,
    scope: &sealfs::VaultScope,
    name: &SecretKey,
    replace: bool,
    dry_run: bool,
) -> Result<Status> {
    // One descriptor for reading and, with --replace, for wiping: what is
    // wiped is the file that was read, whatever the path names meanwhile.
    let file =
        open_env_file(path, replace).with_context(|| format!("cannot open {}", path.display()))?;
    let text = SensitiveBytes::read_limited(&file, MAX_ENV_FILE)
        .with_context(|| format!("cannot read {}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("{} is larger than {MAX_ENV_FILE} bytes", path.display()))?;
    let found = template::from_env_file(text.expose(), scope)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let source = SensitiveBytes::from_slice(found.template.as_bytes());
    let t = Template::parse(source).map_err(|e| {
        anyhow::anyhow!("{}: the template it makes is refused: {e}", path.display())
    })?;
    let mut out = String::new();
    for (var, r, _) in &found.vars {
        out.push_str(&format!("{var}\t{r}\n"));
    }
    out.push_str(&format!("template\t{name}\n"));
    if dry_run {
        write_stdout(out.as_bytes())?;
        return Ok(Status::Done);
    }
    let store = v.open_store_once(true)?;
    local_only(&store)?;
    let s = store.as_dyn();
    // Checked, all of them, before anything is stored.
    let mut todo = Vec::new();
    for (var, r, value) in &found.vars {
        sealfs::check_value(r, value, v.max_value_size)?;
        if let Some(vault) = store.local() {
            super::secret::refuse_others_session(vault, r)?;
        }
        // Comparing would consume a read-once secret.
        if s.entry(r)?.is_some_and(|e| e.once) {
            bail!("{r} (from {var}) is a read-once secret already; nothing was changed (choose another --scope)");
        }
        match s.read(r) {
            Ok((held, _)) if held.ct_eq(value) => {}
            Ok(_) => bail!(
                "{r} (from {var}) holds another value already; nothing was changed (choose another --scope)"
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => todo.push((r, value)),
            Err(e) => return Err(e.into()),
        }
    }
    let new_template = match template::load(s, name)? {
        Some(held) if held.source().ct_eq(t.source()) => false,
        Some(_) => bail!(
            "template {name} exists with other content; nothing was changed (choose another --template, or `sealfs template delete {name}`)"
        ),
        None => true,
    };
    let writer = || Some(sealfs::Writer::this_process(sealfs::WriteSource::Cli));
    for (r, value) in todo {
        let options = sealfs::PutOptions {
            expect: Some(sealfs::Expected::Absent),
            writer: writer(),
            ..sealfs::PutOptions::default()
        };
        let result = s.put_with(r, SensitiveBytes::from_slice(value.expose()), options);
        record(
            v,
            "import",
            &r.to_string(),
            result.as_ref().err().map(StoreError::kind),
        );
        result.with_context(|| format!("cannot store {r}"))?;
    }
    if new_template {
        let options = sealfs::PutOptions {
            expect: Some(sealfs::Expected::Absent),
            writer: writer(),
            ..sealfs::PutOptions::default()
        };
        let value = SensitiveBytes::from_slice(t.source().expose());
        let result = s.put_with(&template::template_ref(name), value, options);
        record(
            v,
            "set",
            &target(name),
            result.as_ref().err().map(StoreError::kind),
        );
        result.with_context(|| format!("cannot store template {name}"))?;
    }
    write_stdout(out.as_bytes())?;
    if replace {
        let rendered = template::render_from(s, &t, MAX_RENDERED_SIZE).map_err(|e| {
            anyhow::anyhow!(
                "cannot render template {name}: {e}; {} was kept",
                path.display()
            )
        })?;
        if !rendered.ct_eq(&text) {
            bail!(
                "template {name} does not render {} byte for byte; the file was kept",
                path.display()
            );
        }
        wipe_and_remove(path, &file, text.len() as u64).with_context(|| {
            format!(
                "everything is stored, but {} was not removed",
                path.display()
            )
        })?;
        note(&format!(
            "removed {}: it is now <mountpoint>/templates/{name} on a sealfs mount (or `sealfs template render {name}`)",
            path.display()
        ));
    }
    Ok(Status::Done)
}

/// `path` for reading (and writing, to wipe it), never through a symlink
/// and never blocking on a FIFO; only a regular file.
fn open_env_file(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(write);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK,
    );
    // Looked at before it is opened: opening a device for writing can
    // have effects of its own.
    if !std::fs::symlink_metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Overwrites all of `file` (opened from `path`) with zeros, syncs it, and
/// removes `path`, unless `path` no longer names that file.
fn wipe_and_remove(path: &Path, mut file: &std::fs::File, read: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (held, named) = (file.metadata()?, std::fs::symlink_metadata(path)?);
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            return Err(std::io::Error::other(
                "the path names another file now; nothing was wiped",
            ));
        }
    }
    let held = file.metadata()?;
    if held.len() != read {
        return Err(std::io::Error::other(
            "it changed since it was read; nothing was wiped",
        ));
    }
    #[cfg(unix)]
    if std::os::unix::fs::MetadataExt::nlink(&held) != 1 {
        return Err(std::io::Error::other(
            "it has other names (hard links), which would show the zeros; nothing was wiped",
        ));
    }
    let len = held.len();
    file.seek(std::io::SeekFrom::Start(0))?;
    std::io::copy(&mut std::io::repeat(0).take(len), &mut file)?;
    file.flush()?;
    file.sync_all()?;
    std::fs::remove_file(path)
}
