//! Many apps in one host through the real binary: a config file with apps
//! on their own listener and routed by host and path on a shared one,
//! errors reported with line numbers before anything starts, and
//! `reload --config` starting, stopping, reloading and restarting apps
//! while leaving the rest alone; the config watch applying kubelet's
//! ConfigMap updates (components named by OCI digest, pulled from a real
//! registry) once per change.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::registry::Registry;
use support::{BIN, Host, example, free_addr, get, send_with, stamp, write_version};

/// The body of `GET path` with `Host: host`, which must be a 200.
async fn body_at(addr: &str, host: &str, path: &str) -> String {
    let reply = send_with(addr, "GET", path, &[("host", host)], Vec::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn generation_of(host: &Host, app: &str) -> u64 {
    let status = host.status_json();
    let apps = status["apps"].as_array().unwrap();
    let entry = apps.iter().find(|a| a["app"] == app).unwrap();
    entry["versions"][0]["generation"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_share_a_listener_by_host_and_path_or_have_their_own() {
    let dir = tempfile::tempdir().unwrap();
    write_version(&dir.path().join("site.wasm"), "hello", "site");
    write_version(&dir.path().join("blog.wasm"), "hello", "blog");
    write_version(&dir.path().join("api.wasm"), "api", "v1");
    write_version(&dir.path().join("slow.wasm"), "slow", "v1");
    write_version(&dir.path().join("faulty.wasm"), "faulty", "v1");
    let (shared, own) = (free_addr(), free_addr());
    let file = dir.path().join("wasm-host.toml");
    std::fs::write(
        &file,
        format!(
            r#"
listen = "{shared}"

[app.site]
component = "site.wasm"
watch = false

[app.blog]
component = "blog.wasm"
hosts = ["blog.test", "*.blog.test"]
watch = false

[app.api]
component = "api.wasm"
path = "/users"
max_body = "1KiB"
watch = false

[app.faulty]
component = "faulty.wasm"
hosts = ["faulty.test"]
max_memory = "32MiB"
watch = false

[app.slow]
component = "slow.wasm"
listen = "{own}"
watch = false
"#
        ),
    )
    .unwrap();
    let host = Host::start_config(&file, &[]);
    host.wait_log(
        &format!("listening on http://{own}"),
        Duration::from_secs(60),
    );

    assert_eq!(body_at(&shared, "x.test", "/").await, "hello from site\n");
    assert_eq!(
        body_at(&shared, "blog.test", "/").await,
        "hello from blog\n"
    );
    assert_eq!(
        body_at(&shared, "eu.blog.test:80", "/any").await,
        "hello from blog\n"
    );
    assert_eq!(body_at(&shared, "x.test", "/users/7").await, "user 7\n");
    assert_eq!(
        body_at(&own, "x.test", "/?ms=0").await,
        "slow v1 after 0 ms\n"
    );
    // Per-app limits apply to their app only.
    let big = send_with(&shared, "POST", "/users/7", &[], vec![b'x'; 4096])
        .await
        .unwrap();
    assert_eq!(big.status, 413, "{big:?}");
    // So do memory limits: below the engine's, enforced per store.
    let oom = send_with(
        &shared,
        "GET",
        "/oom",
        &[("host", "faulty.test")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(oom.status, 500, "{oom:?}");
    assert_eq!(body_at(&shared, "faulty.test", "/").await, "faulty v1\n");
    assert_eq!(body_at(&shared, "x.test", "/").await, "hello from site\n");

    let status = host.status_json();
    let names: Vec<_> = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].clone())
        .collect();
    assert_eq!(names, ["site", "blog", "api", "faulty", "slow"]);

    // With several apps, a command must name one.
    let out = host.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("name the one you mean"),
        "{out:?}"
    );
    write_version(&dir.path().join("api2.wasm"), "api", "v2");
    let said = host.ctl_ok(&[
        "reload",
        "api",
        dir.path().join("api2.wasm").to_str().unwrap(),
    ]);
    assert!(said.contains("generation 2 is live"), "{said}");
    assert_eq!(generation_of(&host, "site"), 1);
    assert_eq!(generation_of(&host, "api"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_config_starts_stops_reloads_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    for (file, version) in [
        ("a1", "a1"),
        ("a2", "a2"),
        ("b", "b"),
        ("c", "c"),
        ("d", "d"),
    ] {
        write_version(&dir.path().join(format!("{file}.wasm")), "hello", version);
    }
    let (p1, p2, p3) = (free_addr(), free_addr(), free_addr());
    let file = dir.path().join("wasm-host.toml");
    // This test drives every change by hand; the config watch stays off.
    let write =
        |text: String| std::fs::write(&file, format!("watch_config = false\n{text}")).unwrap();
    let app = |name: &str, wasm: &str, listen: &str, extra: &str| {
        format!(
            "[app.{name}]\ncomponent = \"{wasm}.wasm\"\nlisten = \"{listen}\"\nwatch = false\n{extra}\n"
        )
    };
    write(app("a", "a1", &p1, "") + &app("b", "b", &p2, "") + &app("d", "d", &p1, "path = \"/d\""));
    let host = Host::start_config(&file, &[]);
    host.wait_log(
        &format!("listening on http://{p2}"),
        Duration::from_secs(60),
    );
    assert_eq!(body_at(&p2, "x", "/").await, "hello from b\n");

    // a: new component; b: removed; c: added on a new address; d: as it was.
    write(app("a", "a2", &p1, "") + &app("c", "c", &p3, "") + &app("d", "d", &p1, "path = \"/d\""));
    let said = host.ctl_ok(&["reload", "--config"]);
    for line in [
        "started: c",
        "stopped (draining): b",
        "reloaded: a",
        "unchanged: d",
    ] {
        assert!(said.contains(line), "{line:?} missing from:\n{said}");
    }
    assert_eq!(body_at(&p1, "x", "/").await, "hello from a2\n");
    assert_eq!(body_at(&p3, "x", "/").await, "hello from c\n");
    assert_eq!(body_at(&p1, "x", "/d").await, "hello from d\n");
    assert_eq!(generation_of(&host, "a"), 2);
    assert_eq!(generation_of(&host, "d"), 1);
    host.wait_log("closing it", Duration::from_secs(10));
    let mut closed = false;
    for _ in 0..50 {
        if get(&p2, "/").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the removed app's address still answers");

    // A changed setting starts the app again, its generations carried on.
    write(
        app("a", "a2", &p1, "max_body = \"1KiB\"")
            + &app("c", "c", &p3, "")
            + &app("d", "d", &p1, "path = \"/d\""),
    );
    let said = host.ctl_ok(&["reload", "--config"]);
    assert!(said.contains("restarted with new settings: a"), "{said}");
    assert_eq!(generation_of(&host, "a"), 3);
    assert_eq!(body_at(&p1, "x", "/").await, "hello from a2\n");

    // A broken file changes nothing and says where it is broken.
    std::fs::write(&file, "[app.a]\ncomponent = \"a2.wasm\"\nlisten = 7\n").unwrap();
    let out = host.ctl(&["reload", "--config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wasm-host.toml:3:"), "{stderr}");
    assert_eq!(body_at(&p3, "x", "/").await, "hello from c\n");
}

#[test]
fn a_bad_config_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    write_version(&dir.path().join("ok.wasm"), "hello", "v1");
    let file = dir.path().join("wasm-host.toml");
    std::fs::write(
        &file,
        "[app.one]\ncomponent = \"ok.wasm\"\n\n[app.two]\ncomponent = \"gone.wasm\"\nmax_memory = \"lots\"\n",
    )
    .unwrap();
    let out = run_serve(&file, dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wasm-host.toml:5: "), "{stderr}");
    assert!(stderr.contains("gone.wasm does not exist"), "{stderr}");
    assert!(
        stderr.contains("wasm-host.toml:6: `lots` has an unknown unit"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");

    std::fs::write(&file, "[app.one]\ncomponent = \"ok.wasm\"\nlisen = \"x\"\n").unwrap();
    let stderr = String::from_utf8_lossy(&run_serve(&file, dir.path()).stderr).into_owned();
    assert!(
        stderr.contains("wasm-host.toml:3: unknown field `lisen`"),
        "{stderr}"
    );
}

/// `wasm-host serve --config file`, expected to exit by itself.
fn run_serve(file: &Path, dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file)
        .arg("--control")
        .arg(dir.join("control.sock"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .output()
        .unwrap()
}

/// Writes `files` the way kubelet updates a mounted ConfigMap: a new
/// timestamped directory, a `..data_tmp` symlink to it renamed over
/// `..data` in one step, the old directory removed, and each file's name a
/// symlink through `..data` (made once, never touched again).
fn kubelet_update(volume: &Path, files: &[(&str, &str)], serial: u32) {
    let fresh = format!("..2026_11_21_10_00_{serial:02}.{:09}", 100_000 + serial);
    std::fs::create_dir(volume.join(&fresh)).unwrap();
    for (name, text) in files {
        std::fs::write(volume.join(&fresh).join(name), text).unwrap();
    }
    let old = std::fs::read_link(volume.join("..data")).ok();
    std::os::unix::fs::symlink(&fresh, volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    for (name, _) in files {
        let link = volume.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_in_kubelets_layout_reloads_once_per_change() {
    // As in contrib/kubernetes: the ConfigMap names each version by digest.
    let registry = Registry::start(false);
    let mut digests = std::collections::HashMap::new();
    for version in ["v1", "v2", "v3"] {
        let bytes = stamp(&example("hello"), version);
        digests.insert(version, registry.push("team/shop", version, &bytes).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("configmap");
    std::fs::create_dir(&volume).unwrap();
    let addr = free_addr();
    let config = |version: &str| {
        format!(
            "[app.shop]\ncomponent = \"oci://{}/team/shop@{}\"\nlisten = \"{addr}\"\n",
            registry.addr, digests[version]
        )
    };
    kubelet_update(&volume, &[("wasm-host.toml", &config("v1"))], 1);
    let host = Host::start_config(&volume.join("wasm-host.toml"), &[]);
    host.wait_log("watching the config file", Duration::from_secs(10));
    assert_eq!(body_at(&addr, "x", "/").await, "hello from v1\n");
    let changes = |host: &Host| host.log_lines(&["config file changed: applying it"]).len();

    for (serial, version) in [(2, "v2"), (3, "v3")] {
        kubelet_update(&volume, &[("wasm-host.toml", &config(version))], serial);
        let answer = support::wait_for_body(
            &addr,
            "/",
            &format!("from {version}"),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(answer.status, 200);
        // One change, one reload: let any straggling events settle first.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(changes(&host), serial as usize - 1, "{}", host.log_text());
        assert_eq!(generation_of(&host, "shop"), serial as u64);
    }

    // kubelet's periodic rewrite with the same contents changes nothing.
    kubelet_update(&volume, &[("wasm-host.toml", &config("v3"))], 4);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(changes(&host), 2);
    assert_eq!(generation_of(&host, "shop"), 3);

    // A broken update is reported and the live version keeps serving.
    kubelet_update(
        &volume,
        &[("wasm-host.toml", "[app.shop]\ncomponent = 7\n")],
        5,
    );
    host.wait_log(
        "the changed config file was not applied",
        Duration::from_secs(10),
    );
    assert_eq!(body_at(&addr, "x", "/").await, "hello from v3\n");
    // So is one naming a digest the registry does not have.
    let missing = format!(
        "[app.shop]\ncomponent = \"oci://{}/team/shop@sha256:{}\"\nlisten = \"{addr}\"\n",
        registry.addr,
        "0".repeat(64)
    );
    kubelet_update(&volume, &[("wasm-host.toml", &missing)], 6);
    let refusals = |host: &Host| host.log_lines(&["the changed config file was not applied"]);
    for _ in 0..100 {
        if refusals(&host).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = refusals(&host);
    assert_eq!(said.len(), 2, "{}", host.log_text());
    assert!(said[1].contains("no manifest with digest"), "{}", said[1]);
    assert_eq!(body_at(&addr, "x", "/").await, "hello from v3\n");
    // And the next good one goes through.
    kubelet_update(&volume, &[("wasm-host.toml", &config("v1"))], 7);
    support::wait_for_body(&addr, "/", "from v1", Duration::from_secs(20)).await;
    assert_eq!(generation_of(&host, "shop"), 4);
}
