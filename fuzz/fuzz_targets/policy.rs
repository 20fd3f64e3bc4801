//! The mount's policy file parser: never a panic on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealfs_mountd::policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::parse("fuzz.toml", text);
    }
});
