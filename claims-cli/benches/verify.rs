//! Verification cost by module size, side by side with wascap 0.13 doing the same checks.
//!
//! Run: `cargo bench -p sigil-claims --bench verify`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sigil_claims::{ActorSpec, KeyKind, Policy, keys, module_hash, sign_module, verify};
use wasm_encoder::{ConstExpr, DataSection, MemorySection, MemoryType, Module};

/// A module of about `size` bytes: one memory and one data segment of pseudo-random bytes
/// (what a large actor's code and data look like to a hash).
fn module_of(size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut memories = MemorySection::new();
    let pages = (size as u64).div_ceil(65_536) + 1;
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut segments = DataSection::new();
    segments.active(0, &ConstExpr::i32_const(0), data);
    let mut module = Module::new();
    module.section(&memories).section(&segments);
    module.finish()
}

fn benches(c: &mut Criterion) {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let spec = ActorSpec {
        name: "bench".into(),
        caps: vec!["keyvalue".into(), "messaging".into()],
        ..Default::default()
    };
    let policy = Policy::new().allow_issuer(account.public_key());

    let mut group = c.benchmark_group("claims");
    for (label, size) in [
        ("100KiB", 100 * 1024),
        ("2MiB", 2 * 1024 * 1024),
        ("20MiB", 20 * 1024 * 1024),
    ] {
        let signed = sign_module(&module_of(size), &spec, &account, &module_key.public_key())
            .unwrap()
            .bytes;
        group.throughput(Throughput::Bytes(signed.len() as u64));
        if size > 4 * 1024 * 1024 {
            group.sample_size(20);
        } else {
            group.sample_size(50);
        }
        group.bench_with_input(BenchmarkId::new("hash", label), &signed, |b, m| {
            b.iter(|| module_hash(m).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("verify", label), &signed, |b, m| {
            b.iter(|| verify(m, &policy).unwrap())
        });
        // The peer: wascap 0.13's extract (which hashes) plus its token validation.
        group.bench_with_input(BenchmarkId::new("wascap-0.13", label), &signed, |b, m| {
            b.iter(|| {
                let token = wascap_legacy::wasm::extract_claims(m).unwrap().unwrap();
                let v = wascap_legacy::jwt::validate_token::<wascap_legacy::jwt::Actor>(&token.jwt)
                    .unwrap();
                assert!(v.signature_valid);
            })
        });
    }
    group.finish();

    let small = module_of(100 * 1024);
    c.bench_function("claims/sign/100KiB", |b| {
        b.iter(|| sign_module(&small, &spec, &account, &module_key.public_key()).unwrap())
    });
}

criterion_group!(claims, benches);
criterion_main!(claims);
