//! The file watch through the real binary: in-place writes, atomic renames,
//! a half-written file that must never go live, and a component path whose
//! symlink is swapped (kubelet's `..data`, git-sync's worktree link).

mod support;

use std::io::Write;
use std::path::Path;
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

/// Swaps the symlink `link` to point at `to` in one step, as kubelet and
/// git-sync do: a fresh link beside it, renamed over it.
fn swap_link(link: &Path, to: &str) {
    let name = link.file_name().unwrap().to_str().unwrap();
    let tmp = link.with_file_name(format!("{name}_tmp"));
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// Serves `path`, and after each of three `swap(n)` (n = 2, 3, 4) insists
/// the new version answers and that exactly one reload was triggered.
async fn reloads_once_per_swap(path: &Path, swap: impl Fn(u32)) {
    let host = Host::start(path, &[]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    for n in 2..=4u32 {
        swap(n);
        wait_for_body(
            &host.addr,
            "/",
            &format!("hello from v{n}"),
            Duration::from_secs(10),
        )
        .await;
        // Past the debounce, so a second trigger from the same swap (the
        // old directory's removal, say) would have come.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let triggers = host.log_lines(&["component file changed: reloading"]).len();
        assert_eq!(triggers, n as usize - 1, "{}", host.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_symlink_swap_reloads_once_per_swap() {
    // app.wasm -> ..data/app.wasm, ..data -> ..v1: a Secret or ConfigMap
    // volume. Each update is a new directory and a rename of ..data; the
    // old directory is removed after.
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path();
    std::fs::create_dir(volume.join("..v1")).unwrap();
    write_version(&volume.join("..v1/app.wasm"), "hello", "v1");
    std::os::unix::fs::symlink("..v1", volume.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.wasm", volume.join("app.wasm")).unwrap();
    reloads_once_per_swap(&volume.join("app.wasm"), |n| {
        let fresh = format!("..v{n}");
        std::fs::create_dir(volume.join(&fresh)).unwrap();
        write_version(
            &volume.join(&fresh).join("app.wasm"),
            "hello",
            &format!("v{n}"),
        );
        swap_link(&volume.join("..data"), &fresh);
        std::fs::remove_dir_all(volume.join(format!("..v{}", n - 1))).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_sync_worktree_swap_reloads_once_per_swap() {
    // repo -> .worktrees/1, served as repo/app.wasm: the symlink is a
    // directory above the file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(".worktrees/1")).unwrap();
    write_version(&root.join(".worktrees/1/app.wasm"), "hello", "v1");
    std::os::unix::fs::symlink(".worktrees/1", root.join("repo")).unwrap();
    reloads_once_per_swap(&root.join("repo/app.wasm"), |n| {
        let tree = root.join(format!(".worktrees/{n}"));
        std::fs::create_dir(&tree).unwrap();
        write_version(&tree.join("app.wasm"), "hello", &format!("v{n}"));
        swap_link(&root.join("repo"), &format!(".worktrees/{n}"));
        std::fs::remove_dir_all(root.join(format!(".worktrees/{}", n - 1))).unwrap();
    })
    .await;
}
