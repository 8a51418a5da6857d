//! The collector side of a test stack on either store: one SQLite collector, or several
//! collector worker processes sharing one real PostgreSQL server (see [`super::postgres`]).
//!
//! A suite writes each case once, as `async fn case(backend: Backend)`, and
//! `on_both_backends!(case)` turns it into two tests, `case::sqlite` and `case::postgres`,
//! with the same requests and the same expected answers. Where the backends promise
//! different things (a second SQLite collector fails fast, a second PostgreSQL worker shares
//! the warehouses by leases) the case branches on [`Backend`] and tests each promise.
//!
//! The PostgreSQL variant prints a notice and passes when PostgreSQL is not installed
//! ([`CollectorSpec::start`] returns `None`), unless `STOCKSYNC_REQUIRE_POSTGRES=1`.
//! Each variant starts its own server (about a second): cases never share one.

use std::path::PathBuf;

use stocksync_collector::Collector;

use super::postgres::Postgres;
use super::{collector_toml_with_ledger, free_port, toml_config, TempDir};

mod collectors;
pub use collectors::Collectors;

/// Which store the collector runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// One collector process with its SQLite ledger.
    Sqlite,
    /// Collector worker processes on one PostgreSQL database.
    Postgres,
}

impl Backend {
    /// What the collector's `/healthz` says in `backend` (SQLite does not say).
    pub fn health_name(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("postgres"),
        }
    }
}

/// A test that runs on both backends, as `<case>::sqlite` and `<case>::postgres`:
/// `on_both_backends!(case)` for `async fn case(Backend)` (a two-thread tokio runtime),
/// `on_both_backends!(blocking case)` for `fn case(Backend)`,
/// `on_both_backends!(#[ignore = "why"] case)` for an async measurement run explicitly.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::backend::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::backend::Backend::Postgres).await
            }
        }
    };
    (#[ignore = $why:literal] $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn sqlite() {
                super::$name($crate::support::backend::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn postgres() {
                super::$name($crate::support::backend::Backend::Postgres).await
            }
        }
    };
    (blocking $name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::support::backend::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::support::backend::Backend::Postgres)
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// What a collector side is made of; kept by [`Collectors`] to restart it.
#[derive(Clone)]
struct Setup {
    backend: Backend,
    dir: PathBuf,
    broker_port: u16,
    extra: String,
    warehouses: Vec<String>,
    workers: usize,
    lease_secs: u64,
    http_port: Option<u16>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Setup {
    /// The SQLite collector's config text, serving HTTP on `port`.
    fn sqlite_toml(&self, port: u16) -> String {
        collector_toml_with_ledger(
            &self.dir.join("ledger.db"),
            self.broker_port,
            port,
            &self.extra,
        )
    }

    /// The config text of PostgreSQL worker `worker_id` on the database at `url`, serving
    /// HTTP on `port`: the SQLite collector's plus a `[store]` table.
    fn worker_toml(&self, url: &str, worker_id: &str, port: u16) -> String {
        let store = format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nworker_id = \"{worker_id}\"\nlease_secs = {}\nwarehouses = {:?}\n",
            self.lease_secs, self.warehouses
        );
        let unused = self.dir.join(format!("unused-{worker_id}.db"));
        collector_toml_with_ledger(
            &unused,
            self.broker_port,
            port,
            &format!("{}{store}", self.extra),
        )
    }

    /// The config of collector `i` (the SQLite one, or worker `w<i+1>`) serving on `port`.
    fn config(&self, pg: Option<&Postgres>, i: usize, port: u16) -> String {
        match pg {
            None => self.sqlite_toml(port),
            Some(pg) => self.worker_toml(&pg.url, &format!("w{}", i + 1), port),
        }
    }

    /// The port of collector `i` at its first start (0: any, for one in this process).
    fn port(&self, i: usize, in_process: bool) -> u16 {
        match (i, self.http_port) {
            (0, Some(port)) => port,
            _ if in_process => 0,
            _ => free_port(),
        }
    }

    /// True if the collectors serve HTTPS (`[http.tls]` in the extra config).
    fn https(&self) -> bool {
        self.extra.contains("[http.tls]")
    }

    /// How many collectors: one SQLite collector, or the workers.
    fn members(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 1,
            Backend::Postgres => self.workers,
        }
    }
}

/// How to start the collector side; see [`CollectorSpec::start`].
pub struct CollectorSpec<'a> {
    dir: &'a TempDir,
    setup: Setup,
}

impl<'a> CollectorSpec<'a> {
    /// One collector (SQLite) or two workers (PostgreSQL) on the broker at `broker_port`,
    /// files in `dir`.
    pub fn new(backend: Backend, dir: &'a TempDir, broker_port: u16) -> CollectorSpec<'a> {
        CollectorSpec {
            dir,
            setup: Setup {
                backend,
                dir: dir.path().to_owned(),
                broker_port,
                extra: String::new(),
                warehouses: Vec::new(),
                workers: 2,
                lease_secs: 3,
                http_port: None,
                env: Vec::new(),
                args: Vec::new(),
            },
        }
    }

    /// TOML appended to every collector's config (catalog, channels, orders, tokens, ...).
    pub fn extra(mut self, toml: &str) -> Self {
        self.setup.extra.push_str(toml);
        self.setup.extra.push('\n');
        self
    }

    /// Warehouses the PostgreSQL workers share out (`[store] warehouses`), besides those
    /// of `[[locations]]`; a worker needs at least one. Ignored on SQLite.
    pub fn warehouses(mut self, warehouses: &[&str]) -> Self {
        self.setup.warehouses = warehouses.iter().map(|w| w.to_string()).collect();
        self
    }

    /// How many PostgreSQL workers (default 2). Ignored on SQLite.
    pub fn workers(mut self, n: usize) -> Self {
        self.setup.workers = n;
        self
    }

    /// The PostgreSQL lease time (default 3 s, the shortest allowed). Ignored on SQLite.
    pub fn lease_secs(mut self, secs: u64) -> Self {
        self.setup.lease_secs = secs;
        self
    }

    /// The HTTP port of the (first) collector, e.g. one a test reserved to know it up front.
    pub fn http_port(mut self, port: u16) -> Self {
        self.setup.http_port = Some(port);
        self
    }

    /// An environment variable for collector processes (e.g. `RUST_LOG`); a collector in
    /// this process shares the test's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.setup.env.push((key.into(), value.into()));
        self
    }

    /// Command-line arguments for collector processes after `--config FILE` (e.g.
    /// `--log-format json`); ignored by a collector in this process.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.setup.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the collector side: on SQLite one collector inside the test process (so a
    /// case can stop it gracefully), on PostgreSQL its own server and the worker processes.
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    pub async fn start(self) -> Option<Collectors> {
        match self.setup.backend {
            Backend::Sqlite => self.start_in_process().await,
            Backend::Postgres => tokio::task::block_in_place(|| self.start_processes()),
        }
    }

    /// Starts every collector inside the test process: the SQLite collector, or the
    /// PostgreSQL workers on their own server. The only way to a collector side serving
    /// HTTPS (`[http.tls]`), whose health is then not checked here.
    pub async fn start_in_process(self) -> Option<Collectors> {
        let pg = match self.setup.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Postgres::start(self.dir)?),
        };
        let mut c = Collectors::empty(self.setup, pg);
        c.start_all_in_process().await;
        c.check_health();
        Some(c)
    }

    /// Starts the collector side as OS processes that a case can SIGKILL and restart (see
    /// [`Collectors::procs`]): one SQLite collector process or the PostgreSQL workers.
    /// Blocking; `None` as for [`CollectorSpec::start`].
    pub fn start_processes(self) -> Option<Collectors> {
        assert!(
            !self.setup.https(),
            "a collector process serving HTTPS: use start_in_process"
        );
        let pg = match self.setup.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Postgres::start(self.dir)?),
        };
        let mut c = Collectors::empty(self.setup, pg);
        for i in 0..c.setup.members() {
            let port = c.setup.port(i, false);
            let text = c.setup.config(c.pg.as_ref(), i, port);
            c.spawn(i, &text, port);
        }
        c.check_health();
        Some(c)
    }

    /// Starts one collector (on PostgreSQL: worker `w1`, on its own server) in this process
    /// and returns why it refused to start; panics if it started. `None` as for
    /// [`CollectorSpec::start`].
    pub async fn refused(self) -> Option<String> {
        let pg = match self.setup.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Postgres::start(self.dir)?),
        };
        let config = self.setup.config(pg.as_ref(), 0, self.setup.port(0, true));
        match Collector::start(toml_config(&config)).await {
            Ok(_) => panic!("the collector started with\n{config}"),
            Err(e) => Some(format!("{e:#}")),
        }
    }
}
