//! Hosts of one lattice starting modules by reference: one from its `host.toml`, and a
//! 5 MiB module from `sigil lattice start`, which each host pulls itself (too large for a
//! NATS message), runs and reports by digest.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sigil_claims::{ActorSpec, KeyKind, keys, sign_module, strip_jwt_sections};

use crate::guests::guest;
use crate::plugin::NATS;
use crate::providers::{PROBE_CAPS, http, spare_port, unique, wait_for_port};
use crate::registry::RegistryServer;

/// The probe guest padded with a custom section to `size` bytes of incompressible data,
/// signed as `name` with call alias `name`.
fn padded_probe(name: &str, size: usize) -> Vec<u8> {
    let mut wasm = strip_jwt_sections(&guest("probe")).unwrap();
    crate::padding::pad(&mut wasm, size);
    let spec = ActorSpec {
        name: name.into(),
        caps: PROBE_CAPS.iter().map(|c| c.to_string()).collect(),
        call_alias: Some(name.into()),
        ..Default::default()
    };
    let account = keys::generate(KeyKind::Account);
    let subject = keys::generate(KeyKind::Module).public_key();
    sign_module(&wasm, &spec, &account, &subject).unwrap().bytes
}

fn sigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .env_remove("SIGIL_REGISTRY_INSECURE")
        .env_remove("SIGIL_REGISTRY")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_hosts_start_a_5_mib_module_by_reference_from_the_lattice_command() {
    let registry = RegistryServer::plain();
    let dir = tempfile::tempdir().unwrap();
    let lattice = unique("oci-lattice");
    let cluster = keys::generate(KeyKind::Cluster);
    let seed = dir.path().join("cluster.nk");
    std::fs::write(&seed, cluster.seed().unwrap()).unwrap();
    let seed = seed.display().to_string();
    let host = registry.host.clone();
    let insecure = ["--insecure-registry", host.as_str()];

    // Publish: the front actor, and the 5 MiB module.
    let front = crate::actor_calls::probe("front", None).0;
    let big = padded_probe("big", 5 << 20);
    assert!(big.len() > 5 << 20);
    std::fs::write(dir.path().join("front.wasm"), &front).unwrap();
    std::fs::write(dir.path().join("big.wasm"), &big).unwrap();
    let front_ref = registry.reference("sigil/front:1");
    let big_ref = registry.reference("sigil/big:1");
    for (file, reference) in [("front.wasm", &front_ref), ("big.wasm", &big_ref)] {
        let path = dir.path().join(file).display().to_string();
        let mut args = vec!["push", path.as_str(), reference.as_str()];
        args.extend(insecure);
        ok(sigil(&args));
    }

    // Two hosts: A starts the front actor from its configuration, by reference.
    let port = spare_port();
    let config = |name: &str, extra: &str| {
        format!(
            "[host]\nname = \"{name}\"\nadmin_address = \"off\"\n\n\
             [lattice]\nnats = \"{NATS}\"\nname = \"{lattice}\"\ncluster_seed_file = \"{seed}\"\n\
             heartbeat = \"1s\"\n\n\
             [[registries]]\nhost = \"{host}\"\ninsecure = true\n\n\
             [[providers]]\nname = \"kv\"\nkind = \"keyvalue-memory\"\n{extra}"
        )
    };
    let a = config(
        "oci-a",
        &format!(
            "\n[[actors]]\nreference = \"{front_ref}\"\n\n\
             [[providers]]\nname = \"http\"\nkind = \"httpserver\"\n\n\
             [[links]]\nactor = \"front\"\ncontract = \"httpserver\"\nprovider = \"http\"\n\
             config = {{ address = \"127.0.0.1:{port}\" }}\n"
        ),
    );
    let b = config("oci-b", "");
    let up = |name: &str, text: &str| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let file = home.join("host.toml");
        std::fs::write(&file, text).unwrap();
        // Each host has its own cache: each pulls for itself.
        crate::workflow_http::sigil_up(&home, &file)
    };
    let _host_a = up("a", &a);
    let _host_b = up("b", &b);
    wait_for_port(port);

    let lattice_args = |command: &str| -> Vec<String> {
        [
            "lattice",
            command,
            "--lattice",
            lattice.as_str(),
            "--cluster-seed-file",
            seed.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sigil(&args)
    };
    // The same 5 MiB module, started on both by reference; each host pulls it itself.
    for h in ["oci-a", "oci-b"] {
        let mut args = lattice_args("start");
        args.extend(["--host", h, big_ref.as_str()].map(String::from));
        args.extend(insecure.map(String::from));
        let answer = ok(run(args));
        assert!(answer.contains("\"name\":\"big\""), "{answer}");
        let mut args = lattice_args("link");
        args.extend(["--host", h, "big", "keyvalue", "kv"].map(String::from));
        ok(run(args));
    }

    // Both report the digest the tag resolved to, and the front actor's too.
    let mut args = lattice_args("hosts");
    args.extend(["--json", "--wait", "1s"].map(String::from));
    let hosts: Vec<serde_json::Value> = serde_json::from_str(&ok(run(args))).unwrap();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let digest = |h: &serde_json::Value, name: &str| -> String {
        h["actors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .and_then(|a| a["module"].as_str())
            .unwrap_or_else(|| panic!("{name} on {h}"))
            .to_string()
    };
    let pinned = digest(&hosts[0], "big");
    assert!(
        pinned.starts_with(&format!("{big_ref}@sha256:")),
        "{pinned}"
    );
    assert_eq!(digest(&hosts[1], "big"), pinned);
    let a = hosts.iter().find(|h| h["name"] == "oci-a").unwrap();
    assert!(digest(a, "front").starts_with(&format!("{front_ref}@sha256:")));

    // And it runs: the front actor calls it by alias.
    let at = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let stored = loop {
        let answer = http(at, "GET", "/call/big/k/hello");
        if answer.0 == 200 || started.elapsed() > Duration::from_secs(15) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stored, (200, "stored".to_string()));
    assert_eq!(http(at, "GET", "/call/big/k"), (200, "hello".to_string()));
}
