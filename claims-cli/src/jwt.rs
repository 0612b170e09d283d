//! The JWT layer: wascap's token layout, signed and checked with nkeys (Ed25519).
//!
//! A token is `base64url(header) . base64url(claims) . base64url(signature)`, without padding.
//! The header is `{"typ":"jwt","alg":"Ed25519"}`; the signature is the issuer's Ed25519
//! signature over the first two segments as written. Standard JWT libraries refuse the
//! non-standard `alg`, and wascap reports a bad signature as a flag instead of an error, so
//! this layer is written here on top of `nkeys`, with every check a hard error.

use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::{Signature, VerifyingKey};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::keys::KeyKind;

/// The header every Sigil (and wascap) token carries.
const HEADER_TYP: &str = "jwt";
const HEADER_ALG: &str = "Ed25519";

/// The wascap revision Sigil writes; revision 3 and later carry a checkable module hash.
pub const WASCAP_REVISION: u32 = 3;

/// Largest token accepted, in bytes: far above any real claims, far below a memory problem.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    typ: String,
    alg: String,
}

/// The registered JWT claims plus wascap's metadata object, generic over that object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims<T> {
    /// Expiry (`exp`), seconds since the Unix epoch.
    #[serde(rename = "exp", default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Unique token id (`jti`).
    #[serde(rename = "jti")]
    pub id: String,
    /// Issue time (`iat`), seconds since the Unix epoch.
    #[serde(rename = "iat")]
    pub issued_at: u64,
    /// Issuer (`iss`): the account public key that signed the token.
    #[serde(rename = "iss")]
    pub issuer: String,
    /// Subject (`sub`): the public key of what the token describes.
    #[serde(rename = "sub")]
    pub subject: String,
    /// Not-before time (`nbf`), seconds since the Unix epoch.
    #[serde(rename = "nbf", default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// The `wascap` metadata object.
    #[serde(
        rename = "wascap",
        default = "Option::default",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<T>,
    /// wascap's internal revision; 3 or more means the module hash rule can be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wascap_revision: Option<u32>,
}

/// A decoded token whose signature has been checked against its issuer. The metadata
/// object is moved out of `claims` (whose `metadata` is then `None`).
#[derive(Debug, Clone)]
pub(crate) struct Authenticated<T> {
    pub(crate) claims: Claims<T>,
    pub(crate) metadata: T,
}

/// Signs claims with the issuer's seeded key pair and returns the token.
pub fn encode<T: Serialize>(claims: &Claims<T>, issuer: &KeyPair) -> Result<String> {
    let header = segment(&Header {
        typ: HEADER_TYP.into(),
        alg: HEADER_ALG.into(),
    })?;
    let body = segment(claims)?;
    let signing_input = format!("{header}.{body}");
    let sig = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| Error::InvalidKey {
            reason: format!("the issuer key cannot sign (is it a public key without seed?): {e}"),
        })?;
    Ok(format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&sig)))
}

fn segment<T: Serialize>(value: &T) -> Result<String> {
    let json =
        serde_json::to_vec(value).map_err(|e| Error::malformed(format!("cannot encode: {e}")))?;
    Ok(BASE64URL_NOPAD.encode(&json))
}

fn decode_segment<T: DeserializeOwned>(seg: &str, what: &str) -> Result<T> {
    let bytes = BASE64URL_NOPAD
        .decode(seg.as_bytes())
        .map_err(|e| Error::malformed(format!("{what} is not unpadded base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::malformed(format!("{what} is not valid: {e}")))
}

/// Decodes a token's claims without checking anything but its shape. For display only.
pub fn decode_unverified<T: DeserializeOwned>(token: &str) -> Result<Claims<T>> {
    let (_, body, _) = split(token)?;
    decode_segment(body, "claims segment")
}

fn split(token: &str) -> Result<(&str, &str, &str)> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::malformed(format!(
            "token is {} bytes, more than the {MAX_TOKEN_LEN}-byte limit",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) => Ok((h, c, s)),
        _ => Err(Error::malformed(format!(
            "expected three dot-separated segments (header.claims.signature), found {}",
            token.split('.').count()
        ))),
    }
}

/// Decodes a token and checks, in order: its shape, its header, its claims' JSON, that the
/// issuer is an account key, that the subject is a key of `subject_kind`, that the metadata
/// object is present, and the issuer's signature. Times and policy are the caller's.
pub(crate) fn authenticate<T: DeserializeOwned>(
    token: &str,
    subject_kind: KeyKind,
) -> Result<Authenticated<T>> {
    let token = token.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    let (head, body, sig) = split(token)?;

    let header: Header = decode_segment(head, "header segment")?;
    if header.alg != HEADER_ALG {
        return Err(Error::UnsupportedAlgorithm { alg: header.alg });
    }
    if !header.typ.eq_ignore_ascii_case(HEADER_TYP) {
        return Err(Error::malformed(format!(
            "header type is {:?}, expected \"jwt\"",
            header.typ
        )));
    }
    // The metadata object is interpreted only after the signature is checked.
    let claims: Claims<serde_json::Value> = decode_segment(body, "claims segment")?;

    let issuer_key = match (
        KeyKind::of_public_key(&claims.issuer),
        nkeys::from_public_key(&claims.issuer),
    ) {
        (Some(KeyKind::Account), Ok((_, bytes))) => bytes,
        _ => {
            return Err(Error::IssuerNotAccount {
                issuer: claims.issuer,
            });
        }
    };
    if KeyKind::of_public_key(&claims.subject) != Some(subject_kind) {
        return Err(Error::SubjectWrongKind {
            subject: claims.subject,
            expected: subject_kind,
        });
    }

    let sig = BASE64URL_NOPAD.decode(sig.as_bytes()).map_err(|e| {
        Error::malformed(format!("signature segment is not unpadded base64url: {e}"))
    })?;
    let bad_signature = || Error::BadSignature {
        issuer: claims.issuer.clone(),
    };
    let sig = Signature::from_slice(&sig).map_err(|_| bad_signature())?;
    let key = VerifyingKey::from_bytes(&issuer_key).map_err(|_| bad_signature())?;
    // Strict verification also refuses malleable signatures and small-order keys.
    let signing_input = &token[..head.len() + 1 + body.len()];
    key.verify_strict(signing_input.as_bytes(), &sig)
        .map_err(|_| bad_signature())?;

    let Claims {
        expires,
        id,
        issued_at,
        issuer,
        subject,
        not_before,
        metadata,
        wascap_revision,
    } = claims;
    let metadata = match metadata {
        Some(serde_json::Value::Null) | None => {
            return Err(Error::malformed("claims carry no `wascap` metadata object"));
        }
        Some(value) => serde_json::from_value::<T>(value).map_err(|e| {
            Error::malformed(format!("the `wascap` metadata object is not valid: {e}"))
        })?,
    };
    let claims = Claims {
        expires,
        id,
        issued_at,
        issuer,
        subject,
        not_before,
        metadata: None,
        wascap_revision,
    };
    Ok(Authenticated { claims, metadata })
}

/// A fresh token id: 128 random bits, base32 without padding (26 characters).
pub(crate) fn new_token_id() -> String {
    data_encoding::BASE32_NOPAD.encode(&rand::random::<[u8; 16]>())
}

/// The current time in seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
