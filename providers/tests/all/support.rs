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
        assert!(start.elapsed() < timeout, "nothing listens on {addr} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A deadline `secs` from now.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}
