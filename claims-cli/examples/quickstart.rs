//! Sign a small actor module, verify it, and watch a tampered copy get refused.
//!
//! Run: `cargo run -p sigil-claims --example quickstart`
//!
//! Keys go to a fresh temporary key directory, so this leaves nothing behind.
#![allow(clippy::print_stdout)]

use sigil_claims::{ActorSpec, KeyKind, KeyStore, Policy, sign_module, verify};

fn main() -> anyhow::Result<()> {
    // An actor module, built from source (WebAssembly text).
    let module = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 0) "hello from an actor")
            (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#,
    )?;

    let keys_dir = tempfile::tempdir()?;
    let store = KeyStore::new(keys_dir.path());
    let (account, _) = store.generate(KeyKind::Account, "publisher")?;
    let (module_key, _) = store.generate(KeyKind::Module, "hello")?;
    println!("publisher account  {}", account.public_key());
    println!("actor module key   {}", module_key.public_key());

    let spec = ActorSpec {
        name: "hello".into(),
        caps: vec!["keyvalue".into(), "logging".into()],
        ver: Some("0.1.0".into()),
        rev: Some(1),
        ..Default::default()
    };
    let signed = sign_module(&module, &spec, &account, &module_key.public_key())?;
    println!(
        "signed             {} bytes -> {} bytes (one `wasmcloud_jwt` section)",
        module.len(),
        signed.bytes.len()
    );

    let policy = Policy::new().allow_issuer(account.public_key());
    let claims = verify(&signed.bytes, &policy)?;
    println!(
        "verified           {} {}",
        claims.name().unwrap_or("?"),
        claims.ver().unwrap_or("")
    );
    println!("  issuer           {}", claims.issuer());
    println!("  capabilities     {}", claims.capabilities().join(", "));
    println!("  module hash      {}", claims.module_hash());

    let mut tampered = signed.bytes.clone();
    if let Some(at) = tampered.windows(5).position(|w| w == b"hello") {
        tampered[at] = b'J';
    }
    match verify(&tampered, &policy) {
        Ok(_) => anyhow::bail!("a tampered module verified"),
        Err(e) => println!("tampered copy      refused: {e}"),
    }

    let stranger = sigil_claims::keys::generate(KeyKind::Account);
    let strict = Policy::new().allow_issuer(stranger.public_key());
    match verify(&signed.bytes, &strict) {
        Ok(_) => anyhow::bail!("a module from an unlisted issuer verified"),
        Err(e) => println!("unlisted issuer    refused: {e}"),
    }
    Ok(())
}
