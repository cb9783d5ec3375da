//! Security: the auth token never leaks (logs, errors, `/status`,
//! `/metrics`, `Debug`, the audit log), the listener is loopback by default,
//! remote pardons are refused unless allowed, files readable by others are
//! warned about, and `auth_token_file` symlinks are followed (the target's
//! permissions are what count; a dangling link is an error).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::MockConnectInfo;
use callwarden::clock::SystemClock;
use callwarden::config::{self, Environment};
use callwarden::engine::{AccountStatus, Command as EngineCommand};
use callwarden::http::{router, AccountHandle, HttpState};
use callwarden::metrics::Metrics;
use callwarden::sim::{SimOptions, DEFAULT_AUTH_ID};
use common::engine::wait_for;
use common::files::{offline_config, private};
use common::{add_calls, set_faults, start_sim};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "tok-Zq8XvLeak7Canary3Wm";

fn write_policy(dir: &Path) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/limit.toml"),
        "[[rule]]\nname = \"limit-1s\"\nmax_duration = \"1s\"\nmeasure_from = \"start\"\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_output_status_metrics_or_audit() {
    let sim = start_sim(SimOptions {
        accounts: vec![(DEFAULT_AUTH_ID.to_owned(), TOKEN.to_owned())],
        ..SimOptions::ephemeral()
    });
    let uuids = add_calls(
        &sim,
        json!([
            {"age_s": 30.0, "direction": "outbound", "from": "+14155550100", "to": "+14155550101"},
            {"age_s": 30.0, "direction": "outbound", "from": "+14155550100", "to": "+14155550102"},
        ]),
    )
    .await;
    // Errors of every kind before things work: refused, failing, garbled, cut.
    set_faults(
        &sim,
        json!({"scripts": [
            {"endpoint": "list", "responses": [500, {"malformed": "garbage"}, {"reset": true}]},
            {"endpoint": "detail", "uuid": uuids[0], "responses": [{"malformed": "truncated"}, 503]},
            {"method": "DELETE", "uuid": uuids[1], "responses": [502, {"status": 429, "error_format": "structured"}]},
        ]}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    private(&token_file);
    let config = dir.path().join("callwarden.toml");
    std::fs::write(
        &config,
        format!(
            "policies = \"policies\"\n[api]\nbase_url = \"{}\"\nauth_id = \"{DEFAULT_AUTH_ID}\"\nauth_token_file = \"token\"\n\
             [poll]\ninterval = \"300ms\"\n[retry]\ninitial_backoff = \"50ms\"\nmax_backoff = \"300ms\"\n\
             [state]\ndir = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            sim.base_url()
        ),
    )
    .unwrap();
    private(&config);

    let out = dir.path().join("out.log");
    let log = std::fs::File::create(&out).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "-vv", "run"])
        .env_remove("VOBIZ_AUTH_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    let state = sim.state().clone();
    let ids = uuids.clone();
    let ended = wait_for(Duration::from_secs(20), || {
        ids.iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some()))
    })
    .await;
    // The listener's port from the log, then /status and /metrics.
    let text = std::fs::read_to_string(&out).unwrap();
    let addr = text
        .lines()
        .find(|l| l.contains("status listener up"))
        .and_then(|l| l.split("127.0.0.1:").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .expect("listener address in the log");
    let http = reqwest::Client::new();
    let mut served = String::new();
    for path in ["status", "metrics", "readyz", "healthz"] {
        served += &http
            .get(format!("http://127.0.0.1:{addr}/{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    assert!(ended, "the daemon did not enforce:\n{text}");

    // Wrong token: the 401 path of `once` and the error it prints.
    let once = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(&config)
        .args(["-vv", "once"])
        .env("VOBIZ_AUTH_TOKEN", format!("{TOKEN}-wrong"))
        .env("STATE_DIRECTORY", dir.path().join("once-state"))
        .output()
        .unwrap();
    assert_ne!(once.status.code(), Some(0));

    let text = std::fs::read_to_string(&out).unwrap();
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
    assert!(audit.contains("\"outcome\":\"ok\""), "{audit}");
    assert!(
        text.contains("500") || text.contains("failed"),
        "no errors were logged"
    );
    for (what, haystack) in [
        ("daemon output", text.as_str()),
        ("audit log", audit.as_str()),
        ("/status and /metrics", served.as_str()),
        ("once stdout", &String::from_utf8_lossy(&once.stdout)),
        ("once stderr", &String::from_utf8_lossy(&once.stderr)),
    ] {
        assert!(
            !haystack.contains(TOKEN),
            "the token leaked into the {what}"
        );
    }
}

#[test]
fn debug_of_the_loaded_config_hides_the_token() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let config = dir.path().join("callwarden.toml");
    std::fs::write(&config, offline_config("")).unwrap();
    private(&config);
    let env = Environment {
        auth_token: Some(TOKEN.to_owned()),
        ..Environment::default()
    };
    let loaded = config::load(&config, &env).expect("valid");
    let token = loaded.config.accounts[0].token.as_ref().expect("token");
    assert_eq!(token.expose(), TOKEN);
    for rendered in [
        format!("{:?}", loaded.config),
        format!("{:#?}", loaded.config),
        format!("{token}"),
    ] {
        assert!(!rendered.contains(TOKEN), "{rendered}");
    }
}

#[test]
fn the_listener_is_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let config = dir.path().join("callwarden.toml");
    std::fs::write(&config, "[api]\nauth_id = \"MA1\"\n").unwrap();
    let loaded = config::load(&config, &Environment::default()).expect("valid");
    let listen = loaded.config.http.listen.expect("enabled by default");
    assert!(listen.ip().is_loopback(), "{listen}");
    assert!(!loaded.config.http.allow_remote_pardon);
}

/// Serves the status router on loopback with `peer` as every client's
/// address; returns its address and the commands the engine would get.
async fn serve_as(
    peer: SocketAddr,
    allow_remote_pardon: bool,
) -> (SocketAddr, mpsc::Receiver<EngineCommand>) {
    let (_status_tx, status) = watch::channel(AccountStatus::default());
    let (commands, commands_rx) = mpsc::channel(8);
    let state = HttpState {
        metrics: Arc::new(Metrics::new()),
        accounts: vec![AccountHandle { status, commands }],
        allow_remote_pardon,
        poll_interval: Duration::from_secs(1),
        clock: Arc::new(SystemClock),
        api_token: None,
        global_dry_run: false,
        hangups: Arc::default(),
    };
    let app = router(state).layer(MockConnectInfo(peer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, commands_rx)
}

async fn pardon(addr: SocketAddr, commands: &mut mpsc::Receiver<EngineCommand>) -> (u16, bool) {
    let request = reqwest::Client::new()
        .post(format!(
            "http://{addr}/pardon/eac94337-b1cd-499b-82d1-b39bca50dc31?for=10m"
        ))
        .send();
    // Play the engine: answer a pardon if one arrives. An allowed request
    // waits for that answer; a refused one is answered without it.
    let mut request = tokio::spawn(request);
    let (response, reached) = tokio::select! {
        response = &mut request => (response, false),
        command = commands.recv() => {
            let reached = match command {
                Some(EngineCommand::Pardon { reply, .. }) => {
                    let _ = reply.send(callwarden::engine::PardonReply::Tracked);
                    true
                }
                _ => false,
            };
            (request.await, reached)
        }
    };
    (response.unwrap().unwrap().status().as_u16(), reached)
}

#[tokio::test]
async fn remote_pardons_are_refused_unless_allowed() {
    let remote = SocketAddr::from(([203, 0, 113, 7], 40_000));
    let local = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let local6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 40_000));

    let (addr, mut commands) = serve_as(remote, false).await;
    assert_eq!(
        pardon(addr, &mut commands).await,
        (403, false),
        "a remote pardon reached the engine"
    );
    for (peer, allow) in [(remote, true), (local, false), (local6, false)] {
        let (addr, mut commands) = serve_as(peer, allow).await;
        assert_eq!(pardon(addr, &mut commands).await, (200, true), "{peer}");
    }
}

fn check(config: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .env_remove("VOBIZ_AUTH_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn check_warns_about_config_and_token_files_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("callwarden.toml");
    std::fs::write(
        &config,
        "[api]\nauth_id = \"MA1\"\nauth_token_file = \"token\"\n[http]\nlisten = \"\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    for file in [&config, &token] {
        let line = format!(
            "{}:1:1: warning: file is readable by other users",
            file.display()
        );
        assert!(out.contains(&line), "{out}");
    }
}

#[test]
fn token_file_symlinks_are_followed_and_judged_by_their_target() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let config = dir.path().join("callwarden.toml");
    std::fs::write(
        &config,
        "[api]\nauth_id = \"MA1\"\nauth_token_file = \"token\"\n[http]\nlisten = \"\"\n",
    )
    .unwrap();
    private(&config);
    let link = dir.path().join("token");

    // A link to a private file (how Kubernetes and systemd mount secrets): fine.
    let private_target = dir.path().join("secret-a");
    std::fs::write(&private_target, format!("{TOKEN}\n")).unwrap();
    private(&private_target);
    symlink(&private_target, &link).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
    let loaded = config::load(&config, &Environment::default()).unwrap();
    assert_eq!(
        loaded.config.accounts[0].token.as_ref().unwrap().expose(),
        TOKEN
    );

    // A link to a world-readable file: the target's mode is what leaks.
    let open_target = dir.path().join("secret-b");
    std::fs::write(&open_target, "t\n").unwrap();
    std::fs::set_permissions(&open_target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(&link).unwrap();
    symlink(&open_target, &link).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: file is readable by other users"),
        "{out}"
    );

    // A dangling link: a clear error at the setting, never a crash.
    std::fs::remove_file(&link).unwrap();
    symlink(dir.path().join("gone"), &link).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, Some(1), "{out}");
    let at = format!("{}:3:19: error: cannot read token file", config.display());
    assert!(out.contains(&at), "{out}");
    assert!(!out.contains(TOKEN));
}
