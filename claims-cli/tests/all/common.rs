//! Test modules built from WAT, and signing helpers.

use sigil_claims::{ActorSpec, KeyKind, KeyPair, SignedModule, keys, sign_module};

/// A small actor-shaped module: memory, a data segment, an exported function.
pub(crate) fn echo_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 16) "hello, sigil")
            (func (export "__guest_call") (param i32 i32) (result i32)
                local.get 0
                local.get 1
                i32.add)
            (@custom "producers" "test"))"#,
    )
    .unwrap()
}

/// An account key, a module key, and a module signed by them.
pub(crate) struct Fixture {
    pub(crate) account: KeyPair,
    pub(crate) module_key: KeyPair,
    pub(crate) signed: SignedModule,
}

pub(crate) fn spec(name: &str, caps: &[&str]) -> ActorSpec {
    ActorSpec {
        name: name.into(),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        tags: vec!["test".into()],
        rev: Some(7),
        ver: Some("1.2.3".into()),
        ..Default::default()
    }
}

pub(crate) fn signed_with(spec: &ActorSpec) -> Fixture {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let signed = sign_module(&echo_module(), spec, &account, &module_key.public_key()).unwrap();
    Fixture {
        account,
        module_key,
        signed,
    }
}

pub(crate) fn signed() -> Fixture {
    signed_with(&spec("echo", &["keyvalue", "logging"]))
}

/// Appends a custom section with raw contents to a module.
pub(crate) fn append_custom(module: &mut Vec<u8>, name: &str, data: &[u8]) {
    use wasm_encoder::Section;
    wasm_encoder::CustomSection {
        name: name.into(),
        data: data.into(),
    }
    .append_to(module);
}
