//! Signed capability claims for Sigil actors.
//!
//! An actor module carries a JWT in a WebAssembly custom section. The token says who issued
//! the module (an account key, `A...`), which module it is (a module key, `M...`), what it is
//! (name, version, revision, tags), which capabilities it may use, and the SHA-256 of the
//! module itself, so any change to the code after signing is detected. The layout is
//! wascap's (wasmCloud's claims library of the waPC era), so modules signed by either tool
//! verify in the other.
//!
//! This crate knows bytes and keys, nothing of wasmtime: [`sign_module`] embeds claims,
//! [`verify`] checks a module against a [`Policy`] and returns [`VerifiedClaims`], the proof a
//! host needs before it will instantiate anything. Every failure is an [`Error`] variant of
//! its own; none is a flag to forget.
//!
//! ```
//! # fn main() -> Result<(), sigil_claims::Error> {
//! use sigil_claims::{ActorSpec, Error, KeyKind, Policy, keys, sign_module, verify};
//!
//! let account = keys::generate(KeyKind::Account);
//! let module_key = keys::generate(KeyKind::Module);
//! let spec = ActorSpec {
//!     name: "echo".into(),
//!     caps: vec!["keyvalue".into()],
//!     ..Default::default()
//! };
//! let signed = sign_module(b"\0asm\x01\0\0\0", &spec, &account, &module_key.public_key())?;
//!
//! let policy = Policy::new().allow_issuer(account.public_key());
//! let claims = verify(&signed.bytes, &policy)?;
//! assert_eq!(claims.subject(), module_key.public_key());
//! assert_eq!(claims.capabilities(), ["wasmcloud:keyvalue"]);
//!
//! // One changed byte and the module no longer verifies.
//! let mut tampered = signed.bytes.clone();
//! tampered.splice(8..8, [0u8, 3, 1, b'x', 0]); // insert a custom section "x"
//! assert!(matches!(verify(&tampered, &policy), Err(Error::HashMismatch { .. })));
//! # Ok(()) }
//! ```

pub mod actor;
pub mod caps;
pub mod display;
mod error;
pub mod jwt;
pub mod keys;
pub mod provider;
pub mod verify;
pub mod wasm;

pub use actor::{ActorMetadata, ActorSpec, SignedModule, sign_module};
pub use error::{Error, Result, Revocation};
pub use jwt::Claims;
pub use keys::{KeyKind, KeySource, KeyStore};
pub use nkeys::KeyPair;
pub use provider::{
    ProviderMetadata, ProviderSpec, VerifiedProviderClaims, issue_provider_token,
    verify_provider_token, verify_provider_token_at,
};
pub use verify::{Inspection, Policy, VerifiedClaims, VerifiedModule, inspect, verify, verify_at};
pub use wasm::{module_hash, strip_jwt_sections};
