//! Tells the test suite which outside parts this build was given, so a test that needs a part
//! it was not given shows as *ignored*, with the reason, instead of passing without running.
//!
//! - `JIT_TEST_POSTGRES_URL` set: `cfg(jit_test_postgres)`.
//!
//! Nothing in the library reads these; `bash .ci/run` starts each part and sets its variable.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(jit_test_postgres)");
    println!("cargo::rerun-if-env-changed=JIT_TEST_POSTGRES_URL");
    if std::env::var_os("JIT_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=jit_test_postgres");
    }
}
