//! The mount's policy file parser: never a panic on any text, and every
//! policy it accepts survives a round trip through its resolved form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealfs_mountd::policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = Policy::parse("fuzz.toml", text) {
            let resolved = policy.to_toml();
            let again = Policy::parse("resolved.toml", &resolved)
                .unwrap_or_else(|e| panic!("resolved form does not parse: {e}\n{resolved}"));
            assert_eq!(again, policy, "round trip changed the policy:\n{resolved}");
        }
    }
});
