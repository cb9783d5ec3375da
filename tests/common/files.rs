//! Config files the tests write when no simulator is involved, and their
//! permissions (the loader warns about files others can read).

use std::path::Path;

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
