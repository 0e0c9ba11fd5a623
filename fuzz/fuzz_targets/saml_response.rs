//! A posted SAML response, decoded, verified against a fixed IdP and read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        tower_jit_provisioning::fuzzing::saml_response(text);
    }
});
