//! The official Python SDK (`vobiz-python`) against the in-process
//! simulator: if the SDK and the simulator disagree, the simulator is wrong.
//!
//! Interpreter: `$CALLWARDEN_SDK_PYTHON`, else `.venv/bin/python` at the crate
//! root. When it is missing the test fails under `CI` and is skipped otherwise.

mod common;

use std::path::PathBuf;

use callwarden::sim::{DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN};
use common::*;
use serde_json::json;

fn interpreter() -> PathBuf {
    std::env::var_os("CALLWARDEN_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_drives_the_simulator() {
    let python = interpreter();
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the SDK interpreter {} is missing: create .venv with vobiz-python or set CALLWARDEN_SDK_PYTHON",
            python.display()
        );
        eprintln!(
            "skipping SDK compatibility: {} is missing (python3 -m venv .venv && .venv/bin/pip install vobiz-python)",
            python.display()
        );
        return;
    }
    let sim = default_sim();
    let ids = add_calls(
        &sim,
        json!([
            {"age_s": 90, "direction": "outbound", "from": "+14155550100", "to": "919148227303", "shape": "flat"},
            {"age_s": 60, "direction": "inbound", "from": "441234567", "to": "+14155550101", "shape": "legacy"},
            {"age_s": 30, "shape": "flat"},
        ]),
    )
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/compat.py");
    // The SDK reads `.env` from its working directory: run it somewhere empty.
    let workdir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([sim.base_url().as_str(), DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN])
        .args(&ids)
        .current_dir(workdir.path())
        .env_remove("VOBIZ_AUTH_ID")
        .env_remove("VOBIZ_AUTH_TOKEN")
        .output()
        .await
        .expect("the SDK interpreter runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk compat: ok"), "{stdout}");

    // What the SDK did is what the simulator recorded.
    let hung_up = sim.state().call(&ids[0]).unwrap();
    assert_eq!((hung_up.hangups, hung_up.delete_requests), (1, 2));
    assert_eq!(sim.state().call(&ids[2]).unwrap().speaks.len(), 1);
    let log = log_since(&sim, 0).await;
    assert!(
        log.iter().any(|r| r["status"] == 401),
        "the wrong-token request is logged"
    );
}
