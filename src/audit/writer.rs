//! The audit writer: one thread owns the log file and commits records in
//! groups, so a slow disk delays only the hangups that wait for their own
//! intent, never the engine loop, its timers or its polls.
//!
//! Callers queue records over a channel. The thread drains everything
//! queued, writes it with one `write`, and makes it durable with one
//! `fdatasync` for the whole batch. Records that need to be on disk before
//! something happens (hangup intents) come with a [`Durable`] promise and
//! force the sync of their batch; every other record (outcomes, warnings,
//! pardons) is written at once, so readers see it, and rides along with the
//! next sync, at the latest [`Options::linger`] later. A crash in that gap
//! loses only outcome-like records, and a lost outcome leaves an open
//! intent, which the next start re-checks with a read before any hangup.
//!
//! On a failed write or sync the file is cut back to its last synced
//! length (so no torn line is left for the next record to join), the
//! waiting promises fail, and records that did not need a promise are
//! written again later. The [`Disk`] trait is the seam that lets tests
//! stall or fail the sync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// How long a record without a promise may wait for its sync.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);

/// How long after a failure the writer tries the disk again on its own.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How often a lasting failure is logged again.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Records kept in memory for a retry after a failure, at most (bytes).
const MAX_RETRY_BYTES: usize = 8 * 1024 * 1024;

/// Requests taken into one batch, at most.
const MAX_BATCH: usize = 4096;

/// The file operations the writer needs: the seam for tests.
pub trait Disk: Send + 'static {
    /// Appends `bytes` at the end.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's length in bytes now.
    fn size(&mut self) -> io::Result<u64>;
    /// Starts a new file, keeping the old one; called only right after a
    /// sync, so every line is durable before it moves.
    fn rotate(&mut self) -> io::Result<()>;
    /// What to name in messages (the path).
    fn name(&self) -> String;
}

/// Why a record is not on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The write or the sync failed (a full disk, an I/O error).
    #[error("cannot write the audit log {file}: {message}")]
    Io {
        /// The log file.
        file: String,
        /// The operating system's words.
        message: String,
    },
    /// The writer thread is gone.
    #[error("the audit writer has stopped")]
    Stopped,
}

/// The writer's metrics: shared counters, registered by [`crate::metrics`].
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Failed writes or syncs.
    pub write_errors: Counter,
    /// 1 from a failed write or sync until the next good sync.
    pub failing: Gauge,
    /// `fdatasync` calls made.
    pub syncs: Counter,
    /// Records (and flushes) queued and not yet handled by the writer.
    pub queued: Gauge,
}

/// How the writer behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rotate when the log grows past this many bytes.
    pub rotate_bytes: u64,
    /// Longest wait before records without a promise are synced.
    pub linger: Duration,
    /// Where failures and syncs are counted.
    pub health: Health,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rotate_bytes: super::DEFAULT_ROTATE_BYTES,
            linger: DEFAULT_LINGER,
            health: Health::default(),
        }
    }
}

type Promise = oneshot::Sender<Result<(), WriteError>>;

/// What callers send the writer.
pub(super) enum Request {
    /// One line (with its newline); with a promise, it forces a sync.
    Append {
        line: Vec<u8>,
        promise: Option<Promise>,
    },
    /// Sync everything written so far.
    Flush(Promise),
}

/// Resolves once a record (or a flush) is on disk, or failed to get there.
#[derive(Debug)]
pub struct Durable(State);

#[derive(Debug)]
enum State {
    Waiting(oneshot::Receiver<Result<(), WriteError>>),
    Failed(Option<WriteError>),
    Done,
}

impl Durable {
    /// A record queued for the group commit: done when its sync is.
    pub(super) fn waiting(receiver: oneshot::Receiver<Result<(), WriteError>>) -> Self {
        Self(State::Waiting(receiver))
    }

    /// A record that never reached the queue: resolves to its error at once.
    pub(super) fn failed(error: WriteError) -> Self {
        Self(State::Failed(Some(error)))
    }

    /// Already resolved: nothing had to wait for the disk.
    pub fn done() -> Self {
        Self(State::Done)
    }

    /// Waits on this thread; for code outside an async runtime.
    pub fn wait(self) -> Result<(), WriteError> {
        match self.0 {
            State::Waiting(receiver) => {
                receiver.blocking_recv().unwrap_or(Err(WriteError::Stopped))
            }
            State::Failed(error) => Err(error.unwrap_or(WriteError::Stopped)),
            State::Done => Ok(()),
        }
    }
}

impl std::future::Future for Durable {
    type Output = Result<(), WriteError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Waiting(receiver) => std::pin::Pin::new(receiver)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(WriteError::Stopped))),
            State::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(WriteError::Stopped))),
            State::Done => Poll::Ready(Ok(())),
        }
    }
}

/// Starts the writer thread over `disk`; it runs until every sender is gone,
/// then syncs what is left and ends.
pub(super) fn spawn(mut disk: impl Disk, options: Options) -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel();
    let end = disk.size()?;
    let writer = Writer {
        name: disk.name(),
        disk,
        options,
        end,
        synced_end: end,
        unsynced: Vec::new(),
        retry: Vec::new(),
        due: None,
        failing: false,
        failure_logged: None,
    };
    std::thread::Builder::new()
        .name("audit-writer".to_owned())
        .spawn(move || writer.run(rx))?;
    Ok(tx)
}

struct Writer<D> {
    disk: D,
    name: String,
    options: Options,
    /// The file's length after the last good write.
    end: u64,
    /// The file's length at the last good sync.
    synced_end: u64,
    /// Lines without a promise written since the last sync: written again
    /// if that sync fails.
    unsynced: Vec<Vec<u8>>,
    /// Lines without a promise that a failure took back off the file.
    retry: Vec<Vec<u8>>,
    /// When to sync (or retry) even if nothing new comes.
    due: Option<Instant>,
    failing: bool,
    /// When the last failure was logged.
    failure_logged: Option<Instant>,
}

impl<D: Disk> Writer<D> {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match self.due {
                None => match rx.recv() {
                    Ok(request) => Some(request),
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let taken = batch.len() as i64;
            self.commit(batch, false);
            self.options.health.queued.dec_by(taken);
        }
        // Every sender is gone: make what was written durable before ending.
        self.commit(Vec::new(), true);
    }

    /// Writes one batch and, when something waits for it or the linger is
    /// over, syncs it.
    fn commit(&mut self, batch: Vec<Request>, closing: bool) {
        let mut bytes = Vec::new();
        let mut plain: Vec<Vec<u8>> = std::mem::take(&mut self.retry);
        for line in &plain {
            bytes.extend_from_slice(line);
        }
        let mut promises = Vec::new();
        for request in batch {
            match request {
                Request::Append {
                    line,
                    promise: Some(promise),
                } => {
                    bytes.extend_from_slice(&line);
                    promises.push(promise);
                }
                Request::Append {
                    line,
                    promise: None,
                } => {
                    bytes.extend_from_slice(&line);
                    plain.push(line);
                }
                Request::Flush(promise) => promises.push(promise),
            }
        }
        let now = Instant::now();
        let sync = !promises.is_empty()
            || closing
            || self.due.is_some_and(|at| at <= now)
            || (!plain.is_empty() && self.options.linger.is_zero());
        let result = self.write(&bytes).and_then(|()| {
            if sync && self.end != self.synced_end {
                self.options.health.syncs.inc();
                self.disk.sync()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) if sync => {
                self.synced_end = self.end;
                self.unsynced.clear();
                self.due = None;
                if self.failing {
                    self.failing = false;
                    self.failure_logged = None;
                    self.options.health.failing.set(0);
                    tracing::info!(file = %self.name, "the audit log is writable again");
                }
                for promise in promises {
                    let _ = promise.send(Ok(()));
                }
                self.rotate_if_big();
            }
            Ok(()) => {
                if !plain.is_empty() {
                    self.unsynced.extend(plain);
                    self.due.get_or_insert(now + self.options.linger);
                }
            }
            Err(error) => self.fail(&error, plain, promises),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.disk.write_all(bytes)?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn fail(&mut self, error: &io::Error, plain: Vec<Vec<u8>>, promises: Vec<Promise>) {
        let failure = WriteError::Io {
            file: self.name.clone(),
            message: error.to_string(),
        };
        self.options.health.write_errors.inc();
        self.options.health.failing.set(1);
        self.failing = true;
        // No torn or unsynced line may stay for the next record to join.
        match self.disk.truncate(self.synced_end) {
            Ok(()) => self.end = self.synced_end,
            Err(truncate) => {
                tracing::error!(file = %self.name, error = %truncate, offset = self.synced_end,
                    "cannot cut the audit log back after a failed write");
                // Still unknown: the next write goes wherever the end is.
                self.end = self.disk.size().unwrap_or(self.end);
                self.synced_end = self.end;
            }
        }
        let mut retry: Vec<Vec<u8>> = std::mem::take(&mut self.unsynced);
        retry.extend(plain);
        let mut kept = 0usize;
        let mut dropped = 0usize;
        for line in retry {
            if kept + line.len() <= MAX_RETRY_BYTES {
                kept += line.len();
                self.retry.push(line);
            } else {
                dropped += 1;
            }
        }
        // Once when it starts failing, then once a minute: the writer retries
        // every second, and each refused hangup is logged on its own.
        let now = Instant::now();
        if self
            .failure_logged
            .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_EVERY)
        {
            self.failure_logged = Some(now);
            tracing::error!(file = %self.name, %error, waiting = promises.len(),
                kept = self.retry.len(), dropped,
                "cannot write the audit log: hangups stop until it is writable again");
        }
        for promise in promises {
            let _ = promise.send(Err(failure.clone()));
        }
        self.due = (!self.retry.is_empty()).then(|| Instant::now() + RETRY_AFTER_FAILURE);
    }

    fn rotate_if_big(&mut self) {
        if self.end < self.options.rotate_bytes {
            return;
        }
        match self.disk.rotate().and_then(|()| self.disk.size()) {
            Ok(len) => {
                self.end = len;
                self.synced_end = len;
            }
            Err(error) => {
                tracing::error!(file = %self.name, %error, "cannot rotate the audit log");
                self.end = self.disk.size().unwrap_or(self.end);
                self.synced_end = self.end;
            }
        }
    }
}

/// The real log file.
#[derive(Debug)]
pub struct FileDisk {
    path: PathBuf,
    file: File,
}

impl FileDisk {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open_append(path)?,
        })
    }
}

impl Disk for FileDisk {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    // Renames keep every line: the current file becomes `.1` only after its
    // last record is synced, and a fresh file takes its place.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..super::ROTATED_FILES_KEPT).rev() {
            let from = super::rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, super::rotated(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, super::rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Opens the log for appends only, so a write can never overwrite a record.
pub(super) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An in-memory file whose syncs can be held at a gate or made to fail.
    #[derive(Clone, Default)]
    struct MemDisk {
        state: Arc<Mutex<Mem>>,
        gate: Option<Gate>,
    }

    #[derive(Default)]
    struct Mem {
        bytes: Vec<u8>,
        syncs: usize,
        fail: bool,
        fail_sync: bool,
    }

    #[derive(Clone)]
    struct Gate {
        entered: mpsc::Sender<()>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    }

    impl MemDisk {
        fn text(&self) -> String {
            String::from_utf8(self.state.lock().unwrap().bytes.clone()).unwrap()
        }
        fn syncs(&self) -> usize {
            self.state.lock().unwrap().syncs
        }
        fn set_failing(&self, fail: bool) {
            self.state.lock().unwrap().fail = fail;
        }
    }

    impl Disk for MemDisk {
        fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            // A full disk takes half the bytes, then refuses.
            if state.fail {
                let half = bytes.len() / 2;
                state.bytes.extend_from_slice(&bytes[..half]);
                return Err(io::Error::other("no space left on device"));
            }
            state.bytes.extend_from_slice(bytes);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            if let Some(gate) = &self.gate {
                gate.entered.send(()).unwrap();
                gate.release.lock().unwrap().recv().unwrap();
            }
            let mut state = self.state.lock().unwrap();
            if state.fail_sync {
                return Err(io::Error::other("input/output error"));
            }
            state.syncs += 1;
            Ok(())
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.state.lock().unwrap().bytes.truncate(len as usize);
            Ok(())
        }
        fn size(&mut self) -> io::Result<u64> {
            Ok(self.state.lock().unwrap().bytes.len() as u64)
        }
        fn rotate(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn name(&self) -> String {
            "mem".to_owned()
        }
    }

    fn append(tx: &mpsc::Sender<Request>, text: &str, durable: bool) -> Option<Durable> {
        let (promise, answer) = oneshot::channel();
        tx.send(Request::Append {
            line: format!("{text}\n").into_bytes(),
            promise: durable.then_some(promise),
        })
        .unwrap();
        durable.then(|| Durable::waiting(answer))
    }

    fn options(linger: Duration) -> (Options, Health) {
        let health = Health::default();
        let options = Options {
            rotate_bytes: u64::MAX,
            linger,
            health: health.clone(),
        };
        (options, health)
    }

    #[test]
    fn intents_queued_during_one_blocked_sync_share_the_next_sync() {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let disk = MemDisk {
            gate: Some(Gate {
                entered: entered_tx,
                release: Arc::new(Mutex::new(release_rx)),
            }),
            ..MemDisk::default()
        };
        let (options, health) = options(Duration::from_secs(3600));
        let tx = spawn(disk.clone(), options).unwrap();
        let first = append(&tx, "first", true).unwrap();
        entered.recv().unwrap();
        // The first sync is stuck: queue more while it is.
        let later: Vec<Durable> = (0..8)
            .map(|i| append(&tx, &format!("intent {i}"), true).unwrap())
            .collect();
        append(&tx, "an outcome", false);
        release.send(()).unwrap();
        first.wait().unwrap();
        entered.recv().unwrap();
        release.send(()).unwrap();
        for durable in later {
            durable.wait().unwrap();
        }
        assert_eq!(
            disk.syncs(),
            2,
            "one sync for the first, one for the 8 queued"
        );
        assert_eq!(health.syncs.get(), 2);
        assert!(disk.text().ends_with("intent 7\nan outcome\n"));
    }

    #[test]
    fn records_without_a_promise_ride_with_the_next_sync() {
        let disk = MemDisk::default();
        let (options, _) = options(Duration::from_secs(3600));
        let tx = spawn(disk.clone(), options).unwrap();
        for i in 0..5 {
            append(&tx, &format!("outcome {i}"), false);
        }
        append(&tx, "intent", true).unwrap().wait().unwrap();
        assert_eq!(disk.syncs(), 1);
        assert_eq!(disk.text().lines().count(), 6);
    }

    #[test]
    fn records_without_a_promise_are_synced_after_the_linger() {
        let disk = MemDisk::default();
        let (options, _) = options(Duration::from_millis(10));
        let tx = spawn(disk.clone(), options).unwrap();
        append(&tx, "outcome", false);
        let until = Instant::now() + Duration::from_secs(30);
        while disk.syncs() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            disk.syncs(),
            1,
            "no other request came, the linger synced it"
        );
    }

    #[test]
    fn a_failed_write_cuts_the_file_back_fails_the_intent_and_keeps_outcomes() {
        let disk = MemDisk::default();
        let (options, health) = options(Duration::from_secs(3600));
        let tx = spawn(disk.clone(), options).unwrap();
        append(&tx, "intent a", true).unwrap().wait().unwrap();
        append(&tx, "outcome a", false);
        disk.set_failing(true);
        let lost = append(&tx, "intent b", true).unwrap().wait();
        assert!(matches!(lost, Err(WriteError::Io { .. })), "{lost:?}");
        assert_eq!(disk.text(), "intent a\n", "no torn line is left behind");
        assert_eq!(health.write_errors.get(), 1);
        assert_eq!(health.failing.get(), 1);
        disk.set_failing(false);
        append(&tx, "intent c", true).unwrap().wait().unwrap();
        assert_eq!(disk.text(), "intent a\noutcome a\nintent c\n");
        assert_eq!(health.failing.get(), 0);
    }

    #[test]
    fn a_stopped_writer_fails_every_promise() {
        let disk = MemDisk::default();
        let (options, _) = options(Duration::from_secs(3600));
        let tx = spawn(disk.clone(), options).unwrap();
        append(&tx, "outcome", false);
        drop(tx);
        let until = Instant::now() + Duration::from_secs(30);
        while disk.syncs() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            disk.syncs(),
            1,
            "the last records are synced on the way out"
        );
        let (_, answer) = oneshot::channel::<Result<(), WriteError>>();
        assert_eq!(Durable::waiting(answer).wait(), Err(WriteError::Stopped));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Commit,
        Append,
        FailWrites(bool),
        FailSyncs(bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Commit),
            4 => Just(Op::Append),
            1 => any::<bool>().prop_map(Op::FailWrites),
            1 => any::<bool>().prop_map(Op::FailSyncs),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever fails when: the file never keeps a torn line, holds
        /// every intent that was confirmed and none that was refused, keeps
        /// every other record once the disk recovers, and keeps them in the
        /// order they were sent, each once.
        #[test]
        fn the_file_only_ever_holds_whole_records_in_order(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let disk = MemDisk::default();
            let (options, health) = options(Duration::from_secs(3600));
            let tx = spawn(disk.clone(), options).unwrap();
            let mut confirmed = Vec::new();
            let mut refused = Vec::new();
            let mut plain = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let line = format!("record {i:03}");
                match op {
                    Op::Commit => {
                        match append(&tx, &line, true).unwrap().wait() {
                            Ok(()) => confirmed.push(line),
                            Err(_) => refused.push(line),
                        }
                        // Answered: the writer is between batches, so the
                        // file ends on a whole line.
                        let text = disk.text();
                        proptest::prop_assert!(
                            text.is_empty() || text.ends_with('\n'),
                            "torn after an answer: {:?}", text
                        );
                    }
                    Op::Append => {
                        append(&tx, &line, false);
                        plain.push(line);
                    }
                    Op::FailWrites(fail) => disk.set_failing(*fail),
                    Op::FailSyncs(fail) => disk.state.lock().unwrap().fail_sync = *fail,
                }
            }
            disk.set_failing(false);
            disk.state.lock().unwrap().fail_sync = false;
            let (promise, answer) = oneshot::channel();
            tx.send(Request::Flush(promise)).unwrap();
            Durable::waiting(answer).wait().unwrap();

            let text = disk.text();
            proptest::prop_assert!(text.is_empty() || text.ends_with('\n'), "torn: {text:?}");
            let lines: Vec<&str> = text.lines().collect();
            let mut sorted = lines.clone();
            sorted.sort_unstable();
            sorted.dedup();
            proptest::prop_assert_eq!(&sorted, &lines, "in order, each once");
            for line in confirmed.iter().chain(&plain) {
                proptest::prop_assert!(lines.contains(&line.as_str()), "{} missing", line);
            }
            for line in &refused {
                proptest::prop_assert!(!lines.contains(&line.as_str()), "{} refused but kept", line);
            }
            proptest::prop_assert_eq!(health.failing.get(), 0);
        }
    }
}
