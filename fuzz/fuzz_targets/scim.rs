//! SCIM filters, PATCH paths and PATCH bodies, parsed and evaluated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        tower_jit_provisioning::fuzzing::scim(text);
    }
});
