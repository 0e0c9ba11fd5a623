//! Tells the test suite which outside parts this build was given, so a test that needs a part
//! it was not given shows as *ignored*, with the reason, instead of passing without running.
//!
//! - `JIT_TEST_POSTGRES_URL` set: `cfg(jit_test_postgres)`.
//! - `JIT_TEST_CHROMEDRIVER` set (the path of a `chromedriver` matching an installed Chromium):
//!   `cfg(jit_test_chromium)`.
//! - `JIT_TEST_XMLSEC1` set (the path of the `xmlsec1` command-line tool): `cfg(jit_test_xmlsec1)`.
//!
//! Nothing in the library reads these; `bash .ci/run` starts each part and sets its variable.

fn main() {
    for (variable, cfg) in [
        ("JIT_TEST_POSTGRES_URL", "jit_test_postgres"),
        ("JIT_TEST_CHROMEDRIVER", "jit_test_chromium"),
        ("JIT_TEST_XMLSEC1", "jit_test_xmlsec1"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if std::env::var_os(variable).is_some_and(|value| !value.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
