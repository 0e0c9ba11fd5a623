//! The reference server (`examples/server.rs`) as a process: built once per test binary,
//! started on a free port with the environment a test gives it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/<profile>/examples/server`, built (or found up to date) once per test binary: a
/// filtered `cargo test --test server` does not build examples by itself.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    BUILT.call_once(|| {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--example", "server", "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building the server example failed"
        );
    });
    let binary = profile_dir.join("examples").join("server");
    assert!(binary.exists(), "{} not built", binary.display());
    binary
}

pub struct Running {
    child: Child,
    pub base: String,
    pub stdout: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server with `env`, on a free port, and waits for its "listening" line.
pub fn start(env: &[(&str, &str)], db: &tempfile::TempDir) -> Running {
    let url = format!("sqlite://{}", db.path().join("jit.db").display());
    let mut command = Command::new(server_binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("JIT_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        stdout.push(line.clone());
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Read what follows the listening line (the development token), without blocking forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        stdout.push(line);
    }
    Running {
        child,
        base,
        stdout,
    }
}
