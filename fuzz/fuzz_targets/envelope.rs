//! The envelope decoder on arbitrary bytes: never a panic, never plaintext
//! from bytes that were not sealed for the slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealfs::crypto::{parse_header, KeyRing};
use sealfs::identity::DeviceIdentity;
use sealfs::VaultRef;

fuzz_target!(|data: &[u8]| {
    let ring = KeyRing::derive(&DeviceIdentity::from_bytes([7; 32]), b"fuzz");
    let r = VaultRef::parse("global/fuzz").unwrap();
    let _ = parse_header(data);
    for version in [0, 1, u64::MAX] {
        assert!(ring.open(&r, version, data).is_err(), "forged an envelope");
    }
});
