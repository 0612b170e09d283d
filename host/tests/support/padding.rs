//! Large modules for tests and benchmarks: a module padded with a custom section of
//! incompressible bytes, so that it weighs what a large actor weighs on the wire and in a
//! registry, and compiles like the original. Shared by the tests and the benchmarks.

/// Appends a custom section named `padding` to `wasm` so that the section holds `size`
/// bytes of xorshift output (bytes no registry or transport could compress).
pub(crate) fn pad(wasm: &mut Vec<u8>, size: usize) {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut payload = Vec::with_capacity(size + 16);
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while payload.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    wasm.push(0);
    leb(payload.len(), wasm);
    wasm.extend_from_slice(&payload);
}
