//! Hostile inputs from issue 11 through the real binary: numbers in URI,
//! full-width and invisible forms, policy entries that are not files,
//! echoed tokens, oversized requests and durations. The corpus lives in
//! `tests/fixtures/hostile/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::daemon::{Daemon, Knobs, Setup, LIMIT};
use common::default_sim;
use common::engine::wait_for;
use common::files::{offline_config, offline_config_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hostile(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(path)
}

/// `callwarden --config CONFIG ARGS...` with a clean environment: (exit code, stdout, stderr).
fn callwarden(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("VOBIZ_AUTH_TOKEN", "t")
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("callwarden runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn emergency_numbers_in_uri_full_width_and_invisible_forms_are_protected() {
    // One rule hangs up every call; the default protected list holds 911,
    // 112 and 999. Each saved call is overdue, so only protection saves it.
    let (_dir, config) = offline_config_for(&hostile("uri_policy"));
    let cases = [
        ("to_tel_911", true),
        ("to_sip_112", true),
        ("to_sip_999_user_phone", true),
        ("from_tel_plus_911", true),
        ("to_full_width_911", true),
        ("to_zero_width_911", true),
        ("to_arabic_indic_911", true),
        ("to_sip_9111", false),
    ];
    for (name, protected) in cases {
        let call = hostile(&format!("calls/{name}.json"));
        let call = call.to_str().unwrap();
        let (code, stdout, stderr) =
            callwarden(&config, &["explain", "--json", "--call-json", call]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let explained: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let decision = &explained["decision"];
        assert_eq!(decision["rule"], "everything-1m", "{name}: {stdout}");
        assert_eq!(decision["protected"], protected, "{name}: {stdout}");
    }
}

/// A stand-in for a misconfigured proxy: answers every request with 200 and
/// the body of `tests/fixtures/hostile/api/echoed_token.html`, its
/// `{TOKEN}` replaced by the request's `X-Auth-Token` header.
async fn start_echo_server() -> String {
    let template = std::fs::read_to_string(hostile("api/echoed_token.html")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let template = template.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let token = request
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("x-auth-token")
                            .then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body = template.replace("{TOKEN}", &token);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_token_appears_nowhere() {
    const TOKEN: &str = "s3cr3t-T0KEN-echo-4711";
    let sim = default_sim();
    let setup = Setup::new(&sim, &[], Knobs::default());
    std::fs::write(setup.dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let echo = start_echo_server().await;
    let config = std::fs::read_to_string(setup.config_path())
        .unwrap()
        .replace(&sim.base_url(), &echo);
    std::fs::write(setup.config_path(), config).unwrap();

    let socket_path = setup.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = socket.recv(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut run = setup.command(&["run"]);
    run.env("NOTIFY_SOCKET", &socket_path);
    let daemon = Daemon::start_with(run).await;

    // The proxy's answer is an error that quotes the body: it must show up
    // everywhere, with the token taken out.
    let failed_status = {
        let received = Arc::clone(&received);
        move || {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.contains("STATUS=") && m.contains("X-Auth-Token"))
        }
    };
    assert!(
        wait_for(LIMIT, failed_status).await,
        "no STATUS= with the poll error: {:?}",
        received.lock().unwrap()
    );
    let status = daemon.status().await;
    let error = status.to_string();
    assert!(
        error.contains("X-Auth-Token"),
        "no poll error in /status: {error}"
    );
    assert!(
        daemon
            .wait_log(|l| l.to_string().contains("X-Auth-Token"))
            .await
            .is_some(),
        "no poll error logged: {:#?}",
        daemon.logs()
    );
    let logged = daemon.logs().join("\n");

    assert!(!error.contains(TOKEN), "/status leaks the token: {error}");
    assert!(!logged.contains(TOKEN), "stderr leaks the token: {logged}");
    let notified = received.lock().unwrap().join("\n");
    assert!(
        !notified.contains(TOKEN),
        "sd_notify leaks the token: {notified}"
    );
    assert!(error.contains("[redacted]"), "{error}");
}

/// `check` with a hang guard: a FIFO must never block it.
async fn check_bounded(config: &Path) -> (Option<i32>, String) {
    let mut command = common::daemon::command(config, &["check"]);
    command.env("VOBIZ_AUTH_TOKEN", "t");
    let output = common::daemon::run(command).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (output.status.code(), text)
}

#[tokio::test]
async fn dangling_and_looping_symlinks_in_the_policy_directory_are_errors() {
    // Committed as symlinks: `dangling.toml` -> a missing file, `loop.toml` -> itself.
    let dir = hostile("policy_entries");
    let (_c, config) = offline_config_for(&dir);
    let (code, text) = check_bounded(&config).await;
    assert_eq!(code, Some(1), "{text}");
    let dangling = dir.join("dangling.toml");
    let looping = dir.join("loop.toml");
    assert!(
        text.contains(&format!(
            "policy file `{}` is a dangling symlink",
            dangling.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "policy file `{}` is a symlink that cannot be followed",
            looping.display()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn fifos_directories_and_unreadable_policy_entries_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(hostile("policy_ok/ok.toml"), policies.join("ok.toml")).unwrap();
    let fifo = policies.join("fifo.toml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let directory = policies.join("dir.toml");
    std::fs::create_dir(&directory).unwrap();
    // A symlink to a regular file elsewhere is followed.
    let outside = dir.path().join("outside.toml");
    std::fs::write(
        &outside,
        "[[rule]]\nname = \"outside\"\nmax_duration = \"1h\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, policies.join("linked.toml")).unwrap();
    let (_c, config) = offline_config_for(&policies);

    let (code, text) = check_bounded(&config).await;
    assert_eq!(code, Some(1), "{text}");
    for (path, kind) in [(&fifo, "a FIFO"), (&directory, "a directory")] {
        let expected = format!(
            "policy file `{}` is {kind}, not a regular file",
            path.display()
        );
        assert!(text.contains(&expected), "no `{expected}` in {text}");
    }
    assert!(
        !text.contains("outside"),
        "the followed symlink is fine: {text}"
    );

    // Unreadable: only meaningful when not root (root reads anything).
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_dir(&directory).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let secret = policies.join("secret.toml");
        std::fs::write(&secret, "[[rule]]\nname = \"s\"\nmax_duration = \"1h\"\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
        let (code, text) = check_bounded(&config).await;
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(&format!("{}", secret.display())), "{text}");
        std::fs::remove_file(&secret).unwrap();
    }
    let (code, text) = check_bounded(&config).await;
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_pardon_durations_get_400_and_the_daemon_lives_on() {
    let sim = default_sim();
    let setup = Setup::new(&sim, &[], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    let http = reqwest::Client::new();
    let uuid = "eac94337-b1cd-499b-82d1-b39bca50dc31";
    let durations = std::fs::read_to_string(hostile("requests/pardon_durations.txt")).unwrap();
    for duration in durations.lines().filter(|l| !l.is_empty()) {
        let response = http
            .post(format!(
                "http://{}/pardon/{uuid}?for={duration}",
                daemon.addr
            ))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("?for={duration}: no answer: {e}"));
        assert_eq!(response.status().as_u16(), 400, "?for={duration}");
        let body = response.text().await.unwrap();
        assert!(body.contains(duration), "{duration}: {body}");
    }
    let too_long = http
        .post(format!("http://{}/pardon/{uuid}?for=31days", daemon.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(too_long.contains("at most 30 days"), "{too_long}");
    // Still serving, and 30 days is accepted (404: the call is not tracked).
    let ok = http
        .post(format!("http://{}/pardon/{uuid}?for=30days", daemon.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 404);
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert!(!daemon.logs().join("\n").contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_starve_the_daemon() {
    const RULE: &str = "[[rule]]\nname = \"premium-5s\"\nmax_duration = \"5s\"\nmeasure_from = \"start\"\n[rule.match]\nto = [\"+1900*\"]\n";
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("rules.toml", RULE)], Knobs::default());
    let config = std::fs::read_to_string(setup.config_path())
        .unwrap()
        .replace("[log]", "max_connections = 8\n\n[log]");
    std::fs::write(setup.config_path(), config).unwrap();
    let daemon = Daemon::start(&setup).await;

    // More idle connections than the cap: the listener stops accepting.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(tokio::net::TcpStream::connect(daemon.addr).await.unwrap());
    }
    let capped = || {
        daemon.json_logs().iter().any(|l| {
            common::daemon::message(l).starts_with("status listener at its connection cap")
                && l["max_connections"] == 8
        })
    };
    assert!(
        wait_for(LIMIT, capped).await,
        "no cap warning: {:#?}",
        daemon.logs()
    );

    // Enforcement goes on meanwhile.
    let uuid = common::add_calls(
        &sim,
        serde_json::json!([{"age_s": 60.0, "direction": "outbound",
                            "from": "+14155550100", "to": "+19005550101"}]),
    )
    .await;
    assert!(
        common::engine::wait_ended(&sim, &uuid, LIMIT).await,
        "the due call was not hung up"
    );

    // The server closes every idle connection (the queued ones after the
    // first ones went), then answers again.
    let guard = std::time::Duration::from_secs(90);
    for mut stream in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(guard, stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection stayed open: {read:?}"
        );
    }
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert_eq!(daemon.status().await["accounts"][0]["account"], "default");

    // A body over 64 KiB is refused before any handler.
    let response = reqwest::Client::new()
        .post(format!("http://{}/pardon/{}", daemon.addr, uuid[0]))
        .body(vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
}

#[tokio::test]
async fn a_token_file_is_small_and_regular_or_an_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let policy = hostile("policy_ok");
    let fifo = dir.path().join("fifo-token");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let too_large = hostile("token/too_large");
    for (token, expected) in [
        (too_large.clone(), "is larger than 4096 bytes".to_owned()),
        (fifo.clone(), "is a FIFO, not a regular file".to_owned()),
    ] {
        let config = dir.path().join("callwarden.toml");
        std::fs::write(
            &config,
            format!(
                "policies = [{:?}]\n[api]\nauth_id = \"MA1\"\nauth_token_file = {:?}\n[http]\nlisten = \"\"\n",
                policy.display().to_string(),
                token.display().to_string()
            ),
        )
        .unwrap();
        let output = common::daemon::run(common::daemon::command(&config, &["check"])).await;
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{text}");
        let line = format!("token file `{}` {expected}", token.display());
        assert!(text.contains(&line), "no `{line}` in {text}");
    }

    // The same bound on a systemd credential.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::copy(&too_large, credentials.join("vobiz-auth-token")).unwrap();
    let config = dir.path().join("callwarden.toml");
    std::fs::write(
        &config,
        offline_config(&format!(
            "policies = [{:?}]\n",
            policy.display().to_string()
        )),
    )
    .unwrap();
    let mut command = common::daemon::command(&config, &["check"]);
    command.env("CREDENTIALS_DIRECTORY", &credentials);
    let output = common::daemon::run(command).await;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("credential `vobiz-auth-token`: token file")
            && text.contains("is larger than 4096 bytes"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_hangs_up_an_emergency_number_in_uri_form() {
    const EVERYTHING_5S: &str =
        "[[rule]]\nname = \"everything-5s\"\nmax_duration = \"5s\"\nmeasure_from = \"start\"\n";
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("rules.toml", EVERYTHING_5S)], Knobs::default());
    let call = |to: &str| {
        serde_json::json!({"age_s": 60.0, "direction": "outbound",
                           "from": "+14155550100", "to": to})
    };
    // The daemon's config protects 911.
    let uuids = common::add_calls(
        &sim,
        serde_json::json!([
            call("tel:911"),
            call("sip:911@carrier.example;user=phone"),
            call("９１１"),
            call("+14155550199")
        ]),
    )
    .await;
    let daemon = Daemon::start(&setup).await;
    // The ordinary call is hung up; by then the others were decided too.
    assert!(common::engine::wait_ended(&sim, &uuids[3..], LIMIT).await);
    let protected = || {
        uuids[..3].iter().all(|u| {
            setup
                .audit_of(u)
                .iter()
                .any(|r| r["outcome"] == "protected")
        })
    };
    assert!(wait_for(LIMIT, protected).await, "{:#?}", setup.audit());
    for uuid in &uuids[..3] {
        let ended = sim.state().call(uuid).is_some_and(|c| c.ended_at.is_some());
        assert!(!ended, "an emergency call {uuid} was hung up");
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_after_a_symlink_target_vanishes_fails_and_keeps_the_rules() {
    const RULE: &str = "[[rule]]\nname = \"linked-5s\"\nmax_duration = \"5s\"\nmeasure_from = \"start\"\n[rule.match]\nto = [\"+1900*\"]\n";
    let sim = default_sim();
    let setup = Setup::new(&sim, &[], Knobs::default());
    let target = setup.dir.path().join("shared-rules.toml");
    std::fs::write(&target, RULE).unwrap();
    std::os::unix::fs::symlink(&target, setup.dir.path().join("policies/linked.toml")).unwrap();
    let daemon = Daemon::start(&setup).await;

    std::fs::remove_file(&target).unwrap();
    daemon.signal(libc::SIGHUP);
    let failed = || {
        daemon
            .json_logs()
            .iter()
            .any(|l| common::daemon::message(l).starts_with("reload failed"))
    };
    assert!(wait_for(LIMIT, failed).await, "{:#?}", daemon.logs());
    let logs = daemon.logs().join("\n");
    assert!(
        logs.contains("linked.toml` is a dangling symlink"),
        "{logs}"
    );
    assert!(!logs.contains("reloaded config and policies"), "{logs}");

    // The old rule still holds: a call it matches is hung up.
    let uuid = common::add_calls(
        &sim,
        serde_json::json!([{"age_s": 60.0, "direction": "outbound",
                            "from": "+14155550100", "to": "+19005550101"}]),
    )
    .await;
    assert!(
        common::engine::wait_ended(&sim, &uuid, LIMIT).await,
        "the rule was dropped"
    );
}
