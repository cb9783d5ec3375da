//! What the engine remembers of each call across restarts: when it was
//! first seen, seen answered, and last seen changing. Without it a restart
//! would re-time flat-shape calls from the restart (late hangups) and lose
//! idle history. Written atomically (temp file + rename) after polls that
//! changed it; a missing or unreadable file just means starting fresh.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::CallUuid;

/// The remembered times of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// When callwarden first saw the call.
    pub first_seen: DateTime<Utc>,
    /// When it first saw the call answered.
    pub answered_seen: Option<DateTime<Utc>>,
    /// When it last saw the call's state change.
    pub last_change: DateTime<Utc>,
    /// Fingerprint of the state seen then: `last_change` only carries over
    /// when the state is still the same.
    #[serde(default)]
    pub state_key: u64,
    /// The call broke the new-call age bound and is timed from first sight.
    #[serde(default)]
    pub first_sight_only: bool,
}

/// The file for `account` in `dir`.
pub fn path(dir: &Path, account: &str) -> PathBuf {
    let safe: String = account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("calls-{safe}.json"))
}

/// The saved pairs written as the JSON object [`load`] reads.
struct AsMap<'a>(&'a [(CallUuid, Remembered)]);

impl Serialize for AsMap<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(uuid, times)| (uuid.as_str(), times)))
    }
}

/// Reads the remembered calls; a missing or corrupt file yields none.
pub fn load(path: &Path) -> HashMap<String, Remembered> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring unreadable call memory");
            HashMap::new()
        }),
        Err(_) => HashMap::new(),
    }
}

/// Replaces the file with `calls` (a map from UUID to times), atomically.
pub fn save(path: &Path, calls: &[(CallUuid, Remembered)]) -> io::Result<()> {
    let bytes = serde_json::to_vec(&AsMap(calls)).map_err(io::Error::other)?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "default");
        let now = Utc::now();
        let times = Remembered {
            first_seen: now,
            answered_seen: Some(now),
            last_change: now,
            state_key: 1,
            first_sight_only: true,
        };
        save(&file, &[(CallUuid::parse("a").unwrap(), times)]).unwrap();
        assert_eq!(load(&file), HashMap::from([("a".to_owned(), times)]));
        std::fs::write(&file, b"{\"a\": {").unwrap();
        assert!(load(&file).is_empty());
        assert_eq!(
            path(dir.path(), "../x").file_name().unwrap(),
            "calls-___x.json"
        );
    }
}
