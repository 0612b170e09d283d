//! Every verification failure gets its own error; the good path returns the claims.

use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use sigil_claims::jwt::{self, Claims};
use sigil_claims::wasm::ModuleSections;
use sigil_claims::{
    ActorMetadata, Error, KeyKind, Policy, Revocation, keys, sign_module, verify, verify_at,
};

use crate::common::*;

fn with_token(module: &[u8], token: &str) -> Vec<u8> {
    ModuleSections::parse(module).unwrap().encode(Some(token))
}

/// Claims as `sign_module` would write them for the echo module, for hand-made tokens.
fn claims_for(module: &[u8], issuer: &str, subject: &str) -> Claims<ActorMetadata> {
    Claims {
        expires: None,
        id: "TESTJTI".into(),
        issued_at: jwt::now_secs(),
        issuer: issuer.into(),
        subject: subject.into(),
        not_before: None,
        metadata: Some(ActorMetadata {
            name: Some("handmade".into()),
            hash: sigil_claims::module_hash(module).unwrap(),
            caps: Some(vec!["wasmcloud:keyvalue".into()]),
            ..Default::default()
        }),
        wascap_revision: Some(3),
    }
}

#[test]
fn round_trip_returns_every_field() {
    let f = signed();
    let c = verify(&f.signed.bytes, &Policy::new()).unwrap();
    assert_eq!(c.subject(), f.module_key.public_key());
    assert_eq!(c.issuer(), f.account.public_key());
    assert_eq!(c.name(), Some("echo"));
    assert_eq!(
        c.capabilities(),
        ["wasmcloud:keyvalue", "wasmcloud:builtin:logging"]
    );
    assert!(c.has_capability("wasmcloud:keyvalue"));
    assert!(!c.has_capability("wasmcloud:messaging"));
    assert_eq!(c.tags(), ["test"]);
    assert_eq!(c.rev(), Some(7));
    assert_eq!(c.ver(), Some("1.2.3"));
    assert_eq!(
        c.module_hash(),
        sigil_claims::module_hash(&echo_module()).unwrap()
    );
    assert_eq!(c.jwt(), f.signed.jwt);
    assert_eq!(c.token_id().len(), 26);
}

#[test]
fn signed_module_still_runs_the_same_code() {
    // The signature is one custom section added; every other section is kept as is.
    let f = signed();
    assert_eq!(
        sigil_claims::strip_jwt_sections(&f.signed.bytes).unwrap(),
        sigil_claims::strip_jwt_sections(&echo_module()).unwrap()
    );
}

#[test]
fn resigning_replaces_the_old_section() {
    let f = signed();
    let other = keys::generate(KeyKind::Account);
    let again = sign_module(
        &f.signed.bytes,
        &spec("renamed", &["messaging"]),
        &other,
        &f.module_key.public_key(),
    )
    .unwrap();
    let sections = ModuleSections::parse(&again.bytes).unwrap();
    assert_eq!(sections.jwt_sections().len(), 1);
    let c = verify(&again.bytes, &Policy::new()).unwrap();
    assert_eq!(c.name(), Some("renamed"));
    assert_eq!(c.issuer(), other.public_key());
    assert_eq!(c.capabilities(), ["wasmcloud:messaging"]);
}

#[test]
fn not_wasm() {
    assert!(matches!(
        verify(b"#!/bin/sh\necho hi\n", &Policy::new()),
        Err(Error::NotWasm)
    ));
    assert!(matches!(verify(b"", &Policy::new()), Err(Error::NotWasm)));
}

#[test]
fn truncated() {
    let f = signed();
    let cut = &f.signed.bytes[..f.signed.bytes.len() - 10];
    assert!(matches!(
        verify(cut, &Policy::new()),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn malformed_structure() {
    // A section id that does not exist.
    let bad = b"\0asm\x01\0\0\0\x7f\x00";
    let err = verify(bad, &Policy::new()).unwrap_err();
    assert!(matches!(err, Error::MalformedWasm { .. }), "{err:?}");
    // Wrong version.
    assert!(matches!(
        verify(b"\0asm\x02\0\0\0", &Policy::new()),
        Err(Error::MalformedWasm { .. })
    ));
}

#[test]
fn component_is_refused() {
    assert!(matches!(
        verify(b"\0asm\x0d\0\x01\0", &Policy::new()),
        Err(Error::Component)
    ));
}

#[test]
fn unsigned() {
    assert!(matches!(
        verify(&echo_module(), &Policy::new()),
        Err(Error::NoJwtSection)
    ));
}

#[test]
fn several_jwt_sections() {
    let f = signed();
    let mut twice = f.signed.bytes.clone();
    append_custom(&mut twice, "jwt", f.signed.jwt.as_bytes());
    assert!(matches!(
        verify(&twice, &Policy::new()),
        Err(Error::MultipleJwtSections { count: 2 })
    ));
}

#[test]
fn legacy_section_name_is_read() {
    let f = signed();
    let mut module = echo_module();
    append_custom(&mut module, "jwt", f.signed.jwt.as_bytes());
    let c = verify(&module, &Policy::new()).unwrap();
    assert_eq!(c.subject(), f.module_key.public_key());
}

#[test]
fn malformed_jwt() {
    let module = echo_module();
    for (token, needle) in [
        ("not a jwt", "three dot-separated segments"),
        ("a.b.c.d", "three dot-separated segments"),
        ("!!!.e30.AAAA", "header segment is not unpadded base64url"),
        ("e30.e30.AAAA", "header segment is not valid"),
    ] {
        match verify(&with_token(&module, token), &Policy::new()) {
            Err(Error::MalformedJwt { reason }) => {
                assert!(reason.contains(needle), "{token}: {reason}")
            }
            other => panic!("{token}: {other:?}"),
        }
    }
    // Valid header, claims that are not JSON claims.
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"jwt","alg":"Ed25519"}"#);
    let body = BASE64URL_NOPAD.encode(br#"{"iss":5}"#);
    match verify(
        &with_token(&module, &format!("{header}.{body}.AAAA")),
        &Policy::new(),
    ) {
        Err(Error::MalformedJwt { reason }) => assert!(reason.contains("claims segment")),
        other => panic!("{other:?}"),
    }
    // Not UTF-8.
    let mut bin = module.clone();
    append_custom(&mut bin, "wasmcloud_jwt", &[0xff, 0xfe]);
    assert!(matches!(
        verify(&bin, &Policy::new()),
        Err(Error::MalformedJwt { .. })
    ));
}

#[test]
fn missing_metadata_is_malformed() {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let mut claims = claims_for(
        &echo_module(),
        &account.public_key(),
        &module_key.public_key(),
    );
    claims.metadata = None;
    let token = jwt::encode(&claims, &account).unwrap();
    match verify(&with_token(&echo_module(), &token), &Policy::new()) {
        Err(Error::MalformedJwt { reason }) => assert!(reason.contains("wascap"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_algorithm() {
    let f = signed();
    let mut parts: Vec<String> = f.signed.jwt.split('.').map(String::from).collect();
    parts[0] = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let module = with_token(&echo_module(), &parts.join("."));
    assert!(matches!(
        verify(&module, &Policy::new()),
        Err(Error::UnsupportedAlgorithm { alg }) if alg == "HS256"
    ));
}

#[test]
fn forged_claims_fail_the_signature() {
    // The waSCC trap: edit the claims (grant a capability), keep the old signature.
    let f = signed();
    let parts: Vec<&str> = f.signed.jwt.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap()).unwrap();
    claims["wascap"]["caps"]
        .as_array_mut()
        .unwrap()
        .push("wasmcloud:httpclient".into());
    let forged_body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let forged = format!("{}.{forged_body}.{}", parts[0], parts[2]);
    let module = with_token(&echo_module(), &forged);
    assert!(matches!(
        verify(&module, &Policy::new()),
        Err(Error::BadSignature { issuer }) if issuer == f.account.public_key()
    ));
}

#[test]
fn signature_by_another_account_fails() {
    let victim = keys::generate(KeyKind::Account);
    let attacker = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    // Claims that say the victim issued them, signed by the attacker.
    let claims = claims_for(
        &echo_module(),
        &victim.public_key(),
        &module_key.public_key(),
    );
    let token = jwt::encode(&claims, &attacker).unwrap();
    assert!(matches!(
        verify(&with_token(&echo_module(), &token), &Policy::new()),
        Err(Error::BadSignature { .. })
    ));
    // A signature of the wrong length is a bad signature too, not a panic.
    let short = format!("{}.AAAA", token.rsplit_once('.').unwrap().0);
    assert!(matches!(
        verify(&with_token(&echo_module(), &short), &Policy::new()),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn issuer_must_be_an_account() {
    let module_key = keys::generate(KeyKind::Module);
    let claims = claims_for(
        &echo_module(),
        &module_key.public_key(),
        &module_key.public_key(),
    );
    let token = jwt::encode(&claims, &module_key).unwrap();
    assert!(matches!(
        verify(&with_token(&echo_module(), &token), &Policy::new()),
        Err(Error::IssuerNotAccount { .. })
    ));
    let garbage = claims_for(&echo_module(), "Anot-a-key", &module_key.public_key());
    let token = jwt::encode(&garbage, &keys::generate(KeyKind::Account)).unwrap();
    assert!(matches!(
        verify(&with_token(&echo_module(), &token), &Policy::new()),
        Err(Error::IssuerNotAccount { .. })
    ));
}

#[test]
fn subject_must_be_a_module_key() {
    let account = keys::generate(KeyKind::Account);
    let claims = claims_for(&echo_module(), &account.public_key(), &account.public_key());
    let token = jwt::encode(&claims, &account).unwrap();
    assert!(matches!(
        verify(&with_token(&echo_module(), &token), &Policy::new()),
        Err(Error::SubjectWrongKind {
            expected: KeyKind::Module,
            ..
        })
    ));
}

#[test]
fn tampered_code_fails_the_hash() {
    let f = signed();
    let mut bytes = f.signed.bytes.clone();
    // Change one byte of the data segment ("hello, sigil" -> "jello, sigil").
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'j';
    match verify(&bytes, &Policy::new()) {
        Err(Error::HashMismatch { expected, actual }) => {
            assert_eq!(expected, f.signed.claims.metadata.as_ref().unwrap().hash);
            assert_ne!(expected, actual);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn legacy_tokens_need_the_policy_to_allow_them() {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let mut claims = claims_for(
        &echo_module(),
        &account.public_key(),
        &module_key.public_key(),
    );
    claims.metadata.as_mut().unwrap().hash = "0123".into();
    claims.wascap_revision = None;
    let module = with_token(&echo_module(), &jwt::encode(&claims, &account).unwrap());
    assert!(matches!(
        verify(&module, &Policy::new()),
        Err(Error::LegacyHashUnverifiable { revision: 0 })
    ));
    assert!(verify(&module, &Policy::new().allow_legacy_hash(true)).is_ok());

    // A legacy token whose hash does match needs no exception.
    claims.metadata.as_mut().unwrap().hash = sigil_claims::module_hash(&echo_module()).unwrap();
    let module = with_token(&echo_module(), &jwt::encode(&claims, &account).unwrap());
    assert!(verify(&module, &Policy::new()).is_ok());
}

fn timed(nbf: Option<u64>, exp: Option<u64>) -> Fixture {
    signed_with(&sigil_claims::ActorSpec {
        not_before: nbf,
        expires: exp,
        ..spec("timed", &[])
    })
}

#[test]
fn expired() {
    let now = jwt::now_secs();
    let f = timed(None, Some(now + 3600));
    let policy = Policy::new();
    assert!(verify_at(&f.signed.bytes, &policy, now).is_ok());
    // Within the default 60 s skew: still fine.
    assert!(verify_at(&f.signed.bytes, &policy, now + 3630).is_ok());
    match verify_at(&f.signed.bytes, &policy, now + 3700) {
        Err(Error::Expired { expired_at, .. }) => assert_eq!(expired_at, now + 3600),
        other => panic!("{other:?}"),
    }
    let strict = Policy::new().clock_skew(Duration::ZERO);
    assert!(matches!(
        verify_at(&f.signed.bytes, &strict, now + 3600),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn not_yet_valid() {
    let now = jwt::now_secs();
    let f = timed(Some(now + 3600), None);
    let policy = Policy::new();
    assert!(matches!(
        verify_at(&f.signed.bytes, &policy, now),
        Err(Error::NotYetValid { not_before, .. }) if not_before == now + 3600
    ));
    assert!(verify_at(&f.signed.bytes, &policy, now + 3590).is_ok());
    assert!(verify_at(&f.signed.bytes, &policy, now + 3600).is_ok());
}

#[test]
fn expiry_before_not_before_is_refused_at_signing() {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let s = sigil_claims::ActorSpec {
        not_before: Some(100),
        expires: Some(50),
        ..spec("x", &[])
    };
    assert!(matches!(
        sign_module(&echo_module(), &s, &account, &module_key.public_key()),
        Err(Error::MalformedJwt { .. })
    ));
}

#[test]
fn issuer_not_allowed() {
    let f = signed();
    let other = keys::generate(KeyKind::Account).public_key();
    let policy = Policy::new().allow_issuer(other);
    assert!(matches!(
        verify(&f.signed.bytes, &policy),
        Err(Error::IssuerNotAllowed { issuer }) if issuer == f.account.public_key()
    ));
    let both = policy.allow_issuer(f.account.public_key());
    assert!(verify(&f.signed.bytes, &both).is_ok());
}

#[test]
fn revoked_by_subject_or_token_id() {
    let f = signed();
    let subject = f.module_key.public_key();
    assert!(matches!(
        verify(&f.signed.bytes, &Policy::new().revoke_subject(subject.clone())),
        Err(Error::Revoked(Revocation::Subject(s))) if s == subject
    ));
    let jti = f.signed.claims.id.clone();
    assert!(matches!(
        verify(&f.signed.bytes, &Policy::new().revoke_token_id(jti.clone())),
        Err(Error::Revoked(Revocation::TokenId(id))) if id == jti
    ));
}

#[test]
fn capability_policy() {
    let f = signed();
    assert!(matches!(
        verify(&f.signed.bytes, &Policy::new().require_capability("wasmcloud:messaging")),
        Err(Error::MissingRequiredCapability { capability }) if capability == "wasmcloud:messaging"
    ));
    assert!(
        verify(
            &f.signed.bytes,
            &Policy::new().require_capability("wasmcloud:keyvalue")
        )
        .is_ok()
    );
    let only_kv = Policy::new().allow_capability("wasmcloud:keyvalue");
    assert!(matches!(
        verify(&f.signed.bytes, &only_kv),
        Err(Error::CapabilityNotAllowed { capability }) if capability == "wasmcloud:builtin:logging"
    ));
    assert!(
        verify(
            &f.signed.bytes,
            &only_kv.allow_capability("wasmcloud:builtin:logging")
        )
        .is_ok()
    );
}

#[test]
fn signing_checks_its_keys_and_caps() {
    let account = keys::generate(KeyKind::Account);
    let module_key = keys::generate(KeyKind::Module);
    let m = echo_module();
    // Issuer must be an account key.
    assert!(matches!(
        sign_module(&m, &spec("x", &[]), &module_key, &module_key.public_key()),
        Err(Error::WrongKeyKind {
            expected: KeyKind::Account,
            ..
        })
    ));
    // Subject must be a module key.
    assert!(matches!(
        sign_module(&m, &spec("x", &[]), &account, &account.public_key()),
        Err(Error::WrongKeyKind {
            expected: KeyKind::Module,
            ..
        })
    ));
    // Unknown capability alias.
    assert!(matches!(
        sign_module(
            &m,
            &spec("x", &["teleport"]),
            &account,
            &module_key.public_key()
        ),
        Err(Error::InvalidCapability { .. })
    ));
    // A public-only key cannot sign.
    let public_only = sigil_claims::KeyPair::from_public_key(&account.public_key()).unwrap();
    assert!(matches!(
        sign_module(&m, &spec("x", &[]), &public_only, &module_key.public_key()),
        Err(Error::InvalidKey { .. })
    ));
    // Not a module.
    assert!(matches!(
        sign_module(b"MZ", &spec("x", &[]), &account, &module_key.public_key()),
        Err(Error::NotWasm)
    ));
}

#[test]
fn duplicate_caps_are_dropped_and_alias_normalized() {
    let f = signed_with(&sigil_claims::ActorSpec {
        call_alias: Some("My-Echo.v1".into()),
        ..spec("echo", &["kv", "keyvalue", "wasmcloud:keyvalue"])
    });
    let c = verify(&f.signed.bytes, &Policy::new()).unwrap();
    assert_eq!(c.capabilities(), ["wasmcloud:keyvalue"]);
    assert_eq!(c.call_alias(), Some("my_echo_v1"));
}

#[test]
fn errors_say_what_to_do() {
    let msg = verify(&echo_module(), &Policy::new())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sigil-claims sign"), "{msg}");
    let f = signed();
    let mut bytes = f.signed.bytes.clone();
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'j';
    let msg = verify(&bytes, &Policy::new()).unwrap_err().to_string();
    assert!(msg.contains("altered after signing"), "{msg}");
}
