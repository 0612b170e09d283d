//! The key store: generation, file modes, loading from files and the environment.

use std::os::unix::fs::PermissionsExt;

use sigil_claims::keys::{load_seed_env, load_seed_file};
use sigil_claims::{Error, KeyKind, KeySource, KeyStore};

#[test]
fn generated_seeds_are_private_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path().join("keys"));
    for kind in KeyKind::ALL {
        let (kp, path) = store.generate(kind, "dev").unwrap();
        assert!(kp.public_key().starts_with(kind.prefix()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{kind}");
        let again = store.load(kind, "dev").unwrap();
        assert_eq!(again.public_key(), kp.public_key());
    }
    let dir_mode = std::fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), KeyKind::ALL.len());
    assert_eq!(listed[0].kind, KeyKind::Account);
    // No temporary files are left behind.
    assert_eq!(
        std::fs::read_dir(store.dir()).unwrap().count(),
        KeyKind::ALL.len()
    );
}

#[test]
fn generation_never_clobbers() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path());
    let (first, _) = store.generate(KeyKind::Account, "dev").unwrap();
    assert!(matches!(
        store.generate(KeyKind::Account, "dev"),
        Err(Error::KeyExists { .. })
    ));
    assert_eq!(
        store.load(KeyKind::Account, "dev").unwrap().public_key(),
        first.public_key()
    );
    let (same, generated) = store.load_or_generate(KeyKind::Account, "dev").unwrap();
    assert!(!generated);
    assert_eq!(same.public_key(), first.public_key());
}

#[test]
fn readable_seed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path());
    let (_, path) = store.generate(KeyKind::Account, "dev").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_seed_file(&path, Some(KeyKind::Account), "test"),
        Err(Error::InsecureSeedFile { mode: 0o644, .. })
    ));
}

#[test]
fn wrong_kind_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path());
    let (_, path) = store.generate(KeyKind::Module, "m").unwrap();
    assert!(matches!(
        load_seed_file(&path, Some(KeyKind::Account), "the issuer"),
        Err(Error::WrongKeyKind {
            expected: KeyKind::Account,
            ..
        })
    ));
    let junk = dir.path().join("junk.nk");
    std::fs::write(&junk, "SAnotaseed\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    match load_seed_file(&junk, None, "the issuer") {
        Err(Error::InvalidKey { reason }) => {
            assert!(reason.contains("junk.nk"));
            assert!(!reason.contains("SAnotaseed"), "errors never echo seeds");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.load(KeyKind::Account, "missing"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        store.generate(KeyKind::Account, "../escape"),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn missing_environment_variable() {
    // Loading from a set variable is covered through the CLI, in its own process.
    assert!(matches!(
        load_seed_env("SIGIL_TEST_SURELY_UNSET_VAR", None, "t"),
        Err(Error::MissingSeedVariable { .. })
    ));
    let src: KeySource = "env:SIGIL_TEST_SURELY_UNSET_VAR".parse().unwrap();
    assert!(matches!(
        src.load(&KeyStore::new("/nonexistent"), KeyKind::Account, "t"),
        Err(Error::MissingSeedVariable { .. })
    ));
}
