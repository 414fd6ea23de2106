//! Components from a real OCI registry (Debian's `docker-registry` on
//! loopback), through the real binary: serve and reload by tag and digest,
//! the digest pinned in the status, a restart served from the pull cache
//! with the registry down, every pull error leaving the live version
//! serving, registry credentials from the docker config file, and a
//! watched tag that moves.

mod support;

use std::path::Path;
use std::time::Duration;

use support::registry::{Registry, digest, docker_config};
use support::{Host, example, get, stamp, wait_for_body, write_version};

fn source_of(host: &Host) -> String {
    host.status_json()["apps"][0]["source"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `wasm-host reload ARGS`, which must fail; returns its stderr.
fn refused(host: &Host, args: &[&str]) -> String {
    let out = host.ctl(&[&["reload"], args].concat());
    assert!(!out.status.success(), "reload {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_by_tag_and_digest_pins_caches_and_survives_every_registry_error() {
    let mut registry = Registry::start(false);
    let (v1, v2, v3) = (
        stamp(&example("hello"), "v1"),
        stamp(&example("hello"), "v2"),
        stamp(&example("hello"), "v3"),
    );
    let m1 = registry.push("team/shop", "v1", &v1).await;
    let m2 = registry.push("team/shop", "v2", &v2).await;

    let v1_ref = registry.reference("team/shop", "v1");
    // A cache that outlives the first host, for the restart at the end.
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = ["--cache-dir", cache.path().to_str().unwrap()];
    let host = Host::start(Path::new(&v1_ref), &cache_arg);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    // The status names the digest the tag pointed at, not only the tag.
    assert_eq!(source_of(&host), format!("{v1_ref}@{m1}"));
    let status = host.status_json();
    assert_eq!(
        format!(
            "sha256:{}",
            status["apps"][0]["versions"][0]["digest"].as_str().unwrap()
        ),
        digest(&v1)
    );
    assert_eq!(status["apps"][0]["app"], "shop");

    // Reload by tag, then by digest.
    host.ctl_ok(&["reload", &registry.reference("team/shop", "v2")]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v2\n");
    assert_eq!(
        source_of(&host),
        format!("{}@{m2}", registry.reference("team/shop", "v2"))
    );
    let by_digest = format!("oci://{}/team/shop@{m1}", registry.addr);
    host.ctl_ok(&["reload", &by_digest]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    assert_eq!(source_of(&host), by_digest);

    // A tag that moves is a new version only when a reload says so.
    host.ctl_ok(&["reload", &registry.reference("team/shop", "v2")]);
    let m3 = registry.push("team/shop", "v2", &v3).await;
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v2\n");
    host.ctl_ok(&["reload"]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v3\n");
    assert!(source_of(&host).ends_with(&m3), "{}", source_of(&host));

    // Every failure is a clear refusal, and v3 keeps serving.
    let live = |host: &Host| {
        let addr = host.addr.clone();
        async move { get(&addr, "/").await.unwrap().body }
    };
    let e = refused(&host, &[&registry.reference("team/shop", "nope")]);
    assert!(e.contains("no tag `nope` in team/shop"), "{e}");
    let e = refused(&host, &[&registry.reference("team/none", "v1")]);
    assert!(
        e.contains("no repository `team/none`") || e.contains("no tag"),
        "{e}"
    );

    let image = b"\x1f\x8b not a component, a tarball layer".to_vec();
    registry
        .push_as(
            "team/image",
            "v1",
            &image,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .await;
    let e = refused(&host, &[&registry.reference("team/image", "v1")]);
    assert!(
        e.contains("is not a Wasm component") && e.contains("tar+gzip"),
        "{e}"
    );

    // The registry's copy of a layer goes bad on disk: same size, one byte off.
    let v4 = stamp(&example("hello"), "v4");
    registry.push("team/shop", "v4", &v4).await;
    let mut bad = v4.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(registry.blob_file(&digest(&v4)), &bad).unwrap();
    let e = refused(&host, &[&registry.reference("team/shop", "v4")]);
    assert!(e.contains("digest mismatch for component layer"), "{e}");
    assert_eq!(live(&host).await, "hello from v3\n");

    // Something that answers HTTP but is no registry: the host itself.
    let e = refused(&host, &[&format!("oci://{}/team/shop:v1", host.addr)]);
    assert!(
        e.contains("unknown registry") && e.contains("is this an OCI registry"),
        "{e}"
    );

    registry.stop();
    let e = refused(&host, &[&registry.reference("team/shop", "v1")]);
    assert!(e.contains("is down or unreachable"), "{e}");
    assert_eq!(live(&host).await, "hello from v3\n");
    let status = host.status_json();
    assert_eq!(status["apps"][0]["versions"][0]["generation"], 5);

    // A restart by digest with the registry still down pulls nothing: the
    // manifest and the layer come from the cache.
    drop(host);
    let pinned = format!("oci://{}/team/shop:v1@{m1}", registry.addr);
    let again = Host::start(Path::new(&pinned), &cache_arg);
    assert_eq!(get(&again.addr, "/").await.unwrap().body, "hello from v1\n");
    assert_eq!(source_of(&again), pinned);
    again.wait_log("fetched=false", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_takes_the_docker_config_credentials() {
    let registry = Registry::start(true);
    registry
        .push("private/app", "v2", &stamp(&example("hello"), "v2"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("v1.wasm");
    write_version(&first, "hello", "v1");
    let docker = dir.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    let host = Host::start_env(&first, &[], &[("DOCKER_CONFIG", &docker)]);

    let reference = registry.reference("private/app", "v2");
    let e = refused(&host, &[&reference]);
    assert!(
        e.contains("refused access to private/app") && e.contains("docker login"),
        "{e}"
    );
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");

    // Credentials are read at each pull: no restart after `docker login`.
    docker_config(&docker, &registry.addr);
    host.ctl_ok(&["reload", &reference]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_tag_that_moves_is_pulled_and_goes_live() {
    let registry = Registry::start(false);
    registry
        .push("app", "stable", &stamp(&example("hello"), "v1"))
        .await;
    let reference = registry.reference("app", "stable");
    let host = Host::start(Path::new(&reference), &["--watch-tag", "1s"]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    // Polls that find the tag where it was change nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        host.status_json()["apps"][0]["versions"][0]["generation"],
        1
    );

    let moved = registry
        .push("app", "stable", &stamp(&example("hello"), "v2"))
        .await;
    wait_for_body(&host.addr, "/", "from v2", Duration::from_secs(15)).await;
    host.wait_log("the tag moved: reloading", Duration::from_secs(1));
    assert_eq!(source_of(&host), format!("{reference}@{moved}"));
    assert_eq!(
        host.status_json()["apps"][0]["versions"][0]["generation"],
        2
    );

    // --watch-tag without a tag to watch is refused up front.
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "app.wasm", "--watch-tag", "30s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("watch_tag needs an oci:// component"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
