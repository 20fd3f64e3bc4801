//! Finding `*_vault_ref` fields in arbitrary TOML: never a panic, and every
//! field found either holds a valid ref or says why not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return;
    };
    for field in sealfs::find_vault_refs(&doc) {
        assert!(field.field.contains("_vault_ref"));
        if let Ok(r) = field.vault_ref {
            assert_eq!(sealfs::VaultRef::parse(&r.to_string()).unwrap(), r);
        }
    }
});
