//! Mutations of one signed module: whatever the fuzzer changes, the result never verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sigil_claims::{ActorSpec, KeyKind, Policy, keys, sign_module, verify};

fn signed() -> &'static [u8] {
    static SIGNED: OnceLock<Vec<u8>> = OnceLock::new();
    SIGNED.get_or_init(|| {
        // A module with one type, one function and a custom section, written by hand.
        let module: &[u8] = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x0a\x04\x01\x02\0\x0b\0\x05\x01xabc";
        let account = keys::generate(KeyKind::Account);
        let subject = keys::generate(KeyKind::Module).public_key();
        let spec = ActorSpec { name: "fuzz".into(), caps: vec!["keyvalue".into()], ..Default::default() };
        sign_module(module, &spec, &account, &subject).expect("signs").bytes
    })
}

fuzz_target!(|edits: Vec<(u16, u8)>| {
    let original = signed();
    let mut bytes = original.to_vec();
    for (at, value) in edits {
        let i = usize::from(at) % bytes.len();
        bytes[i] = value;
    }
    let result = verify(&bytes, &Policy::new());
    if bytes != original {
        assert!(result.is_err(), "a modified signed module verified");
    }
});
