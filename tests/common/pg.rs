//! A throwaway PostgreSQL server for the HA tests: `initdb` into a temp dir,
//! `pg_ctl start` on a free loopback port, stopped and removed on drop.
//!
//! `initdb` refuses to run as root, so as root (CI) every server command runs
//! as the `postgres` system user, which owns the temp dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running PostgreSQL server owned by one test.
pub struct PgServer {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL is installed.
fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    // Highest major version last; numeric so that 9 < 15.
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    /// Starts a fresh server, or returns `None` after printing a skip notice
    /// when PostgreSQL is not installed. Under `CI` a missing PostgreSQL is
    /// a failure, so the HA tests can never be skipped silently there.
    pub fn start() -> Option<PgServer> {
        let Some(bindir) = find_bindir() else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin) and CI is set");
            }
            eprintln!(
                "SKIP: PostgreSQL binaries not found; install postgresql to run the HA tests"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("callwarden-pg-")
            .tempdir()
            .expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the temp dir to postgres");
        }
        let mut server = PgServer {
            bindir,
            dir,
            port: 0,
            as_postgres,
        };
        let data = server.data_dir();
        let out = server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", show(&out));
        // A port picked free can be taken before the server binds it: retry.
        for attempt in 0..5 {
            server.port = free_port();
            if server.try_start() {
                return Some(server);
            }
            eprintln!(
                "pg_ctl start failed on port {} (attempt {attempt})",
                server.port
            );
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bindir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }

    fn try_start(&self) -> bool {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        out.status.success()
    }

    /// Starts the server again after [`PgServer::stop`], on the same port.
    pub fn restart(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not restart: {}",
            self.log()
        );
    }

    /// Stops the server immediately (like a crash: no checkpoint).
    pub fn stop(&self) {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {}", show(&out));
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for the superuser on the default database.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The temp dir holding the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        if let Some(data) = data.to_str() {
            // Already stopped is fine: nothing to report from a destructor.
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
