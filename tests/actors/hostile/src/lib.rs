//! An actor that misbehaves on demand, for testing what the host does about it. Each
//! operation (all raw: bytes in, bytes out) is one way to misbehave:
//!
//! | operation | what it does |
//! |---|---|
//! | `ok` | returns `fine` |
//! | `panic` | panics with the message `boom` |
//! | `spin` | loops forever |
//! | `alloc_bomb` | allocates and touches memory until an allocation fails |
//! | `recurse` | recurses until the stack overflows |
//! | `big_response` | returns N bytes: N is the payload as a little-endian `u32`, 64 MiB when the payload is empty |
//! | `call_undeclared` | calls keyvalue `Get`, which its claims do not grant, and returns the error text it got |
//! | `log` | logs `hello from hostile` at `info` (its claims grant logging) |
//! | `guid` | returns a UUID from numbergen as UTF-8 (its claims grant numbergen) |

use std::hint::black_box;

use sigil_actor::keyvalue::KeyValue;
use sigil_actor::prelude::*;

sigil_actor::actor! {
    "ok" => raw ok,
    "panic" => raw panic,
    "spin" => raw spin,
    "alloc_bomb" => raw alloc_bomb,
    "recurse" => raw recurse,
    "big_response" => raw big_response,
    "call_undeclared" => raw call_undeclared,
    "log" => raw log,
    "guid" => raw guid,
}

/// The response size of `big_response` when the payload does not give one.
const DEFAULT_BIG_RESPONSE: u32 = 64 * 1024 * 1024;

fn ok(_: &[u8]) -> HandlerResult<Vec<u8>> {
    Ok(b"fine".to_vec())
}

fn panic(_: &[u8]) -> HandlerResult<Vec<u8>> {
    // black_box keeps the compiler from seeing that this handler never returns.
    if black_box(true) {
        panic!("boom");
    }
    Ok(Vec::new())
}

fn spin(_: &[u8]) -> HandlerResult<Vec<u8>> {
    let mut turns: u64 = 0;
    loop {
        // An opaque side effect on every turn: the loop cannot be removed or shortened.
        turns = black_box(turns.wrapping_add(1));
    }
}

fn alloc_bomb(_: &[u8]) -> HandlerResult<Vec<u8>> {
    const CHUNK: usize = 1024 * 1024;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill writes every page, so each one is really committed; when the
        // memory cannot grow, the allocator fails and the guest aborts (traps).
        let chunk = vec![0xa5_u8; CHUNK];
        hoard.push(black_box(chunk));
    }
}

fn recurse(_: &[u8]) -> HandlerResult<Vec<u8>> {
    let depth = descend(0);
    Ok(depth.to_le_bytes().to_vec())
}

/// Recurses without end. The call goes through an opaque function pointer, so it can be
/// neither inlined nor turned into a loop, and each frame keeps a buffer on the stack.
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 256]);
    let next: fn(u64) -> u64 = black_box(descend);
    next(depth + 1).wrapping_add(u64::from(frame[0]))
}

fn big_response(payload: &[u8]) -> HandlerResult<Vec<u8>> {
    let size = match payload {
        [] => DEFAULT_BIG_RESPONSE,
        [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => {
            return Err(format!(
                "big_response takes a little-endian u32 (4 bytes) or nothing, not {} bytes",
                payload.len()
            )
            .into());
        }
    };
    Ok(vec![b'x'; size as usize])
}

fn call_undeclared(_: &[u8]) -> HandlerResult<Vec<u8>> {
    match KeyValue::default().get("undeclared") {
        Err(error) => Ok(error.to_string().into_bytes()),
        Ok(_) => Err("keyvalue Get succeeded although the claims do not grant keyvalue".into()),
    }
}

fn log(_: &[u8]) -> HandlerResult<Vec<u8>> {
    logging::info("hello from hostile")?;
    Ok(Vec::new())
}

fn guid(_: &[u8]) -> HandlerResult<Vec<u8>> {
    Ok(numbergen::guid()?.into_bytes())
}
