//! What the benchmarks share.
#![allow(clippy::unwrap_used, dead_code, missing_docs)]

/// The smallest waPC echo there is, in WAT, signed as `name`: what the host costs with no
/// guest runtime.
pub(crate) fn wat_echo(name: &str) -> Vec<u8> {
    let wasm = wat::parse_str(
        r#"(module
          (import "wapc" "__guest_request" (func $req (param i32 i32)))
          (import "wapc" "__guest_response" (func $resp (param i32 i32)))
          (memory (export "memory") 1)
          (func (export "__guest_call") (param $op i32) (param $len i32) (result i32)
            (call $req (i32.const 0) (i32.const 1024))
            (call $resp (i32.const 1024) (local.get $len))
            (i32.const 1)))"#,
    )
    .unwrap();
    let account = sigil_claims::keys::generate(sigil_claims::KeyKind::Account);
    let subject = sigil_claims::keys::generate(sigil_claims::KeyKind::Module).public_key();
    let spec = sigil_claims::ActorSpec {
        name: name.into(),
        ..Default::default()
    };
    sigil_claims::sign_module(&wasm, &spec, &account, &subject)
        .unwrap()
        .bytes
}
