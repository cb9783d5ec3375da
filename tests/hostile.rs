//! Hostile inputs from issue 11 through the real binary: numbers in URI,
//! full-width and invisible forms, policy entries that are not files,
//! echoed tokens, oversized requests and durations. The corpus lives in
//! `tests/fixtures/hostile/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn hostile(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(path)
}

/// A private config in a temp dir reading the policies at `policies`.
fn config_for(policies: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callwarden.toml");
    std::fs::write(
        &path,
        format!(
            "policies = [{:?}]\n[api]\nauth_id = \"MA1\"\n[http]\nlisten = \"\"\n",
            policies.display().to_string()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

/// `callwarden --config CONFIG ARGS...` with a clean environment: (exit code, stdout, stderr).
fn callwarden(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("VOBIZ_AUTH_TOKEN", "t")
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("callwarden runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn emergency_numbers_in_uri_full_width_and_invisible_forms_are_protected() {
    // One rule hangs up every call; the default protected list holds 911,
    // 112 and 999. Each saved call is overdue, so only protection saves it.
    let (_dir, config) = config_for(&hostile("uri_policy"));
    let cases = [
        ("to_tel_911", true),
        ("to_sip_112", true),
        ("to_sip_999_user_phone", true),
        ("from_tel_plus_911", true),
        ("to_full_width_911", true),
        ("to_zero_width_911", true),
        ("to_arabic_indic_911", true),
        ("to_sip_9111", false),
    ];
    for (name, protected) in cases {
        let call = hostile(&format!("calls/{name}.json"));
        let call = call.to_str().unwrap();
        let (code, stdout, stderr) =
            callwarden(&config, &["explain", "--json", "--call-json", call]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let explained: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let decision = &explained["decision"];
        assert_eq!(decision["rule"], "everything-1m", "{name}: {stdout}");
        assert_eq!(decision["protected"], protected, "{name}: {stdout}");
    }
}
