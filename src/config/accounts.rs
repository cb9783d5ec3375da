//! The accounts of the config: the single `default` account or the
//! `[[account]]` tables, each with its auth id, token and policy paths.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, FileDiagnostics, Severity};
use super::environment::Environment;
use super::files::{policy_paths, read_secret, read_token_file, resolve};
use super::load::keys_in;
use super::walk::{Reader, Table};
use crate::vobiz::Secret;

/// The systemd credential holding the token of the single `default` account.
pub const CREDENTIAL_NAME: &str = "vobiz-auth-token";

/// An account before its policy is compiled.
pub(super) struct RawAccount {
    /// The account name, a metric label.
    pub(super) name: String,
    /// The Vobiz auth id.
    pub(super) auth_id: String,
    /// The token when one was found; `check` runs without it.
    pub(super) token: Option<Secret>,
    /// Its own policy files; `None` shares the global `policies`.
    pub(super) policies: Option<Vec<PathBuf>>,
}

/// A systemd credential, when present; a present but unusable one is an error.
pub(super) fn read_credential(
    env: &Environment,
    name: &str,
    extra: &mut Vec<Diagnostic>,
) -> Option<Secret> {
    let path = env.credentials_directory.as_ref()?.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return None;
    }
    match read_secret(&path) {
        Ok(token) => Some(token),
        Err(message) => {
            extra.push(Diagnostic::file_level(
                &path,
                Severity::Error,
                format!("credential `{name}`: {message}"),
            ));
            None
        }
    }
}

/// Every account of the config: the single `default` one (from `[api]` and
/// the environment) or one per `[[account]]` table, with its token.
pub(super) fn read_accounts(
    doc: &Table<'_>,
    diags: &mut FileDiagnostics,
    env: &Environment,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> Vec<RawAccount> {
    let mut r = Reader { diags };
    let tables = r.tables(doc, "account");
    let api = r.table(doc, "api").map(|(t, _)| t);
    if tables.is_empty() {
        // Single account `default`: env, then [api], then credential.
        let configured = api.and_then(|t| r.string(t, "auth_id"));
        let auth_id = match (&env.auth_id, configured) {
            (Some(id), _) => id.clone(),
            (None, Some((id, span))) => {
                if id.trim().is_empty() {
                    r.diags.error(span, "`auth_id` is empty");
                }
                id.trim().to_owned()
            }
            (None, None) => {
                r.diags.error(
                    0..0,
                    "no auth id: set `auth_id` in [api] (or VOBIZ_AUTH_ID), or use [[account]] tables",
                );
                String::new()
            }
        };
        let file_token =
            api.and_then(|t| r.string(t, "auth_token_file"))
                .and_then(|(path, span)| {
                    read_token_file(&resolve(base_dir, path), span, r.diags, extra)
                });
        let token = env
            .auth_token
            .as_ref()
            .map(|t| Secret::new(t.trim()))
            .or(file_token)
            .or_else(|| read_credential(env, CREDENTIAL_NAME, extra));
        return vec![RawAccount {
            name: "default".into(),
            auth_id,
            token,
            policies: None,
        }];
    }

    if env.auth_id.is_some() || env.auth_token.is_some() {
        r.diags.warning(
            0..0,
            "VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN are ignored with [[account]] tables (they apply to a single-account config only)",
        );
    }
    for key in ["auth_id", "auth_token_file"] {
        if let Some(entry) = api.and_then(|t| r.entry(t, key)) {
            r.diags.error(
                entry.key_span,
                format!(
                    "`[api] {key}` cannot be used with [[account]] tables; set it in each account"
                ),
            );
        }
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut accounts = Vec::new();
    for (table, header) in tables {
        r.unknown_keys(table, &keys_in("account"));
        let name = match r.string(table, "name") {
            Some((name, span)) => {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                let line = r.diags.line_of(span.start);
                if !valid {
                    r.diags.error(
                        span,
                        format!(
                            "invalid account name `{name}`: use lower-case letters, digits and `-`"
                        ),
                    );
                } else if let Some(first) = names.get(name) {
                    r.diags.error(
                        span,
                        format!("duplicate account name `{name}` (first defined on line {first})"),
                    );
                } else {
                    names.insert(name.to_owned(), line);
                }
                name.to_owned()
            }
            None => {
                if r.entry(table, "name").is_none() {
                    r.diags.error(header.clone(), "account has no `name`");
                }
                String::new()
            }
        };
        let auth_id = match r.string(table, "auth_id") {
            Some((id, span)) => {
                if id.trim().is_empty() {
                    r.diags.error(span, "`auth_id` is empty");
                }
                id.trim().to_owned()
            }
            None => {
                if r.entry(table, "auth_id").is_none() {
                    r.diags
                        .error(header.clone(), format!("account `{name}` has no `auth_id`"));
                }
                String::new()
            }
        };
        let token = r
            .string(table, "auth_token_file")
            .and_then(|(path, span)| {
                read_token_file(&resolve(base_dir, path), span, r.diags, extra)
            })
            .or_else(|| read_credential(env, &format!("{CREDENTIAL_NAME}-{name}"), extra));
        let policies = r
            .entry(table, "policies")
            .is_some()
            .then(|| policy_paths(table, "policies", r.diags, base_dir));
        accounts.push(RawAccount {
            name,
            auth_id,
            token,
            policies,
        });
    }
    accounts
}
