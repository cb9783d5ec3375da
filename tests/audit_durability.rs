//! The audit log on a stalled or failing disk, through the writer's `Disk`
//! seam, with the real engine against the simulator: the engine keeps
//! polling and firing timers while a sync is stuck, intents queued behind
//! one sync share the next, and no DELETE goes out without a durable intent.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use callwarden::audit::{AuditLog, Disk, Event, FileDisk, Health, Options, AUDIT_FILE};
use common::calls::outbound;
use common::engine::{requests, settings, start_with_audit, wait_ended, wait_for};
use common::policies::START_LIMIT_10S;
use common::{add_calls, client_config, default_sim, log_since};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The real file, with every sync held until the test lets it pass (or the
/// gate is opened for good), and writes that can be made to fail.
struct TestDisk {
    file: FileDisk,
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Mutex<std_mpsc::Receiver<()>>>,
    open: Arc<AtomicBool>,
    full: Arc<AtomicBool>,
}

impl Disk for TestDisk {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            // A full disk: part of the batch lands, then the write fails.
            self.file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::other("No space left on device"));
        }
        self.file.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        if !self.open.load(Ordering::SeqCst) {
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.file.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.truncate(len)
    }
    fn size(&mut self) -> io::Result<u64> {
        self.file.size()
    }
    fn rotate(&mut self) -> io::Result<()> {
        self.file.rotate()
    }
    fn name(&self) -> String {
        self.file.name()
    }
}

struct Control {
    entered: mpsc::UnboundedReceiver<()>,
    release: std_mpsc::Sender<()>,
    open: Arc<AtomicBool>,
    full: Arc<AtomicBool>,
    health: Health,
}

impl Control {
    /// Lets every sync through from now on, including a stuck one.
    fn open_gate(&self) {
        self.open.store(true, Ordering::SeqCst);
        let _ = self.release.send(());
    }
}

fn test_log(dir: &Path, gated: bool) -> (AuditLog, Control) {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (release, release_rx) = std_mpsc::channel();
    let open = Arc::new(AtomicBool::new(!gated));
    let full = Arc::new(AtomicBool::new(false));
    let path = dir.join(AUDIT_FILE);
    let disk = TestDisk {
        file: FileDisk::open(&path).unwrap(),
        entered: entered_tx,
        release: Arc::new(Mutex::new(release_rx)),
        open: Arc::clone(&open),
        full: Arc::clone(&full),
    };
    let health = Health::default();
    let options = Options {
        health: health.clone(),
        ..Options::default()
    };
    let log = AuditLog::with_disk(path, disk, options).unwrap();
    let control = Control {
        entered,
        release,
        open,
        full,
        health,
    };
    (log, control)
}

/// Polls in the simulator log (clock probes are list reads too).
fn list_requests(log: &[Value]) -> usize {
    log.iter()
        .filter(|r| r["uuid"].is_null() && r["method"] == "GET" && !common::daemon::is_probe(r))
        .count()
}

async fn sim_log(sim: &callwarden::sim::SimHandle) -> Vec<Value> {
    log_since(sim, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sync_holds_only_the_hangup_waiting_for_it() {
    let sim = default_sim();
    let first = add_calls(&sim, json!([outbound(30.0, "+14155550101")])).await[0].clone();
    // Four calls falling due a few seconds in, while the first sync is stuck.
    let later = add_calls(
        &sim,
        json!([
            outbound(6.0, "+14155550102"),
            outbound(6.0, "+14155550103"),
            outbound(6.0, "+14155550104"),
            outbound(6.0, "+14155550105"),
        ]),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let (log, mut control) = test_log(state.path(), true);
    let running = start_with_audit(client_config(&sim), START_LIMIT_10S, settings(), state, log);
    let limit = Duration::from_secs(60);

    // The first call's intent is being synced, and the sync is stuck.
    tokio::time::timeout(limit, control.entered.recv())
        .await
        .expect("the first intent reached the disk");
    let polls_at_stall = list_requests(&sim_log(&sim).await);

    // The engine keeps polling, and the later calls' timers fire: each is
    // re-read (its second GET after discovery) and its intent queued.
    let queued = control.health.queued.clone();
    let polled_and_fired = wait_for(limit, || queued.get() >= 5).await;
    assert!(polled_and_fired, "queued: {}", queued.get());
    let mut log = sim_log(&sim).await;
    let deadline = tokio::time::Instant::now() + limit;
    while list_requests(&log) < polls_at_stall + 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = sim_log(&sim).await;
    }
    assert!(
        list_requests(&log) >= polls_at_stall + 3,
        "polls stopped while the disk was stuck"
    );
    for uuid in &later {
        assert_eq!(requests(&log, "GET", uuid).len(), 2, "{uuid} was re-read");
    }
    for uuid in later.iter().chain([&first]) {
        assert!(
            requests(&log, "DELETE", uuid).is_empty(),
            "a DELETE went out before its intent was on disk"
        );
    }
    assert_eq!(control.health.syncs.get(), 1);

    // Let the first sync through: the four intents queued behind it are
    // committed together, with one sync.
    control.release.send(()).unwrap();
    tokio::time::timeout(limit, control.entered.recv())
        .await
        .expect("the queued intents reached the disk");
    assert_eq!(control.health.syncs.get(), 2, "one sync for the four");
    assert!(wait_ended(&sim, std::slice::from_ref(&first), limit).await);
    let log = sim_log(&sim).await;
    for uuid in &later {
        assert!(requests(&log, "DELETE", uuid).is_empty());
    }
    control.open_gate();
    assert!(wait_ended(&sim, &later, limit).await);

    let log = sim_log(&sim).await;
    let dir = running.stop().await;
    let records = callwarden::audit::read_all(dir.path()).unwrap().0;
    for uuid in later.iter().chain([&first]) {
        assert_eq!(requests(&log, "DELETE", uuid).len(), 1, "{uuid}");
        let events: Vec<Event> = records
            .iter()
            .filter(|r| &r.call_uuid == uuid)
            .map(|r| r.event)
            .collect();
        assert_eq!(events, [Event::Intent, Event::Outcome], "{uuid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_hangups_until_the_intent_is_durable() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550106")])).await[0].clone();
    let state = tempfile::tempdir().unwrap();
    let (log, control) = test_log(state.path(), false);
    control.full.store(true, Ordering::SeqCst);
    let running = start_with_audit(client_config(&sim), START_LIMIT_10S, settings(), state, log);
    let limit = Duration::from_secs(60);
    let errors = control.health.write_errors.clone();
    assert!(
        wait_for(limit, || errors.get() >= 2).await,
        "intents were tried"
    );
    assert_eq!(control.health.failing.get(), 1);
    let log = sim_log(&sim).await;
    assert!(
        requests(&log, "DELETE", &uuid).is_empty(),
        "a DELETE without a durable intent"
    );
    // The torn half-batch was cut off: what is on disk reads cleanly.
    let (_, bad) = callwarden::audit::read_all(running.state.path()).unwrap();
    assert_eq!(bad, 0);

    control.full.store(false, Ordering::SeqCst);
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), limit).await);
    assert_eq!(control.health.failing.get(), 0);
    let log = sim_log(&sim).await;
    assert_eq!(requests(&log, "DELETE", &uuid).len(), 1);
    let dir = running.stop().await;
    let (records, bad) = callwarden::audit::read_all(dir.path()).unwrap();
    assert_eq!(bad, 0);
    let events: Vec<Event> = records
        .iter()
        .filter(|r| r.call_uuid == uuid)
        .map(|r| r.event)
        .collect();
    assert_eq!(events, [Event::Intent, Event::Outcome]);
}

#[tokio::test]
async fn a_torn_tail_is_closed_off_so_the_next_intent_replays() {
    use common::daemon::{message, Daemon, Knobs, Setup, LIMIT};
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550107")])).await[0].clone();
    let setup = Setup::new(&sim, &[("limit.toml", START_LIMIT_10S)], Knobs::default());
    let state = setup.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    // A crash (or a full disk) stopped the last run mid-record.
    let whole =
        r#"{"ts":"2026-01-01T00:00:00Z","account":"default","call_uuid":"old","event":"pardon"}"#;
    let fragment = r#"{"ts":"2026-01-01T00:00:01Z","account":"default","call_uu"#;
    std::fs::write(state.join(AUDIT_FILE), format!("{whole}\n{fragment}")).unwrap();

    let mut daemon = Daemon::start(&setup).await;
    let torn = daemon
        .json_logs()
        .into_iter()
        .find(|l| message(l).starts_with("the audit log ended in a torn line"))
        .expect("the torn line is reported");
    assert_eq!(torn["offset"], whole.len() + 1);
    assert_eq!(torn["bytes"], fragment.len());
    assert!(torn["file"].as_str().unwrap().ends_with(AUDIT_FILE));
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), LIMIT).await);
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("stops on SIGTERM");

    let (records, bad) = callwarden::audit::read_all(&state).unwrap();
    assert_eq!(bad, 1, "only the fragment is unreadable");
    let events: Vec<Event> = records
        .iter()
        .filter(|r| r.call_uuid == uuid)
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        [Event::Intent, Event::Outcome],
        "the intent replays"
    );

    // A restart reads the log the same way and does not hang up again.
    let seen = sim_log(&sim).await.len();
    let mut daemon = Daemon::start(&setup).await;
    let sim_state = sim.state().clone();
    assert!(
        wait_for(LIMIT, || sim_state.log(0).len() > seen + 2).await,
        "the restarted daemon polls"
    );
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("stops on SIGTERM");
    let log = sim_log(&sim).await;
    assert_eq!(requests(&log, "DELETE", &uuid).len(), 1);
    assert!(daemon
        .json_logs()
        .iter()
        .all(|l| !message(l).starts_with("the audit log ended in a torn line")));
}

/// Every torn log in `tests/fixtures/hostile/audit/`: opening closes the
/// tail off, and the next intent is a record of its own that replays.
#[test]
fn every_hostile_torn_log_is_closed_off_and_the_next_intent_replays() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile/audit");
    let mut seen = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let fixture = entry.unwrap().path();
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let state = tempfile::tempdir().unwrap();
        let path = state.path().join(AUDIT_FILE);
        std::fs::copy(&fixture, &path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let (_, bad_before) = callwarden::audit::read_all(state.path()).unwrap();

        let log = AuditLog::open(state.path()).unwrap();
        let intent = callwarden::audit::Record {
            ts: chrono::Utc::now(),
            account: "default".to_owned(),
            call_uuid: "after-the-tear".to_owned(),
            event: Event::Intent,
            rules: vec!["r".to_owned()],
            rule: Some("r".to_owned()),
            action: Some("hangup:call".to_owned()),
            outcome: None,
            attempts: 0,
            dry_run: false,
            reason: String::new(),
            call: None,
            epoch: None,
        };
        log.commit(&intent).wait().unwrap();
        drop(log);

        let after = std::fs::read(&path).unwrap();
        assert!(after.starts_with(&before), "{name}: nothing written is cut");
        let (records, bad) = callwarden::audit::read_all(state.path()).unwrap();
        assert_eq!(bad, bad_before, "{name}: the intent joined no fragment");
        assert_eq!(records.last(), Some(&intent), "{name}");
        let replay = callwarden::audit::replay(state.path()).unwrap();
        assert!(
            replay
                .pending
                .contains(&("default".to_owned(), "after-the-tear".to_owned())),
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= 5, "the corpus is there: {seen}");
}

#[tokio::test]
async fn a_flood_of_pardons_is_capped_and_shares_syncs() {
    use callwarden::engine::MAX_UNTRACKED_PARDONS;
    use common::daemon::{sample_sum, Daemon, Knobs, Setup, LIMIT};
    let sim = default_sim();
    // A live call well inside its limit: pardons of it are always taken.
    let live = add_calls(&sim, json!([outbound(1.0, "+14155550108")])).await[0].clone();
    let knobs = Knobs {
        // No poll drops the flood's pardons while the test runs.
        poll: "1h",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("limit.toml", START_LIMIT_10S)], knobs);
    let mut daemon = Daemon::start(&setup).await;
    let seen = sim.state().clone();
    assert!(
        wait_for(LIMIT, || !seen.log(0).is_empty()).await,
        "the first poll ran"
    );
    let http = reqwest::Client::new();
    let pardon = |uuid: String| {
        let request = http
            .post(format!("http://{}/pardon/{uuid}?for=10m", daemon.addr))
            .send();
        async move {
            let response = request.await.expect("listener answers");
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry_after)
        }
    };
    let flood = MAX_UNTRACKED_PARDONS + 20;
    let mut codes = std::collections::BTreeMap::new();
    let mut retry_after = None;
    for i in 0..flood {
        let (code, after) = pardon(format!("{i:08x}-0000-4000-8000-{i:012x}")).await;
        *codes.entry(code).or_insert(0usize) += 1;
        if code == 429 {
            retry_after = after;
        }
    }
    assert_eq!(
        codes,
        [(404, MAX_UNTRACKED_PARDONS), (429, 20)].into(),
        "untracked pardons are kept up to the cap, then refused"
    );
    assert!(retry_after.is_some(), "a refusal says when to try again");
    let (code, _) = pardon(live.clone()).await;
    assert_eq!(code, 200, "a tracked call's pardon is never refused");

    let scrape = daemon.metrics().await;
    let syncs = sample_sum(&scrape, "callwarden_audit_syncs_total", &[]);
    assert!(
        syncs < (MAX_UNTRACKED_PARDONS / 10) as f64,
        "pardons ride in batches, not one sync each: {syncs} syncs"
    );
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("stops on SIGTERM");
    let (records, bad) = callwarden::audit::read_all(&setup.state_dir()).unwrap();
    assert_eq!(bad, 0);
    let pardons = records.iter().filter(|r| r.event == Event::Pardon).count();
    assert_eq!(
        pardons,
        MAX_UNTRACKED_PARDONS + 1,
        "refused pardons are not audited"
    );
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    /// `None` where the test may not mount (not root, no privilege).
    fn tmpfs(at: &Path, size: &str) -> Option<Self> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![b'x'; 4096];
    while file.write_all(&block).is_ok() {}
    while file.write_all(b"x").is_ok() {}
    path
}

/// The real binary with its state directory on a full disk (a small
/// tmpfs): no DELETE goes out, the failure is logged and raised in the
/// metrics and in systemd's STATUS=, polls go on; once space is freed the
/// call is hung up once and the log reads cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_daemon_on_a_full_disk_sends_no_delete_until_it_has_room() {
    use common::daemon::{message, sample_sum, Daemon, Knobs, Setup, LIMIT};
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550109")])).await[0].clone();
    let setup = Setup::new(&sim, &[("limit.toml", START_LIMIT_10S)], Knobs::default());
    let state = setup.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let Some(_mount) = Mount::tmpfs(&state, "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let filler = fill(&state);
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut command = setup.command(&["run"]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::start_with(command).await;

    let logged = |text: &'static str| {
        let daemon = &daemon;
        move || daemon.json_logs().iter().any(|l| message(l) == text)
    };
    assert!(
        wait_for(
            LIMIT,
            logged("the hangup intent is not on disk: not hanging up; trying again later")
        )
        .await,
        "{:#?}",
        daemon.logs()
    );
    assert!(logged(
        "cannot write the audit log: hangups stop until it is writable again"
    )());
    let said = Arc::clone(&received);
    let status_says = move || {
        said.lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("STATUS=AUDIT LOG NOT WRITABLE, hangups stopped; default:"))
    };
    assert!(
        wait_for(LIMIT, status_says).await,
        "{:?}",
        received.lock().unwrap()
    );
    let scrape = daemon.metrics().await;
    assert_eq!(
        sample_sum(&scrape, "callwarden_audit_write_failing", &[]),
        1.0
    );
    assert!(sample_sum(&scrape, "callwarden_audit_write_errors_total", &[]) >= 1.0);

    // Polls go on (and the hangup is tried again), but nothing is deleted.
    let polls_then = list_requests(&sim_log(&sim).await);
    let sim_state = sim.state().clone();
    assert!(
        wait_for(LIMIT, || list_requests_of(&sim_state) >= polls_then + 3).await,
        "polls stopped"
    );
    let log = sim_log(&sim).await;
    assert!(
        requests(&log, "DELETE", &uuid).is_empty(),
        "a DELETE without a durable intent"
    );

    // Room again: the next try goes through, once.
    std::fs::remove_file(&filler).unwrap();
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), LIMIT).await);
    assert!(wait_for(LIMIT, logged("the audit log is writable again")).await);
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("stops on SIGTERM");
    let log = sim_log(&sim).await;
    assert_eq!(requests(&log, "DELETE", &uuid).len(), 1);
    let (records, bad) = callwarden::audit::read_all(&state).unwrap();
    assert_eq!(bad, 0, "no torn line was left by the failed writes");
    let events: Vec<Event> = records
        .iter()
        .filter(|r| r.call_uuid == uuid)
        .map(|r| r.event)
        .collect();
    assert_eq!(events, [Event::Intent, Event::Outcome]);
}

fn list_requests_of(state: &callwarden::sim::SimState) -> usize {
    state
        .log(0)
        .iter()
        .filter(|r| r.uuid.is_none() && r.method == "GET")
        .count()
}
