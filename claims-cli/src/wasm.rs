//! The WebAssembly side of claims: finding JWT custom sections, hashing a module without
//! them, and writing a module with exactly one.
//!
//! The hash rule is wascap's: take the module, drop every custom section named `jwt` or
//! `wasmcloud_jwt`, re-encode each remaining section as `id, LEB128(size), contents` with the
//! shortest LEB128, prefix the 8-byte module header, and hash that with SHA-256 (upper-case
//! hex). Re-encoding matters: a module whose section sizes use padded LEB128 hashes the same
//! here and in wascap. The hash is computed by streaming the sections into the hasher, so
//! verifying a 20 MiB module copies nothing.

use sha2::{Digest, Sha256};
use wasm_encoder::Section;
use wasmparser::{Chunk, Encoding, Parser, Payload};

use crate::error::{Error, Result};

/// The custom section name wascap used before 0.9; still read.
pub const SECTION_JWT_LEGACY: &str = "jwt";
/// The custom section name written by Sigil and by wascap 0.9 and later.
pub const SECTION_JWT: &str = "wasmcloud_jwt";

/// A JWT custom section found in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSection<'a> {
    /// The section's name (`wasmcloud_jwt` or `jwt`).
    pub name: &'a str,
    /// The section's contents (the token, if well formed).
    pub data: &'a [u8],
    /// Byte offset of the section's contents in the module.
    pub offset: usize,
}

/// A parsed view of a core module's top-level sections, borrowing the module's bytes.
#[derive(Debug)]
pub struct ModuleSections<'a> {
    /// Every section that is not a JWT section, as `(id, contents)`, in module order.
    kept: Vec<(u8, &'a [u8])>,
    /// The JWT sections, in module order.
    jwts: Vec<JwtSection<'a>>,
}

impl<'a> ModuleSections<'a> {
    /// Walks the top-level sections of a core module. Section contents are not validated (that
    /// is the engine's job); the structure is: magic, version, ordering, sizes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 4 || bytes[..4] != *b"\0asm" {
            return Err(Error::NotWasm);
        }
        let mut parser = Parser::new(0);
        let mut offset = 0usize;
        let mut kept = Vec::new();
        let mut jwts = Vec::new();
        loop {
            let rest = &bytes[offset..];
            let chunk = parser
                .parse(rest, rest.is_empty())
                .map_err(|e| Error::MalformedWasm {
                    offset: e.offset(),
                    message: e.message().to_string(),
                })?;
            let (consumed, payload) = match chunk {
                Chunk::NeedMoreData(_) => return Err(Error::Truncated { len: bytes.len() }),
                Chunk::Parsed { consumed, payload } => (consumed, payload),
            };
            offset += consumed;
            match payload {
                Payload::Version { encoding, .. } => {
                    if encoding == Encoding::Component {
                        return Err(Error::Component);
                    }
                }
                Payload::End(_) => break,
                Payload::UnknownSection { id, range, .. } => {
                    return Err(Error::MalformedWasm {
                        offset: range.start,
                        message: format!("unknown section id {id}"),
                    });
                }
                Payload::CustomSection(c)
                    if c.name() == SECTION_JWT || c.name() == SECTION_JWT_LEGACY =>
                {
                    jwts.push(JwtSection {
                        name: if c.name() == SECTION_JWT {
                            SECTION_JWT
                        } else {
                            SECTION_JWT_LEGACY
                        },
                        data: c.data(),
                        offset: c.data_offset(),
                    });
                }
                Payload::CodeSectionStart { range, .. } => {
                    // Function bodies are not ours to read: skip them whole.
                    if range.end > bytes.len() {
                        return Err(Error::Truncated { len: bytes.len() });
                    }
                    kept.push((10, &bytes[range.clone()]));
                    parser.skip_section();
                    offset = range.end;
                }
                other => {
                    if let Some((id, range)) = other.as_section() {
                        let data = bytes
                            .get(range)
                            .ok_or(Error::Truncated { len: bytes.len() })?;
                        kept.push((id, data));
                    }
                }
            }
        }
        Ok(ModuleSections { kept, jwts })
    }

    /// The JWT sections found, in module order.
    pub fn jwt_sections(&self) -> &[JwtSection<'a>] {
        &self.jwts
    }

    /// The module's hash under wascap's rule (upper-case hex SHA-256 without JWT sections).
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(wasm_encoder::Module::HEADER);
        let mut leb = [0u8; 5];
        for (id, data) in &self.kept {
            hasher.update([*id]);
            hasher.update(leb128_u32(data.len(), &mut leb));
            hasher.update(data);
        }
        data_encoding::HEXUPPER.encode(&hasher.finalize())
    }

    /// The module without JWT sections, sections re-encoded canonically, then `jwt` appended
    /// as the one `wasmcloud_jwt` section (when given).
    pub fn encode(&self, jwt: Option<&str>) -> Vec<u8> {
        let size = 8
            + self.kept.iter().map(|(_, d)| d.len() + 6).sum::<usize>()
            + jwt.map_or(0, |j| j.len() + SECTION_JWT.len() + 12);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&wasm_encoder::Module::HEADER);
        for (id, data) in &self.kept {
            wasm_encoder::RawSection { id: *id, data }.append_to(&mut out);
        }
        if let Some(jwt) = jwt {
            wasm_encoder::CustomSection {
                name: SECTION_JWT.into(),
                data: jwt.as_bytes().into(),
            }
            .append_to(&mut out);
        }
        out
    }
}

/// Shortest unsigned LEB128 of a section size (sizes were read from a u32 LEB, so they fit).
fn leb128_u32(value: usize, buf: &mut [u8; 5]) -> &[u8] {
    let mut v = value as u64;
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 || n == 4 {
            buf[n] = byte;
            return &buf[..=n];
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
}

/// The module's hash under wascap's rule: upper-case hex SHA-256 of the module with every
/// `jwt` / `wasmcloud_jwt` custom section removed.
pub fn module_hash(module: &[u8]) -> Result<String> {
    Ok(ModuleSections::parse(module)?.hash())
}

/// The module with every JWT custom section removed (sections re-encoded canonically).
pub fn strip_jwt_sections(module: &[u8]) -> Result<Vec<u8>> {
    Ok(ModuleSections::parse(module)?.encode(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::Encode;

    #[test]
    fn leb128_matches_wasm_encoder() {
        for v in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            u32::MAX as usize,
        ] {
            let mut expected = Vec::new();
            (v as u32).encode(&mut expected);
            let mut buf = [0; 5];
            assert_eq!(leb128_u32(v, &mut buf), &expected[..], "{v}");
        }
    }

    #[test]
    fn rejects_non_wasm_and_truncation() {
        assert!(matches!(
            ModuleSections::parse(b"hello"),
            Err(Error::NotWasm)
        ));
        assert!(matches!(ModuleSections::parse(b""), Err(Error::NotWasm)));
        // Header, then a type section that claims 16 bytes but has 1.
        let cut = b"\0asm\x01\0\0\0\x01\x10\x00";
        assert!(matches!(
            ModuleSections::parse(cut),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            ModuleSections::parse(b"\0asm\x01\0"),
            Err(Error::Truncated { .. }) | Err(Error::MalformedWasm { .. })
        ));
    }
}
