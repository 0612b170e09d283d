//! The Argo Workflows executor plugin: Argo hands templates that carry a `sigil` plugin
//! section to this endpoint, and Sigil runs them as workflows of signed steps.
//!
//! `POST /api/v1/template.execute` with Argo's body
//! `{workflow: {metadata: {name, namespace, uid}}, template: {name, inputs, plugin}}`:
//! - a template without `plugin.sigil` is not ours: the answer is `{}`;
//! - otherwise the run is started (once: its ID is derived from the workflow's uid, the
//!   template name and the inputs, so Argo's retries find the same run), and the answer is
//!   `{node: {phase, message, outputs}}`, with `requeue` while it runs so that no request
//!   waits anywhere near Argo's 30-second client timeout.
//!
//! Every request must carry `Authorization: Bearer <token>`, the token Argo mounts for its
//! plugins; it is compared in constant time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sigil_actor::contracts::httpserver::{HttpRequest, HttpResponse};
use sigil_providers::blobstore::StagingArea;
use sigil_providers::httpserver::{RequestHandler, ServerHandle, ServerLimits, serve};
use subtle::ConstantTimeEq;

use super::runtime::Runtime;

use crate::oci::ModuleRef;
use crate::workflow::routes::resolve_remote_routes;
use crate::workflow::scheduler::{Scheduler, WorkflowError};
use crate::workflow::spec::{InputSpec, StepSpec, Workflow, WorkflowSpec};
use crate::workflow::state::{RunState, RunStatus, StepStatus};

/// How long a request waits for a run to end before answering `Running`.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// When Argo should ask again about a running node.
const REQUEUE: &str = "2s";

/// The `plugin.sigil` section of a template.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigilPlugin {
    /// A whole workflow: a spec object or its YAML text. Template parameters and artifacts
    /// are its inputs.
    #[serde(default)]
    workflow: Option<Value>,
    /// Or one step: the actor (key, name, or `oci://` reference to a listed registry)...
    #[serde(default)]
    actor: Option<String>,
    /// ...its operation...
    #[serde(default)]
    operation: Option<String>,
    /// ...and its request (default: an object of all inputs).
    #[serde(default)]
    input: Option<Value>,
    /// The step's timeout.
    #[serde(default)]
    timeout: Option<String>,
}

/// The `plugin.wasm` section of a template, in the Argo Wasm executor plugin's own shape,
/// so that its users' workflows run here unchanged.
#[derive(Debug, Deserialize)]
struct WasmPlugin {
    /// `{oci: REFERENCE}`: the module, by registry reference (the scheme is optional).
    module: WasmModule,
    /// `{http: {allowed_hosts: [...]}}`: what the module may reach over HTTP.
    #[serde(default)]
    permissions: Option<Value>,
    /// Every other key: the plugin options handed to the module.
    #[serde(flatten)]
    options: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmModule {
    oci: String,
}

#[derive(Debug, Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Deserialize, Default)]
struct ArgoWorkflow {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Parameter {
    name: String,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
struct Inputs {
    #[serde(default)]
    parameters: Vec<Parameter>,
    #[serde(default)]
    artifacts: Vec<Value>,
}

#[derive(Debug, Deserialize, Default)]
struct Outputs {
    #[serde(default)]
    artifacts: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Template {
    #[serde(default)]
    name: String,
    #[serde(default)]
    inputs: Inputs,
    #[serde(default)]
    outputs: Outputs,
    #[serde(default)]
    plugin: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ExecuteRequest {
    #[serde(default)]
    workflow: ArgoWorkflow,
    template: Template,
}

struct Plugin {
    scheduler: Arc<Scheduler>,
    runtime: Option<Arc<Runtime>>,
    /// The HTTP client provider and egress allowlist `plugin.wasm` modules are linked to.
    wasm_http: Option<(String, String)>,
    /// The modules linked to it already, by public key.
    wasm_linked: tokio::sync::Mutex<std::collections::HashSet<String>>,
    token: String,
    artifacts: Option<Arc<StagingArea>>,
}

/// Serves the executor plugin endpoint on `address`; `token` is the bearer token Argo
/// sends; `artifacts` is the store artifacts are staged through, when configured;
/// `runtime`, the host that starts modules templates name by `oci://` reference (none:
/// such templates are refused).
pub async fn serve_argo(
    scheduler: Arc<Scheduler>,
    runtime: Option<Arc<Runtime>>,
    token: String,
    artifacts: Option<Arc<StagingArea>>,
    wasm_http: Option<(String, String)>,
    address: &str,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    serve(
        listener,
        Arc::new(Plugin {
            scheduler,
            runtime,
            wasm_http,
            wasm_linked: tokio::sync::Mutex::new(std::collections::HashSet::new()),
            token,
            artifacts,
        }),
        ServerLimits {
            max_body_bytes: 4 << 20,
            timeout: ANSWER_WITHIN + Duration::from_secs(10),
        },
    )
    .await
}

fn reply(status: u16, value: &Value) -> HttpResponse {
    let mut response = HttpResponse::new(status);
    response
        .headers
        .push(("content-type".into(), "application/json".into()));
    response.body = value.to_string().into_bytes();
    response
}

fn failed(message: impl Into<String>) -> HttpResponse {
    reply(
        200,
        &json!({ "node": { "phase": "Failed", "message": message.into() } }),
    )
}

/// A name usable as a workflow or input name: other characters become `-`.
fn tidy(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if t.is_empty() { "argo".into() } else { t }
}

impl Plugin {
    fn authorized(&self, request: &HttpRequest) -> bool {
        request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(self.token.as_bytes())))
    }

    async fn execute(&self, request: ExecuteRequest) -> HttpResponse {
        if let Some(section) = request.template.plugin.get("wasm") {
            return self.execute_wasm(&request, section).await;
        }
        let Some(section) = request.template.plugin.get("sigil") else {
            return reply(200, &json!({}));
        };
        let plugin: SigilPlugin = match serde_json::from_value(section.clone()) {
            Ok(p) => p,
            Err(e) => return failed(format!("the sigil plugin section is invalid: {e}")),
        };
        let template = &request.template;
        let mut inputs: BTreeMap<String, Value> = BTreeMap::new();
        for p in &template.inputs.parameters {
            inputs.insert(tidy(&p.name), p.value.clone().unwrap_or(Value::Null));
        }
        for a in &template.inputs.artifacts {
            if let Some(name) = a.get("name").and_then(Value::as_str) {
                inputs.insert(tidy(name), a.clone());
            }
        }
        let key = format!(
            "{}/{}/{}",
            request.workflow.metadata.uid,
            template.name,
            serde_json::to_string(&inputs).unwrap_or_default()
        );
        let id = format!("argo-{}", &blake3::hash(key.as_bytes()).to_hex()[..32]);
        let outputs = match self.stage_in(&id, template, &mut inputs).await {
            Ok(outputs) => outputs,
            Err(e) => return failed(e),
        };
        let workflow = match build_workflow(&plugin, &template.name, &inputs) {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        let routes = match resolve_remote_routes(&workflow, self.runtime.as_deref()).await {
            Ok(r) => r,
            Err(e) => return failed(e.0),
        };
        let state = match self.run(&id, &request, &workflow, &routes, inputs).await {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        let artifacts = match self
            .stage_out(&id, &request.workflow.metadata.name, &outputs, &state)
            .await
        {
            Ok(artifacts) => artifacts,
            Err(e) => return failed(format!("sigil run {id}: {e}")),
        };
        reply(200, &node(&state, artifacts))
    }

    /// Submits the run `id` (once: a node asked about again finds its run) and waits for
    /// it to end, or answers what it is doing after [`ANSWER_WITHIN`].
    async fn run(
        &self,
        id: &str,
        request: &ExecuteRequest,
        workflow: &Workflow,
        routes: &std::collections::HashMap<String, String>,
        inputs: BTreeMap<String, Value>,
    ) -> Result<RunState, HttpResponse> {
        self.scheduler
            .submit_as(id, workflow, inputs, routes)
            .await
            .map_err(|e| failed(e.to_string()))?;
        tracing::debug!(run = %id, argo_workflow = %request.workflow.metadata.name, template = %request.template.name, "argo node");
        match tokio::time::timeout(ANSWER_WITHIN, self.scheduler.wait(id, |_| {})).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => self
                .scheduler
                .status(id)
                .await
                .map_err(|e| failed(e.to_string())),
        }
    }

    /// A `plugin.wasm` template: one step of the WASI module it names, given the plugin's
    /// input document and answering with the plugin's result, as the Argo Wasm executor
    /// plugin would.
    async fn execute_wasm(&self, request: &ExecuteRequest, section: &Value) -> HttpResponse {
        let plugin: WasmPlugin = match serde_json::from_value(section.clone()) {
            Ok(p) => p,
            Err(e) => {
                return failed(format!(
                    "the wasm plugin section is invalid: {e}; it needs module: {{oci: REFERENCE}}"
                ));
            }
        };
        let template = &request.template;
        let reference = if ModuleRef::is_reference(&plugin.module.oci) {
            plugin.module.oci.clone()
        } else {
            format!("{}{}", crate::oci::SCHEME, plugin.module.oci)
        };
        let invocation = crate::wasi::Invocation {
            workflow_name: request.workflow.metadata.name.clone(),
            plugin_options: plugin
                .options
                .iter()
                .map(|(name, value)| crate::wasi::Parameter {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            parameters: template
                .inputs
                .parameters
                .iter()
                .map(|p| crate::wasi::Parameter {
                    name: p.name.clone(),
                    value: p.value.clone().unwrap_or(Value::Null),
                })
                .collect(),
            artifacts: match self.wasm_inputs(template) {
                Ok(artifacts) => artifacts,
                Err(e) => return failed(e),
            },
        };
        let allowed_hosts = plugin
            .permissions
            .as_ref()
            .and_then(|p| p.pointer("/http/allowed_hosts"))
            .and_then(|h| serde_json::from_value::<Vec<String>>(h.clone()).ok());
        let mut plugin_request = crate::wasi::PluginRequest {
            document: invocation,
            allowed_hosts,
            artifacts: None,
        };
        let key = format!(
            "{}/{}/wasm/{reference}/{}",
            request.workflow.metadata.uid,
            template.name,
            serde_json::to_string(&plugin_request).unwrap_or_default()
        );
        let id = format!("argo-{}", &blake3::hash(key.as_bytes()).to_hex()[..32]);
        // With a store, the host that runs the step moves the artifacts: inputs from their
        // keys, outputs to keys under this run's prefix.
        if self.artifacts.is_some() {
            plugin_request.artifacts =
                Some(format!("{}/{id}", tidy(&request.workflow.metadata.name)));
        }
        let input = match serde_json::to_value(&plugin_request) {
            Ok(v) => v,
            Err(e) => return failed(e.to_string()),
        };
        let spec = WorkflowSpec {
            version: crate::workflow::spec::VERSION,
            name: tidy(&template.name),
            description: None,
            inputs: BTreeMap::new(),
            steps: vec![StepSpec {
                name: "wasm".into(),
                actor: reference,
                operation: crate::wasi::PLUGIN_OPERATION.into(),
                input: Some(input),
                depends: Vec::new(),
                retry: None,
                timeout: None,
                on_failure: Default::default(),
            }],
            outputs: Some(Value::String("${{ steps.wasm.output }}".into())),
        };
        let workflow = match Workflow::check(spec) {
            Ok(w) => w,
            Err(e) => return failed(e.0),
        };
        let routes = match resolve_remote_routes(&workflow, self.runtime.as_deref()).await {
            Ok(r) => r,
            Err(e) => return failed(e.0),
        };
        self.link_wasm_http(&routes).await;
        let state = match self
            .run(&id, request, &workflow, &routes, BTreeMap::new())
            .await
        {
            Ok(state) => state,
            Err(answer) => return answer,
        };
        if state.status != RunStatus::Succeeded {
            return reply(200, &node(&state, Vec::new()));
        }
        match state
            .outputs
            .clone()
            .map(serde_json::from_value::<crate::wasi::StepResult>)
        {
            Some(Ok(result)) => reply(200, &wasm_node(&result)),
            Some(Err(e)) => failed(format!("sigil run {id}: not a result document: {e}")),
            None => failed(format!("sigil run {id}: the step answered nothing")),
        }
    }

    /// The input artifacts of a `plugin.wasm` template, as the input document lists them:
    /// each must be in the artifact store's bucket under an S3 key, since the host that
    /// runs the step fetches it from there into `/work/artifacts-in/`.
    fn wasm_inputs(&self, template: &Template) -> Result<Vec<crate::wasi::ArtifactRef>, String> {
        let mut artifacts = Vec::new();
        for a in &template.inputs.artifacts {
            let name = a.get("name").and_then(Value::as_str).unwrap_or("?");
            let artifact: crate::wasi::ArtifactRef =
                serde_json::from_value(a.clone()).map_err(|e| {
                    format!("input artifact `{name}`: {e}; it needs name, path and s3.key")
                })?;
            if artifact.s3.is_none() {
                return Err(format!(
                    "input artifact `{name}`: plugin.wasm templates take S3 artifacts (s3.key) \
                     from the artifact repository"
                ));
            }
            let Some(store) = &self.artifacts else {
                return Err(format!(
                    "input artifact `{name}`: this host has no artifact store to fetch it \
                     from; configure [argo.artifacts]"
                ));
            };
            check_bucket(store, name, a)?;
            artifacts.push(artifact);
        }
        Ok(artifacts)
    }

    /// Links the module of a `plugin.wasm` step to the configured HTTP client provider
    /// (once per module), so that its `wasi_experimental_http` calls reach the hosts that
    /// both the operator's allowlist and the template's `allowed_hosts` allow.
    async fn link_wasm_http(&self, routes: &std::collections::HashMap<String, String>) {
        let (Some((provider, allow)), Some(runtime)) = (&self.wasm_http, &self.runtime) else {
            return;
        };
        let mut linked = self.wasm_linked.lock().await;
        for route in routes.values() {
            let Some(subject) = route.strip_prefix("key.") else {
                continue;
            };
            if linked.contains(subject) {
                continue;
            }
            let definition = sigil_providers::LinkDefinition {
                actor: subject.to_string(),
                contract_id: sigil_actor::contracts::httpclient::CONTRACT_ID.to_string(),
                link_name: sigil_providers::DEFAULT_LINK_NAME.to_string(),
                provider: provider.clone(),
                config: sigil_providers::LinkConfig::new().with("allow", allow.clone()),
            };
            // A module whose claims lack wasmcloud:httpclient is not linked: its HTTP
            // calls are refused by the gate, which is what its claims say.
            match runtime.add_link(&definition).await {
                Ok(()) => {
                    linked.insert(subject.to_string());
                }
                Err(e) => {
                    tracing::debug!(actor = subject, error = %e, "plugin.wasm module not linked for HTTP")
                }
            }
        }
    }

    /// With an artifact store: creates the run's staging container, copies each input
    /// artifact into it (once, before the run exists) and makes every artifact input a
    /// `{container, object}` the steps use through their blob-store links. Answers the
    /// output artifacts the template declares, by name.
    async fn stage_in(
        &self,
        id: &str,
        template: &Template,
        inputs: &mut BTreeMap<String, Value>,
    ) -> Result<Vec<(String, Value)>, String> {
        let declared: Vec<(String, Value)> = template
            .outputs
            .artifacts
            .iter()
            .filter_map(|a| Some((a.get("name")?.as_str()?.to_string(), a.clone())))
            .collect();
        let Some(store) = &self.artifacts else {
            // No store: an input artifact stays a location in Argo's repository.
            if let Some((name, _)) = declared.first() {
                return Err(format!(
                    "the template declares output artifact `{name}`, but this host has no artifact store: configure [argo.artifacts]"
                ));
            }
            return Ok(declared);
        };
        let container = id;
        let fresh = matches!(
            self.scheduler.status(id).await,
            Err(WorkflowError::NoSuchRun(_))
        );
        if fresh {
            store
                .create_container(container)
                .await
                .map_err(|e| format!("cannot stage artifacts: {e}"))?;
        }
        for a in &template.inputs.artifacts {
            let Some(name) = a.get("name").and_then(Value::as_str) else {
                continue;
            };
            let object = tidy(name);
            if fresh {
                if let Some(key) = a.pointer("/s3/key").and_then(Value::as_str) {
                    check_bucket(store, name, a)?;
                    store
                        .stage_in(key, container, &object)
                        .await
                        .map_err(|e| format!("input artifact `{name}`: {e}"))?;
                } else if let Some(data) = a.pointer("/raw/data").and_then(Value::as_str) {
                    store
                        .write(
                            &format!("{}/{container}/{object}", store.link_root()),
                            data.into(),
                        )
                        .await
                        .map_err(|e| format!("input artifact `{name}`: {e}"))?;
                } else {
                    return Err(format!(
                        "input artifact `{name}`: only S3 and raw artifacts can be staged"
                    ));
                }
            }
            inputs.insert(
                object.clone(),
                json!({ "container": container, "object": object }),
            );
        }
        for (name, _) in &declared {
            let object = tidy(name);
            if inputs.contains_key(&object) {
                return Err(format!(
                    "output artifact `{name}` has the name of an input; rename one of them"
                ));
            }
            inputs.insert(
                object.clone(),
                json!({ "container": container, "object": object }),
            );
        }
        Ok(declared)
    }

    /// After a successful run: copies each declared output artifact from the staging
    /// container to its key in Argo's repository (the declared `s3.key`, else
    /// `<workflow>/<run>/<name>`), and answers the artifacts for Argo.
    async fn stage_out(
        &self,
        id: &str,
        argo_workflow: &str,
        declared: &[(String, Value)],
        state: &RunState,
    ) -> Result<Vec<Value>, String> {
        let (Some(store), RunStatus::Succeeded) = (&self.artifacts, state.status) else {
            return Ok(Vec::new());
        };
        let mut answered = Vec::new();
        for (name, declared) in declared {
            check_bucket(store, name, declared)?;
            let object = tidy(name);
            let key = declared
                .pointer("/s3/key")
                .and_then(Value::as_str)
                .map_or_else(
                    || format!("{}/{id}/{object}", tidy(argo_workflow)),
                    str::to_string,
                );
            store.stage_out(id, &object, &key).await.map_err(|e| {
                format!(
                    "output artifact `{name}`: {e} (a step writes it with PutObject to container `{id}`, object `{object}`)"
                )
            })?;
            let mut artifact = declared.clone();
            if let Value::Object(map) = &mut artifact {
                let s3 = map.entry("s3").or_insert_with(|| json!({}));
                if let Value::Object(s3) = s3 {
                    s3.insert("key".into(), Value::String(key));
                }
                map.entry("archive")
                    .or_insert_with(|| json!({ "none": {} }));
                map.remove("path");
            }
            answered.push(artifact);
        }
        Ok(answered)
    }
}

/// Refuses an artifact located in another bucket than the artifact store's.
fn check_bucket(store: &StagingArea, name: &str, artifact: &Value) -> Result<(), String> {
    match (
        artifact.pointer("/s3/bucket").and_then(Value::as_str),
        store.bucket(),
    ) {
        (Some(given), Some(ours)) if given != ours => Err(format!(
            "artifact `{name}` is in bucket `{given}`, but the artifact store is bucket `{ours}`"
        )),
        _ => Ok(()),
    }
}

/// The workflow a template asks for.
fn build_workflow(
    plugin: &SigilPlugin,
    template: &str,
    inputs: &BTreeMap<String, Value>,
) -> Result<Workflow, String> {
    if let Some(spec) = &plugin.workflow {
        return Workflow::from_value(spec).map_err(|e| e.0);
    }
    let (Some(actor), Some(operation)) = (&plugin.actor, &plugin.operation) else {
        return Err("the sigil plugin section needs `workflow`, or `actor` and `operation`".into());
    };
    let input = plugin.input.clone().unwrap_or_else(|| {
        Value::Object(
            inputs
                .keys()
                .map(|k| (k.clone(), Value::String(format!("${{{{ inputs.{k} }}}}"))))
                .collect(),
        )
    });
    let spec = WorkflowSpec {
        version: crate::workflow::spec::VERSION,
        name: tidy(template),
        description: None,
        inputs: inputs
            .keys()
            .map(|k| (k.clone(), InputSpec::default()))
            .collect(),
        steps: vec![StepSpec {
            name: "step".into(),
            actor: actor.clone(),
            operation: operation.clone(),
            input: Some(input),
            depends: Vec::new(),
            retry: None,
            timeout: plugin.timeout.clone(),
            on_failure: Default::default(),
        }],
        outputs: Some(Value::String("${{ steps.step.output }}".into())),
    };
    Workflow::check(spec).map_err(|e| e.0)
}

/// The node result Argo expects for a run's state.
fn node(state: &RunState, artifacts: Vec<Value>) -> Value {
    match state.status {
        RunStatus::Running => {
            let running: Vec<&str> = state
                .steps
                .iter()
                .filter(|(_, s)| s.status == StepStatus::Running)
                .map(|(n, _)| n.as_str())
                .collect();
            let done = state.steps.values().filter(|s| s.status.is_final()).count();
            json!({
                "node": {
                    "phase": "Running",
                    "message": format!("sigil run {}: running {}", state.id, running.join(", ")),
                    "progress": format!("{done}/{}", state.steps.len()),
                },
                "requeue": REQUEUE,
            })
        }
        RunStatus::Succeeded => {
            let parameters: Vec<Value> = match &state.outputs {
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(k, v)| json!({ "name": k, "value": as_parameter(v) }))
                    .collect(),
                Some(v) => vec![json!({ "name": "result", "value": as_parameter(v) })],
                None => Vec::new(),
            };
            json!({
                "node": {
                    "phase": "Succeeded",
                    "message": format!("sigil run {}", state.id),
                    "outputs": { "parameters": parameters, "artifacts": artifacts },
                }
            })
        }
        RunStatus::Failed | RunStatus::Cancelled => json!({
            "node": {
                "phase": "Failed",
                "message": format!(
                    "sigil run {}: {}",
                    state.id,
                    state.error.as_deref().unwrap_or("failed")
                ),
            }
        }),
    }
}

/// The node a WASI module's result document makes, as the Argo Wasm plugin answers it:
/// outputs only when there are any, then both lists.
fn wasm_node(result: &crate::wasi::StepResult) -> Value {
    let phase = match result.phase {
        crate::wasi::StepPhase::Succeeded => "Succeeded",
        crate::wasi::StepPhase::Failed => "Failed",
    };
    let mut node = json!({ "phase": phase, "message": result.message });
    let outputs = &result.outputs;
    if !outputs.parameters.is_empty() || !outputs.artifacts.is_empty() {
        node["outputs"] = json!({
            "parameters": outputs.parameters,
            "artifacts": outputs.artifacts,
        });
    }
    json!({ "node": node })
}

/// Argo parameters are strings: text as it is, anything else as JSON.
fn as_parameter(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl RequestHandler for Plugin {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        if request.path.trim_end_matches('/') != "/api/v1/template.execute" {
            return reply(
                404,
                &json!({ "error": "not found; Argo calls POST /api/v1/template.execute" }),
            );
        }
        if request.method != "POST" {
            return reply(405, &json!({ "error": "use POST" }));
        }
        if !self.authorized(&request) {
            return reply(
                403,
                &json!({ "error": "missing or wrong `Authorization: Bearer` token" }),
            );
        }
        match serde_json::from_slice::<ExecuteRequest>(&request.body) {
            Ok(r) => self.execute(r).await,
            Err(e) => reply(
                400,
                &json!({ "error": format!("not an executor plugin request: {e}") }),
            ),
        }
    }
}
