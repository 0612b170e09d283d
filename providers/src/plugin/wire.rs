//! The plugin wire format (version 2), shared by the host's side and the plugin SDK. Every
//! rule here is documented in `docs/provider-plugins.md`, so a plugin in any language can
//! speak it with a NATS client and an Ed25519 library.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::{BASE64URL_NOPAD, HEXUPPER};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ActorIdentity, LinkConfig};

/// The wire format's version, carried in every envelope and identity answer. Version 2
/// signs the lattice, the subject and a control request's command into the envelope, binds
/// refusals to their request, and prefixes what answers and identity challenges sign.
pub const WIRE_VERSION: u32 = 2;

/// Header: the host's signed envelope of a request.
pub const HEADER_INVOCATION: &str = "Sigil-Invocation";
/// Header: the plugin's signature over its answer.
pub const HEADER_RESPONSE: &str = "Sigil-Response";
/// Header: present on an error answer, naming its kind ([`ErrorKind`]); the body is the
/// message.
pub const HEADER_ERROR: &str = "Sigil-Error";
/// Header: the cluster key (`C...`) that signed a host's answer to an actor call.
pub const HEADER_SIGNER: &str = "Sigil-Signer";

/// The queue group hosts join to serve actor calls, so one host answers each.
pub const HOSTS_QUEUE_GROUP: &str = "sigil-hosts";

/// The queue group every instance of a plugin joins for invocations, so replicas share
/// the calls.
pub const QUEUE_GROUP: &str = "sigil-provider";

/// How far apart the host's and the plugin's clocks may be.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The subjects of one plugin in one lattice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects of the plugin with public key `key` in `lattice`.
    pub fn new(lattice: &str, key: &str) -> Self {
        Subjects {
            prefix: format!("sigil.{lattice}.prov.{key}"),
        }
    }

    /// Where a host asks the plugin to prove who it is.
    pub fn identify(&self) -> String {
        format!("{}.identify", self.prefix)
    }

    /// Where a host adds a link.
    pub fn link_put(&self) -> String {
        format!("{}.link.put", self.prefix)
    }

    /// Where a host removes a link.
    pub fn link_del(&self) -> String {
        format!("{}.link.del", self.prefix)
    }

    /// Where a host sends actors' calls.
    pub fn invoke(&self) -> String {
        format!("{}.invoke", self.prefix)
    }

    /// Where a host asks for the plugin's health.
    pub fn health(&self) -> String {
        format!("{}.health", self.prefix)
    }
}

/// Where hosts that run the actor `target` (its public key or call alias) take calls for
/// it from actors on other hosts.
pub fn actor_subject(lattice: &str, target: &str) -> String {
    format!("sigil.{lattice}.actor.{target}")
}

/// Whether `text` can be one token of a NATS subject (a lattice name, an actor target).
pub fn is_subject_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 256
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Where a plugin announces that it (re)started, so hosts send it their links.
pub fn hello_subject(lattice: &str) -> String {
    format!("sigil.{lattice}.prov.hello")
}

/// What a request is: the envelope says, so a signed envelope cannot be replayed on another
/// subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// An actor's call (`.invoke`).
    #[serde(rename = "invoke")]
    Invoke,
    /// A link added (`.link.put`).
    #[serde(rename = "link.put")]
    LinkPut,
    /// A link removed (`.link.del`).
    #[serde(rename = "link.del")]
    LinkDel,
    /// An actor's call to an actor on another host (`sigil.<lattice>.actor.<target>`).
    #[serde(rename = "actor.call")]
    ActorCall,
    /// An operator's command to hosts (`sigil.<lattice>.ctl.*`).
    #[serde(rename = "control")]
    Control,
}

/// The calling actor, as its verified claims state it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireActor {
    /// Its module key (`M...`).
    pub subject: String,
    /// Its name.
    pub name: String,
    /// The account that signed it (`A...`).
    pub issuer: String,
    /// The contract IDs its claims grant.
    pub caps: Vec<String>,
}

impl From<&ActorIdentity> for WireActor {
    fn from(a: &ActorIdentity) -> Self {
        WireActor {
            subject: a.subject.clone(),
            name: a.name.clone(),
            issuer: a.issuer.clone(),
            caps: a.capabilities.iter().cloned().collect(),
        }
    }
}

impl From<WireActor> for ActorIdentity {
    fn from(a: WireActor) -> Self {
        ActorIdentity {
            subject: a.subject,
            name: a.name,
            issuer: a.issuer,
            capabilities: a.caps.into_iter().collect(),
        }
    }
}

/// What the host vouches for in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// What the request is.
    pub kind: RequestKind,
    /// The actor on whose behalf it is made.
    pub actor: WireActor,
    /// The contract ID.
    pub contract: String,
    /// The link name.
    pub link: String,
    /// The operation (empty for links).
    #[serde(default)]
    pub operation: String,
    /// Upper-case hex SHA-256 of the message body.
    pub hash: String,
    /// When the caller stops waiting (Unix milliseconds).
    pub deadline_ms: u64,
    /// For actor calls: how many calls deep this one is (1 for an actor called by an
    /// actor that was not itself called).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// The lattice the request was made in: a receiver in another lattice refuses it.
    #[serde(default)]
    pub lattice: String,
    /// The NATS subject the request was sent to: a receiver refuses it on any other.
    #[serde(default)]
    pub subject: String,
    /// For a command to a host: the command and its arguments, which the host acts on
    /// (from here only, never from a header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The claims of an envelope token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeClaims {
    /// A unique ID: a plugin refuses a token it has seen before.
    pub jti: String,
    /// When it was issued (Unix seconds).
    pub iat: u64,
    /// When it expires (Unix seconds).
    pub exp: u64,
    /// The host's cluster key (`C...`) that signed it.
    pub iss: String,
    /// The plugin's key (`V...`) it is meant for.
    pub sub: String,
    /// The request.
    pub sigil: Envelope,
}

/// The body of a link request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMessage {
    /// The actor.
    pub actor: WireActor,
    /// The contract ID.
    pub contract: String,
    /// The link name.
    pub link: String,
    /// The provider instance name on the host.
    #[serde(default)]
    pub provider: String,
    /// The link's configuration (empty for a removal).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl LinkMessage {
    /// The link this message describes.
    pub fn to_link(&self) -> crate::Link {
        crate::Link {
            actor: std::sync::Arc::new(self.actor.clone().into()),
            contract_id: self.contract.clone(),
            link_name: self.link.clone(),
            provider: self.provider.clone(),
            config: LinkConfig(self.config.clone()),
        }
    }
}

/// A host's identity challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyRequest {
    /// Random text the plugin signs with its key.
    pub nonce: String,
}

/// A plugin's answer to [`IdentifyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    /// [`WIRE_VERSION`].
    pub version: u32,
    /// Its provider claims (a token signed by its issuer account).
    pub claims: String,
    /// Its Ed25519 signature over the nonce's bytes, unpadded base64url.
    pub signature: String,
    /// This process's random instance ID.
    pub instance: String,
}

/// A plugin's announcement on [`hello_subject`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its key (`V...`).
    pub key: String,
    /// This process's random instance ID.
    pub instance: String,
}

/// A plugin's health answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Whether it serves now.
    pub healthy: bool,
    /// Why not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kind of an error answer, in the [`HEADER_ERROR`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The envelope was missing, forged, expired, replayed or meant for someone else.
    Refused,
    /// The plugin has no such link (it restarted): the host sends the link and retries.
    UnknownLink,
    /// The provider failed the request; the message is for the actor.
    Failed,
}

impl ErrorKind {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::UnknownLink => "unknown-link",
            ErrorKind::Failed => "failed",
        }
    }

    /// Parses a name on the wire; an unknown kind counts as [`ErrorKind::Failed`].
    pub fn parse(s: &str) -> Self {
        match s {
            "refused" => ErrorKind::Refused,
            "unknown-link" => ErrorKind::UnknownLink,
            _ => ErrorKind::Failed,
        }
    }
}

/// Upper-case hex SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    HEXUPPER.encode(&Sha256::digest(body))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const TOKEN_HEADER: &str = r#"{"typ":"jwt","alg":"Ed25519"}"#;

/// Signs an envelope with the host's cluster key; answers the token and its ID.
pub fn sign_envelope(
    cluster: &KeyPair,
    plugin: &str,
    envelope: Envelope,
) -> Result<(String, String), String> {
    let jti = uuid::Uuid::new_v4().simple().to_string();
    let claims = EnvelopeClaims {
        jti: jti.clone(),
        iat: now_ms() / 1000,
        exp: envelope.deadline_ms.div_ceil(1000),
        iss: cluster.public_key(),
        sub: plugin.to_string(),
        sigil: envelope,
    };
    let body = serde_json::to_vec(&claims).map_err(|e| format!("cannot encode: {e}"))?;
    let input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(TOKEN_HEADER.as_bytes()),
        BASE64URL_NOPAD.encode(&body)
    );
    let sig = cluster
        .sign(input.as_bytes())
        .map_err(|e| format!("the cluster key cannot sign: {e}"))?;
    Ok((format!("{input}.{}", BASE64URL_NOPAD.encode(&sig)), jti))
}

/// Checks envelope tokens on the plugin's side: who signed them, for whom, for what, when,
/// and that none is used twice.
pub struct EnvelopeVerifier {
    own_key: String,
    lattice: String,
    trusted: HashMap<String, KeyPair>,
    seen: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for EnvelopeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeVerifier")
            .field("own_key", &self.own_key)
            .field("lattice", &self.lattice)
            .field("trusted", &self.trusted.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Most token IDs remembered against replay; older ones are dropped once expired.
const SEEN_LIMIT: usize = 1 << 20;

impl EnvelopeVerifier {
    /// A verifier for the plugin `own_key` in `lattice`, trusting hosts whose cluster keys
    /// are `issuers`.
    pub fn new(own_key: &str, lattice: &str, issuers: &[String]) -> Result<Self, String> {
        let mut trusted = HashMap::new();
        for issuer in issuers {
            if !issuer.starts_with('C') {
                return Err(format!(
                    "{issuer} is not a cluster public key (they start with C)"
                ));
            }
            let key = KeyPair::from_public_key(issuer)
                .map_err(|e| format!("{issuer} is not a valid cluster key: {e}"))?;
            trusted.insert(issuer.clone(), key);
        }
        if trusted.is_empty() {
            return Err(
                "no cluster issuers are trusted: name at least one host cluster key".into(),
            );
        }
        Ok(EnvelopeVerifier {
            own_key: own_key.to_string(),
            lattice: lattice.to_string(),
            trusted,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `key` is one of the trusted cluster keys; answers it, for checking an
    /// answer it signed.
    pub fn trusted(&self, key: &str) -> Option<&KeyPair> {
        self.trusted.get(key)
    }

    /// Checks the envelope of `message`, a request of `kind` addressed to this plugin;
    /// answers its claims.
    pub fn verify(
        &self,
        kind: RequestKind,
        message: &async_nats::Message,
    ) -> Result<EnvelopeClaims, String> {
        self.verify_message(&self.own_key, kind, message)
    }

    /// [`EnvelopeVerifier::verify`] for a request addressed to `to` (an actor target, a
    /// host ID, or `hosts` for an inventory request).
    pub fn verify_message(
        &self,
        to: &str,
        kind: RequestKind,
        message: &async_nats::Message,
    ) -> Result<EnvelopeClaims, String> {
        let token = invocation_token(message)?;
        self.verify_to(to, token, kind, message.subject.as_str(), &message.payload)
    }

    /// Checks `token` for a request of `kind` with `body` that came on `subject`,
    /// addressed to `to`; answers its claims.
    pub fn verify_to(
        &self,
        to: &str,
        token: Option<&str>,
        kind: RequestKind,
        subject: &str,
        body: &[u8],
    ) -> Result<EnvelopeClaims, String> {
        let token = token.ok_or("the request carries no Sigil-Invocation envelope")?;
        let mut parts = token.split('.');
        let (Some(head), Some(segment), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the envelope is not a three-part token".into());
        };
        let header = BASE64URL_NOPAD
            .decode(head.as_bytes())
            .map_err(|_| "the envelope's header is not base64url")?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| "the envelope's header is not JSON")?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("Ed25519") {
            return Err("the envelope is not signed with Ed25519".into());
        }
        let decoded = BASE64URL_NOPAD
            .decode(segment.as_bytes())
            .map_err(|_| "the envelope's claims are not base64url")?;
        let claims: EnvelopeClaims = serde_json::from_slice(&decoded)
            .map_err(|e| format!("the envelope's claims are not valid: {e}"))?;
        let issuer = self.trusted.get(&claims.iss).ok_or_else(|| {
            format!(
                "the envelope is signed by {}, which is not a trusted host cluster key",
                claims.iss
            )
        })?;
        let sig = BASE64URL_NOPAD
            .decode(sig.as_bytes())
            .map_err(|_| "the envelope's signature is not base64url")?;
        let input = &token[..head.len() + 1 + segment.len()];
        issuer
            .verify(input.as_bytes(), &sig)
            .map_err(|_| "the envelope's signature does not verify (forged or altered)")?;
        if claims.sub != to {
            return Err(format!(
                "the envelope is meant for {}, not {to}",
                claims.sub
            ));
        }
        if claims.sigil.v != WIRE_VERSION {
            return Err(format!(
                "wire version {} is not supported (this plugin speaks {WIRE_VERSION})",
                claims.sigil.v
            ));
        }
        if claims.sigil.lattice != self.lattice {
            return Err(format!(
                "the envelope is for lattice {:?}, not {:?} (replayed from another lattice)",
                claims.sigil.lattice, self.lattice
            ));
        }
        if claims.sigil.kind != kind {
            return Err(format!(
                "the envelope is for a {:?} request, not {kind:?}",
                claims.sigil.kind
            ));
        }
        if claims.sigil.subject != subject {
            return Err(format!(
                "the envelope is for subject {}, not {subject} (replayed to another subject)",
                claims.sigil.subject
            ));
        }
        if claims.sigil.hash != body_hash(body) {
            return Err("the body does not match the envelope's hash (altered in transit)".into());
        }
        let now = now_ms();
        let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if now > claims.sigil.deadline_ms.saturating_add(skew) {
            return Err("the envelope expired (its caller stopped waiting)".into());
        }
        if claims.iat.saturating_mul(1000) > now.saturating_add(skew) {
            return Err("the envelope was issued in the future (check the clocks)".into());
        }
        self.remember(
            &claims.jti,
            claims.sigil.deadline_ms.saturating_add(skew),
            now,
        )?;
        Ok(claims)
    }

    /// Refuses a token ID seen before; remembers it until `until` (Unix ms).
    fn remember(&self, jti: &str, until: u64, now: u64) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= SEEN_LIMIT {
            seen.retain(|_, t| *t >= now);
            if seen.len() >= SEEN_LIMIT {
                return Err("too many envelopes in flight to check for replays".into());
            }
        }
        if seen.insert(jti.to_string(), until).is_some() {
            return Err(format!("the envelope {jti} was used before (a replay)"));
        }
        Ok(())
    }
}

/// The envelope token of `message`: `None` when it has none; an error when it has more
/// than one `Sigil-Invocation` header or a value that is not text.
pub fn invocation_token(message: &async_nats::Message) -> Result<Option<&str>, String> {
    let Some(headers) = message.headers.as_ref() else {
        return Ok(None);
    };
    let mut values = headers.get_all(HEADER_INVOCATION);
    let first = values.next();
    let more = values.count();
    if more > 0 {
        return Err(format!(
            "the request carries {} Sigil-Invocation headers; send exactly one",
            more + 1
        ));
    }
    Ok(first.map(|v| v.as_str()))
}

/// The `jti` a refusal of `message` is signed for: the ID its envelope claims, read
/// without checking the signature (the refusal may be about the signature), or empty
/// when there is no readable one. The requester accepts only a refusal for its own ID.
pub fn refusal_jti(message: &async_nats::Message) -> String {
    let token = invocation_token(message)
        .ok()
        .flatten()
        .or_else(|| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(HEADER_INVOCATION))
                .map(|v| v.as_str())
        })
        .unwrap_or_default();
    let jti = token
        .split('.')
        .nth(1)
        .and_then(|segment| BASE64URL_NOPAD.decode(segment.as_bytes()).ok())
        .and_then(|claims| serde_json::from_slice::<serde_json::Value>(&claims).ok())
        .and_then(|claims| claims.get("jti")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let plain = jti.len() <= 64
        && jti
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain { jti } else { String::new() }
}

/// The text a plugin signs to answer the identity challenge `nonce`. The prefix keeps it
/// from ever being the text of an answer, so a challenge cannot get an answer signed.
pub fn identify_input(nonce: &str) -> String {
    format!("identify.{nonce}")
}

/// The text signed for an answer to the envelope `jti`: `answer.<jti>.<hash of the
/// body>.<ok or the error kind>`.
pub fn response_input(jti: &str, body: &[u8], error: Option<ErrorKind>) -> String {
    answer_input(jti, body, error.map_or("ok", ErrorKind::as_str))
}

/// [`response_input`] for the outcome as written in the answer (`ok`, or the
/// `Sigil-Error` header's text as sent, so an altered header does not verify).
fn answer_input(jti: &str, body: &[u8], outcome: &str) -> String {
    format!("answer.{jti}.{}.{outcome}", body_hash(body))
}

/// Signs an answer with the plugin's key (unpadded base64url).
pub fn sign_response(
    key: &KeyPair,
    jti: &str,
    body: &[u8],
    error: Option<ErrorKind>,
) -> Result<String, String> {
    key.sign(response_input(jti, body, error).as_bytes())
        .map(|s| BASE64URL_NOPAD.encode(&s))
        .map_err(|e| format!("the plugin key cannot sign: {e}"))
}

/// Checks a plugin's signature over an answer.
pub fn verify_response(
    plugin: &KeyPair,
    jti: &str,
    body: &[u8],
    error: Option<ErrorKind>,
    signature: Option<&str>,
) -> Result<(), String> {
    verify_answer(
        plugin,
        jti,
        body,
        error.map_or("ok", ErrorKind::as_str),
        signature,
    )
}

fn verify_answer(
    signer: &KeyPair,
    jti: &str,
    body: &[u8],
    outcome: &str,
    signature: Option<&str>,
) -> Result<(), String> {
    let signature = signature.ok_or("the answer is not signed")?;
    let sig = BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .map_err(|_| "the answer's signature is not base64url")?;
    signer
        .verify(answer_input(jti, body, outcome).as_bytes(), &sig)
        .map_err(|_| {
            "the answer's signature does not verify (its body or Sigil-Error header was \
             altered, it answers another request, or it is not from the signer)"
                .to_string()
        })
}

/// What a signed answer said: its body, or its error kind and message.
pub type Answer = Result<bytes::Bytes, (ErrorKind, String)>;

/// The headers of an answer to the envelope `jti`: the signature by `key` over the ID, the
/// body and the outcome (a refusal is signed for [`refusal_jti`]), the error kind when it
/// is one, and, when `name_signer`, the signer's public key (hosts do; a plugin's key is
/// known).
pub fn answer_headers(
    key: &KeyPair,
    jti: &str,
    body: &[u8],
    error: Option<ErrorKind>,
    name_signer: bool,
) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    match sign_response(key, jti, body, error) {
        Ok(sig) => headers.insert(HEADER_RESPONSE, sig.as_str()),
        Err(e) => tracing::error!(error = %e, "cannot sign an answer"),
    }
    if name_signer {
        headers.insert(HEADER_SIGNER, key.public_key().as_str());
    }
    if let Some(kind) = error {
        headers.insert(HEADER_ERROR, kind.as_str());
    }
    headers
}

/// Checks the signature of an answer to the envelope `jti`; `signer` picks the key to
/// check it with, given the answer's `Sigil-Signer` header, if any. An answer that is
/// not signed by that key for this `jti`, its body and its outcome (refusals included) is
/// an `Err`; a signed error answer is `Ok(Err(..))`.
pub fn open_answer<'k>(
    message: &async_nats::Message,
    jti: &str,
    signer: impl FnOnce(Option<&str>) -> Result<&'k KeyPair, String>,
) -> Result<Answer, String> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    };
    let outcome = header(HEADER_ERROR);
    if let Some(kind) = outcome
        && ErrorKind::parse(kind).as_str() != kind
    {
        return Err(format!(
            "the answer's Sigil-Error header {kind:?} names no error kind (refused, \
             unknown-link, failed)"
        ));
    }
    let error = outcome.map(ErrorKind::parse);
    let key = signer(header(HEADER_SIGNER))?;
    verify_answer(
        key,
        jti,
        &message.payload,
        outcome.unwrap_or("ok"),
        header(HEADER_RESPONSE),
    )?;
    Ok(match error {
        None => Ok(message.payload.clone()),
        Some(kind) => Err((kind, String::from_utf8_lossy(&message.payload).into_owned())),
    })
}

/// Subscribes to `subject`, in queue group `queue` when given, with an error that names
/// the subject.
pub async fn subscribe(
    client: &async_nats::Client,
    subject: String,
    queue: Option<&str>,
) -> Result<async_nats::Subscriber, String> {
    let subscribed = match queue {
        Some(group) => {
            client
                .queue_subscribe(subject.clone(), group.to_string())
                .await
        }
        None => client.subscribe(subject.clone()).await,
    };
    subscribed.map_err(|e| format!("cannot subscribe to {subject}: {e}"))
}

/// How long [`settle`] waits for the server's answer.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns once the NATS server has read everything `client` sent before (its new
/// subscriptions above all), so that a request from another connection finds them.
/// `Client::flush` only writes to the socket; this makes one round trip: a request to a
/// subject nobody serves, which the server refuses with "no responders" only after it has
/// processed what came before it on the same connection.
pub async fn settle(client: &async_nats::Client) -> Result<(), String> {
    let nobody = format!("{}.settle", client.new_inbox());
    let request = async_nats::Request::new().timeout(Some(SETTLE_TIMEOUT));
    match client.send_request(nobody, request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(format!(
            "the NATS server did not confirm the subscriptions: {e}"
        )),
    }
}
