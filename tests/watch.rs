//! The file watch through the real binary: in-place writes, atomic renames,
//! and a half-written file that must never go live.

mod support;

use std::io::Write;
use std::time::Duration;

use support::{Host, example, get, stamp, wait_for_body, write_version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_write_and_atomic_rename_both_reload() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &[]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");

    // In place: truncate and write the same file.
    write_version(&app, "hello", "v2");
    wait_for_body(&host.addr, "/", "hello from v2", Duration::from_secs(10)).await;

    // Atomic rename, as deploy tools do.
    let staged = dir.path().join(".hello.wasm.new");
    write_version(&staged, "hello", "v3");
    std::fs::rename(&staged, &app).unwrap();
    wait_for_body(&host.addr, "/", "hello from v3", Duration::from_secs(10)).await;

    // Delete and recreate, as some editors do.
    std::fs::remove_file(&app).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v3\n");
    write_version(&app, "hello", "v4");
    wait_for_body(&host.addr, "/", "hello from v4", Duration::from_secs(10)).await;
    // The line may reach the test's log reader just after the new body.
    host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version live") && l.contains("generation=4")
    });
    assert!(host.log_lines(&["version live", "generation=4"]).len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_never_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &[]);

    let v2 = stamp(&example("hello"), "v2");
    let mut file = std::fs::File::create(&app).unwrap();
    file.write_all(&v2[..v2.len() / 2]).unwrap();
    file.flush().unwrap();
    // Longer than the debounce: the watch sees a quiet, half-written file.
    host.wait_log("reload refused", Duration::from_secs(10));
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");

    file.write_all(&v2[v2.len() / 2..]).unwrap();
    drop(file);
    wait_for_body(&host.addr, "/", "hello from v2", Duration::from_secs(10)).await;
    let refused = host.log_lines(&["reload refused"]);
    assert!(
        refused.iter().all(|l| l.contains("invalid component")),
        "{refused:?}"
    );
}
