//! Config files the tests write when no simulator is involved, and their
//! permissions (the loader warns about files others can read).

use std::path::{Path, PathBuf};

/// Makes `path` readable by its owner only, as a token or config should be.
pub fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// A config that never reaches an API: an auth id, no status listener, and
/// `extra` (e.g. a `policies` line) first, where top-level keys belong.
pub fn offline_config(extra: &str) -> String {
    format!("{extra}[api]\nauth_id = \"MA1\"\n[http]\nlisten = \"\"\n")
}

/// A private offline config in a new temp dir that reads the policies at
/// `policies` (a file or a directory); the dir lives as long as the guard.
pub fn offline_config_for(policies: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("callwarden.toml");
    let line = format!("policies = [{:?}]\n", policies.display().to_string());
    std::fs::write(&path, offline_config(&line)).expect("write config");
    private(&path);
    (dir, path)
}
