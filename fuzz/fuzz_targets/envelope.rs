//! The envelope decoder on arbitrary bytes: never a panic, a header parse
//! that agrees with the byte layout, and never plaintext from bytes other
//! than the one envelope really sealed for the slot (the committed seed
//! `corpus/envelope/sealed`, so mutations reach the AEAD; a unit test in
//! src/crypto.rs checks that the seed opens).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealfs::__private::crypto::{parse_header, KeyRing, FORMAT_VERSION, HEADER_LEN, MAGIC, OVERHEAD};
use sealfs::__private::DeviceIdentity;
use sealfs::VaultRef;

const SEALED: &[u8] = include_bytes!("../corpus/envelope/sealed");

fuzz_target!(|data: &[u8]| {
    match parse_header(data) {
        Ok(h) => {
            assert!(data.len() >= OVERHEAD && data[..4] == MAGIC && data[4] == FORMAT_VERSION);
            let hex: String = data[6..14].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(h.key_id.to_hex(), hex);
            assert_eq!(h.version.to_be_bytes()[..], data[14..22]);
            assert_eq!(h.nonce[..], data[22..HEADER_LEN]);
        }
        Err(_) => assert!(
            data.len() < OVERHEAD || data[..4] != MAGIC || data[4] != FORMAT_VERSION || data[5] != 1,
            "a well-formed header was refused"
        ),
    }
    let ring = KeyRing::derive(&DeviceIdentity::from_bytes([7; 32]), b"fuzz");
    let r = VaultRef::parse("global/fuzz").unwrap();
    for version in [0, 1, 2, u64::MAX] {
        if let Ok(plain) = ring.open(&r, version, data) {
            assert!(
                version == 1 && data == SEALED && plain.expose() == b"fuzz seed value",
                "forged an envelope"
            );
        }
    }
});
