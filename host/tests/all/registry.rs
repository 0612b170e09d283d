//! Modules in a real OCI registry: the CNCF distribution registry (`docker-registry`,
//! found by `.ci/docker-registry`) started by each test on a spare loopback port, plain or
//! behind TLS and basic authentication. `sigil push`, `pull` and `call` run as a user runs
//! them; `curl` speaks the registry's HTTP API directly, as other tools would, to read
//! what Sigil pushed and to push what Sigil did not.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sigil_host::oci::{ModuleRef, Registry, RegistryError, RegistryOptions, sha256_digest};

use crate::common::{Signed, probe, sign};

/// The variables a child must not inherit from whoever runs the tests: every setting
/// Sigil reads for registries, the caches, and proxies that would take loopback traffic
/// elsewhere.
const SCRUBBED: &[&str] = &[
    "SIGIL_REGISTRY",
    "SIGIL_REGISTRY_USER",
    "SIGIL_REGISTRY_PASSWORD",
    "SIGIL_REGISTRY_TOKEN",
    "SIGIL_REGISTRY_CA_FILE",
    "SIGIL_REGISTRY_INSECURE",
    "SIGIL_CACHE_DIR",
    "SIGIL_LOG",
    "XDG_CACHE_HOME",
    "DOCKER_CONFIG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const SIGIL_CONFIG: &str = "application/vnd.wasmcloud.actor.archive.config";
const SIGIL_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
const ORAS_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The text of the layer types a pull accepts, as the host lists them in a refusal.
const ACCEPTED: &str = "application/vnd.module.wasm.content.layer.v1+wasm or \
                        application/vnd.wasm.content.layer.v1+wasm or \
                        application/vnd.oci.image.layer.v1.tar";

/// The registry binary: on PATH, or unpacked from the Debian package by the script.
fn registry_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/docker-registry");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} found no docker-registry binary (its error is above)"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A loopback port that was free a moment ago.
fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the TLS registry asks of its clients.
pub struct Credentials {
    /// The PEM certificate of the authority that signed the server's certificate.
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
}

/// One registry process with its configuration, storage and log in a directory of its
/// own. Killed when dropped; when the test is failing, its log is printed.
pub struct RegistryServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `HOST:PORT` as references name it.
    pub host: String,
    /// Set for the TLS registry.
    pub credentials: Option<Credentials>,
}

impl RegistryServer {
    /// Plain HTTP, no authentication, on `127.0.0.1`.
    pub fn plain() -> Self {
        Self::start(false)
    }

    /// HTTPS with a certificate for `localhost` and `127.0.0.1` from a certificate
    /// authority made for this test, and basic authentication from an htpasswd file;
    /// reached as `localhost`.
    pub fn tls_with_auth() -> Self {
        Self::start(true)
    }

    fn start(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let credentials = tls.then(|| {
            let (ca, cert, key) = certificates();
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca).unwrap();
            std::fs::write(dir.path().join("server.pem"), cert).unwrap();
            std::fs::write(dir.path().join("server.key"), key).unwrap();
            let user = "alice".to_string();
            let password = "correct horse battery staple".to_string();
            // Cost 4, the least bcrypt allows: the registry checks it on every request.
            let hashed = bcrypt::hash_with_result(&password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hashed}\n")).unwrap();
            Credentials {
                ca_file,
                user,
                password,
            }
        });
        let mut server = RegistryServer {
            child: None,
            dir,
            host: String::new(),
            credentials,
        };
        // A port free a moment ago may be taken before the registry binds it: try again
        // on another.
        for _ in 0..5 {
            let port = spare_port();
            server.host = if tls {
                format!("localhost:{port}")
            } else {
                format!("127.0.0.1:{port}")
            };
            server.write_config(port);
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!(
            "the registry did not start on any of 5 ports; its log:\n{}",
            server.log()
        );
    }

    fn write_config(&self, port: u16) {
        let d = self.dir.path();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: registry-test-secret\n",
            storage = self.storage().display(),
        );
        if self.credentials.is_some() {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n  htpasswd:\n    realm: sigil-registry-test\n    path: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display(),
                d.join("htpasswd").display(),
            ));
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
    }

    /// Starts the process and waits until `/v2/` answers 200: true when it does, false
    /// when the process exited (its port was taken).
    fn spawn_and_wait(&mut self) -> bool {
        let log = File::create(self.log_path()).unwrap();
        let child = Command::new(registry_binary())
            .env_clear()
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", registry_binary().display()));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                assert!(
                    self.log().contains("address already in use"),
                    "the registry exited ({status}) while starting; its log:\n{}",
                    self.log()
                );
                return false;
            }
            if self.curl(&["--max-time", "2", &self.url("/v2/")]).status == 200 {
                return true;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the registry on {} did not answer /v2/ within 30 s; its log:\n{}",
                self.host,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Everything the registry logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of the blob `digest`.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `oci://HOST/{name}`.
    pub fn reference(&self, name: &str) -> String {
        format!("oci://{}/{name}", self.host)
    }

    /// The URL of `path` on the registry.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.credentials.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.host)
    }

    /// Stops the registry as a crash would (SIGKILL), and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs curl against the registry (trusting its CA and with its credentials, when it
    /// has them), returning the status, the headers and the body.
    pub fn curl(&self, args: &[&str]) -> Reply {
        let out = tempfile::tempdir().unwrap();
        let (headers, body) = (out.path().join("headers"), out.path().join("body"));
        let mut command = Command::new("curl");
        // -q first: no ~/.curlrc.
        command.args(["-q", "-sS", "--noproxy", "*", "--max-time", "30"]);
        command.arg("-D").arg(&headers).arg("-o").arg(&body);
        command.args(["-w", "%{http_code}"]);
        if let Some(c) = &self.credentials {
            command.arg("--cacert").arg(&c.ca_file);
            command.args(["-u", &format!("{}:{}", c.user, c.password)]);
        }
        for k in SCRUBBED {
            command.env_remove(k);
        }
        let o = command
            .env("HOME", out.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run curl");
        Reply {
            status: text(&o.stdout).trim().parse().unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
        }
    }

    /// Uploads a blob as one request (POST an upload, PUT its bytes with the digest), as
    /// the distribution API's monolithic upload goes; returns its digest.
    pub fn push_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let started = self.curl(&[
            "-X",
            "POST",
            &self.url(&format!("/v2/{repository}/blobs/uploads/")),
        ]);
        assert_eq!(started.status, 202, "upload not started: {started:?}");
        let location = started.header("location").expect("upload with no Location");
        let location = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let done = self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.path().display()),
            &format!("{location}{separator}digest={digest}"),
        ]);
        assert_eq!(done.status, 201, "blob not stored: {done:?}");
        digest
    }

    /// Stores `manifest` under `tag` with the media type `media_type`; returns its digest.
    pub fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        manifest: &serde_json::Value,
    ) -> String {
        let body = serde_json::to_vec(manifest).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &body).unwrap();
        let put = self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", file.path().display()),
            &self.url(&format!("/v2/{repository}/manifests/{tag}")),
        ]);
        assert_eq!(put.status, 201, "manifest refused: {put:?}");
        let digest = sha256_digest(&body);
        assert_eq!(
            put.header("docker-content-digest").as_deref(),
            Some(&*digest)
        );
        digest
    }

    /// Pushes `module` the way another tool would: its bytes and a config as blobs, and a
    /// manifest of `manifest_type` with one layer of `layer_type`. Returns the manifest's
    /// digest.
    pub fn push_foreign(
        &self,
        repository: &str,
        tag: &str,
        manifest_type: &str,
        config_type: &str,
        layer_type: &str,
        module: &[u8],
    ) -> String {
        let config = b"{}";
        let config_digest = self.push_blob(repository, config);
        let layer_digest = self.push_blob(repository, module);
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_type,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": layer_type,
                "digest": layer_digest,
                "size": module.len(),
            }],
        });
        if manifest_type == OCI_MANIFEST {
            manifest["layers"][0]["annotations"] =
                serde_json::json!({ "org.opencontainers.image.title": "module.wasm" });
        }
        self.push_manifest(repository, tag, manifest_type, &manifest)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- registry {} log ---\n{}--- end of the registry log ---",
                self.host,
                self.log()
            );
        }
    }
}

/// A certificate authority and a server certificate for `localhost` and `127.0.0.1`
/// signed by it: (CA certificate, server certificate, server key), all PEM.
fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Sigil registry test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// An HTTP answer as curl saw it.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The last value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&self.body)))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {}\n{}{}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A directory for one test's files, home directory and caches, from which `sigil` runs
/// with nothing of the parent's registry settings.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// `sigil ARGS`, caching under the directory `cache` of this workspace.
    fn sigil(&self, cache: &str, args: &[&str]) -> Sigil<'_> {
        Sigil {
            ws: self,
            cache: cache.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        }
    }
}

struct Sigil<'a> {
    ws: &'a Workspace,
    cache: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Sigil<'_> {
    fn insecure(mut self, server: &RegistryServer) -> Self {
        self.args.push("--insecure-registry".into());
        self.args.push(server.host.clone());
        self
    }

    /// For the TLS registry: names it in SIGIL_REGISTRY, its CA in SIGIL_REGISTRY_CA_FILE.
    fn tls(self, server: &RegistryServer) -> Self {
        let ca = &server.credentials.as_ref().unwrap().ca_file;
        self.env("SIGIL_REGISTRY", &server.host)
            .env("SIGIL_REGISTRY_CA_FILE", ca)
    }

    /// SIGIL_REGISTRY_USER and SIGIL_REGISTRY_PASSWORD.
    fn login(self, user: &str, password: &str) -> Self {
        self.env("SIGIL_REGISTRY_USER", user)
            .env("SIGIL_REGISTRY_PASSWORD", password)
    }

    fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env
            .push((key.into(), value.as_ref().to_string_lossy().into_owned()));
        self
    }

    fn run(self) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sigil"));
        for k in SCRUBBED {
            command.env_remove(k);
        }
        command
            .env("HOME", self.ws.path("home"))
            .env("SIGIL_CACHE_DIR", self.ws.path(&self.cache))
            .current_dir(self.ws.dir.path())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs it and expects success: its standard output.
    #[track_caller]
    fn ok(self) -> String {
        let shown = self.args.join(" ");
        let o = self.run();
        assert!(
            o.status.success(),
            "sigil {shown}: exit {:?}\n{}",
            o.status.code(),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Runs it and expects exit `code` with the error `expected`, exactly.
    #[track_caller]
    fn fails(self, code: i32, expected: &str) -> String {
        let shown = self.args.join(" ");
        let o = self.run();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "sigil {shown}:\n{err}");
        assert!(
            err.contains(&format!("error: {expected}\n")),
            "sigil {shown}: expected\nerror: {expected}\nin:\n{err}"
        );
        err
    }

    /// Runs it and expects exit `code` with an error line that starts with `start` and
    /// ends with `end` (for errors that quote a transport's message).
    #[track_caller]
    fn fails_between(self, code: i32, start: &str, end: &str) -> String {
        let shown = self.args.join(" ");
        let o = self.run();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "sigil {shown}:\n{err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("sigil {shown}: no error line in:\n{err}"));
        let line = &line["error: ".len()..];
        assert!(
            line.starts_with(start) && line.ends_with(end),
            "sigil {shown}: expected an error from\n{start}\nto\n{end}\nin:\n{err}"
        );
        err
    }
}

fn signed_probe(name: &str) -> Signed {
    sign(&probe(), name, &[])
}

/// The probe's echo through `sigil call REF echo`.
#[track_caller]
fn call_echo(ws: &Workspace, server: &RegistryServer, reference: &str, cache: &str) {
    let out = ws
        .sigil(
            cache,
            &[
                "call",
                reference,
                "echo",
                "--raw",
                "--data",
                "through the registry",
                "--raw-output",
            ],
        )
        .insecure(server)
        .ok();
    assert_eq!(out, "through the registry");
}

#[test]
fn registry_sigil_push_is_readable_by_curl_and_pulls_and_runs() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let signed = signed_probe("probe");
    let file = ws.write("probe.wasm", &signed.bytes);
    let reference = server.reference("sigil/probe:1.0");

    let pinned = ws
        .sigil("push-cache", &["push", &file, &reference])
        .insecure(&server)
        .ok();
    let pinned = pinned.trim();
    let digest = pinned
        .strip_prefix(&format!("{reference}@"))
        .unwrap_or_else(|| panic!("push printed {pinned:?}, not {reference}@DIGEST"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    // The manifest, as any client reads it.
    let manifest = server.curl(&[
        "-H",
        &format!("Accept: {OCI_MANIFEST}"),
        &server.url("/v2/sigil/probe/manifests/1.0"),
    ]);
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(sha256_digest(&manifest.body), digest);
    assert_eq!(
        manifest.header("docker-content-digest").as_deref(),
        Some(digest)
    );
    assert_eq!(
        manifest.header("content-type").as_deref(),
        Some(OCI_MANIFEST)
    );
    let m = manifest.json();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["config"]["mediaType"], SIGIL_CONFIG);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    let layer_digest = sha256_digest(&signed.bytes);
    assert_eq!(layers[0]["mediaType"], SIGIL_LAYER);
    assert_eq!(layers[0]["digest"], *layer_digest);
    assert_eq!(layers[0]["size"], signed.bytes.len());
    let notes = &m["annotations"];
    assert_eq!(notes["dev.sigil.module.name"], "probe");
    assert_eq!(notes["org.opencontainers.image.title"], "probe");
    assert_eq!(notes["dev.sigil.module.subject"], *signed.subject);
    assert_eq!(
        notes["dev.sigil.module.issuer"],
        *signed.account.public_key()
    );

    // The config blob holds the claims.
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = server.curl(&[&server.url(&format!("/v2/sigil/probe/blobs/{config_digest}"))]);
    assert_eq!(config.status, 200, "{config:?}");
    assert_eq!(sha256_digest(&config.body), config_digest);
    let c = config.json();
    assert_eq!(c["name"], "probe");
    assert_eq!(c["subject"], *signed.subject);

    // The module blob is the file, byte for byte.
    let blob = server.curl(&[&server.url(&format!("/v2/sigil/probe/blobs/{layer_digest}"))]);
    assert_eq!(blob.status, 200, "{blob:?}");
    assert!(
        blob.body == signed.bytes,
        "the layer is not the pushed file"
    );

    // `sigil pull`, with a cache of its own (push filled the other), writes the same file.
    let out = ws.path("pulled.wasm");
    let printed = ws
        .sigil(
            "pull-cache",
            &["pull", &reference, "-o", out.to_str().unwrap()],
        )
        .insecure(&server)
        .ok();
    assert_eq!(printed.trim(), pinned);
    assert!(std::fs::read(&out).unwrap() == signed.bytes);

    // And it runs, by tag and by its pinned reference.
    call_echo(&ws, &server, &reference, "call-cache");
    call_echo(&ws, &server, pinned, "call-cache-2");
}

#[test]
fn registry_modules_pushed_by_other_tools_run() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();

    // wasm-to-oci's layer under a Docker v2 schema 2 manifest.
    let docker = signed_probe("wasm-to-oci-probe");
    let digest = server.push_foreign(
        "tools/wasm-to-oci",
        "1",
        DOCKER_MANIFEST,
        "application/vnd.wasm.config.v1+json",
        WASM_TO_OCI_LAYER,
        &docker.bytes,
    );
    let stored = server.curl(&[
        "-H",
        &format!("Accept: {DOCKER_MANIFEST}"),
        &server.url("/v2/tools/wasm-to-oci/manifests/1"),
    ]);
    assert_eq!(
        stored.header("content-type").as_deref(),
        Some(DOCKER_MANIFEST)
    );
    let reference = server.reference("tools/wasm-to-oci:1");
    call_echo(&ws, &server, &reference, "c1");
    let out = ws.path("docker.wasm");
    let printed = ws
        .sigil("c2", &["pull", &reference, "-o", out.to_str().unwrap()])
        .insecure(&server)
        .ok();
    assert_eq!(printed.trim(), format!("{reference}@{digest}"));
    assert!(std::fs::read(&out).unwrap() == docker.bytes);

    // A raw file as `oras push` stores it: the plain OCI layer type, an empty config.
    let oras = signed_probe("oras-probe");
    let digest = server.push_foreign(
        "tools/oras",
        "1",
        OCI_MANIFEST,
        "application/vnd.oci.empty.v1+json",
        ORAS_LAYER,
        &oras.bytes,
    );
    let reference = server.reference("tools/oras:1");
    call_echo(&ws, &server, &reference, "c3");
    call_echo(&ws, &server, &format!("{reference}@{digest}"), "c4");
}

#[test]
fn registry_tls_with_basic_auth() {
    let server = RegistryServer::tls_with_auth();
    let creds = server.credentials.as_ref().unwrap();
    let (user, password) = (creds.user.as_str(), creds.password.as_str());
    let ws = Workspace::new();
    let signed = signed_probe("probe");
    let file = ws.write("probe.wasm", &signed.bytes);
    let reference = server.reference("private/probe:1");

    // Credentials and the CA from the environment: push, pull, call.
    let pinned = ws
        .sigil("c-push", &["push", &file, &reference])
        .tls(&server)
        .login(user, password)
        .ok();
    assert!(
        pinned.starts_with(&format!("{reference}@sha256:")),
        "{pinned}"
    );
    let out = ws.path("pulled.wasm");
    let printed = ws
        .sigil("c-pull", &["pull", &reference, "-o", out.to_str().unwrap()])
        .tls(&server)
        .login(user, password)
        .ok();
    assert_eq!(printed, pinned);
    assert!(std::fs::read(&out).unwrap() == signed.bytes);
    let echoed = ws
        .sigil(
            "c-call",
            &[
                "call",
                &reference,
                "echo",
                "--raw",
                "--data",
                "private",
                "--raw-output",
            ],
        )
        .tls(&server)
        .login(user, password)
        .ok();
    assert_eq!(echoed, "private");

    // Credentials from a Docker config.json, as `docker login` leaves them.
    let docker = ws.path("docker");
    std::fs::create_dir(&docker).unwrap();
    let auth = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({ "auths": { (server.host.clone()): { "auth": auth } } }).to_string(),
    )
    .unwrap();
    let out = ws.path("from-docker.wasm");
    let printed = ws
        .sigil(
            "c-docker",
            &["pull", &reference, "-o", out.to_str().unwrap()],
        )
        .tls(&server)
        .env("DOCKER_CONFIG", &docker)
        .ok();
    assert_eq!(printed, pinned);
    assert!(std::fs::read(&out).unwrap() == signed.bytes);

    // A wrong password, on pull and on push.
    let wrong = format!(
        "{reference}: registry {host} refused access with credentials from \
         SIGIL_REGISTRY_USER \"alice\" and SIGIL_REGISTRY_PASSWORD; check the user name and \
         password (or token), and that they may read this repository",
        host = server.host
    );
    ws.sigil("c-wrong", &["pull", &reference, "-o", "x.wasm"])
        .tls(&server)
        .login(user, "not the password")
        .fails(2, &wrong);
    ws.sigil("c-wrong", &["push", &file, &reference])
        .tls(&server)
        .login(user, "not the password")
        .fails(2, &wrong);

    // No credentials at all.
    ws.sigil("c-anon", &["pull", &reference, "-o", "x.wasm"])
        .tls(&server)
        .fails(
            2,
            &format!(
                "{reference}: registry {host} refused access with credentials from none \
                 (anonymous); give credentials in a [[registries]] entry of host.toml, in \
                 SIGIL_REGISTRY_USER and SIGIL_REGISTRY_PASSWORD, or with docker login",
                host = server.host
            ),
        );

    // The right credentials, but the registry's certificate authority is not trusted.
    ws.sigil("c-noca", &["pull", &reference, "-o", "x.wasm"])
        .env("SIGIL_REGISTRY", &server.host)
        .login(user, password)
        .fails_between(
            2,
            &format!(
                "{reference}: registry {host} cannot be reached: ",
                host = server.host
            ),
            ". if it uses a private certificate authority, give it as ca_file in its \
             [[registries]] entry (or SIGIL_REGISTRY_CA_FILE)",
        );
    assert!(!ws.path("x.wasm").exists());
}

#[test]
fn registry_unknown_repository_and_tag() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let file = ws.write("probe.wasm", &signed_probe("probe").bytes);
    ws.sigil("c", &["push", &file, &server.reference("sigil/probe:1")])
        .insecure(&server)
        .ok();

    let nowhere = server.reference("sigil/nowhere:1");
    ws.sigil("c", &["pull", &nowhere, "-o", "x.wasm"])
        .insecure(&server)
        .fails(
            2,
            &format!(
                "{nowhere}: registry {host} has no repository sigil/nowhere; check the name, or \
                 push the module first (sigil push FILE {nowhere})",
                host = server.host
            ),
        );
    let untagged = server.reference("sigil/probe:2");
    ws.sigil("c", &["pull", &untagged, "-o", "x.wasm"])
        .insecure(&server)
        .fails(
            2,
            &format!(
                "{untagged}: repository sigil/probe has no tag 2; check it, or push the module \
                 first (sigil push FILE {untagged})"
            ),
        );
    let digest = format!("sha256:{}", "0".repeat(64));
    let unknown = format!("{}@{digest}", server.reference("sigil/probe:1"));
    ws.sigil("c", &["call", &unknown, "echo"])
        .insecure(&server)
        .fails(
            2,
            &format!(
                "{unknown}: repository sigil/probe has no manifest {digest}; check it, or push \
                 the module first (sigil push FILE {unknown})"
            ),
        );
}

#[test]
fn registry_down_pulled_tag_starts_from_the_cache() {
    let mut server = RegistryServer::plain();
    let ws = Workspace::new();
    let signed = signed_probe("probe");
    let file = ws.write("probe.wasm", &signed.bytes);
    let reference = server.reference("sigil/probe:1");
    let pinned = ws
        .sigil("push-cache", &["push", &file, &reference])
        .insecure(&server)
        .ok();
    let first = ws.path("first.wasm");
    let printed = ws
        .sigil(
            "cache",
            &["pull", &reference, "-o", first.to_str().unwrap()],
        )
        .insecure(&server)
        .ok();
    assert_eq!(printed, pinned);

    server.kill();
    let second = ws.path("second.wasm");
    let o = ws
        .sigil(
            "cache",
            &["pull", &reference, "-o", second.to_str().unwrap()],
        )
        .insecure(&server)
        .run();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(text(&o.stdout), pinned);
    assert!(err.contains("from the cache"), "{err}");
    assert!(std::fs::read(&second).unwrap() == signed.bytes);
    call_echo(&ws, &server, &reference, "cache");

    // What was never pulled cannot start.
    let never = server.reference("sigil/probe:2");
    ws.sigil("cache", &["pull", &never, "-o", "x.wasm"])
        .insecure(&server)
        .fails_between(
            2,
            &format!(
                "{never}: registry {host} cannot be reached: ",
                host = server.host
            ),
            ". check the address and that the registry runs (it is reached over plain HTTP, \
             as listed insecure)",
        );
}

#[test]
fn registry_corrupted_blob_is_a_digest_mismatch() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let signed = signed_probe("probe");
    let file = ws.write("probe.wasm", &signed.bytes);
    let reference = server.reference("sigil/probe:1");
    ws.sigil("push-cache", &["push", &file, &reference])
        .insecure(&server)
        .ok();

    // The registry's disk changes under it: same length, one byte different.
    let expected = sha256_digest(&signed.bytes);
    let data = server.blob_data(&expected);
    let mut altered = std::fs::read(&data).unwrap();
    assert!(altered == signed.bytes);
    let at = altered.len() - 10;
    altered[at] ^= 0xff;
    std::fs::write(&data, &altered).unwrap();
    let actual = sha256_digest(&altered);
    let message = format!(
        "{reference}: the registry sent a module layer whose SHA-256 is {actual}, not its \
         digest {expected}; refused (the registry or something between is corrupting or \
         altering content)"
    );

    ws.sigil("fresh", &["pull", &reference, "-o", "x.wasm"])
        .insecure(&server)
        .fails(1, &message);
    assert!(!ws.path("x.wasm").exists());
    // Nothing of it was cached: a second try asks the registry again, and is refused again.
    ws.sigil("fresh", &["call", &reference, "echo"])
        .insecure(&server)
        .fails(1, &message);
}

#[test]
fn registry_altered_manifest_is_a_digest_mismatch() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let file = ws.write("probe.wasm", &signed_probe("probe").bytes);
    let reference = server.reference("sigil/probe:1");
    let pinned = ws
        .sigil("push-cache", &["push", &file, &reference])
        .insecure(&server)
        .ok();
    let pinned = pinned.trim();
    let expected = pinned.rsplit('@').next().unwrap();

    // Still a valid manifest, but not the bytes the tag and the digest name.
    let data = server.blob_data(expected);
    let mut altered = std::fs::read(&data).unwrap();
    assert_eq!(sha256_digest(&altered), expected);
    altered.extend_from_slice(b"\n");
    std::fs::write(&data, &altered).unwrap();
    let actual = sha256_digest(&altered);

    for (cache, asked) in [("by-tag", reference.as_str()), ("by-digest", pinned)] {
        ws.sigil(cache, &["pull", asked, "-o", "x.wasm"])
            .insecure(&server)
            .fails(
                1,
                &format!(
                    "{asked}: the registry sent a manifest whose SHA-256 is {actual}, not its \
                     digest {expected}; refused (the registry or something between is \
                     corrupting or altering content)"
                ),
            );
    }
    assert!(!ws.path("x.wasm").exists());
}

#[test]
fn registry_manifest_without_a_wasm_layer_is_not_a_module() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    server.push_foreign(
        "images/base",
        "1",
        OCI_MANIFEST,
        "application/vnd.oci.image.config.v1+json",
        GZIP_LAYER,
        b"\x1f\x8b\x08\x00 not really a tarball",
    );
    let reference = server.reference("images/base:1");
    let message = format!(
        "{reference}: its manifest has no WebAssembly layer (found: {GZIP_LAYER}); a module's \
         layer has the media type {ACCEPTED}"
    );
    ws.sigil("c", &["pull", &reference, "-o", "x.wasm"])
        .insecure(&server)
        .fails(1, &message);
    ws.sigil("c", &["call", &reference, "echo"])
        .insecure(&server)
        .fails(1, &message);
}

/// Options for the library: plain HTTP to `server`, a cache in `cache`, and no Docker
/// configuration.
fn options(server: &RegistryServer, cache: &Path) -> RegistryOptions {
    RegistryOptions {
        insecure: vec![server.host.clone()],
        cache_dir: Some(cache.to_path_buf()),
        docker_config: Some(cache.join("no-docker-config.json")),
        ..Default::default()
    }
}

#[tokio::test]
async fn registry_module_over_the_limit_is_too_large() {
    let server = RegistryServer::plain();
    let dir = tempfile::tempdir().unwrap();
    let signed = signed_probe("probe");
    assert!(signed.bytes.len() > 1000, "{}", signed.bytes.len());
    let reference = ModuleRef::parse(&server.reference("sigil/probe:1")).unwrap();
    let pusher = Registry::new(options(&server, &dir.path().join("push"))).unwrap();
    pusher
        .push(&signed.bytes, "probe.wasm", &reference)
        .await
        .unwrap();

    let small = Registry::new(RegistryOptions {
        max_module_size: 1000,
        ..options(&server, &dir.path().join("pull"))
    })
    .unwrap();
    let e = small.pull(&reference).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::TooLarge { size, limit: 1000, .. } if size == signed.bytes.len() as u64),
        "{e:?}"
    );
    assert!(e.is_refusal());
    assert_eq!(
        e.to_string(),
        format!(
            "{reference}: the module is {} bytes, over this host's limit of 1000 bytes; raise \
             max_module_size if it is expected",
            signed.bytes.len()
        )
    );
    // Refused from the manifest's size: the layer itself was never fetched.
    let layer = sha256_digest(&signed.bytes);
    let log = server.log();
    assert!(
        !log.contains(&format!("GET /v2/sigil/probe/blobs/{layer}")),
        "{log}"
    );
}

#[test]
fn registry_unsigned_module_behind_a_valid_manifest_is_refused() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let unsigned = probe();
    let digest = server.push_foreign(
        "sigil/unsigned",
        "1",
        OCI_MANIFEST,
        SIGIL_CONFIG,
        SIGIL_LAYER,
        &unsigned,
    );
    let reference = server.reference("sigil/unsigned:1");
    let pinned = format!("{reference}@{digest}");
    let claims = "module is not signed: it has no `wasmcloud_jwt` (or legacy `jwt`) custom \
                  section; sign it with `sigil-claims sign`";
    ws.sigil("c", &["pull", &reference, "-o", "x.wasm"])
        .insecure(&server)
        .fails(1, &format!("{pinned}: the module is refused: {claims}"));
    assert!(!ws.path("x.wasm").exists());
    ws.sigil("c", &["call", &reference, "echo"])
        .insecure(&server)
        .fails(1, &format!("cannot load {pinned}: {claims}"));
}

#[test]
fn registry_module_of_a_foreign_account_is_refused() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let signed = signed_probe("probe");
    let file = ws.write("probe.wasm", &signed.bytes);
    let reference = server.reference("sigil/probe:1");
    let pinned = ws
        .sigil("c", &["push", &file, &reference])
        .insecure(&server)
        .ok();
    let pinned = pinned.trim();

    let other = sigil_claims::keys::generate(sigil_claims::KeyKind::Account).public_key();
    let issuer = signed.account.public_key();
    ws.sigil(
        "c",
        &["pull", &reference, "-o", "x.wasm", "--issuer", &other],
    )
    .insecure(&server)
    .fails(
        1,
        &format!(
            "{pinned}: the module is refused: issuer {issuer} is not among the allowed \
                 issuers of this policy"
        ),
    );
    assert!(!ws.path("x.wasm").exists());
    let printed = ws
        .sigil(
            "c",
            &["pull", &reference, "-o", "x.wasm", "--issuer", &issuer],
        )
        .insecure(&server)
        .ok();
    assert_eq!(printed.trim(), pinned);
}

#[test]
fn registry_push_of_an_unsigned_file_is_refused() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let file = ws.write("unsigned.wasm", &probe());
    let reference = server.reference("sigil/unsigned:1");
    ws.sigil("c", &["push", &file, &reference])
        .insecure(&server)
        .fails(
            1,
            &format!(
                "{file}: refused to push: module is not signed: it has no `wasmcloud_jwt` (or \
                 legacy `jwt`) custom section; sign it with `sigil-claims sign`; sign it first \
                 (sigil-claims sign, or sigil build)"
            ),
        );
    // Nothing reached the registry.
    let tags = server.curl(&[&server.url("/v2/sigil/unsigned/tags/list")]);
    assert_eq!(tags.status, 404, "{tags:?}");
}

#[test]
fn registry_latest_or_no_tag_needs_allow_latest() {
    let server = RegistryServer::plain();
    let ws = Workspace::new();
    let file = ws.write("probe.wasm", &signed_probe("probe").bytes);
    let latest = server.reference("sigil/probe:latest");
    let pinned = ws
        .sigil("c", &["push", &file, &latest])
        .insecure(&server)
        .ok();
    let digest = pinned.trim().strip_prefix(&format!("{latest}@")).unwrap();
    let bare = server.reference("sigil/probe");

    for (reference, what) in [(&latest, "the tag latest"), (&bare, "no tag")] {
        let refusal = format!(
            "{reference} names {what}, which changes whenever someone pushes; pin a version \
             tag or a digest (@sha256:...), or allow it with allow_latest = true (host.toml) \
             or --allow-latest"
        );
        ws.sigil("c", &["pull", reference, "-o", "x.wasm"])
            .insecure(&server)
            .fails(2, &refusal);
        ws.sigil("c", &["call", reference, "echo"])
            .insecure(&server)
            .fails(2, &refusal);
        let printed = ws
            .sigil("c", &["pull", reference, "-o", "x.wasm", "--allow-latest"])
            .insecure(&server)
            .ok();
        assert_eq!(printed.trim(), format!("{reference}@{digest}"));
        let echoed = ws
            .sigil(
                "c",
                &[
                    "call",
                    reference,
                    "echo",
                    "--raw",
                    "--data",
                    "floating",
                    "--raw-output",
                    "--allow-latest",
                ],
            )
            .insecure(&server)
            .ok();
        assert_eq!(echoed, "floating");
    }
    // Pinned by digest, no permission is needed.
    call_echo(&ws, &server, &format!("{bare}@{digest}"), "c");
}

#[tokio::test]
async fn registry_concurrent_pulls_share_one_transfer() {
    let mut server = RegistryServer::plain();
    let dir = tempfile::tempdir().unwrap();
    let signed = signed_probe("probe");
    let reference = ModuleRef::parse(&server.reference("sigil/probe:1")).unwrap();
    let pushed = Registry::new(options(&server, &dir.path().join("push")))
        .unwrap()
        .push(&signed.bytes, "probe.wasm", &reference)
        .await
        .unwrap();

    let registry = Registry::new(options(&server, &dir.path().join("pull"))).unwrap();
    let pulls = futures::future::join_all((0..8).map(|_| registry.pull(&reference))).await;
    let pulls: Vec<_> = pulls.into_iter().map(Result::unwrap).collect();
    for p in &pulls {
        assert!(Arc::ptr_eq(&p.module, &pulls[0].module), "two transfers");
        assert_eq!(p.digest, pushed.digest);
        assert!(!p.from_cache);
    }
    assert!(*pulls[0].module == *signed.bytes);
    // The registry saw one manifest request and one blob request.
    let log = server.log();
    let count = |what: &str| log.matches(&format!("\"GET {what} ")).count();
    assert_eq!(count("/v2/sigil/probe/manifests/1"), 1, "{log}");
    assert_eq!(
        count(&format!("/v2/sigil/probe/blobs/{}", pushed.layer_digest)),
        1,
        "{log}"
    );

    // By digest, the module comes from the cache: the registry is not needed.
    server.kill();
    let by_digest = pulls[0].pinned.clone();
    assert_eq!(by_digest.digest(), Some(&*pushed.digest));
    let again = registry.pull(&by_digest).await.unwrap();
    assert!(again.from_cache);
    assert!(*again.module == *signed.bytes);
    let digest_only = ModuleRef::parse(&format!(
        "{}@{}",
        server.reference("sigil/probe"),
        pushed.digest
    ))
    .unwrap();
    let fresh = Registry::new(options(&server, &dir.path().join("pull"))).unwrap();
    let again = fresh.pull(&digest_only).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(again.digest, pushed.digest);
    assert!(*again.module == *signed.bytes);
}
