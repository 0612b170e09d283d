//! Telling a shadow-stack overflow from any other out-of-bounds access.
//!
//! Code compiled by LLVM (Rust, C, Zig...) keeps its locals that need an address on a stack
//! in linear memory, whose pointer is the module's first global (`__stack_pointer`). Actors
//! are linked with that stack at the bottom of memory, so when deep recursion overflows it,
//! the pointer wraps below zero and the next access traps as "out of bounds memory access",
//! which says nothing useful. The engine compiles a copy of the module that also exports
//! that global (under [`EXPORT`]), reads it after an out-of-bounds trap, and reports a
//! stack overflow when the pointer has wrapped. The module's behaviour is unchanged: one
//! export is added.

use wasm_encoder::{ExportKind, ExportSection, Section};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType};

/// The name the stack pointer is exported under.
pub(crate) const EXPORT: &str = "__sigil_stack_pointer";

/// The module with its stack pointer exported, or `None` when it has no such global (global
/// 0 is imported, or not a mutable i32) or has no export section to extend.
pub(crate) fn expose(wasm: &[u8]) -> Option<Vec<u8>> {
    let mut parser = Parser::new(0);
    let mut offset = 0;
    let mut out = Vec::with_capacity(wasm.len() + 32);
    let mut imported_globals = 0u32;
    let mut stack_pointer = false;
    let mut exported = false;
    loop {
        let rest = wasm.get(offset..)?;
        let (consumed, payload) = match parser.parse(rest, true).ok()? {
            wasmparser::Chunk::Parsed { consumed, payload } => (consumed, payload),
            wasmparser::Chunk::NeedMoreData(_) => return None,
        };
        offset += consumed;
        match payload {
            Payload::Version { .. } => out.extend_from_slice(&wasm_encoder::Module::HEADER),
            Payload::End(_) => break,
            Payload::ImportSection(ref imports) => {
                for import in imports.clone().into_imports() {
                    if matches!(import.ok()?.ty, TypeRef::Global(_)) {
                        imported_globals += 1;
                    }
                }
                copy(&mut out, wasm, &payload)?;
            }
            Payload::GlobalSection(ref globals) => {
                let first = globals.clone().into_iter().next()?.ok()?;
                stack_pointer = imported_globals == 0
                    && first.ty.mutable
                    && first.ty.content_type == ValType::I32;
                copy(&mut out, wasm, &payload)?;
            }
            Payload::ExportSection(exports) => {
                if !stack_pointer {
                    return None;
                }
                let mut section = ExportSection::new();
                for export in exports {
                    let export = export.ok()?;
                    if export.name == EXPORT {
                        return None;
                    }
                    let kind = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        ExternalKind::Tag => ExportKind::Tag,
                    };
                    section.export(export.name, kind, export.index);
                }
                section.export(EXPORT, ExportKind::Global, 0);
                section.append_to(&mut out);
                exported = true;
            }
            Payload::CodeSectionStart { range, .. } => {
                wasm_encoder::RawSection {
                    id: 10,
                    data: wasm.get(range.clone())?,
                }
                .append_to(&mut out);
                parser.skip_section();
                offset = range.end;
            }
            other => copy(&mut out, wasm, &other)?,
        }
    }
    exported.then_some(out)
}

fn copy(out: &mut Vec<u8>, wasm: &[u8], payload: &Payload<'_>) -> Option<()> {
    if let Some((id, range)) = payload.as_section() {
        wasm_encoder::RawSection {
            id,
            data: wasm.get(range)?,
        }
        .append_to(out);
    }
    Some(())
}

/// True when a stack pointer value means the stack overflowed (wrapped below zero).
pub(crate) fn overflowed(value: i32) -> bool {
    value < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_global_zero_and_keeps_the_rest() {
        let wasm = wat::parse_str(
            r#"(module
                (global $sp (mut i32) (i32.const 1024))
                (memory (export "memory") 1)
                (func (export "f") (result i32) global.get $sp)
                (@custom "keep" "me"))"#,
        )
        .unwrap();
        let out = expose(&wasm).unwrap();
        let mut names = Vec::new();
        for p in Parser::new(0).parse_all(&out) {
            if let Payload::ExportSection(e) = p.unwrap() {
                names.extend(e.into_iter().map(|x| x.unwrap().name.to_string()));
            }
        }
        assert_eq!(names, ["memory", "f", EXPORT]);
        wasmparser::Validator::new().validate_all(&out).unwrap();
        assert!(out.windows(4).any(|w| w == b"keep"));
    }

    #[test]
    fn leaves_modules_without_a_stack_pointer_alone() {
        let constant =
            wat::parse_str(r#"(module (global i32 (i32.const 1)) (func (export "f")))"#).unwrap();
        assert!(expose(&constant).is_none());
        let imported = wat::parse_str(
            r#"(module (import "a" "b" (global (mut i32))) (global (mut i32) (i32.const 0)) (func (export "f")))"#,
        )
        .unwrap();
        assert!(expose(&imported).is_none());
        let no_globals = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
        assert!(expose(&no_globals).is_none());
    }
}
