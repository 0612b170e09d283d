//! A probe actor written in WAT, signing helpers, and a host with test limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_claims::{ActorSpec, KeyKind, KeyPair, keys, sign_module};
use sigil_host::{ActorIdentity, EngineConfig, Host, HostCall, Limits, ProviderDispatch};

/// The waPC imports every test guest declares.
pub const IMPORTS: &str = r#"
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
"#;

/// The probe: a waPC guest in WAT whose operations each do one thing, chosen by the first
/// byte of the operation name. Memory: op at 0x1000, payload at 0x2000, scratch at 0x10000,
/// a counter at 0x100, a marker written by `wapc_init` at 0x200.
///
/// e echo · f fail · h host call (namespace = payload) · c console log (payload) · l loop
/// forever · g grow memory until refused, then trap · r recurse forever · t trap · b bad
/// pointer · B respond with N bytes (N = first 4 payload bytes, LE) · p report "boom" then
/// trap · x return 2 · n bump and return the counter · i return the init marker · s spin
/// about a second, then echo.
pub fn probe_wat(extra: &str) -> String {
    format!(
        r#"(module
  {IMPORTS}
  (memory (export "memory") 2)
  (data (i32.const 0x300) "boom")
  (data (i32.const 0x310) "it failed")
  (data (i32.const 0x320) "default")
  (data (i32.const 0x330) "Op")
  (func $recurse (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (local $op i32) (local $n i32)
    (call $guest_request (i32.const 0x1000) (i32.const 0x2000))
    (local.set $op (i32.load8_u (i32.const 0x1000)))
    ;; e: echo
    (if (i32.eq (local.get $op) (i32.const 0x65)) (then
      (call $guest_response (i32.const 0x2000) (local.get $len))
      (return (i32.const 1))))
    ;; f: fail with a message
    (if (i32.eq (local.get $op) (i32.const 0x66)) (then
      (call $guest_error (i32.const 0x310) (i32.const 9))
      (return (i32.const 0))))
    ;; h: host call to the namespace in the payload
    (if (i32.eq (local.get $op) (i32.const 0x68)) (then
      (if (call $host_call (i32.const 0x320) (i32.const 7) (i32.const 0x2000) (local.get $len)
                           (i32.const 0x330) (i32.const 2) (i32.const 0x2000) (i32.const 0))
        (then
          (local.set $n (call $host_response_len))
          (call $host_response (i32.const 0x10000))
          (call $guest_response (i32.const 0x10000) (local.get $n))
          (return (i32.const 1))))
      (local.set $n (call $host_error_len))
      (call $host_error (i32.const 0x10000))
      (call $guest_error (i32.const 0x10000) (local.get $n))
      (return (i32.const 0))))
    ;; c: console log
    (if (i32.eq (local.get $op) (i32.const 0x63)) (then
      (call $console_log (i32.const 0x2000) (local.get $len))
      (call $guest_response (i32.const 0x2000) (i32.const 0))
      (return (i32.const 1))))
    ;; l: loop forever
    (if (i32.eq (local.get $op) (i32.const 0x6c)) (then (loop $spin (br $spin))))
    ;; g: grow until refused, then trap
    (if (i32.eq (local.get $op) (i32.const 0x67)) (then
      (loop $more
        (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
      unreachable))
    ;; r: recurse forever
    (if (i32.eq (local.get $op) (i32.const 0x72)) (then
      (return (call $recurse (i32.const 0)))))
    ;; t: trap
    (if (i32.eq (local.get $op) (i32.const 0x74)) (then unreachable))
    ;; b: a response pointer far outside memory
    (if (i32.eq (local.get $op) (i32.const 0x62)) (then
      (call $guest_response (i32.const 0x7fff0000) (i32.const 1000))
      (return (i32.const 1))))
    ;; B: respond with N bytes of memory
    (if (i32.eq (local.get $op) (i32.const 0x42)) (then
      (call $guest_response (i32.const 0) (i32.load (i32.const 0x2000)))
      (return (i32.const 1))))
    ;; p: report a panic message, then trap
    (if (i32.eq (local.get $op) (i32.const 0x70)) (then
      (call $guest_error (i32.const 0x300) (i32.const 4))
      unreachable))
    ;; x: break the protocol
    (if (i32.eq (local.get $op) (i32.const 0x78)) (then (return (i32.const 2))))
    ;; n: bump the counter and return it (4 bytes)
    (if (i32.eq (local.get $op) (i32.const 0x6e)) (then
      (i32.store (i32.const 0x100) (i32.add (i32.load (i32.const 0x100)) (i32.const 1)))
      (call $guest_response (i32.const 0x100) (i32.const 4))
      (return (i32.const 1))))
;; s: spin for 2^30 iterations (about a second), then echo
    (if (i32.eq (local.get $op) (i32.const 0x73)) (then
      (local.set $n (i32.const 0))
      (loop $busy
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $busy (i32.lt_u (local.get $n) (i32.const 0x40000000))))
      (call $guest_response (i32.const 0x2000) (local.get $len))
      (return (i32.const 1))))
        ;; i: the init marker (4 bytes)
    (if (i32.eq (local.get $op) (i32.const 0x69)) (then
      (call $guest_response (i32.const 0x200) (i32.const 4))
      (return (i32.const 1))))
    (call $guest_error (i32.const 0x1000) (local.get $op_len))
    (i32.const 0))
  {extra}
)"#
    )
}

/// `wapc_init` that writes the marker 0x2a at 0x200.
pub const WAPC_INIT: &str =
    r#"(func (export "wapc_init") (i32.store (i32.const 0x200) (i32.const 42)))"#;

pub fn probe() -> Vec<u8> {
    wat::parse_str(probe_wat("")).unwrap()
}

pub struct Signed {
    pub bytes: Vec<u8>,
    pub account: KeyPair,
    pub subject: String,
}

pub fn sign(wasm: &[u8], name: &str, caps: &[&str]) -> Signed {
    let account = keys::generate(KeyKind::Account);
    let subject = keys::generate(KeyKind::Module).public_key();
    let spec = ActorSpec {
        name: name.into(),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let bytes = sign_module(wasm, &spec, &account, &subject).unwrap().bytes;
    Signed {
        bytes,
        account,
        subject,
    }
}

pub fn test_limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(500),
        max_memory: 8 << 20,
        max_response: 1 << 20,
        max_request: 1 << 20,
        ..Limits::default()
    }
}

pub fn config(limits: Limits) -> EngineConfig {
    EngineConfig {
        limits,
        max_instances: 8,
        ..EngineConfig::default()
    }
}

pub fn host() -> Host {
    host_with(test_limits())
}

pub fn host_with(limits: Limits) -> Host {
    Host::builder()
        .engine_config(config(limits))
        .build()
        .unwrap()
}

/// A provider seam that records what reaches it and answers with the operation name.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<(String, String, String)>>,
}

impl ProviderDispatch for Recorder {
    fn dispatch(&self, actor: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        self.calls.lock().unwrap().push((
            actor.subject.clone(),
            call.namespace.to_string(),
            call.binding.to_string(),
        ));
        Ok(format!("provided {}", call.operation).into_bytes())
    }
}

pub fn host_with_recorder() -> (Host, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let host = Host::builder()
        .engine_config(config(test_limits()))
        .providers(recorder.clone())
        .build()
        .unwrap();
    (host, recorder)
}
