//! Drives the capability providers from inside a sandbox, one operation per provider
//! call, so the host's tests can check what an actor can and cannot reach.
//!
//! `call` calls another actor (`sigil:actor`) with a key-value request and answers its
//! response. Over HTTP (`HandleRequest`): `GET /kv/<key>` increments and answers the count;
//! `GET /fetch?<url>` fetches `url` through the HTTP client and answers its body;
//! `GET /call/<target>/<key>[/<value>]` gets (or sets) a key through another actor;
//! anything else echoes the path. Messages (`HandleMessage`) are recorded in key-value
//! under `last-message`.

use sigil_actor::prelude::*;

sigil_actor::actor! {
    "kv_set" => kv_set,
    "kv_get" => kv_get,
    "kv_incr" => kv_incr,
    "publish" => publish,
    "request" => request,
    "blob_put" => blob_put,
    "blob_get" => blob_get,
    "fetch" => fetch,
    "call" => call_actor,
    "HandleRequest" => handle_request,
    "HandleMessage" => handle_message,
}

#[derive(Serialize, Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct Publish {
    subject: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    timeout_ms: u64,
}

#[derive(Deserialize)]
struct Blob {
    container: String,
    object: String,
    #[serde(default)]
    body: String,
}

/// A call to another actor's `operation` with a key-value request; `call` forwards this
/// same request, so an actor told to call itself with `call` recurses.
#[derive(Serialize, Deserialize)]
struct CallActor {
    target: String,
    operation: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct Fetch {
    url: String,
}

#[derive(Serialize)]
struct Fetched {
    status: u16,
    body: String,
}

fn kv_set(r: Kv) -> HandlerResult<()> {
    Ok(KeyValue::new().set(&r.key, r.value)?)
}

fn kv_get(r: Kv) -> HandlerResult<Option<String>> {
    Ok(KeyValue::new().get_string(&r.key)?)
}

fn kv_incr(r: Kv) -> HandlerResult<i64> {
    Ok(KeyValue::new().increment(&r.key, 1)?)
}

fn call_actor(r: CallActor) -> HandlerResult<Option<String>> {
    if r.operation == "call" {
        return Ok(sigil_actor::actors::call(&r.target, "call", &r)?);
    }
    let request = Kv {
        key: r.key,
        value: r.value,
    };
    Ok(sigil_actor::actors::call(
        &r.target,
        &r.operation,
        &request,
    )?)
}

fn publish(r: Publish) -> HandlerResult<()> {
    Ok(Messaging::new().publish(&r.subject, r.body)?)
}

fn request(r: Publish) -> HandlerResult<String> {
    let timeout = std::time::Duration::from_millis(r.timeout_ms.max(1));
    let reply = Messaging::new().request(&r.subject, r.body, timeout)?;
    Ok(String::from_utf8_lossy(&reply.body).into_owned())
}

fn blob_put(r: Blob) -> HandlerResult<()> {
    let store = BlobStore::new();
    if !store.container_exists(&r.container)? {
        store.create_container(&r.container)?;
    }
    Ok(store.put_object(&r.container, &r.object, r.body.as_bytes(), None)?)
}

fn blob_get(r: Blob) -> HandlerResult<String> {
    let bytes = BlobStore::new().get_object(&r.container, &r.object)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn fetch(r: Fetch) -> HandlerResult<Fetched> {
    let response = HttpClient::new().get(&r.url)?;
    Ok(Fetched {
        status: response.status,
        body: String::from_utf8_lossy(&response.body).into_owned(),
    })
}

fn handle_request(request: HttpRequest) -> HandlerResult<HttpResponse> {
    if let Some(key) = request.path.strip_prefix("/kv/") {
        let n = KeyValue::new().increment(key, 1)?;
        return Ok(HttpResponse::ok(n.to_string()));
    }
    // /call/<target>/<key>[/<value>]: get (or set) a key of another actor, through it.
    if let Some(rest) = request.path.strip_prefix("/call/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let (target, key, value) = match parts.as_slice() {
            [target, key] => (*target, *key, None),
            [target, key, value] => (*target, *key, Some(*value)),
            _ => return Ok(HttpResponse::new(400).with_body("/call/<target>/<key>[/<value>]")),
        };
        let request = Kv {
            key: key.to_string(),
            value: value.unwrap_or_default().to_string(),
        };
        let operation = if value.is_some() { "kv_set" } else { "kv_get" };
        let answer: Option<String> = sigil_actor::actors::call(target, operation, &request)?;
        let body = match value {
            Some(_) => "stored".to_string(),
            None => answer.unwrap_or_default(),
        };
        return Ok(HttpResponse::ok(body));
    }
    if request.path == "/fetch" {
        let upstream = HttpClient::new().get(&request.query)?;
        return Ok(HttpResponse::new(upstream.status).with_body(upstream.body));
    }
    Ok(HttpResponse::ok(request.path.into_bytes()))
}

fn handle_message(message: Message) -> HandlerResult<()> {
    KeyValue::new().set("last-message", &message.body)?;
    if let Some(reply) = message.reply_to {
        Messaging::new().publish(&reply, &message.body)?;
    }
    Ok(())
}
