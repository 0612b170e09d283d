//! Shared test helpers: identities, links, ports.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_providers::{ActorIdentity, Link, LinkConfig};

/// An actor identity named `name` (its subject is derived from the name) granted `caps`.
pub fn actor(name: &str, caps: &[&str]) -> Arc<ActorIdentity> {
    Arc::new(ActorIdentity {
        subject: format!("M{}", name.to_uppercase()),
        name: name.to_string(),
        issuer: "ATESTISSUER".to_string(),
        capabilities: caps.iter().map(|c| c.to_string()).collect::<BTreeSet<_>>(),
    })
}

/// A link of `actor` to `contract_id` under the default link name.
pub fn link(actor: &Arc<ActorIdentity>, contract_id: &str, config: LinkConfig) -> Link {
    Link {
        actor: actor.clone(),
        contract_id: contract_id.to_string(),
        link_name: "default".to_string(),
        provider: "test".to_string(),
        config,
    }
}

/// A loopback port that was free a moment ago.
pub fn spare_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until something accepts connections on `addr`, or panics after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listens on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A deadline `secs` from now.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// A name no other test (in this run or another) uses: `tag`, the process id and a
/// random suffix.
pub fn unique(tag: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::SeqCst));
    format!("{tag}{}x{:08x}", std::process::id(), hasher.finish() as u32)
}

/// A server process of a test, killed (and reaped) when dropped so that none outlives
/// the test.
pub struct ChildGuard {
    child: Option<std::process::Child>,
}

impl ChildGuard {
    /// Starts `command` with its output discarded.
    pub fn spawn(command: &mut std::process::Command) -> ChildGuard {
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        ChildGuard { child: Some(child) }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.id().expect("the process was killed");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Kills the process (SIGKILL, like a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tests' own Python environment (`target/py`, made by `.ci/python-tools` on first
/// use), which holds `moto_server`: nothing needs installing by hand.
pub fn python_tools() -> &'static std::path::Path {
    static VENV: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/python-tools");
        let out = std::process::Command::new("bash")
            .arg(script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} could not make the tests' Python environment (its error is above)"
        );
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}
