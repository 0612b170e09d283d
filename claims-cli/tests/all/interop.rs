//! Interoperability with the real `wascap` 0.13 crate (the last with actor `caps`), both ways.

use sigil_claims::{KeyKind, Policy, keys, verify};
use wascap_legacy::jwt::{Actor, CapabilityProvider, Claims as WClaims, validate_token};
use wascap_legacy::prelude::KeyPair as WKeyPair;
use wascap_legacy::wasm::{extract_claims, sign_buffer_with_claims};

use crate::common::*;

/// A module whose section sizes use padded (5-byte) LEB128, as some toolchains write them.
/// The hash rule re-encodes sections canonically, so both libraries must agree on it.
fn padded_module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // type section: one type () -> (), size 4 written as 5 bytes.
    m.extend_from_slice(&[0x01, 0x84, 0x80, 0x80, 0x80, 0x00, 0x01, 0x60, 0x00, 0x00]);
    // function section: one function of type 0.
    m.extend_from_slice(&[0x03, 0x82, 0x80, 0x80, 0x80, 0x00, 0x01, 0x00]);
    // code section: one empty body.
    m.extend_from_slice(&[0x0a, 0x84, 0x80, 0x80, 0x80, 0x00, 0x01, 0x02, 0x00, 0x0b]);
    m
}

#[test]
fn wascap_signed_module_verifies_here_with_its_caps() {
    for module in [echo_module(), padded_module()] {
        let account = WKeyPair::new_account();
        let module_key = WKeyPair::new_module();
        let signed = sign_buffer_with_claims(
            "wascap-echo".into(),
            &module,
            &module_key,
            &account,
            Some(30),
            None,
            vec!["wasmcloud:keyvalue".into(), "wasmcloud:messaging".into()],
            vec!["from-wascap".into()],
            false,
            Some(4),
            Some("0.4.0".into()),
            Some("wascap_echo".into()),
        )
        .unwrap();

        let policy = Policy::new().allow_issuer(account.public_key());
        let c = verify(&signed, &policy).unwrap();
        assert_eq!(c.subject(), module_key.public_key());
        assert_eq!(c.issuer(), account.public_key());
        assert_eq!(c.name(), Some("wascap-echo"));
        assert_eq!(
            c.capabilities(),
            ["wasmcloud:keyvalue", "wasmcloud:messaging"]
        );
        assert_eq!(c.tags(), ["from-wascap"]);
        assert_eq!(c.rev(), Some(4));
        assert_eq!(c.ver(), Some("0.4.0"));
        assert_eq!(c.call_alias(), Some("wascap_echo"));
        assert!(c.expires().is_some());
        // Same hash rule on both sides.
        assert_eq!(c.module_hash(), sigil_claims::module_hash(&module).unwrap());
    }
}

#[test]
fn wascap_signed_module_that_was_tampered_is_refused_here() {
    let account = WKeyPair::new_account();
    let module_key = WKeyPair::new_module();
    let mut signed = sign_buffer_with_claims(
        "x".into(),
        echo_module(),
        &module_key,
        &account,
        None,
        None,
        vec![],
        vec![],
        false,
        None,
        None,
        None,
    )
    .unwrap();
    let at = signed.windows(5).position(|w| w == b"hello").unwrap();
    signed[at] = b'J';
    assert!(matches!(
        verify(&signed, &Policy::new()),
        Err(sigil_claims::Error::HashMismatch { .. })
    ));
}

#[test]
fn sigil_signed_module_verifies_in_wascap() {
    for module in [echo_module(), padded_module()] {
        let account = keys::generate(KeyKind::Account);
        let module_key = keys::generate(KeyKind::Module);
        let s = sigil_claims::ActorSpec {
            expires: Some(sigil_claims::jwt::now_secs() + 86_400),
            call_alias: Some("sigil_echo".into()),
            ..spec("sigil-echo", &["keyvalue", "httpserver"])
        };
        let signed =
            sigil_claims::sign_module(&module, &s, &account, &module_key.public_key()).unwrap();

        // wascap checks the hash itself (revision 3) while extracting...
        let token = extract_claims(&signed.bytes)
            .unwrap()
            .expect("wascap finds the claims");
        let meta = token.claims.metadata.as_ref().unwrap();
        assert_eq!(
            meta.caps.as_deref().unwrap(),
            ["wasmcloud:keyvalue", "wasmcloud:httpserver"]
        );
        assert_eq!(meta.name.as_deref(), Some("sigil-echo"));
        assert_eq!(meta.rev, Some(7));
        assert_eq!(meta.ver.as_deref(), Some("1.2.3"));
        assert_eq!(meta.call_alias.as_deref(), Some("sigil_echo"));
        assert_eq!(token.claims.issuer, account.public_key());
        assert_eq!(token.claims.subject, module_key.public_key());
        // ...and the signature and times through its validator: every flag must be good.
        let v = validate_token::<Actor>(&token.jwt).unwrap();
        assert!(v.signature_valid, "{v:?}");
        assert!(!v.expired && !v.cannot_use_yet, "{v:?}");
    }
}

#[test]
fn a_forgery_wascap_would_extract_is_refused_here() {
    // wascap's `extract_claims` does not check the signature and reports it as a flag in
    // `validate_token`: a host that forgets to read the flag runs forged claims. Sigil has no
    // such flag to forget.
    let real = WKeyPair::new_account();
    let attacker = WKeyPair::new_account();
    let module_key = WKeyPair::new_module();
    let mut claims = WClaims::<Actor>::new(
        "forged".into(),
        real.public_key(),
        module_key.public_key(),
        Some(vec!["wasmcloud:httpclient".into()]),
        None,
        false,
        None,
        None,
        None,
    );
    claims.metadata.as_mut().unwrap().module_hash =
        sigil_claims::module_hash(&echo_module()).unwrap();
    let token = claims.encode(&attacker).unwrap();
    let mut module = echo_module();
    append_custom(&mut module, "wasmcloud_jwt", token.as_bytes());

    assert!(extract_claims(&module).unwrap().is_some());
    assert!(!validate_token::<Actor>(&token).unwrap().signature_valid);
    assert!(matches!(
        verify(&module, &Policy::new()),
        Err(sigil_claims::Error::BadSignature { .. })
    ));
}

#[test]
fn provider_tokens_interoperate() {
    // wascap -> Sigil
    let account = WKeyPair::new_account();
    let service = WKeyPair::new_service();
    let mut hashes = std::collections::HashMap::new();
    hashes.insert("x86_64-linux".to_string(), "ABCD".to_string());
    let claims = WClaims::<CapabilityProvider>::new(
        "redis kv".into(),
        account.public_key(),
        service.public_key(),
        "wasmcloud:keyvalue".into(),
        "Redis".into(),
        Some(2),
        Some("1.0.0".into()),
        hashes,
    );
    let token = claims.encode(&account).unwrap();
    let v = sigil_claims::verify_provider_token(&token, &Policy::new()).unwrap();
    assert_eq!(v.contract_id(), "wasmcloud:keyvalue");
    assert_eq!(v.vendor(), "Redis");
    assert_eq!(v.subject(), service.public_key());
    assert_eq!(v.metadata().target_hashes["x86_64-linux"], "ABCD");

    // Sigil -> wascap
    let account = keys::generate(KeyKind::Account);
    let service = keys::generate(KeyKind::Service);
    let spec = sigil_claims::ProviderSpec {
        name: "nats messaging".into(),
        capid: "messaging".into(),
        vendor: "NATS".into(),
        ..Default::default()
    };
    let token = sigil_claims::issue_provider_token(&spec, &account, &service.public_key()).unwrap();
    let v = validate_token::<CapabilityProvider>(&token).unwrap();
    assert!(
        v.signature_valid && !v.expired && !v.cannot_use_yet,
        "{v:?}"
    );
    let decoded = WClaims::<CapabilityProvider>::decode(&token).unwrap();
    let meta = decoded.metadata.unwrap();
    assert_eq!(meta.capid, "wasmcloud:messaging");
    assert_eq!(meta.vendor, "NATS");
    assert_eq!(decoded.subject, service.public_key());
}
