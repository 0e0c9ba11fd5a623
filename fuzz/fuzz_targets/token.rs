//! Bearer tokens as the layer reads them before any key is involved.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        tower_jit_provisioning::fuzzing::token(text);
    }
});
