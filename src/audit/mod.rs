//! The audit log `STATE/audit.jsonl`: one JSON object per line. Intents are
//! on disk before the action they describe; every record is read back on
//! start to resume pending decisions and never hang up a call twice. The
//! records and replay live here; [`writer`] owns the file.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::Call;

pub mod writer;

use writer::Request;
pub use writer::{Disk, Durable, FileDisk, Health, Options, WriteError};

/// The file name inside the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// Rotate when the log grows past this many bytes.
pub const DEFAULT_ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// How many rotated files to keep (`audit.jsonl.1` .. `.N`).
pub const ROTATED_FILES_KEPT: u32 = 5;

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A decision, written before it is acted on.
    Intent,
    /// How an intent ended.
    Outcome,
    /// A spoken warning (or its skip).
    Warn,
    /// An operator spared a call.
    Pardon,
    /// The breaker held a hangup.
    Breaker,
    /// An operator let a held batch through.
    Override,
}

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The API confirmed the hangup (or the Speak).
    Ok,
    /// The call was already gone.
    Gone,
    /// Attempts ran out, or the API refused for good.
    Failed,
    /// Dry run: logged, not done.
    DryRun,
    /// A protected number was on a leg the action would end.
    Protected,
    /// Held by the breaker.
    Breaker,
    /// An operator spared the call.
    Pardoned,
    /// Not done, for the reason given (e.g. too late to warn).
    Skipped,
}

impl Outcome {
    /// The word used in the log and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Gone => "gone",
            Self::Failed => "failed",
            Self::DryRun => "dry_run",
            Self::Protected => "protected",
            Self::Breaker => "breaker",
            Self::Pardoned => "pardoned",
            Self::Skipped => "skipped",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When it was written.
    pub ts: DateTime<Utc>,
    /// The account name.
    pub account: String,
    /// The call the decision is about.
    pub call_uuid: String,
    /// What kind of record.
    pub event: Event,
    /// Every rule that matched the call.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The winning rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// What was (to be) done: `hangup:call`, `hangup:whole`, `hangup:b-legs`, `warn`.
    #[serde(default)]
    pub action: Option<String>,
    /// How it ended (outcome, breaker, pardon and warn records).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Requests made for it.
    #[serde(default)]
    pub attempts: u32,
    /// Whether this was a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Why, in words.
    #[serde(default)]
    pub reason: String,
    /// The call details from the last fetch.
    #[serde(default)]
    pub call: Option<CallDetails>,
    /// With `[ha]`: the lease epoch the decision was taken under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// The call details a record carries: written from the engine's tracked
/// call, shared rather than copied, and read back as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum CallDetails {
    /// The call the engine tracks; its API answer is written as it is.
    Tracked(Arc<Call>),
    /// Read back from the log.
    Read(serde_json::Value),
}

impl CallDetails {
    /// The API's answer, as JSON (a tracked call's is unpacked here, only
    /// when a record is written or read).
    pub fn json(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match self {
            Self::Tracked(call) => std::borrow::Cow::Owned(call.raw_value()),
            Self::Read(json) => std::borrow::Cow::Borrowed(json),
        }
    }
}

impl Serialize for CallDetails {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CallDetails {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Self::Read)
    }
}

/// What the log says about earlier runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// `(account, call_uuid)` of calls whose hangup was confirmed: never again.
    pub hung_up: HashSet<(String, String)>,
    /// `(account, call_uuid)` of intents without an outcome: re-check first.
    pub pending: HashSet<(String, String)>,
    /// Lines that were not valid records (e.g. torn by a crash).
    pub bad_lines: usize,
    /// The `request_id`s of manual hangups already acted on: a replay of
    /// one after a restart must not act again.
    pub request_ids: HashSet<String>,
}

/// The append-only audit log: a handle on its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    requests: std::sync::mpsc::Sender<Request>,
    queued: prometheus_client::metrics::gauge::Gauge,
}

impl AuditLog {
    /// Opens (creating) `dir/audit.jsonl` with the default options.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// Opens with a custom rotation size (tests).
    pub fn open_with_rotation(dir: &Path, rotate_bytes: u64) -> io::Result<Self> {
        Self::open_with(
            dir,
            Options {
                rotate_bytes,
                ..Options::default()
            },
        )
    }

    /// Opens (creating) `dir/audit.jsonl`, closes off a torn last line, and
    /// starts its writer.
    pub fn open_with(dir: &Path, options: Options) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(AUDIT_FILE);
        check_regular(&path)?;
        if let Some(torn) = close_torn_tail(&path)? {
            tracing::warn!(
                file = %path.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                "the audit log ended in a torn line (a crash or a full disk mid-write); closed it off so the next record starts on a line of its own"
            );
        }
        let disk = FileDisk::open(&path)?;
        Self::with_disk(path, disk, options)
    }

    /// A log written through `disk` (tests inject a slow or failing one).
    pub fn with_disk(path: PathBuf, disk: impl Disk, options: Options) -> io::Result<Self> {
        let queued = options.health.queued.clone();
        let requests = writer::spawn(disk, options)?;
        Ok(Self {
            path,
            requests,
            queued,
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record that must be on disk before what it describes is
    /// done (a hangup intent); the answer resolves once it is.
    pub fn commit(&self, record: &Record) -> Durable {
        let line = match encode(record) {
            Ok(line) => line,
            Err(error) => return Durable::failed(error),
        };
        let (promise, answer) = tokio::sync::oneshot::channel();
        let request = Request::Append {
            line,
            promise: Some(promise),
        };
        match self.send(request) {
            Ok(()) => Durable::waiting(answer),
            Err(()) => Durable::failed(WriteError::Stopped),
        }
    }

    fn send(&self, request: Request) -> Result<(), ()> {
        self.queued.inc();
        self.requests.send(request).map_err(|_| {
            self.queued.dec();
        })
    }

    /// Queues a record that nothing waits for (an outcome, a warning, a
    /// pardon): written in order, synced with the next batch that needs a
    /// sync or within the linger. A failure is logged and counted by the
    /// writer.
    pub fn append(&self, record: &Record) {
        match encode(record) {
            Ok(line) => {
                let request = Request::Append {
                    line,
                    promise: None,
                };
                if self.send(request).is_err() {
                    tracing::error!(file = %self.path.display(), call = %record.call_uuid,
                        "the audit writer has stopped: a record was not written");
                }
            }
            Err(error) => {
                tracing::error!(call = %record.call_uuid, %error, "cannot encode an audit record");
            }
        }
    }

    /// Resolves once everything queued before it is on disk.
    pub fn flush(&self) -> Durable {
        let (promise, answer) = tokio::sync::oneshot::channel();
        match self.send(Request::Flush(promise)) {
            Ok(()) => Durable::waiting(answer),
            Err(()) => Durable::failed(WriteError::Stopped),
        }
    }
}

/// Refuses an audit log that is not a regular file: a device or a pipe
/// would swallow records (`/dev/null`) or never end when read back.
fn check_regular(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn encode(record: &Record) -> Result<Vec<u8>, WriteError> {
    let mut line = serde_json::to_vec(record).map_err(|error| WriteError::Io {
        file: AUDIT_FILE.to_owned(),
        message: error.to_string(),
    })?;
    line.push(b'\n');
    Ok(line)
}

/// A last line that had no newline when the log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Where the torn line starts, in bytes from the start of the file.
    pub offset: u64,
    /// How long it is.
    pub bytes: u64,
}

/// Ends a torn last line with a newline (and syncs), so the next record
/// starts on a line of its own and replay skips the fragment as one bad
/// line. Appending, not cutting, is the safe choice: the fragment stays for
/// an operator to read, and nothing that was written is destroyed.
pub fn close_torn_tail(path: &Path) -> io::Result<Option<TornTail>> {
    let mut file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let Some(offset) = torn_line_start(&mut file, len)? else {
        return Ok(None);
    };
    file.write_all(b"\n")?;
    file.sync_data()?;
    Ok(Some(TornTail {
        offset,
        bytes: len - offset,
    }))
}

/// Where the last line starts if it has no newline; `None` if the file is
/// empty or ends with one. Reads backwards a block at a time.
fn torn_line_start(file: &mut File, len: u64) -> io::Result<Option<u64>> {
    const BLOCK: u64 = 8192;
    let mut end = len;
    let mut block = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        block.resize(usize::try_from(end - start).unwrap_or(0), 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        if end == len && block.last() == Some(&b'\n') {
            return Ok(None);
        }
        if let Some(i) = block.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + i as u64 + 1));
        }
        end = start;
    }
    Ok((len > 0).then_some(0))
}

/// The name of the `n`th rotated file, shared by the writer and the reader.
pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Reads every record in `dir` (rotated files first, oldest first). Torn or
/// invalid lines are counted and skipped.
pub fn read_all(dir: &Path) -> io::Result<(Vec<Record>, usize)> {
    let path = dir.join(AUDIT_FILE);
    let mut files: Vec<PathBuf> = (1..=ROTATED_FILES_KEPT)
        .rev()
        .map(|n| rotated(&path, n))
        .collect();
    files.push(path);
    let mut records = Vec::new();
    let mut bad = 0;
    for file in files {
        check_regular(&file)?;
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in reader.split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Record>(&line) {
                Ok(record) => records.push(record),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((records, bad))
}

/// The `request_id` a manual hangup's reason ends with, if it has one
/// (`... (request_id ID)`, as the engine writes it).
pub fn manual_request_id(reason: &str) -> Option<String> {
    let (_, rest) = reason.rsplit_once(" (request_id ")?;
    rest.strip_suffix(')').map(str::to_owned)
}

/// Replays the log in `dir`: which calls were hung up, which intents are open.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let (records, bad_lines) = read_all(dir)?;
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    let mut hung_up = HashSet::new();
    let mut request_ids = HashSet::new();
    for record in records {
        if record.rule.as_deref() == Some(crate::engine::MANUAL_RULE) {
            request_ids.extend(manual_request_id(&record.reason));
        }
        let key = (record.account.clone(), record.call_uuid.clone());
        match record.event {
            Event::Intent if !record.dry_run => {
                *open.entry(key).or_default() += 1;
            }
            Event::Outcome => {
                if let Some(n) = open.get_mut(&key) {
                    *n = n.saturating_sub(1);
                }
                if record.outcome == Some(Outcome::Ok) && !record.dry_run {
                    hung_up.insert(key);
                }
            }
            _ => {}
        }
    }
    let pending = open
        .into_iter()
        .filter(|(key, n)| *n > 0 && !hung_up.contains(key))
        .map(|(key, _)| key)
        .collect();
    Ok(Replay {
        hung_up,
        pending,
        bad_lines,
        request_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uuid: &str, event: Event, outcome: Option<Outcome>) -> Record {
        Record {
            ts: Utc::now(),
            account: "default".into(),
            call_uuid: uuid.into(),
            event,
            rules: vec!["r".into()],
            rule: Some("r".into()),
            action: Some("hangup:call".into()),
            outcome,
            attempts: 1,
            dry_run: false,
            reason: String::new(),
            call: None,
            epoch: None,
        }
    }

    #[test]
    fn replay_finds_hung_up_and_pending_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.commit(&record("a", Event::Intent, None))
            .wait()
            .unwrap();
        log.append(&record("a", Event::Outcome, Some(Outcome::Ok)));
        log.commit(&record("b", Event::Intent, None))
            .wait()
            .unwrap();
        drop(log);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .unwrap();
        file.write_all(b"{\"ts\":\"2026-").unwrap();
        let replay = replay(dir.path()).unwrap();
        assert!(replay.hung_up.contains(&("default".into(), "a".into())));
        assert!(replay.pending.contains(&("default".into(), "b".into())));
        assert!(!replay.pending.contains(&("default".into(), "a".into())));
        assert_eq!(replay.bad_lines, 1);
    }

    #[test]
    fn manual_request_ids_are_read_back_from_reasons() {
        let reason = "manual hangup requested by 127.0.0.1: fraud (x) (request_id alert-1)";
        assert_eq!(manual_request_id(reason).as_deref(), Some("alert-1"));
        let protected = format!("leg a has protected number 911; {reason}");
        assert_eq!(manual_request_id(&protected).as_deref(), Some("alert-1"));
        assert_eq!(
            manual_request_id("manual hangup requested by 127.0.0.1: fraud"),
            None
        );
    }

    #[test]
    fn rotation_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with_rotation(dir.path(), 600).unwrap();
        for i in 0..40 {
            log.commit(&record(&format!("c{i}"), Event::Intent, None))
                .wait()
                .unwrap();
        }
        assert!(dir.path().join("audit.jsonl.1").exists());
        let (records, bad) = read_all(dir.path()).unwrap();
        assert_eq!(bad, 0);
        let uuids: Vec<_> = records.iter().map(|r| r.call_uuid.clone()).collect();
        // Five rotated files of ~2 records each cannot hold 40: the oldest go,
        // but what is kept is in order and contiguous up to the newest.
        let last = uuids.last().cloned();
        assert_eq!(last.as_deref(), Some("c39"));
        let first: usize = uuids[0][1..].parse().unwrap();
        let expected: Vec<String> = (first..40).map(|i| format!("c{i}")).collect();
        assert_eq!(uuids, expected);
    }

    #[test]
    fn a_torn_tail_is_closed_off_and_the_next_record_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let whole = serde_json::to_string(&record("a", Event::Intent, None)).unwrap();
        let fragment = "{\"ts\":\"2026-";
        std::fs::write(&path, format!("{whole}\n{fragment}")).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.commit(&record("b", Event::Intent, None))
            .wait()
            .unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("\n{fragment}\n{{")),
            "the fragment is kept on a line of its own: {text}"
        );
        let replay = replay(dir.path()).unwrap();
        assert!(replay.pending.contains(&("default".into(), "b".into())));
        assert_eq!(replay.bad_lines, 1);
    }

    #[test]
    fn the_torn_line_start_is_found_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cases: [(&[u8], Option<u64>); 5] = [
            (b"", None),
            (b"a\n", None),
            (b"abc", Some(0)),
            (b"a\nbc", Some(2)),
            (b"a\n\n", None),
        ];
        for (bytes, expected) in cases {
            std::fs::write(&path, bytes).unwrap();
            let torn = close_torn_tail(&path).unwrap().map(|t| t.offset);
            assert_eq!(torn, expected, "{bytes:?}");
        }
        let mut long = b"x\n".to_vec();
        long.extend(std::iter::repeat_n(b'y', 20_000));
        std::fs::write(&path, &long).unwrap();
        let torn = close_torn_tail(&path).unwrap().unwrap();
        assert_eq!((torn.offset, torn.bytes), (2, 20_000));
        assert_eq!(close_torn_tail(&path).unwrap(), None, "closed off once");
    }

    #[test]
    fn an_audit_log_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join(AUDIT_FILE)).unwrap();
        let error = AuditLog::open(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("is not a regular file"),
            "{error}"
        );
        assert!(read_all(dir.path()).is_err());
    }
}
