//! `wasm-host logs`: prints the end of apps' log files and, with `-f`,
//! follows them across rotations.
//!
//! Reads files only; it finds them through the directory the running host
//! reports, and never talks to an app.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often a followed file is checked for growth.
const POLL: Duration = Duration::from_millis(200);

/// One followed file.
struct Followed {
    app: String,
    path: PathBuf,
    /// Bytes read so far, and the inode they were read from.
    offset: u64,
    inode: u64,
    partial: String,
}

/// Prints the last `lines` lines of each app's file (prefixed with the app
/// when there are several); with `follow`, keeps printing what is added
/// until the process is stopped.
pub async fn run(files: Vec<(String, PathBuf)>, lines: usize, follow: bool) -> Result<()> {
    let prefix = files.len() > 1;
    let mut followed = Vec::new();
    for (app, path) in files {
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let all: Vec<&str> = text.lines().collect();
        for line in &all[all.len().saturating_sub(lines)..] {
            print_line(&app, line, prefix);
        }
        let meta = std::fs::metadata(&path).ok();
        followed.push(Followed {
            app,
            path,
            offset: text.len() as u64,
            inode: meta.map(|m| m.ino()).unwrap_or(0),
            partial: String::new(),
        });
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(POLL).await;
        for file in &mut followed {
            for line in file.read_new() {
                print_line(&file.app, &line, prefix);
            }
        }
    }
}

impl Followed {
    /// Complete lines added since the last read; starts over on a file
    /// that was rotated (new inode) or truncated.
    fn read_new(&mut self) -> Vec<String> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        if meta.ino() != self.inode || meta.len() < self.offset {
            (self.inode, self.offset) = (meta.ino(), 0);
        }
        if meta.len() == self.offset {
            return Vec::new();
        }
        let mut added = String::new();
        let read = std::fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.read_to_string(&mut added)
        });
        let Ok(n) = read else { return Vec::new() };
        self.offset += n as u64;
        self.partial.push_str(&added);
        let mut complete: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = complete.pop().unwrap_or_default();
        complete
    }
}

fn print_line(app: &str, line: &str, prefix: bool) {
    if prefix {
        println!("{app} | {line}");
    } else {
        println!("{line}");
    }
}
