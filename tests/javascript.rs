//! JavaScript apps through the real binary: a component built by
//! componentize-js from npm (examples/js-hello, on Hono; built and cached by
//! tests/support/js-component.sh), precompiled with `wasm-host compile`,
//! reloaded under load between two builds without a failed request or a
//! lost `waitUntil` job, and served with instance reuse asked for although
//! its engine (StarlingMonkey) cannot serve twice; and examples/js-app built
//! by `serve DIR` with `--reuse`, one instance serving request after request.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{Host, get, wait_for_body};

/// Two builds of the app, and a code cache holding both.
struct Builds {
    v1: PathBuf,
    v2: PathBuf,
    cache: PathBuf,
}

/// Builds (or finds cached) versions 1.0.0 and 2.0.0, and precompiles both
/// into a cache kept beside the test binaries, so later runs skip the
/// compile.
fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/support/js-component.sh");
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("js-code-cache");
        let build = |version: &str| {
            let out = std::process::Command::new("bash")
                .arg(&script)
                .arg(version)
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "building the JavaScript component failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
            let compiled = std::process::Command::new(support::BIN)
                .arg("compile")
                .arg(&path)
                .arg("--cache-dir")
                .arg(&cache)
                .output()
                .expect("run wasm-host compile");
            assert!(
                compiled.status.success(),
                "{}",
                String::from_utf8_lossy(&compiled.stderr)
            );
            path
        };
        Builds {
            v1: build("1.0.0"),
            v2: build("2.0.0"),
            cache,
        }
    })
}

/// Copies `build` to `dir/js-hello.wasm` (the app's name) and returns it.
fn app_file(dir: &std::path::Path, build: &std::path::Path) -> PathBuf {
    let app = dir.join("js-hello.wasm");
    std::fs::copy(build, &app).expect("copy the component");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_of_a_javascript_component_costs_one_request_then_answers_right() {
    let builds = builds();
    let dir = tempfile::tempdir().unwrap();
    let app = app_file(dir.path(), &builds.v1);
    let cache = builds.cache.to_str().unwrap();
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--cache-dir",
            cache,
            "--reuse-instances",
            "10",
        ],
    );
    let first = get(&host.addr, "/").await.unwrap();
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, "hello from js 1.0.0\n")
    );
    // StarlingMonkey keeps one fetch event per instance: the second request
    // on a reused instance cannot be answered.
    let second = get(&host.addr, "/").await.unwrap();
    assert_eq!(second.status, 500, "{}", second.body);
    host.wait_log("instance reuse turned off", Duration::from_secs(5));
    for _ in 0..10 {
        let answer = get(&host.addr, "/").await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "hello from js 1.0.0\n")
        );
    }
    assert_eq!(host.log_lines(&["instance reuse turned off"]).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_between_javascript_builds_under_load_loses_no_request_and_no_job() {
    let builds = builds();
    let dir = tempfile::tempdir().unwrap();
    let app = app_file(dir.path(), &builds.v1);
    let cache = builds.cache.to_str().unwrap();
    let host = Host::start(&app, &["--no-watch", "--cache-dir", cache]);
    let loaded = host.wait_log("version loaded", Duration::from_secs(10));
    assert!(loaded.contains("code_from_disk=true"), "{loaded}");
    // A StarlingMonkey snapshot (~9 MiB) runs on the pool that copies its
    // memory back whole; every request must still start from the snapshot.
    assert!(
        loaded.contains("memory_reset=\"snapshot-copy\""),
        "{loaded}"
    );
    for _ in 0..50 {
        let answer = get(&host.addr, "/seen").await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "1\n"));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, jobs, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut clients = Vec::new();
    for i in 0..4 {
        let (addr, stop, ok, jobs, failed) = (
            host.addr.clone(),
            stop.clone(),
            ok.clone(),
            jobs.clone(),
            failed.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2_000 {
                n += 1;
                // Every other request leaves a job running after its answer.
                let path = if (n + i) % 2 == 0 {
                    "/work?ms=200"
                } else {
                    "/"
                };
                match get(&addr, path).await {
                    Ok(a) if a.status == 202 => jobs.fetch_add(1, Ordering::Relaxed),
                    Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::copy(&builds.v2, &app).unwrap();
    let said = host.reload_ok(&app);
    assert!(
        said.contains("generation 2") || said.contains("live"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello from js 2.0.0\n"
    );
    // Every job started by a 202 finished, old version's included: the
    // old version retired only after its last job.
    host.wait_log("version retired", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = host.log_lines(&["work done"]).len() as u64;
    let started = jobs.load(Ordering::Relaxed);
    assert!(started > 0 && ok.load(Ordering::Relaxed) > 0);
    assert_eq!(done, started, "{done} of {started} jobs finished");
}

/// Writes a one-file JavaScript app (no npm dependencies) whose `/` answers
/// `text` and whose `/boom` throws.
fn write_script(dir: &std::path::Path, text: &str) {
    std::fs::write(
        dir.join("src/app.js"),
        format!(
            "addEventListener(\"fetch\", (event) => {{\n\
             \x20 const url = new URL(event.request.url);\n\
             \x20 if (url.pathname === \"/boom\") {{\n\
             \x20   throw new Error(\"kaboom in {text}\");\n\
             \x20 }}\n\
             \x20 event.respondWith(new Response({:?}));\n\
             }});\n",
            format!("{text}\n")
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dir_builds_a_javascript_app_and_a_save_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("saveapp");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(
        app.join("package.json"),
        r#"{ "name": "@acme/save-app", "version": "1.0.0", "type": "module", "main": "src/app.js" }"#,
    )
    .unwrap();
    write_script(&app, "one");
    // The first start installs the toolchain (npm, once per machine), then
    // builds and compiles a 13 MB component.
    let host = Host::start(&app, &[]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "one\n");
    // The app's name is package.json's, without the npm scope.
    let status = host.status_json();
    assert!(
        status.to_string().contains("\"save-app\""),
        "app name not from package.json: {status}"
    );
    // An uncaught exception answers 500 and says what happened.
    let boom = get(&host.addr, "/boom").await.unwrap();
    assert_eq!(boom.status, 500, "{}", boom.body);
    assert!(boom.body.contains("kaboom in one"), "{}", boom.body);
    // Its location is the source's, not the bundle's, in the answer and the
    // log.
    assert!(boom.body.contains("at src/app.js:4:"), "{}", boom.body);
    host.wait_log("@src/app.js:4:", Duration::from_secs(5));

    // A save rebuilds and swaps.
    write_script(&app, "two");
    wait_for_body(&host.addr, "/", "two", Duration::from_secs(180)).await;
    host.wait_log("rebuilt", Duration::from_secs(5));

    // A syntax error: the build fails, the error shows once with the
    // source's file:line, and the running version keeps answering.
    std::fs::write(
        app.join("src/app.js"),
        "addEventListener(\"fetch\", (event) => {\n",
    )
    .unwrap();
    host.wait_log("failed; its messages are above", Duration::from_secs(180));
    let located = host.log_lines(&["src/app.js:2"]);
    assert_eq!(located.len(), 1, "{}", host.log_text());
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "two\n");

    // Fixing it goes live again.
    write_script(&app, "three");
    wait_for_body(&host.addr, "/", "three", Duration::from_secs(180)).await;
    host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version live") && l.contains("generation=3")
    });
    // The build went into the app's hidden folder, not beside its sources.
    assert!(app.join(".wasm-host/save-app.wasm").is_file());
}

/// A copy of examples/js-app in `dir` with its npm dependencies installed
/// (Hono, from npm's cache after the first run).
fn js_app_copy(dir: &std::path::Path) -> PathBuf {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/js-app");
    let app = dir.join("js-app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    for file in ["package.json", "package-lock.json", "src/index.js"] {
        std::fs::copy(example.join(file), app.join(file)).expect("copy examples/js-app");
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&app)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm ci in a copy of examples/js-app failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app
}

/// js-app's `/boom` answers 500 with the error's message and its place in
/// the app's source (examples/js-app/src/index.js, the `throw`).
async fn boom_says_what_happened(addr: &str) {
    let boom = get(addr, "/boom").await.unwrap();
    assert_eq!(boom.status, 500);
    assert!(
        boom.body.contains("boom: this route always fails"),
        "{}",
        boom.body
    );
    assert!(boom.body.contains("src/index.js:81:9"), "{}", boom.body);
}

fn write_shop_config(
    file: &std::path::Path,
    listen: &str,
    app: &std::path::Path,
    refuse: &str,
    greeting: &str,
) {
    std::fs::write(
        file,
        format!(
            "listen = {listen:?}\nwatch_config = false\n\n[app.shop]\ncomponent = {:?}\nkeyvalue = \"memory\"\n\n[app.shop.config]\nrefuse = {refuse:?}\ngreeting = {greeting:?}\n",
            app.display().to_string()
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_serves_keyvalue_config_hooks_and_work_after_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let app = js_app_copy(dir.path());
    let file = dir.path().join("wasm-host.toml");
    let listen = support::free_addr();
    write_shop_config(&file, &listen, &app, "no", "hi");
    // The config file's own changes are applied by `reload --config` here.
    let host = Host::start_config(&file, &[]);

    let hello = get(&host.addr, "/").await.unwrap();
    assert_eq!(hello.body, "hello from js-app 1.0.0 (generation 1)\n");
    // Key-value state outlives each (fresh) instance.
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "2\n");
    // wasi:config values from the config file.
    assert_eq!(
        get(&host.addr, "/config/greeting").await.unwrap().body,
        "hi\n"
    );
    assert_eq!(get(&host.addr, "/config/nope").await.unwrap().status, 404);
    // Work after the response (`waitUntil`) runs to the end.
    let accepted = get(&host.addr, "/work?ms=200").await.unwrap();
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    wait_for_body(&host.addr, "/jobs", "1 jobs done", Duration::from_secs(10)).await;
    host.wait_log("job done: 200 ms", Duration::from_secs(5));
    // An uncaught error answers 500 saying what it was.
    boom_says_what_happened(&host.addr).await;

    // The init hook refuses a version: the reload says why, generation 1
    // keeps serving.
    write_shop_config(&file, &listen, &app, "yes", "hi");
    let refused = host.ctl(&["reload", "--config"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    // Said once, not once per layer of the error.
    assert_eq!(said.matches("refuse=yes").count(), 1, "{said}");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, hello.body);

    // Accepted with new settings: the new generation goes live, the old one
    // ran its drain hook (which wrote to the shared bucket), the counter
    // carried on.
    write_shop_config(&file, &listen, &app, "no", "hello");
    host.ctl_ok(&["reload", "--config"]);
    wait_for_body(
        &host.addr,
        "/config/greeting",
        "hello",
        Duration::from_secs(60),
    )
    .await;
    wait_for_body(
        &host.addr,
        "/drained",
        "drained_gen_1 ",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "3\n");
    host.wait_log("init: js-app 1.0.0 generation", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_app_built_for_reuse_serves_request_after_request_on_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let app = js_app_copy(dir.path());
    // Asking for reuse makes `serve DIR` build with `--reuse`: the bundle
    // answers wasi:http/incoming-handler itself.
    let host = Host::start(&app, &["--reuse-instances", "20", "--keyvalue", "memory"]);
    let loaded = host.wait_log("version loaded", Duration::from_secs(300));
    assert!(loaded.contains("built_for_reuse=true"), "{loaded}");
    // The build trimmed componentize-js's WASI bindings (bindings.mjs): a
    // componentize-js whose bindings it does not know builds untrimmed, and
    // this says so.
    let built = host.log_lines(&["build.mjs: wrote"]);
    assert!(
        built
            .iter()
            .any(|line| line.contains("WASI bindings trimmed")),
        "{built:?}"
    );
    // Served first on quickly compiled code; the optimized copy starts with
    // instances of its own, so count on that one.
    host.wait_log("version optimized", Duration::from_secs(300));

    // One instance answers in sequence until it has served its 20.
    let mut seen = Vec::new();
    for _ in 0..25 {
        let answer = get(&host.addr, "/seen").await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        seen.push(answer.body.trim().parse::<u32>().unwrap());
    }
    let expected: Vec<u32> = (1..=20).chain(1..=5).collect();
    assert_eq!(seen, expected);

    // Bodies both ways, headers, and a route's status, on a reused instance.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let echo = support::send_with(
        &host.addr,
        "POST",
        "/echo",
        &[("content-type", "application/x-test")],
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(echo.status, 200);
    assert_eq!(echo.headers["content-type"], "application/x-test");
    assert!(echo.body == big, "the echoed body differs");
    // A body given as a stream is read chunk by chunk (a string or bytes
    // are written as they were given).
    let streamed = get(&host.addr, "/stream").await.unwrap();
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body, "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(get(&host.addr, "/nowhere").await.unwrap().status, 404);
    // An uncaught error answers 500 with what happened, and the instance
    // serves on.
    boom_says_what_happened(&host.addr).await;
    // `/seen` counts only itself: the sixth on this instance.
    let after = get(&host.addr, "/seen").await.unwrap();
    assert_eq!(after.body, "6\n", "the instance did not serve on");
    // Work after the response runs to its end on a reused instance too.
    for _ in 0..3 {
        let accepted = get(&host.addr, "/work?ms=100").await.unwrap();
        assert_eq!(accepted.status, 202, "{}", accepted.body);
    }
    wait_for_body(&host.addr, "/jobs", "3 jobs done", Duration::from_secs(10)).await;
    assert!(host.log_lines(&["instance reuse turned off"]).is_empty());
}
