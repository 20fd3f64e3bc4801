//! Where a value for `set` comes from: stdin (byte-exact), a no-echo
//! prompt (twice) on a terminal, a file, or generated. Never an argument.

use std::io::{self, IsTerminal};
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use sealfs::{SensitiveBytes, VaultRef};

use crate::args::SetArgs;

fn too_large(r: &VaultRef, max: usize) -> anyhow::Error {
    anyhow::anyhow!("value for {r} is over the limit of {max} bytes (see --max-value-size)")
}

/// The value `args` asks for: from its file, generated, or from stdin.
pub(crate) fn value_for(args: &SetArgs, max: usize) -> Result<SensitiveBytes> {
    let r = &args.vault_ref;
    match (&args.from_file, args.generate) {
        (Some(path), _) => read_file_value(r, path, max),
        (None, Some(n)) => generate_value(r, n, max),
        (None, None) => read_stdin_value(r, max),
    }
}

/// The value for `r`: from a no-echo prompt (twice) when stdin is a
/// terminal, otherwise all of stdin, byte-exact.
pub(crate) fn read_stdin_value(r: &VaultRef, max: usize) -> Result<SensitiveBytes> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let first = SensitiveBytes::from(
            rpassword::prompt_password(format!("Value for {r}: "))
                .context("cannot read the value from the terminal")?,
        );
        let second = SensitiveBytes::from(
            rpassword::prompt_password("Again: ")
                .context("cannot read the value from the terminal")?,
        );
        if !first.ct_eq(&second) {
            bail!("the two entries differ; nothing was stored");
        }
        if first.len() > max {
            return Err(too_large(r, max));
        }
        return Ok(first);
    }
    SensitiveBytes::read_limited(stdin.lock(), max)
        .context("cannot read the value from stdin")?
        .ok_or_else(|| too_large(r, max))
}

fn read_file_value(r: &VaultRef, path: &Path, max: usize) -> Result<SensitiveBytes> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    SensitiveBytes::read_limited(file, max)
        .with_context(|| format!("cannot read {}", path.display()))?
        .ok_or_else(|| too_large(r, max))
}

/// `n` random bytes as URL-safe base64 without padding, built in place.
fn generate_value(r: &VaultRef, n: usize, max: usize) -> Result<SensitiveBytes> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text_len = base64::encoded_len(n, false)
        .filter(|l| *l <= max)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--generate {n} would make a value for {r} over the limit of {max} bytes"
            )
        })?;
    let mut raw = SensitiveBytes::zeroed(n);
    getrandom::fill(raw.expose_mut()).context("the OS random number generator failed")?;
    let mut text = SensitiveBytes::zeroed(text_len);
    let written = engine
        .encode_slice(raw.expose(), text.expose_mut())
        .context("encoding the generated value")?;
    text.truncate(written);
    Ok(text)
}

/// `sealfs set REF VALUE`: refused (a usage error), the argument not
/// echoed: it is most likely the secret itself.
pub(crate) fn refuses_stray_value(args: &SetArgs) -> bool {
    if args.stray.is_empty() {
        return false;
    }
    crate::output::note(
        "`sealfs set` takes the value from stdin, a prompt, --from-file or --generate, never from an argument; nothing was stored (and the argument is now in your shell history)",
    );
    true
}
