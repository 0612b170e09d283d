//! What the benchmarks share.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::{Path, PathBuf};

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the example actors for wasm32 (cached under `target/guests`) and signs them with
/// a key in `keys`; returns the signed module of each name asked for, in order.
pub(crate) fn example_actors(keys: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    built_actors("examples", keys, names)
}

/// [`example_actors`] for another workspace of guests (`tests/actors`, say).
pub(crate) fn built_actors(workspace: &str, keys: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    use sigil_claims::KeyStore;
    use sigil_host::build::{BuildOptions, build};
    let target = repo().join("target").join("guests");
    let mut opts = BuildOptions::new(KeyStore::new(keys));
    opts.target_dir = Some(target.clone());
    opts.out_dir = Some(target.join(format!("signed-bench-{}", std::process::id())));
    opts.quiet = true;
    let built = build(&repo().join(workspace), &opts).expect("build the guests");
    names
        .iter()
        .map(|name| {
            let b = built.iter().find(|b| b.name == *name).expect(name);
            std::fs::read(&b.path).unwrap()
        })
        .collect()
}

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

/// A plain-HTTP registry of its own, removed when dropped.
pub(crate) struct LocalRegistry {
    child: std::process::Child,
    pub(crate) host: String,
    _dir: tempfile::TempDir,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a plain-HTTP registry on a spare loopback port.
pub(crate) fn start_registry() -> LocalRegistry {
    let tool = std::process::Command::new(repo().join(".ci").join("docker-registry"))
        .output()
        .expect("run .ci/docker-registry");
    assert!(
        tool.status.success(),
        "{}",
        String::from_utf8_lossy(&tool.stderr)
    );
    let binary = String::from_utf8(tool.stdout).unwrap().trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the registry");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    LocalRegistry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A kept-alive HTTP/1.1 connection to `addr` (no Nagle delay), its driver spawned on the
/// current runtime.
pub(crate) async fn http1(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}
