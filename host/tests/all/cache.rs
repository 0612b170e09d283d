//! The compiled-module cache: a restarted host starts actors without compiling, and a
//! tampered cache entry is recompiled, never loaded.

use sigil_host::{EngineConfig, Host};

use crate::common::*;

fn host_with_cache(dir: &std::path::Path) -> Host {
    Host::builder()
        .engine_config(EngineConfig {
            cache_dir: Some(dir.to_path_buf()),
            ..config(test_limits())
        })
        .build()
        .unwrap()
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

#[test]
fn restart_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let signed = sign(
        &wat::parse_str(probe_wat(WAPC_INIT)).unwrap(),
        "cached",
        &[],
    );

    let first = host_with_cache(&cache);
    let actor = first.load_actor(signed.bytes.clone()).unwrap();
    assert!(!actor.template_info().from_cache);
    assert!(actor.template_info().snapshot);
    drop(first);
    assert_eq!(entries(&cache).len(), 1);

    let second = host_with_cache(&cache);
    let actor = second.load_actor(signed.bytes.clone()).unwrap();
    assert!(actor.template_info().from_cache);
    assert!(actor.template_info().snapshot);
    assert_eq!(
        second.invoke(&actor, "i", b"").unwrap(),
        42u32.to_le_bytes()
    );
}

#[test]
fn a_tampered_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let signed = sign(&probe(), "probe", &[]);
    host_with_cache(&cache)
        .load_actor(signed.bytes.clone())
        .unwrap();
    let entry = entries(&cache).pop().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();

    let host = host_with_cache(&cache);
    let actor = host.load_actor(signed.bytes).unwrap();
    assert!(
        !actor.template_info().from_cache,
        "forged entry must not load"
    );
    assert_eq!(host.invoke(&actor, "echo", b"ok").unwrap(), b"ok");
}

#[test]
fn the_cache_is_keyed_by_the_signed_module() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = host_with_cache(&cache);
    host.load_actor(sign(&probe(), "a", &[]).bytes).unwrap();
    // Same code, signed again: same module hash, same entry.
    let again = host.load_actor(sign(&probe(), "b", &[]).bytes).unwrap();
    assert!(again.template_info().from_cache);
    assert_eq!(entries(&cache).len(), 1);
    // Different code: a new entry.
    host.load_actor(sign(&wat::parse_str(probe_wat(WAPC_INIT)).unwrap(), "c", &[]).bytes)
        .unwrap();
    assert_eq!(entries(&cache).len(), 2);
}

#[test]
fn an_unsafe_cache_directory_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = host_with_cache(&open);
    assert!(host.engine().cache_dir().is_none());
    let actor = host.load_actor(sign(&probe(), "probe", &[]).bytes).unwrap();
    assert_eq!(host.invoke(&actor, "echo", b"ok").unwrap(), b"ok");
    assert!(entries(&open).is_empty());
}
