//! Under systemd the daemon logs to journald natively, so that each event
//! keeps its priority (`journalctl -p err`) and its fields.

mod common;

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

use common::daemon::{command, Knobs, Setup, LIMIT};

/// journald's native socket, where tracing-journald sends every event.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// One journal entry in the native protocol: `KEY=value` lines, or `KEY`, a
/// little-endian u64 length and the raw value for values with newlines.
fn parse_entry(mut bytes: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !bytes.is_empty() {
        let end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
        let line = &bytes[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            bytes = &bytes[(end + 1).min(bytes.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &bytes[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            fields.insert(key, value);
            bytes = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

/// Removes the socket (and the directories this test made) when dropped.
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_errors_reach_journald_with_their_priority_and_fields() {
    // Stand in for journald at its fixed path. Only possible where no
    // journald runs and we may create it (root in a container, as in CI).
    let socket_path = Path::new(JOURNAL_SOCKET);
    let mut made = Vec::new();
    for dir in ["/run/systemd", "/run/systemd/journal"] {
        if std::fs::create_dir(dir).is_ok() {
            made.push(dir.into());
        }
    }
    // A socket left behind by a killed run of this test answers nobody:
    // take its place. A live journald (or a running copy of this test) answers.
    if std::os::unix::net::UnixDatagram::unbound()
        .and_then(|probe| probe.connect(socket_path))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    {
        let _ = std::fs::remove_file(socket_path);
    }
    let journal = match tokio::net::UnixDatagram::bind(socket_path) {
        Ok(socket) => socket,
        Err(error) => {
            drop(Cleanup(made.into_iter().rev().collect()));
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot stand in for journald at {JOURNAL_SOCKET}: {error}"
            );
            eprintln!("skipped: cannot stand in for journald at {JOURNAL_SOCKET}: {error}");
            return;
        }
    };
    made.push(socket_path.into());
    let _cleanup = Cleanup(made.into_iter().rev().collect());

    // A daemon whose token the API refuses: an ERROR at the first poll.
    let sim = common::default_sim();
    let knobs = Knobs {
        log_format: "auto",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[], knobs);
    std::fs::write(setup.dir.path().join("token"), "not-the-token\n").expect("token");

    // systemd sets JOURNAL_STREAM to the DEV:INODE of the stream it gave us
    // as stderr; here that stream is a pipe.
    let (mut stderr_reader, stderr_writer) = std::io::pipe().expect("pipe");
    let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(
        stderr_writer.try_clone().expect("dup"),
    ))
    .metadata()
    .expect("fstat");
    let mut daemon = command(&setup.config_path(), &["run"]);
    daemon
        .env("JOURNAL_STREAM", format!("{}:{}", pipe.dev(), pipe.ino()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_writer));
    let mut child = daemon.spawn().expect("daemon starts");
    // Our copy of the pipe's write end goes with the command, so the reader
    // sees the end of the stream once the child is gone.
    drop(daemon);

    let until = tokio::time::Instant::now() + LIMIT;
    let mut entries = Vec::new();
    let refused = loop {
        let mut buf = vec![0u8; 64 * 1024];
        let received = tokio::time::timeout_at(until, journal.recv(&mut buf))
            .await
            .expect("no credentials error reached the journal")
            .expect("recv");
        let entry = parse_entry(&buf[..received]);
        let found = entry
            .get("MESSAGE")
            .is_some_and(|m| m.contains("refused our credentials"));
        entries.push(entry.clone());
        if found {
            break entry;
        }
    };
    let _ = child.start_kill();
    let _ = child.wait().await;

    assert_eq!(
        refused.get("PRIORITY").map(String::as_str),
        Some("3"),
        "{refused:?}"
    );
    assert_eq!(
        refused.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("callwarden")
    );
    assert_eq!(refused.get("ACCOUNT").map(String::as_str), Some("default"));
    // Informational events are there too, at a lower priority.
    assert!(
        entries
            .iter()
            .any(|e| e.get("PRIORITY").map(String::as_str) == Some("5")),
        "no info events: {entries:?}"
    );
    // Nothing was duplicated onto stderr.
    let stderr = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = stderr_reader.read_to_string(&mut text);
        text
    });
    let stderr = tokio::time::timeout(LIMIT, stderr)
        .await
        .expect("stderr closes")
        .expect("reader");
    assert!(
        !stderr.contains("refused our credentials"),
        "logged to stderr as well: {stderr}"
    );
    // The token never reaches the journal either.
    for entry in &entries {
        assert!(
            entry.values().all(|v| !v.contains("not-the-token")),
            "{entry:?}"
        );
    }
}
