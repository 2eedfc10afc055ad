//! A throwaway PostgreSQL server for tests: a fresh cluster in a temporary
//! directory on a free loopback port, stopped when dropped. Needs Debian's
//! `postgresql` package (`make db-deps` installs it).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test cluster.
pub struct PgServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Connection URL of its `postgres` database, as user `tollgate`.
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
        .expect(
        "PostgreSQL's server binaries are missing: run `make db-deps` (Debian package postgresql)",
    )
}

/// PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user.
fn run_as() -> Option<(u32, u32)> {
    let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if !root {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// Starts a cluster and waits until it accepts connections.
    pub async fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = run_as();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "tollgate",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_owner(&mut initdb);
        assert!(
            initdb.status().expect("initdb runs").success(),
            "initdb failed"
        );
        let port = free_port();
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_owner(&mut server);
        let child = server.spawn().expect("postgres starts");
        let url = format!("postgresql://tollgate@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start on {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        PgServer {
            child,
            _dir: dir,
            url,
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown, which also ends its backends.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
