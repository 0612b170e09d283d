//! WASI steps: WASI command modules run as workflow steps under the file contract of the
//! Argo Wasm executor plugin, so that modules written for it run here unchanged.
//!
//! Each run gets a fresh private directory mounted at `/work` holding `input.json`,
//! `artifacts-in/` and `artifacts-out/`; the module reads its input, writes
//! `/work/result.json` and exits. The directory is removed when the run ends. See
//! `docs/wasi-steps.md` for the contract and where Sigil differs from the plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sigil_providers::blobstore::StagingArea;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::HostCallHandler;
use crate::engine::{Engine, HttpGrant, InvocationError, WasiRun, WasiTemplate};

/// The operation under which a step's request and answer are the plugin's own documents
/// (the input document in, the result document out; MessagePack like every step request),
/// as the Argo endpoint sends them. Under any other operation the request is an object of
/// parameter name to value and the answer the output parameters in the same form.
pub const PLUGIN_OPERATION: &str = "wasm-plugin";

/// The key of a plugin request that carries the template's `permissions.http.allowed_hosts`
/// beside the input document (it is not written to `input.json`).
pub const ALLOWED_HOSTS_KEY: &str = "sigil_allowed_hosts";

/// The request of [`PLUGIN_OPERATION`]: the input document, and the hosts the template
/// lets the module reach (none listed: no HTTP, as in the plugin).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PluginRequest {
    /// The input document.
    #[serde(flatten)]
    pub document: Invocation,
    /// `permissions.http.allowed_hosts`.
    #[serde(
        default,
        rename = "sigil_allowed_hosts",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// Where the module's output artifacts go in the artifact repository: the key prefix
    /// of `<prefix>/<name>`. The Argo endpoint sets it when it has an artifact store.
    #[serde(
        default,
        rename = "sigil_artifacts",
        skip_serializing_if = "Option::is_none"
    )]
    pub artifacts: Option<String>,
}

/// The most of a module's stdout and of its stderr kept (the end of each).
pub const OUTPUT_CAP: usize = 64 << 10;

/// A named value: a parameter or a plugin option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Its value, any JSON (Argo sends strings).
    pub value: Value,
}

/// Where an artifact is in the artifact repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Artifact {
    /// The object key.
    pub key: String,
}

/// An artifact: its name, its path (under `/work/artifacts-in/` or `/work/artifacts-out/`),
/// and where it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Its name.
    pub name: String,
    /// Its path, relative to the artifacts directory (a leading `/` is ignored).
    pub path: String,
    /// Its object in the repository, when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Artifact>,
}

/// The input document, `/work/input.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Invocation {
    /// The Argo workflow's name (for Sigil's own steps: the step's operation).
    pub workflow_name: String,
    /// The template's options: every key of `plugin.wasm` but `module` and `permissions`.
    #[serde(default)]
    pub plugin_options: Vec<Parameter>,
    /// The input parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The input artifacts.
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
}

/// How a step ended, by its own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepPhase {
    /// It did its work.
    Succeeded,
    /// It failed; `message` says why.
    Failed,
}

/// The output parameters and artifacts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outputs {
    /// Output parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Output artifacts, written under `/work/artifacts-out/`.
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
}

/// The result document, `/work/result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// `Succeeded` or `Failed`.
    pub phase: StepPhase,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// What it produced.
    #[serde(default)]
    pub outputs: Outputs,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> InvocationError {
    InvocationError::Instantiate {
        message: format!("cannot {what} {}: {e}", path.display()),
    }
}

/// The input document of a Sigil step: its request is an object of parameter name to
/// value (MessagePack, as every step request), or nothing.
fn invocation_of_request(operation: &str, payload: &[u8]) -> Result<Invocation, InvocationError> {
    let value: Value = if payload.is_empty() {
        Value::Null
    } else {
        rmp_serde::from_slice(payload).map_err(|e| InvocationError::Protocol {
            message: format!("a WASI step's input must be MessagePack: {e}"),
        })?
    };
    let parameters = match value {
        Value::Null => Vec::new(),
        Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| Parameter { name, value })
            .collect(),
        other => {
            return Err(InvocationError::Protocol {
                message: format!(
                    "a WASI step's input is an object of parameter name to value, not {other}"
                ),
            });
        }
    };
    Ok(Invocation {
        workflow_name: operation.to_string(),
        parameters,
        ..Invocation::default()
    })
}

/// Runs one WASI step: writes the input document, runs the module to its end in a fresh
/// instance, and reads its result. Under [`PLUGIN_OPERATION`] the request and answer are
/// the plugin's documents; otherwise the request is an object of parameters and
/// the answer the output parameters as an object (MessagePack), a `Failed` phase being
/// the step's error.
pub async fn run_step(
    engine: &Engine,
    template: &WasiTemplate,
    handler: Arc<dyn HostCallHandler>,
    program: &str,
    operation: &str,
    payload: &[u8],
    store: Option<&StagingArea>,
) -> Result<Vec<u8>, InvocationError> {
    let plugin = operation == PLUGIN_OPERATION;
    // A Sigil step may reach what its link allows; a plugin template only the hosts it
    // lists too (none: no HTTP).
    let (invocation, http, prefix) = if plugin {
        let request = rmp_serde::from_slice::<PluginRequest>(payload).map_err(|e| {
            InvocationError::Protocol {
                message: format!("not the plugin's input document: {e}"),
            }
        })?;
        let grant = HttpGrant {
            allowed_hosts: Some(request.allowed_hosts.unwrap_or_default()),
            max_open: 8,
        };
        (request.document, grant, request.artifacts)
    } else {
        let grant = HttpGrant {
            allowed_hosts: None,
            max_open: 8,
        };
        (invocation_of_request(operation, payload)?, grant, None)
    };
    let dir = tempfile::Builder::new()
        .prefix("sigil-wasi-")
        .tempdir_in(work_root())
        .map_err(|e| InvocationError::Instantiate {
            message: format!("cannot make the step's /work directory: {e}"),
        })?;
    let work = dir.path();
    for sub in ["artifacts-in", "artifacts-out"] {
        std::fs::create_dir(work.join(sub)).map_err(|e| io("make", &work.join(sub), e))?;
    }
    let input = serde_json::to_vec(&invocation).map_err(|e| InvocationError::Protocol {
        message: e.to_string(),
    })?;
    std::fs::write(work.join("input.json"), input)
        .map_err(|e| io("write", &work.join("input.json"), e))?;
    stage_inputs(store, work, &invocation.artifacts).await?;

    let run = WasiRun {
        work_dir: work.to_path_buf(),
        program: program.to_string(),
        output_cap: OUTPUT_CAP,
        http: Some(http),
    };
    let exit = engine.run_wasi(template, handler, &run).await?;
    for (stream, captured) in [("stdout", &exit.stdout), ("stderr", &exit.stderr)] {
        if captured.total > 0 {
            tracing::info!(target: "sigil::actor", actor = program, stream, "{}", captured.text().trim_end());
        }
    }
    if exit.code != 0 {
        return Err(InvocationError::Exit {
            code: exit.code,
            stderr: exit.stderr.text(),
        });
    }
    let mut result = read_result(work, engine.config().limits.max_response)?;
    if plugin && result.phase == StepPhase::Succeeded {
        collect_outputs(
            store,
            work,
            prefix.as_deref(),
            &mut result.outputs.artifacts,
        )
        .await?;
    }
    drop(dir);
    if plugin {
        return rmp_serde::to_vec_named(&result).map_err(|e| InvocationError::Protocol {
            message: e.to_string(),
        });
    }
    match result.phase {
        StepPhase::Failed => Err(InvocationError::Guest {
            message: if result.message.is_empty() {
                "the step reported phase Failed".into()
            } else {
                result.message
            },
        }),
        StepPhase::Succeeded => {
            let outputs: serde_json::Map<String, Value> = result
                .outputs
                .parameters
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect();
            rmp_serde::to_vec_named(&outputs).map_err(|e| InvocationError::Protocol {
                message: e.to_string(),
            })
        }
    }
}

/// An artifact's path inside its directory (`artifacts-in/` or `artifacts-out/`): its
/// `path` without the leading `/`, refused when empty or when it would leave the directory.
fn artifact_path(artifact: &ArtifactRef) -> Result<PathBuf, String> {
    let path = artifact.path.trim_start_matches('/');
    let bad = path.is_empty()
        || path
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."));
    if bad {
        return Err(format!(
            "artifact `{}` has path {:?}; give a relative file path inside its directory, \
             without `.` or `..` segments, like \"result.txt\"",
            artifact.name, artifact.path
        ));
    }
    Ok(PathBuf::from(path))
}

/// The object key of an output artifact: `<prefix>/<name>`, the name made safe for a key.
fn output_key(prefix: &str, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let safe = match safe.as_str() {
        "" | "." | ".." => "artifact".to_string(),
        _ => safe,
    };
    format!("{prefix}/{safe}")
}

/// Downloads each input artifact from the artifact repository into
/// `/work/artifacts-in/<path>`, before the module runs.
async fn stage_inputs(
    store: Option<&StagingArea>,
    work: &Path,
    artifacts: &[ArtifactRef],
) -> Result<(), InvocationError> {
    let failed = |message: String| InvocationError::Instantiate { message };
    for artifact in artifacts {
        let name = &artifact.name;
        let Some(store) = store else {
            return Err(failed(format!(
                "input artifact `{name}`: this host has no artifact store to fetch it from; \
                 give it the Argo endpoint's store as [workflows.artifacts] (or [argo.artifacts])"
            )));
        };
        let Some(s3) = &artifact.s3 else {
            return Err(failed(format!(
                "input artifact `{name}` has no s3.key: WASI steps take their input artifacts \
                 from the artifact repository"
            )));
        };
        let relative = artifact_path(artifact).map_err(|e| failed(format!("input {e}")))?;
        let path = work.join("artifacts-in").join(&relative);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io("make", parent, e))?;
        }
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io("create", &path, e))?;
        let size = store
            .download(&s3.key, &mut file)
            .await
            .map_err(|e| failed(format!("input artifact `{name}`: {e}")))?;
        tracing::debug!(artifact = %name, key = %s3.key, size, "input artifact staged");
    }
    Ok(())
}

/// Uploads each output artifact the result lists from `/work/artifacts-out/<path>` to
/// `<prefix>/<name>` in the artifact repository, and records that key in the result (as
/// the Argo Wasm plugin answers them). The module wrote that directory, so each file is
/// opened through `cap-std`, which refuses a path or a symbolic link that leads out of
/// it.
async fn collect_outputs(
    store: Option<&StagingArea>,
    work: &Path,
    prefix: Option<&str>,
    artifacts: &mut [ArtifactRef],
) -> Result<(), InvocationError> {
    let failed = |message: String| InvocationError::StepResult { message };
    if artifacts.is_empty() {
        return Ok(());
    }
    let (Some(store), Some(prefix)) = (store, prefix) else {
        return Err(failed(format!(
            "the module reports output artifact `{}`, but no artifact store takes it: give \
             the Argo endpoint [argo.artifacts] and this host the same store",
            artifacts[0].name
        )));
    };
    let out = work.join("artifacts-out");
    let dir = cap_std::fs::Dir::open_ambient_dir(&out, cap_std::ambient_authority())
        .map_err(|e| failed(format!("cannot open /work/artifacts-out: {e}")))?;
    for artifact in artifacts.iter_mut() {
        let name = artifact.name.clone();
        let relative = artifact_path(artifact).map_err(|e| failed(format!("output {e}")))?;
        let shown = format!("/work/artifacts-out/{}", relative.display());
        let file = dir.open(&relative).map_err(|e| {
            failed(format!(
                "output artifact `{name}`: cannot open {shown}: {e} (write the file there \
                 before exiting)"
            ))
        })?;
        let meta = file
            .metadata()
            .map_err(|e| failed(format!("output artifact `{name}`: {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(failed(format!(
                "output artifact `{name}`: {shown} is not a file"
            )));
        }
        let mut file = tokio::fs::File::from_std(file.into_std());
        let key = output_key(prefix, &name);
        let size = store
            .upload(&mut file, &key)
            .await
            .map_err(|e| failed(format!("output artifact `{name}`: {e}")))?;
        tracing::debug!(artifact = %name, %key, size, "output artifact stored");
        artifact.s3 = Some(S3Artifact { key });
    }
    Ok(())
}

/// Where runs' `/work` directories are made: `$SIGIL_WORK_DIR`, else `/dev/shm` (memory,
/// where a run's few small files cost no disk I/O) when it is a writable directory, else
/// the system's temporary directory.
fn work_root() -> std::path::PathBuf {
    static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SIGIL_WORK_DIR").filter(|d| !d.is_empty()) {
            return dir.into();
        }
        let shm = Path::new("/dev/shm");
        let writable = shm.is_dir()
            && tempfile::Builder::new()
                .prefix("sigil-probe-")
                .tempdir_in(shm)
                .is_ok();
        if writable {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
    .clone()
}

/// `/work/result.json`, bounded by the response limit.
fn read_result(work: &Path, limit: usize) -> Result<StepResult, InvocationError> {
    let path = work.join("result.json");
    let unusable = |message: String| InvocationError::StepResult { message };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable(
                "the module exited with code 0 without writing /work/result.json".into(),
            ));
        }
        Err(e) => return Err(unusable(format!("cannot read /work/result.json: {e}"))),
    };
    if !meta.is_file() {
        return Err(unusable("/work/result.json is not a file".into()));
    }
    if meta.len() > limit as u64 {
        return Err(InvocationError::ResponseTooLarge {
            size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            limit,
        });
    }
    let bytes = std::fs::read(&path).map_err(|e| unusable(format!("cannot read it: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        unusable(format!(
            "/work/result.json is not a result document ({e}); write {{\"phase\": \
             \"Succeeded\" or \"Failed\", \"message\": \"...\", \"outputs\": {{\"parameters\": \
             [{{\"name\": ..., \"value\": ...}}], \"artifacts\": []}}}}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigil_request_becomes_parameters() {
        let payload = rmp_serde::to_vec_named(&serde_json::json!({"text": "hi", "n": 3})).unwrap();
        let inv = invocation_of_request("greet", &payload).unwrap();
        assert_eq!(inv.workflow_name, "greet");
        assert_eq!(inv.parameters.len(), 2);
        assert_eq!(
            serde_json::to_value(&inv).unwrap(),
            serde_json::json!({"workflow_name": "greet", "plugin_options": [],
                "parameters": [{"name": "n", "value": 3}, {"name": "text", "value": "hi"}],
                "artifacts": []})
        );
        assert!(
            invocation_of_request("x", &[])
                .unwrap()
                .parameters
                .is_empty()
        );
        let e = invocation_of_request("x", &rmp_serde::to_vec(&[1, 2]).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("object of parameter name to value"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn output_artifacts_are_taken_only_from_inside_artifacts_out() {
        let repo = tempfile::tempdir().unwrap();
        let config = sigil_providers::LinkConfig::new().with("root", repo.path().to_str().unwrap());
        let store = StagingArea::open("fs", &config).unwrap();
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("artifacts-out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(work.path().join("input.json"), b"host side").unwrap();
        std::fs::write(out.join("sub/ok.txt"), b"ok").unwrap();
        std::os::unix::fs::symlink(work.path().join("input.json"), out.join("abs")).unwrap();
        std::os::unix::fs::symlink("../input.json", out.join("rel")).unwrap();
        let artifact = |name: &str, path: &str| ArtifactRef {
            name: name.into(),
            path: path.into(),
            s3: None,
        };
        async fn collect_in(
            work: &Path,
            mut artifacts: Vec<ArtifactRef>,
            store: Option<&StagingArea>,
        ) -> Result<Vec<ArtifactRef>, InvocationError> {
            collect_outputs(store, work, Some("wf/run-1"), &mut artifacts)
                .await
                .map(|()| artifacts)
        }
        let collect = |artifacts, store| collect_in(work.path(), artifacts, store);

        let done = collect(vec![artifact("ok file", "/sub/ok.txt")], Some(&store))
            .await
            .unwrap();
        assert_eq!(done[0].s3.as_ref().unwrap().key, "wf/run-1/ok-file");
        assert_eq!(store.read("wf/run-1/ok-file").await.unwrap(), b"ok");

        for (name, path, expected) in [
            ("abs", "abs", "cannot open /work/artifacts-out/abs"),
            ("rel", "rel", "cannot open /work/artifacts-out/rel"),
            ("up", "../input.json", "`..` segments"),
            ("dir", "sub", "is not a file"),
            ("none", "missing", "write the file there"),
        ] {
            let e = collect(vec![artifact(name, path)], Some(&store))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("artifact `{name}`")) && e.contains(expected),
                "{name}: {e}"
            );
        }
        let e = collect(vec![artifact("ok", "sub/ok.txt")], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no artifact store"), "{e}");
    }

    #[test]
    fn result_documents_as_the_plugin_writes_them() {
        let r: StepResult = serde_json::from_str(
            r#"{"phase":"Succeeded","message":"ok","outputs":{"artifacts":[],
                "parameters":[{"name":"text","value":"x"}]}}"#,
        )
        .unwrap();
        assert_eq!(r.phase, StepPhase::Succeeded);
        assert_eq!(r.outputs.parameters[0].name, "text");
        // Lenient where the plugin's own host is strict: missing arrays are empty.
        let r: StepResult = serde_json::from_str(r#"{"phase":"Failed","message":"no"}"#).unwrap();
        assert_eq!(r.phase, StepPhase::Failed);
        assert!(serde_json::from_str::<StepResult>(r#"{"phase":"Done"}"#).is_err());
    }
}
