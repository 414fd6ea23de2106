//! Faults that used to take the whole host down, driven through the real
//! binary: guests that run out of memory must give it back, and a damaged
//! file in the code cache must be refused and compiled again, never run.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use support::{Host, get, write_version};

const MIB: u64 = 1 << 20;

/// The host's resident memory, as `status` reports it.
fn rss(host: &Host) -> u64 {
    host.status_json()["host"]["rss_bytes"]
        .as_u64()
        .expect("status reports rss_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_guests_that_run_out_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let max_memory = 64 * MIB;
    let host = Host::start(&app, &["--no-watch", "--max-memory", "64MiB"]);

    // Warm up, so the first instance's own cost is in the baseline.
    for _ in 0..3 {
        assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
    }
    let before = rss(&host);

    // Each of these grows its memory to the limit and fails. The pool used
    // to keep every one of those memories resident until a batch of 128
    // regions piled up: 12 x 64 MiB here, 6 x 512 MiB OOM-killed a host
    // with 3 GB.
    let requests = 12;
    for _ in 0..requests {
        let answer = get(&host.addr, "/oom").await.unwrap();
        assert_eq!(answer.status, 500, "{answer:?}");
    }

    // The last memory is returned when its store is dropped, which may come
    // just after the answer: wait a little for it, no more.
    let bound = requests * max_memory / 4;
    let deadline = Instant::now() + Duration::from_secs(5);
    let grown = loop {
        let grown = rss(&host).saturating_sub(before);
        if grown < bound || Instant::now() > deadline {
            break grown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "resident memory grew {} MiB over {requests} requests that ran out of memory",
        grown / MIB
    );
    assert!(
        grown < bound,
        "{requests} requests that ran out of {} MiB left {} MiB resident (bound {} MiB)",
        max_memory / MIB,
        grown / MIB,
        bound / MIB
    );
    // And the host serves on.
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
}

/// The one code file in the cache under `cache`, if there is one.
fn cached_code(cache: &Path) -> Option<PathBuf> {
    let engines = std::fs::read_dir(cache.join("code")).ok()?;
    let mut found = Vec::new();
    for engine in engines {
        for file in std::fs::read_dir(engine.ok()?.path()).ok()? {
            let path = file.ok()?.path();
            if path.extension().is_some_and(|e| e == "cwasm") {
                found.push(path);
            }
        }
    }
    assert!(found.len() <= 1, "{found:?}");
    found.pop()
}

/// The digest file beside a code file.
fn digest_file(code: &Path) -> PathBuf {
    let mut name = code.as_os_str().to_owned();
    name.push(".sha256");
    name.into()
}

/// Waits (at most 30 s) until the code file at `code` is back, with a
/// digest file naming its SHA-256, and returns its bytes.
fn wait_for_good_file(code: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let (Ok(bytes), Ok(check)) = (
            std::fs::read(code),
            std::fs::read_to_string(digest_file(code)),
        ) {
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if check.split_whitespace().next() == Some(digest.as_str()) {
                return bytes;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} was not stored again with its digest",
            code.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The byte range of the `.text` section (the machine code) of an ELF
/// file, which a `.cwasm` is.
fn text_section(elf: &[u8]) -> Option<std::ops::Range<usize>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let headers = usize::try_from(u64_at(0x28)?).ok()?;
    let size = usize::from(u16_at(0x3a)?);
    let count = usize::from(u16_at(0x3c)?);
    let names_index = usize::from(u16_at(0x3e)?);
    let section = |i: usize| headers + i * size;
    let names = usize::try_from(u64_at(section(names_index) + 0x18)?).ok()?;
    (0..count).find_map(|i| {
        let name_at = names
            + usize::try_from(u32::from_le_bytes(
                elf.get(section(i)..section(i) + 4)?.try_into().ok()?,
            ))
            .ok()?;
        if elf.get(name_at..name_at + 6)? != b".text\0" {
            return None;
        }
        let offset = usize::try_from(u64_at(section(i) + 0x18)?).ok()?;
        let len = usize::try_from(u64_at(section(i) + 0x20)?).ok()?;
        Some(offset..offset + len)
    })
}

/// Stops `host` the way an operator would, and waits for it to exit.
fn stop(host: &mut Host) {
    host.signal(libc::SIGTERM);
    let status = host.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", host.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_cached_code_is_refused_logged_and_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let cache = dir.path().join("cache");
    let args = [
        "--no-watch",
        "--no-tier-up",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];

    // A first host compiles and stores the code, with its digest beside it.
    let mut first = Host::start(&app, &args);
    assert_eq!(get(&first.addr, "/").await.unwrap().body, "hello from v1\n");
    stop(&mut first);
    let code = cached_code(&cache).expect("the first host cached its code");
    let good = wait_for_good_file(&code);

    // Flip bytes in the middle of the machine code, as a bad disk would.
    let text = text_section(&good).unwrap_or(0..good.len());
    let middle = text.start + text.len() / 2;
    let mut damaged = good.clone();
    for byte in &mut damaged[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&code, &damaged).unwrap();

    // The next host refuses the file, says which and why, serves from a
    // fresh compile, and stores a good file again.
    let mut second = Host::start(&app, &args);
    assert_eq!(
        get(&second.addr, "/").await.unwrap().body,
        "hello from v1\n"
    );
    let name = code.file_name().unwrap().to_str().unwrap();
    let refused = second.log_lines(&["cached code refused", name]);
    assert!(
        refused.len() == 1 && refused[0].contains("do not match the digest"),
        "{}",
        second.log_text()
    );
    let stored = wait_for_good_file(&code);
    assert_ne!(stored, damaged);
    stop(&mut second);

    // Code without its digest beside it is not trusted either.
    std::fs::remove_file(digest_file(&code)).unwrap();
    let mut third = Host::start(&app, &args);
    assert_eq!(get(&third.addr, "/").await.unwrap().body, "hello from v1\n");
    let refused = third.log_lines(&["cached code refused", name]);
    assert!(
        refused.len() == 1 && refused[0].contains("no digest file"),
        "{}",
        third.log_text()
    );
    wait_for_good_file(&code);
    stop(&mut third);

    // The rewritten file is used as it is: a compile would store a new
    // file (a new inode, renamed into place).
    let inode = std::fs::metadata(&code).unwrap().ino();
    let fourth = Host::start(&app, &args);
    assert_eq!(
        get(&fourth.addr, "/").await.unwrap().body,
        "hello from v1\n"
    );
    assert!(fourth.log_lines(&["cached code refused"]).is_empty());
    assert_eq!(std::fs::metadata(&code).unwrap().ino(), inode);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_fills_the_cache_that_a_host_then_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "precompiled");
    let compile = |file: &Path| {
        std::process::Command::new(support::BIN)
            .arg("compile")
            .arg(file)
            .arg("--cache-dir")
            .arg(&cache)
            .output()
            .expect("run wasm-host compile")
    };
    let first = compile(&app);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        said.contains("compiled into") && said.contains("WASI 0.2"),
        "{said}"
    );
    let again = compile(&app);
    assert!(String::from_utf8_lossy(&again.stdout).contains("was already in"));

    let host = Host::start(
        &app,
        &["--no-watch", "--cache-dir", cache.to_str().unwrap()],
    );
    let loaded = host.wait_log("version loaded", Duration::from_secs(10));
    assert!(loaded.contains("code_from_disk=true"), "{loaded}");
    // A Rust guest's memory starts small: the pool resets written pages.
    assert!(
        loaded.contains("memory_reset=\"written-pages\""),
        "{loaded}"
    );
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello from precompiled\n"
    );

    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not wasm at all").unwrap();
    let refused = compile(&broken);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not a WebAssembly file"), "{why}");
}
