//! `[ha]`: the PostgreSQL-backed multi-host mode, read and validated so
//! mistakes show up in `check` with their positions.

use std::path::Path;
use std::time::Duration;

use super::accounts::read_credential;
use super::diagnostic::Diagnostic;
use super::environment::Environment;
use super::files::{read_secret, readable_by_others, resolve};
use super::load::keys_in;
use super::settings::duration_or;
use super::walk::{Reader, Table};
use crate::vobiz::Secret;

/// The default `[ha] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// The default `[ha] renew_every`.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(2);

/// The systemd credential holding the PostgreSQL URL.
pub const POSTGRES_URL_CREDENTIAL: &str = "postgres-url";

/// `[ha]`: the PostgreSQL-backed multi-host mode, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The PostgreSQL URL, from `CALLWARDEN_POSTGRES_URL`, `postgres_url_file`
    /// or the `postgres-url` credential, in that order (redacted in `Debug`:
    /// it may hold a password). `check` runs without it, `run` needs it.
    pub postgres_url: Option<Secret>,
    /// This member's name; `None` means the hostname.
    pub node_id: Option<String>,
    /// How long a renewed lease lasts on the database clock.
    pub lease_ttl: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
}

impl HaSettings {
    /// The database URL, or where to give it: `run` and `cluster` need one.
    pub fn require_url(&self) -> Result<&Secret, String> {
        self.postgres_url.as_ref().ok_or_else(|| {
            format!(
                "no PostgreSQL URL for high availability: set CALLWARDEN_POSTGRES_URL, [ha] postgres_url_file, or the systemd credential `{POSTGRES_URL_CREDENTIAL}`"
            )
        })
    }
}

/// Reads `[ha]` when present, reporting its problems; `None` without it.
pub(super) fn check_ha(
    r: &mut Reader<'_>,
    doc: &Table<'_>,
    base_dir: &Path,
    env: &Environment,
    extra: &mut Vec<Diagnostic>,
) -> Option<HaSettings> {
    let (table, _) = r.table(doc, "ha")?;
    r.unknown_keys(table, &keys_in("ha"));
    let mut ha = read_ha(r, table, base_dir, extra);
    // The environment and the credential stand in for a file that is not
    // configured; a configured file that is broken stays an error.
    let fallback = if let Some(url) = &env.postgres_url {
        Some((
            Secret::new(url.trim()),
            "CALLWARDEN_POSTGRES_URL".to_owned(),
        ))
    } else if r.string(table, "postgres_url_file").is_none() {
        read_credential(env, POSTGRES_URL_CREDENTIAL, extra)
            .map(|url| (url, format!("credential `{POSTGRES_URL_CREDENTIAL}`")))
    } else {
        None
    };
    if let Some((url, source)) = fallback {
        if is_postgres_url(&url) {
            ha.postgres_url = Some(url);
        } else {
            r.diags.error(
                0..0,
                format!("{source} does not hold a valid PostgreSQL URL (contents not shown)"),
            );
        }
    }
    Some(ha)
}

/// Reads and validates `[ha]`.
fn read_ha(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> HaSettings {
    let postgres_url = r
        .string(table, "postgres_url_file")
        .and_then(|(path, span)| {
            let path = resolve(base_dir, path);
            let url = match read_secret(&path) {
                Ok(url) => url,
                Err(message) => {
                    r.diags
                        .error(span, message.replace("token file", "PostgreSQL URL file"));
                    return None;
                }
            };
            extra.extend(readable_by_others(&path));
            // The contents are never shown: the URL may hold a password.
            if !is_postgres_url(&url) {
                r.diags.error(
                    span,
                    format!(
                        "`postgres_url_file` `{}` does not hold a valid PostgreSQL URL (contents not shown)",
                        path.display()
                    ),
                );
                return None;
            }
            Some(url)
        });
    let node_id = match r.string(table, "node_id") {
        None => None,
        Some((id, span)) => {
            if !valid_node_id(id) {
                r.diags.error(
                    span,
                    format!("`node_id` `{id}` must be 1 to 253 letters, digits, `.`, `-` or `_`"),
                );
            }
            Some(id.to_owned())
        }
    };
    let lease_ttl = duration_or(r, Some(table), "lease_ttl", DEFAULT_LEASE_TTL, false);
    let renew_every = duration_or(r, Some(table), "renew_every", DEFAULT_RENEW_EVERY, false);
    let fenced_after = lease_ttl.saturating_sub(crate::ha::fence::default_margin(lease_ttl));
    if renew_every >= fenced_after {
        let span = r
            .entry(table, "renew_every")
            .or_else(|| r.entry(table, "lease_ttl"))
            .map_or(0..0, |e| e.span());
        r.diags.error(
            span,
            format!(
                "`renew_every` ({}) must be shorter than `lease_ttl` ({}) minus its safety margin ({}), or the leader stops between renewals",
                humantime::format_duration(renew_every),
                humantime::format_duration(lease_ttl),
                humantime::format_duration(lease_ttl - fenced_after),
            ),
        );
    }
    HaSettings {
        postgres_url,
        node_id,
        lease_ttl,
        renew_every,
    }
}

/// Whether `url` parses as a PostgreSQL connection string.
fn is_postgres_url(url: &Secret) -> bool {
    url.expose().parse::<tokio_postgres::Config>().is_ok()
}

/// Whether `id` is usable as a member name: hostname-like, no spaces.
pub fn valid_node_id(id: &str) -> bool {
    (1..=253).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
