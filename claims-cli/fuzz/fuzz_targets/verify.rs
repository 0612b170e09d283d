//! Arbitrary bytes through extraction, inspection and verification: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_claims::{Policy, inspect, verify, wasm::ModuleSections};

fuzz_target!(|data: &[u8]| {
    let policy = Policy::new();
    let _ = verify(data, &policy);
    let _ = inspect(data, &policy);
    if let Ok(sections) = ModuleSections::parse(data) {
        // Re-encoding what parsed must parse again, to the same hash.
        let again = sections.encode(None);
        let reparsed = ModuleSections::parse(&again).expect("re-encoded module parses");
        assert_eq!(reparsed.hash(), sections.hash());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sigil_claims::verify_provider_token(text, &policy);
    }
});
