//! Provider tokens: issue, verify, policy, and binary hashes.

use sigil_claims::provider::binary_hash;
use sigil_claims::{
    Error, KeyKind, Policy, ProviderSpec, Revocation, issue_provider_token, jwt, keys,
    verify_provider_token, verify_provider_token_at,
};

fn spec() -> ProviderSpec {
    let mut s = ProviderSpec {
        name: "kv-redis".into(),
        capid: "keyvalue".into(),
        vendor: "Redis".into(),
        ver: Some("0.1.0".into()),
        ..Default::default()
    };
    s.target_hashes.insert(
        "x86_64-unknown-linux-gnu".into(),
        binary_hash(b"provider binary"),
    );
    s
}

#[test]
fn round_trip_and_binary_check() {
    let account = keys::generate(KeyKind::Account);
    let service = keys::generate(KeyKind::Service);
    let token = issue_provider_token(&spec(), &account, &service.public_key()).unwrap();
    let v =
        verify_provider_token(&token, &Policy::new().allow_issuer(account.public_key())).unwrap();
    assert_eq!(v.contract_id(), "wasmcloud:keyvalue");
    assert_eq!(v.subject(), service.public_key());
    assert_eq!(v.issuer(), account.public_key());
    v.check_binary("x86_64-unknown-linux-gnu", b"provider binary")
        .unwrap();
    assert!(matches!(
        v.check_binary("x86_64-unknown-linux-gnu", b"provider binarY"),
        Err(Error::ProviderBinaryMismatch { .. })
    ));
    assert!(matches!(
        v.check_binary("aarch64-apple-darwin", b"provider binary"),
        Err(Error::NoHashForTarget { .. })
    ));
}

#[test]
fn subject_must_be_a_service_key() {
    let account = keys::generate(KeyKind::Account);
    let module = keys::generate(KeyKind::Module);
    assert!(matches!(
        issue_provider_token(&spec(), &account, &module.public_key()),
        Err(Error::WrongKeyKind {
            expected: KeyKind::Service,
            ..
        })
    ));
    // An actor module token is not a provider token.
    let signed = sigil_claims::sign_module(
        b"\0asm\x01\0\0\0",
        &sigil_claims::ActorSpec::default(),
        &account,
        &module.public_key(),
    )
    .unwrap();
    assert!(matches!(
        verify_provider_token(&signed.jwt, &Policy::new()),
        Err(Error::SubjectWrongKind {
            expected: KeyKind::Service,
            ..
        })
    ));
}

#[test]
fn policy_and_time_apply() {
    let account = keys::generate(KeyKind::Account);
    let service = keys::generate(KeyKind::Service);
    let now = jwt::now_secs();
    let s = ProviderSpec {
        expires: Some(now + 100),
        ..spec()
    };
    let token = issue_provider_token(&s, &account, &service.public_key()).unwrap();
    assert!(matches!(
        verify_provider_token_at(&token, &Policy::new(), now + 1000),
        Err(Error::Expired { .. })
    ));
    let other = keys::generate(KeyKind::Account).public_key();
    assert!(matches!(
        verify_provider_token(&token, &Policy::new().allow_issuer(other)),
        Err(Error::IssuerNotAllowed { .. })
    ));
    assert!(matches!(
        verify_provider_token(&token, &Policy::new().revoke_subject(service.public_key())),
        Err(Error::Revoked(Revocation::Subject(_)))
    ));
    let tampered = token.replacen('e', "f", 1);
    assert!(verify_provider_token(&tampered, &Policy::new()).is_err());
}
