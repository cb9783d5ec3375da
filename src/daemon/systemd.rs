//! Talking to systemd: READY/RELOADING/STOPPING, the STATUS= line and the
//! watchdog pings. Outside systemd every call here does nothing.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::AccountStatus;

/// Keeps STATUS= current and tells systemd the engines are alive
/// (WATCHDOG=1) once every engine has published since the last ping — each
/// does from its loop at every poll tick — so one stuck account loop stops
/// the pings even while others run.
pub(super) async fn feed_systemd(
    mut statuses: Vec<watch::Receiver<AccountStatus>>,
    audit_failing: prometheus_client::metrics::gauge::Gauge,
) {
    if statuses.is_empty() {
        return;
    }
    let mut fresh = vec![false; statuses.len()];
    loop {
        let (changed, index, _) =
            futures::future::select_all(statuses.iter_mut().map(|s| Box::pin(s.changed()))).await;
        if changed.is_err() {
            return;
        }
        fresh[index] = true;
        // The others may have published meanwhile too.
        for (seen, status) in fresh.iter_mut().zip(statuses.iter_mut()) {
            if status.has_changed().unwrap_or(false) {
                status.mark_unchanged();
                *seen = true;
            }
        }
        let line = with_audit_state(status_line(&statuses), audit_failing.get() != 0);
        if take_all_fresh(&mut fresh) {
            notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Status(&line),
            ]);
        } else {
            notify(&[sd_notify::NotifyState::Status(&line)]);
        }
        // Publishing happens several times a poll; a message a second is plenty.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// True when every engine published since the last ping; then starts over.
fn take_all_fresh(fresh: &mut [bool]) -> bool {
    if fresh.iter().all(|f| *f) {
        fresh.fill(false);
        true
    } else {
        false
    }
}

fn status_line(statuses: &[watch::Receiver<AccountStatus>]) -> String {
    let parts: Vec<String> = statuses
        .iter()
        .map(|s| {
            let s = s.borrow();
            let poll = match (&s.last_poll_error, s.last_poll_ok) {
                (Some(error), _) => format!("last poll failed: {error}"),
                (None, Some(at)) => format!("last poll ok {}", at.format("%H:%M:%S")),
                (None, None) => "no poll yet".to_owned(),
            };
            format!(
                "{}: {} live, {} tracked, {}{}",
                s.account,
                s.live_calls,
                s.tracked_calls,
                poll,
                if s.breaker_open { ", BREAKER OPEN" } else { "" }
            )
        })
        .collect();
    // One line: a newline would start a new assignment in the notify datagram.
    parts.join("; ").replace(['\n', '\r'], " ")
}

/// Puts a failing audit log first on the STATUS= line: while it lasts no
/// hangup is sent, which `systemctl status` should say before anything else.
fn with_audit_state(line: String, failing: bool) -> String {
    if failing {
        format!("AUDIT LOG NOT WRITABLE, hangups stopped; {line}")
    } else {
        line
    }
}

/// Sends `states` to systemd, if it is listening.
pub(super) fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(false, states);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_waits_for_every_engine() {
        let mut fresh = vec![true, false];
        assert!(!take_all_fresh(&mut fresh));
        assert_eq!(fresh, [true, false], "a partial round is kept");
        fresh[1] = true;
        assert!(take_all_fresh(&mut fresh));
        assert_eq!(fresh, [false, false], "each ping needs a new round");
        assert!(take_all_fresh(&mut []), "no engines: nothing to wait for");
    }

    #[test]
    fn a_failing_audit_log_leads_the_status_line() {
        assert_eq!(
            with_audit_state("default: 1 live".to_owned(), true),
            "AUDIT LOG NOT WRITABLE, hangups stopped; default: 1 live"
        );
        assert_eq!(
            with_audit_state("default: 1 live".to_owned(), false),
            "default: 1 live"
        );
    }

    #[test]
    fn the_status_line_is_one_line() {
        let (_tx, rx) = watch::channel(AccountStatus {
            account: "default".to_owned(),
            last_poll_error: Some("bad\nanswer".to_owned()),
            live_calls: 3,
            ..AccountStatus::default()
        });
        let line = status_line(&[rx]);
        assert_eq!(
            line,
            "default: 3 live, 0 tracked, last poll failed: bad answer"
        );
    }
}
