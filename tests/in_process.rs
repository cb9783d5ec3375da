//! `daemon::run` driven in process: the test passes its own stop future
//! instead of a signal, as the `run` command passes SIGTERM/SIGINT.

mod common;

use std::sync::Arc;

use callwarden::clock::SystemClock;
use callwarden::config::Environment;
use callwarden::daemon::{self, RunOptions};
use callwarden::startup;
use common::daemon::{Knobs, Setup, LIMIT};
use common::engine::wait_ended;
use common::policies::PREMIUM_5S;
use common::{add_calls, default_sim};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_enforces_until_its_stop_future_resolves() {
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("premium.toml", PREMIUM_5S)], Knobs::default());
    let uuids = add_calls(
        &sim,
        json!([{"age_s": 30.0, "direction": "outbound", "from": "+14155550100", "to": "+19005550123"}]),
    )
    .await;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions {
        env: Environment::default(),
        clock: Arc::new(SystemClock),
        jitter_seed: Some(7),
    };
    let daemon = tokio::spawn(daemon::run(setup.config_path(), options, async move {
        let _ = stop_rx.await;
    }));

    assert!(
        wait_ended(&sim, &uuids, LIMIT).await,
        "the overdue call was not hung up"
    );
    assert!(!daemon.is_finished(), "run returned before it was stopped");
    stop_tx
        .send(())
        .expect("run is still waiting for its stop future");
    let result = tokio::time::timeout(LIMIT, daemon)
        .await
        .expect("run stops once its stop future resolves")
        .expect("run does not panic");
    assert!(result.is_ok(), "run failed: {result:?}");

    let audit = setup.audit_of(&uuids[0]);
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "outcome" && r["outcome"] == "ok"),
        "no successful hangup audited: {audit:?}"
    );
    // Stopped for good: the state directory's lock is free again.
    startup::lock_state_dir(&setup.state_dir()).expect("run released the state lock");
}
