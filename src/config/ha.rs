//! `[ha]`: parsed and validated so mistakes show up in `check`, then refused
//! as a whole, because enforcement is not yet fenced by the lease and a
//! config that asks for HA must not run as if it were.

use std::path::Path;
use std::time::Duration;

use super::diagnostic::Diagnostic;
use super::files::{read_secret, readable_by_others, resolve};
use super::load::keys_in;
use super::settings::duration_or;
use super::walk::{Reader, Table};
use crate::vobiz::Secret;

/// The default `[ha] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// The default `[ha] renew_every`.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(2);

/// `[ha]`: the PostgreSQL-backed multi-host mode, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The PostgreSQL URL read from `postgres_url_file` (redacted in `Debug`:
    /// it may hold a password).
    pub postgres_url: Option<Secret>,
    /// This member's name; `None` means the hostname.
    pub node_id: Option<String>,
    /// How long a renewed lease lasts on the database clock.
    pub lease_ttl: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
}

/// Reads `[ha]` when present, reporting its problems, then the refusal.
pub(super) fn check_ha(
    r: &mut Reader<'_>,
    doc: &Table<'_>,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) {
    if let Some((table, span)) = r.table(doc, "ha") {
        r.unknown_keys(table, &keys_in("ha"));
        let _ = read_ha(r, table, base_dir, extra);
        r.diags.error(span, HA_UNAVAILABLE);
    }
}

/// The error for any `[ha]` section while HA is not wired into enforcement.
pub const HA_UNAVAILABLE: &str = "`[ha]`: high availability is not available in this build (leases are not yet wired into enforcement); remove the section to run single-node, see docs/ha.md";

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
            if url.expose().parse::<tokio_postgres::Config>().is_err() {
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

/// Whether `id` is usable as a member name: hostname-like, no spaces.
fn valid_node_id(id: &str) -> bool {
    (1..=253).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
