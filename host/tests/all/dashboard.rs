//! The dashboard in a real browser: `sigil up` with the example actors and workflow, and
//! Debian's chromium driven by Playwright (`host/tests/browser/dashboard.py`). Its
//! screenshots are kept under `target/dashboard/` (and copied into `docs/images/` for the
//! documentation).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::guests::guest;
use crate::providers::{spare_port, wait_for_port};

const TOKEN: &str = "dashboard-token";

/// A workflow whose middle step fails, so that the page shows a failure.
const BROKEN: &str = r#"
version: 1
name: broken
description: A step that fails, and one that is skipped for it.
steps:
  - { name: first, actor: probe.wasm, operation: echo, input: "fine" }
  - { name: fails, actor: probe.wasm, operation: fail, depends: [first] }
  - { name: after, actor: probe.wasm, operation: echo, depends: [fails] }
"#;

#[test]
fn the_dashboard_shows_the_lattice_and_runs_workflows_live() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    for name in ["markdown", "blobstep", "notify"] {
        std::fs::write(dir.path().join(format!("{name}.wasm")), guest(name)).unwrap();
    }
    let probe = crate::common::sign(&crate::common::probe(), "probe", &[]);
    std::fs::write(dir.path().join("probe.wasm"), probe.bytes).unwrap();
    let publish = std::fs::read_to_string(repo.join("examples/workflows/publish.yaml"))
        .unwrap()
        .replace("../build/", "");
    std::fs::write(dir.path().join("publish.yaml"), publish).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), BROKEN).unwrap();
    let admin = spare_port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
name = "dash-host"
labels = {{ zone = "test", tier = "demo" }}
admin_address = "127.0.0.1:{admin}"
admin_token = "{TOKEN}"

[workflows]
specs = ["publish.yaml", "broken.yaml"]

[[providers]]
name = "blobs"
kind = "blobstore-fs"
config = {{ root = "blobs" }}

[[providers]]
name = "bus"
kind = "messaging-bus"

[[links]]
actor = "blobstep"
contract = "blobstore"
provider = "blobs"

[[links]]
actor = "notify"
contract = "messaging"
provider = "bus"
config = {{ publish = ["site.>"] }}
"#
        ),
    )
    .unwrap();
    let _host = crate::workflow_http::sigil_up(dir.path(), &config);
    wait_for_port(admin);

    let chromium = Command::new("bash")
        .arg(repo.join(".ci/chromium"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        chromium.status.success(),
        "no chromium for the browser test (the error is above)"
    );
    let chromium = String::from_utf8_lossy(&chromium.stdout).trim().to_string();
    let screens = repo.join("target/dashboard");
    let out = Command::new(crate::plugin_python::python())
        .arg(repo.join("host/tests/browser/dashboard.py"))
        .arg(format!("http://127.0.0.1:{admin}/"))
        .arg(TOKEN)
        .arg(&screens)
        .arg(&chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the dashboard test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
