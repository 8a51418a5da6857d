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
use super::{collector_toml_with_ledger, free_port, get_blocking, toml_config, Service, TempDir};

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
/// `on_both_backends!(blocking case)` for `fn case(Backend)`.
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

/// A running collector side. Dropping it kills the processes, then stops the database.
pub struct Collectors {
    pub backend: Backend,
    /// Every collector's HTTP URL: the SQLite collector's, or each worker's in order.
    pub urls: Vec<String>,
    /// The collector processes, to kill and restart: the SQLite collector's when started
    /// with [`CollectorSpec::start_processes`], else each PostgreSQL worker's.
    pub procs: Vec<Service>,
    in_process: Vec<Collector>,
    setup: Setup,
    /// The PostgreSQL server (last field: dropped after the workers).
    pub pg: Option<Postgres>,
}

impl Collectors {
    fn empty(setup: Setup, pg: Option<Postgres>) -> Collectors {
        Collectors {
            backend: setup.backend,
            urls: Vec::new(),
            procs: Vec::new(),
            in_process: Vec::new(),
            setup,
            pg,
        }
    }

    /// Starts collector `i` as a process with `text` on `port`.
    fn spawn(&mut self, i: usize, text: &str, port: u16) {
        let name = match self.backend {
            Backend::Sqlite => "collector".to_string(),
            Backend::Postgres => format!("w{}", i + 1),
        };
        let proc = Service::start_in_env(
            &self.setup.dir,
            "stocksync-collector",
            &name,
            text,
            port,
            &self.setup.env,
        );
        self.urls.push(proc.url.clone());
        self.procs.push(proc);
    }

    async fn start_all_in_process(&mut self) {
        self.urls.clear();
        let scheme = if self.setup.https() { "https" } else { "http" };
        for i in 0..self.setup.members() {
            let config = self
                .setup
                .config(self.pg.as_ref(), i, self.setup.port(i, true));
            let collector = Collector::start(toml_config(&config))
                .await
                .expect("collector starts");
            self.urls
                .push(format!("{scheme}://{}", collector.http_addr));
            self.in_process.push(collector);
        }
    }

    /// Every collector answers `/healthz` with the backend it was started for (not checked
    /// over HTTPS).
    fn check_health(&self) {
        if self.setup.https() {
            return;
        }
        for url in &self.urls {
            let health = get_blocking(&format!("{url}/healthz")).body;
            assert_eq!(
                health["backend"].as_str(),
                self.backend.health_name(),
                "{health}"
            );
        }
    }

    /// The first collector's URL (the SQLite collector, or worker `w1`).
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The collectors running in this process (none when they are processes).
    pub fn in_process(&self) -> &[Collector] {
        &self.in_process
    }

    /// The path of worker or collector `i`'s config file (processes only).
    pub fn config_path(&self, i: usize) -> PathBuf {
        let name = match self.backend {
            Backend::Sqlite => "collector".to_string(),
            Backend::Postgres => format!("w{}", i + 1),
        };
        self.setup.dir.join(format!("{name}.toml"))
    }

    /// The config text of a PostgreSQL worker named `worker_id` on this side's database,
    /// serving HTTP on `port` (e.g. for a process a case starts by hand).
    pub fn worker_toml(&self, worker_id: &str, port: u16) -> String {
        let pg = self.pg.as_ref().expect("a PostgreSQL collector side");
        self.setup.worker_toml(&pg.url, worker_id, port)
    }

    /// Starts one more PostgreSQL worker process (`w<n+1>`) on this side's database and
    /// returns its index in [`Collectors::procs`] and [`Collectors::urls`].
    pub fn add_worker(&mut self) -> usize {
        assert!(self.in_process.is_empty(), "a side of processes");
        let i = self.procs.len();
        let port = free_port();
        let text = self.worker_toml(&format!("w{}", i + 1), port);
        self.spawn(i, &text, port);
        self.check_health();
        i
    }

    /// The warehouses worker `i` holds, as its `/healthz` says (empty on SQLite).
    pub async fn held_by(&self, i: usize) -> Vec<String> {
        let health = super::get(&format!("{}/healthz", self.urls[i])).await.body;
        let held = health["warehouses"].as_array().cloned().unwrap_or_default();
        held.iter()
            .filter_map(|w| w.as_str().map(String::from))
            .collect()
    }

    /// Waits until each of `warehouses` is held by exactly one worker (as its `/healthz`
    /// says); a worker subscribes to a warehouse's movements as soon as it holds it. At once
    /// on SQLite, whose one collector subscribes to every warehouse at start.
    pub async fn wait_held(&self, warehouses: &[&str]) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let what = format!("{warehouses:?} each held by one worker");
        super::wait_for(&what, std::time::Duration::from_secs(20), || async {
            let mut held: Vec<String> = Vec::new();
            for i in 0..self.urls.len() {
                held.extend(self.held_by(i).await);
            }
            warehouses
                .iter()
                .all(|w| held.iter().filter(|h| h == w).count() == 1)
        })
        .await;
    }

    /// The sum of one `/metrics` counter over every collector (a worker counts its own).
    pub async fn metric(&self, name: &str) -> u64 {
        let mut sum = 0;
        for url in &self.urls {
            sum += super::metric(url, name).await;
        }
        sum
    }

    /// Stops every collector (gracefully in process, SIGKILL otherwise); the store, the
    /// ports and the broker stay. [`Collectors::start_all`] starts them again.
    pub async fn stop_all(&mut self) {
        for c in self.in_process.drain(..) {
            c.stop().await.expect("collector stops");
        }
        for p in &mut self.procs {
            p.kill();
        }
    }

    /// Starts every collector again after [`Collectors::stop_all`], on the same store (the
    /// SQLite file, the PostgreSQL database) with the config as it is now. Processes keep
    /// their ports; collectors in this process get new ones (read the URLs again).
    pub async fn start_all(&mut self) {
        if self.procs.is_empty() {
            self.start_all_in_process().await;
        }
        for i in 0..self.procs.len() {
            let port: u16 = self.urls[i]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port in url");
            let text = self.setup.config(self.pg.as_ref(), i, port);
            std::fs::write(self.config_path(i), text).expect("write config");
            tokio::task::block_in_place(|| self.procs[i].restart());
        }
        self.check_health();
    }

    /// [`Collectors::stop_all`], then [`Collectors::start_all`] with `extra` appended to
    /// every collector's config.
    pub async fn restart_with(&mut self, extra: &str) {
        self.stop_all().await;
        self.setup.extra.push_str(extra);
        self.setup.extra.push('\n');
        self.start_all().await;
    }

    /// Stops the collectors in this process gracefully (their tasks end, the SQLite
    /// ledger's lock is released); processes are killed and the database stopped on drop.
    pub async fn stop(mut self) {
        for c in self.in_process.drain(..) {
            c.stop().await.expect("collector stops");
        }
    }
}
