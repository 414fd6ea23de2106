//! `wasm-host serve DIR`: the host builds a guest crate with cargo, serves
//! it, and on every save rebuilds and hot-swaps it; a compile error keeps
//! the running version and shows the compiler's message once.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Host, get, wait_for_body};

/// Writes a guest crate on the SDK into `dir` whose handler answers `text`.
fn write_crate(dir: &Path, text: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sdk = std::fs::canonicalize(repo.join("guest-sdk")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"devapp\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nwasm-host-sdk = {{ path = {:?} }}\n\n[workspace]\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    // The examples' lock file pins the same dependency versions, so the
    // build needs no network.
    std::fs::copy(repo.join("examples/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    write_handler(dir, text);
}

fn write_handler(dir: &Path, text: &str) {
    std::fs::write(
        dir.join("src/main.rs"),
        format!(
            "fn answer(_: wasm_host_sdk::Request) -> &'static str {{\n    {text:?}\n}}\n\n\
             wasm_host_sdk::app!(answer);\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_rebuilds_and_a_compile_error_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("devapp");
    write_crate(&app, "one\n");
    // Builds share one target folder across test runs, outside the crate.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dev-target");
    let host = Host::start_env(
        &app,
        &[],
        &[
            ("CARGO_TARGET_DIR", &target),
            ("CARGO_NET_OFFLINE", Path::new("true")),
        ],
    );
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "one\n");

    // A save rebuilds and swaps.
    write_handler(&app, "two\n");
    wait_for_body(&host.addr, "/", "two", Duration::from_secs(120)).await;
    host.wait_log("rebuilt", Duration::from_secs(5));

    // A syntax error: the build fails, its message shows once, and the
    // running version keeps answering.
    std::fs::write(app.join("src/main.rs"), "fn answer( {\n").unwrap();
    host.wait_log("failed; its messages are above", Duration::from_secs(120));
    let located = host.log_lines(&["src/main.rs:1"]);
    assert_eq!(located.len(), 1, "{}", host.log_text());
    assert!(host.log_text().contains("error"), "{}", host.log_text());
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "two\n");

    // Fixing it goes live again.
    write_handler(&app, "three\n");
    wait_for_body(&host.addr, "/", "three", Duration::from_secs(120)).await;
    // The line may reach the test's log reader just after the new body.
    host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version live") && l.contains("generation=3")
    });
    assert!(host.log_lines(&["version live", "generation=3"]).len() == 1);
}
