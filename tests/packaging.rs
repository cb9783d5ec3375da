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

const REGENERATE: &str = "regenerate with `cargo run -- generate man packaging/man` and \
     `cargo run -- generate completions SHELL > packaging/completions/FILE`";

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
