//! `callwarden pardon`: asks the running daemon to spare one call.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::call::CallUuid;
use crate::config::Environment;
use crate::startup;

use super::{EXIT_ERROR, EXIT_OK};

/// Posts the pardon to the daemon's listener; exit 0 when the daemon tracks the call.
pub async fn run(
    config_path: &Path,
    env: &Environment,
    uuid: &str,
    for_: Option<Duration>,
) -> anyhow::Result<u8> {
    let uuid = CallUuid::parse(uuid).with_context(|| format!("bad call UUID {uuid:?}"))?;
    let config = startup::load_config(config_path, env)?.config;
    let Some(addr) = config.http.listen else {
        bail!("[http] listen is disabled, so the daemon cannot be asked");
    };
    let mut url = format!("http://{addr}/pardon/{uuid}");
    if let Some(duration) = for_ {
        url.push_str(&format!("?for={}", humantime::format_duration(duration)).replace(' ', ""));
    }
    let response = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {addr}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!(
            "pardoned {uuid}{}",
            match for_ {
                Some(d) => format!(" for {}", humantime::format_duration(d)),
                None => " for good".to_owned(),
            }
        );
        Ok(EXIT_OK)
    } else if status == reqwest::StatusCode::NOT_FOUND {
        eprintln!("callwarden: the daemon does not track {uuid}; the pardon is kept in case it appears before the next poll");
        Ok(EXIT_ERROR)
    } else {
        eprintln!("callwarden: the daemon refused: {status} {}", body.trim());
        Ok(EXIT_ERROR)
    }
}
