//! Random bytes and random mutations of a signed module never panic, and no mutation of a
//! signed module verifies.

use proptest::prelude::*;
use sigil_claims::{Policy, inspect, verify};

use crate::common::signed;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = verify(&bytes, &Policy::new());
        let _ = inspect(&bytes, &Policy::new());
    }

    #[test]
    fn random_bytes_behind_a_wasm_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&tail);
        let _ = verify(&bytes, &Policy::new());
        let _ = inspect(&bytes, &Policy::new());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Set { at, value } => bytes[at % n] = value,
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Insert { at, value } => bytes.insert(at % (n + 1), value),
        Mutation::Remove { at } => {
            bytes.remove(at % n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn mutated_signed_modules_never_verify(muts in proptest::collection::vec(mutation(), 1..4)) {
        let f = signed();
        let mut bytes = f.signed.bytes.clone();
        for m in &muts {
            if bytes.is_empty() { break; }
            apply(&mut bytes, m);
        }
        let _ = inspect(&bytes, &Policy::new());
        let result = verify(&bytes, &Policy::new());
        if bytes != f.signed.bytes {
            prop_assert!(result.is_err(), "mutated module verified: {muts:?}");
        }
    }
}
