//! A real PostgreSQL server per test, the way the suites start Mosquitto: `initdb` into a
//! temp dir, `postgres` on an ephemeral 127.0.0.1 port with its unix socket in the same
//! dir, one database created, the server killed by pid when the handle drops.
//!
//! The server runs in the foreground as the test's child (not daemonised by `pg_ctl`), so the
//! kernel ends it with the test process too (`PR_SET_PDEATHSIG`). PostgreSQL refuses to run
//! as root: a test running as root runs `initdb` and `postgres` as the `postgres` system user
//! (or `nobody`), whose data dir it hands over with `chown`.
//!
//! Without PostgreSQL installed, [`Postgres::start`] prints a notice and returns `None` so the
//! test skips; with `STOCKSYNC_REQUIRE_POSTGRES=1` (CI) it panics instead.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_blocking, Proc, TempDir};

/// A running PostgreSQL server with one database, `stocksync`, owned by user `stocksync`.
pub struct Postgres {
    pub port: u16,
    /// `postgres://stocksync@127.0.0.1:<port>/stocksync`
    pub url: String,
    psql: Psql,
    _server: Proc,
}

/// Runs the server's client tools; cheap to clone into another thread.
#[derive(Clone)]
pub struct Psql {
    port: u16,
    bin: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The directory holding `initdb` and `postgres`: Debian's versioned dir, else PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    debian.sort();
    debian.pop().or_else(|| {
        let initdb = super::which("initdb")?;
        let dir = std::fs::canonicalize(initdb).ok()?.parent()?.to_owned();
        dir.join("postgres").exists().then_some(dir)
    })
}

/// The uid/gid to run PostgreSQL as when the test runs as root.
fn unprivileged() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let out = Command::new("id").arg("-u").arg(name).output().ok()?;
        let gid = Command::new("id").arg("-g").arg(name).output().ok()?;
        let parse = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        };
        if let (true, Some(u), Some(g)) = (out.status.success(), parse(&out), parse(&gid)) {
            return Some((u, g));
        }
    }
    panic!(
        "running as root and found neither a `postgres` nor a `nobody` user to run PostgreSQL as"
    );
}

impl Postgres {
    /// Starts a server in `dir`, or `None` (after a printed notice) if PostgreSQL is not
    /// installed and `STOCKSYNC_REQUIRE_POSTGRES` is not set.
    pub fn start(dir: &TempDir) -> Option<Postgres> {
        Postgres::start_with(dir, None)
    }

    /// A server that accepts TCP clients only over TLS, presenting `cert` and `key` (PEM).
    pub fn start_tls(dir: &TempDir, cert: &Path, key: &Path) -> Option<Postgres> {
        Postgres::start_with(dir, Some((cert, key)))
    }

    fn start_with(dir: &TempDir, tls: Option<(&Path, &Path)>) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            if std::env::var("STOCKSYNC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL is not installed (initdb/postgres not found) and STOCKSYNC_REQUIRE_POSTGRES=1");
            }
            eprintln!("NOTICE: PostgreSQL not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH); skipping this test");
            return None;
        };
        let run_as = unprivileged();
        let root = dir.join("pg");
        let (data, socket_dir) = (root.join("data"), root.join("sock"));
        for d in [&root, &data, &socket_dir] {
            std::fs::create_dir_all(d).expect("create postgres dirs");
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown postgres dir");
            }
        }
        // The temp dir itself must be traversable by the unprivileged user.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .expect("chmod data dir");
        let log = root.join("initdb.log");
        let status = command(&bin.join("initdb"), run_as)
            .args([
                "-D",
                path(&data),
                "-U",
                "stocksync",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .args(["--no-sync", "--locale=C"])
            .stdout(std::fs::File::create(&log).expect("initdb log"))
            .stderr(std::fs::File::create(root.join("initdb.err")).expect("initdb log"))
            .status()
            .expect("run initdb");
        assert!(
            status.success(),
            "initdb failed: {}",
            std::fs::read_to_string(root.join("initdb.err")).unwrap_or_default()
        );
        let port = free_port();
        let mut args: Vec<String> = [
            "-D",
            path(&data),
            "-p",
            &port.to_string(),
            "-k",
            path(&socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            // A test server: durability of the server itself is not what the suites test.
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
        .map(str::to_string)
        .to_vec();
        if let Some((cert, key)) = tls {
            args.extend(ssl_args(&data, cert, key, run_as));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = spawn(
            &bin.join("postgres"),
            run_as,
            &args,
            dir.join("postgres.log"),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let pg = Postgres {
            port,
            url: format!("postgres://stocksync@127.0.0.1:{port}/stocksync"),
            psql: Psql {
                port,
                bin,
                socket_dir,
                run_as,
            },
            _server: server,
        };
        wait_blocking(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                && pg
                    .psql
                    .client("pg_isready")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|_| panic!("postgres did not start: {}", pg._server.output()));
        let created = pg
            .psql
            .client("createdb")
            .arg("stocksync")
            .output()
            .expect("run createdb");
        assert!(
            created.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Some(pg)
    }

    /// A handle on the client tools for another thread.
    pub fn psql(&self) -> Psql {
        self.psql.clone()
    }

    /// Runs one SQL statement with `psql` and returns its unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> String {
        self.psql.query(sql)
    }
}

impl Psql {
    /// A client tool of this server's version (`psql`, `createdb`, ...), pointed at it.
    pub fn client(&self, tool: &str) -> Command {
        let mut c = command(&self.bin.join(tool), self.run_as);
        c.args(["-h", path(&self.socket_dir), "-p", &self.port.to_string()]);
        c.args(["-U", "stocksync"]);
        c.stdin(Stdio::null());
        c
    }

    /// Runs one SQL statement with `psql` and returns its unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-d",
                "stocksync",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    /// Immediate shutdown by pid (SIGQUIT: the server removes its shared memory), then the
    /// process handle's SIGKILL if it has not ended within seconds.
    fn drop(&mut self) {
        let pid = self._server.pid() as libc::pid_t;
        if pid > 0 {
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            let _ = wait_blocking(Duration::from_secs(5), || self._server.try_wait().is_some());
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn command(program: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = run_as {
        c.uid(uid).gid(gid);
        // `id`-less environment of the unprivileged user; no HOME under /root.
        c.env("HOME", "/tmp");
    }
    c
}

/// Like [`Proc::spawn`], as `run_as`: the uid/gid change happens before the death signal is
/// armed (a credential change would clear it), so the server still dies with the test.
fn spawn(program: &Path, run_as: Option<(u32, u32)>, args: &[&str], log: PathBuf) -> Proc {
    let out = std::fs::File::create(&log).expect("log file");
    let mut c = command(program, run_as);
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    Proc::from_child(child, log)
}

/// Copies the server's certificate and key into the data directory (PostgreSQL refuses a key
/// others can read) and lets TCP clients in only over TLS (`hostssl`); the unix socket, which
/// the test's own `psql` uses, stays as it is.
fn ssl_args(data: &Path, cert: &Path, key: &Path, run_as: Option<(u32, u32)>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let (c, k) = (data.join("server.crt"), data.join("server.key"));
    std::fs::copy(cert, &c).expect("copy server certificate");
    std::fs::copy(key, &k).expect("copy server key");
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    if let Some((uid, gid)) = run_as {
        for f in [&c, &k] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown tls file");
        }
    }
    let hba = data.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    let only_tls: String = text
        .lines()
        .map(|l| match l.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&hba, only_tls).expect("write pg_hba.conf");
    [
        "-c",
        "ssl=on",
        "-c",
        "ssl_cert_file=server.crt",
        "-c",
        "ssl_key_file=server.key",
    ]
    .map(str::to_string)
    .to_vec()
}
