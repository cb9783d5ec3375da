//! The process environment callwarden reads: variables that override the
//! config file, and systemd's directories.

use std::path::PathBuf;

/// The process environment callwarden reads; tests build their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `VOBIZ_AUTH_ID`: overrides `[api] auth_id` of the `default` account.
    pub auth_id: Option<String>,
    /// `VOBIZ_AUTH_TOKEN`: the `default` account's token, before any file.
    pub auth_token: Option<String>,
    /// `VOBIZ_BASE_URL`: overrides `[api] base_url`.
    pub base_url: Option<String>,
    /// `CREDENTIALS_DIRECTORY`: systemd credentials (`vobiz-auth-token[-NAME]`).
    pub credentials_directory: Option<PathBuf>,
    /// `STATE_DIRECTORY`: wins over `[state] dir`.
    pub state_directory: Option<PathBuf>,
    /// `CALLWARDEN_POSTGRES_URL`: the `[ha]` database, before any file.
    pub postgres_url: Option<String>,
}

impl Environment {
    /// Reads the variables of the running process (empty values count as unset).
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            auth_id: var("VOBIZ_AUTH_ID"),
            auth_token: var("VOBIZ_AUTH_TOKEN"),
            base_url: var("VOBIZ_BASE_URL"),
            credentials_directory: var("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            // systemd may list several directories separated by ':'; ours is the first.
            state_directory: var("STATE_DIRECTORY")
                .and_then(|v| v.split(':').next().map(PathBuf::from)),
            postgres_url: var("CALLWARDEN_POSTGRES_URL"),
        }
    }
}
