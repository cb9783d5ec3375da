//! The packaged man pages and shell completions are exactly what the clap
//! definitions generate today, and the Debian package installs each of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_callwarden");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file in `dir`, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

const REGENERATE: &str = "regenerate with `packaging/regenerate.sh`";

#[test]
fn man_pages_match_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new(BIN)
        .args(["generate", "man"])
        .arg(dir.path())
        .status()
        .expect("generate runs");
    assert!(status.success());
    let generated = files(dir.path());
    let packaged = files(&root().join("packaging/man"));
    assert!(generated.contains_key("callwarden.1"));
    assert!(generated.contains_key("callwarden-run.1"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        packaged.keys().collect::<Vec<_>>(),
        "packaging/man has other pages than the CLI's commands: {REGENERATE}"
    );
    for (name, bytes) in &generated {
        assert!(
            packaged.get(name) == Some(bytes),
            "packaging/man/{name} is out of date: {REGENERATE}"
        );
    }
}

#[test]
fn completions_match_the_cli() {
    for (shell, file) in [
        ("bash", "callwarden.bash"),
        ("zsh", "_callwarden"),
        ("fish", "callwarden.fish"),
    ] {
        let output = Command::new(BIN)
            .args(["generate", "completions", shell])
            .output()
            .expect("generate runs");
        assert!(output.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("pardon") && text.contains("config"),
            "{shell}"
        );
        assert!(
            !text.contains("generate"),
            "{shell}: the packaging command leaks"
        );
        let packaged =
            std::fs::read(root().join("packaging/completions").join(file)).expect("packaged file");
        assert!(
            packaged == output.stdout,
            "packaging/completions/{file} is out of date: {REGENERATE}"
        );
    }
}

#[test]
fn the_debian_package_installs_them() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("deb assets");
    let sources: Vec<&str> = assets
        .iter()
        .filter_map(|a| a.as_array()?.first()?.as_str())
        .collect();
    for wanted in [
        "packaging/man/*.1",
        "packaging/completions/callwarden.bash",
        "packaging/completions/_callwarden",
        "packaging/completions/callwarden.fish",
        "docs/*.md",
        "examples/prometheus/callwarden-alerts.yml",
        "examples/grafana/callwarden-dashboard.json",
    ] {
        assert!(sources.contains(&wanted), "no deb asset for {wanted}");
    }
    // Every literal asset source exists.
    for source in sources
        .iter()
        .filter(|s| !s.contains('*') && !s.starts_with("target/"))
    {
        assert!(
            root().join(source).exists(),
            "deb asset {source} is missing"
        );
    }
}

/// The unit with its paths pointed at this build (`verify` wants the binary
/// to exist), plus `extra` appended as a drop-in would add it.
fn unit_with(extra: &str, dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(root().join("systemd/callwarden.service")).expect("unit");
    let path = dir.join("callwarden.service");
    std::fs::write(
        &path,
        format!("{}\n{extra}", unit.replace("/usr/bin/callwarden", BIN)),
    )
    .expect("write unit");
    path
}

/// `systemd-analyze ARGS UNIT`, or `None` where systemd-analyze is missing.
fn analyze(args: &[&str], unit: &Path) -> Option<std::process::Output> {
    match Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
    {
        Ok(output) => Some(output),
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is needed in CI: {error}"
            );
            eprintln!("skipped: no systemd-analyze ({error})");
            None
        }
    }
}

/// The exposure `systemd-analyze security --offline=true` gives `unit`.
fn exposure(unit: &Path) -> Option<f64> {
    let output = analyze(&["security", "--offline=true"], unit)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    let value = line
        .rsplit(':')
        .next()
        .expect("value")
        .split_whitespace()
        .next();
    Some(value.and_then(|v| v.parse().ok()).expect("a number"))
}

/// The ```ini blocks of docs/operations.md (the documented drop-ins).
fn documented_dropins() -> Vec<String> {
    let page = std::fs::read_to_string(root().join("docs/operations.md")).expect("runbook");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match current.as_mut() {
            None if line.trim() == "```ini" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn the_unit_and_its_documented_dropins_verify_and_stay_hardened() {
    let unit_text =
        std::fs::read_to_string(root().join("systemd/callwarden.service")).expect("unit");
    assert_eq!(
        unit_text.matches("\nLimitNOFILE=").count(),
        1,
        "one LimitNOFILE="
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let dropins = documented_dropins();
    assert!(
        dropins.iter().any(|d| d.contains("IPAddressDeny=any"))
            && dropins
                .iter()
                .any(|d| d.contains("LoadCredentialEncrypted=")),
        "the runbook lost a drop-in: {dropins:?}"
    );
    let mut all = String::new();
    for extra in std::iter::once(String::new()).chain(dropins.iter().cloned()) {
        all.push_str(&extra);
        for text in [&extra, &all] {
            let unit = unit_with(text, dir.path());
            let Some(verify) = analyze(&["verify"], &unit) else {
                return;
            };
            let stderr = String::from_utf8_lossy(&verify.stderr);
            assert!(
                verify.status.success() && !stderr.contains("callwarden.service:"),
                "systemd-analyze verify with\n{text}\n{stderr}"
            );
            let score = exposure(&unit).expect("exposure");
            assert!(score <= 1.1, "exposure {score} > 1.1 with\n{text}");
        }
    }
}
