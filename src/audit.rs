//! The audit log `STATE/audit.jsonl`: one JSON object per line, appended and
//! flushed to disk before the action it describes, and read back on start to
//! resume pending decisions and never hang up a call twice.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub call: Option<serde_json::Value>,
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
}

/// The append-only audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotate_bytes: u64,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating) `dir/audit.jsonl` for appending.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_rotation(dir, DEFAULT_ROTATE_BYTES)
    }

    /// Opens with a custom rotation size (tests).
    pub fn open_with_rotation(dir: &Path, rotate_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(AUDIT_FILE);
        let file = open_append(&path)?;
        Ok(Self {
            path,
            rotate_bytes,
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("audit log lock poisoned"))?;
        file.write_all(&line)?;
        file.sync_data()?;
        if file.metadata()?.len() >= self.rotate_bytes {
            self.rotate(&mut file)?;
        }
        Ok(())
    }

    // Renames keep every line: the current file becomes `.1` only after its
    // last record is synced, and a fresh file takes its place.
    fn rotate(&self, file: &mut File) -> io::Result<()> {
        for n in (1..ROTATED_FILES_KEPT).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        *file = open_append(&self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
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

/// Replays the log in `dir`: which calls were hung up, which intents are open.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let (records, bad_lines) = read_all(dir)?;
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    let mut hung_up = HashSet::new();
    for record in records {
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
        }
    }

    #[test]
    fn replay_finds_hung_up_and_pending_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&record("a", Event::Intent, None)).unwrap();
        log.append(&record("a", Event::Outcome, Some(Outcome::Ok)))
            .unwrap();
        log.append(&record("b", Event::Intent, None)).unwrap();
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
    fn rotation_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with_rotation(dir.path(), 600).unwrap();
        for i in 0..40 {
            log.append(&record(&format!("c{i}"), Event::Intent, None))
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
}
