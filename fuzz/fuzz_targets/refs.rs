//! Refs, scopes and keys: never a panic, and parse -> print -> parse is the
//! identity for everything that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealfs::{SecretKey, VaultRef, VaultScope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = VaultRef::parse(text) {
        let printed = r.to_string();
        assert_eq!(VaultRef::parse(&printed).unwrap(), r);
        assert_eq!(VaultRef::parse(&format!("vault://{printed}")).unwrap(), r);
        assert!(printed.len() <= text.len());
    }
    if let Ok(s) = text.parse::<VaultScope>() {
        assert_eq!(s.to_string().parse::<VaultScope>().unwrap(), s);
    }
    if let Ok(k) = SecretKey::new(text) {
        assert_eq!(k.as_str(), text);
    }
});
