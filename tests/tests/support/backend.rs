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

    /// The config of the first collector (the SQLite one, or worker `w1`) for a start in
    /// this process.
    fn first_config(&self, pg: Option<&Postgres>) -> String {
        let port = self.http_port.unwrap_or(0);
        match pg {
            None => self.sqlite_toml(port),
            Some(pg) => self.worker_toml(&pg.url, "w1", port),
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

    /// Starts the collector side: on SQLite one collector inside the test process (so a
    /// case can stop it gracefully), on PostgreSQL its own server and the worker processes.
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    pub async fn start(self) -> Option<Collectors> {
        let mut collectors = match self.setup.backend {
            Backend::Sqlite => Collectors::empty(self.setup, None),
            Backend::Postgres => self.start_workers()?,
        };
        if collectors.backend == Backend::Sqlite {
            collectors.start_in_process().await;
        }
        collectors.check_health();
        Some(collectors)
    }

    /// Starts the collector side as OS processes that a case can SIGKILL and restart (see
    /// [`Collectors::procs`]): one SQLite collector process or the PostgreSQL workers.
    /// Blocking; `None` as for [`CollectorSpec::start`].
    pub fn start_processes(self) -> Option<Collectors> {
        let collectors = match self.setup.backend {
            Backend::Sqlite => {
                let port = self.setup.http_port.unwrap_or_else(free_port);
                let text = self.setup.sqlite_toml(port);
                let proc =
                    Service::start(self.dir, "stocksync-collector", "collector", &text, port);
                let mut c = Collectors::empty(self.setup, None);
                c.urls.push(proc.url.clone());
                c.procs.push(proc);
                c
            }
            Backend::Postgres => self.start_workers()?,
        };
        collectors.check_health();
        Some(collectors)
    }

    /// Starts one collector (on PostgreSQL: worker `w1`, on its own server) in this process
    /// and returns why it refused to start; panics if it started. `None` as for
    /// [`CollectorSpec::start`].
    pub async fn refused(self) -> Option<String> {
        let pg = match self.setup.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Postgres::start(self.dir)?),
        };
        let config = self.setup.first_config(pg.as_ref());
        match Collector::start(toml_config(&config)).await {
            Ok(_) => panic!("the collector started with\n{config}"),
            Err(e) => Some(format!("{e:#}")),
        }
    }

    fn start_workers(self) -> Option<Collectors> {
        let pg = Postgres::start(self.dir)?;
        let mut c = Collectors::empty(self.setup, None);
        for i in 1..=c.setup.workers {
            let port = match (i, c.setup.http_port) {
                (1, Some(port)) => port,
                _ => free_port(),
            };
            let id = format!("w{i}");
            let text = c.setup.worker_toml(&pg.url, &id, port);
            let proc = Service::start(self.dir, "stocksync-collector", &id, &text, port);
            c.urls.push(proc.url.clone());
            c.procs.push(proc);
        }
        c.pg = Some(pg);
        Some(c)
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
    in_process: Option<Collector>,
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
            in_process: None,
            setup,
            pg,
        }
    }

    async fn start_in_process(&mut self) {
        let config = self.setup.first_config(None);
        let collector = Collector::start(toml_config(&config))
            .await
            .expect("collector starts");
        self.urls = vec![format!("http://{}", collector.http_addr)];
        self.in_process = Some(collector);
    }

    /// Every collector answers `/healthz` with the backend it was started for.
    fn check_health(&self) {
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

    /// The in-process SQLite collector, if that is how it was started.
    pub fn collector(&self) -> Option<&Collector> {
        self.in_process.as_ref()
    }

    /// The path of worker or collector `i`'s config file (processes only).
    pub fn config_path(&self, i: usize) -> PathBuf {
        let name = match self.backend {
            Backend::Sqlite => "collector".to_string(),
            Backend::Postgres => format!("w{}", i + 1),
        };
        self.setup.dir.join(format!("{name}.toml"))
    }

    /// Stops every collector (gracefully in process, SIGKILL otherwise); the store, the
    /// ports and the broker stay. [`Collectors::start_all`] starts them again.
    pub async fn stop_all(&mut self) {
        if let Some(c) = self.in_process.take() {
            c.stop().await.expect("collector stops");
        }
        for p in &mut self.procs {
            p.kill();
        }
    }

    /// Starts every collector again after [`Collectors::stop_all`], on the same store (the
    /// SQLite file, the PostgreSQL database) with the config as it is now. Processes keep
    /// their ports; an in-process collector gets a new one (read [`Collectors::url`] again).
    pub async fn start_all(&mut self) {
        if self.procs.is_empty() {
            self.start_in_process().await;
        }
        for i in 0..self.procs.len() {
            let port: u16 = self.urls[i]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port in url");
            let text = match self.pg {
                None => self.setup.sqlite_toml(port),
                Some(_) => self.worker_toml(&format!("w{}", i + 1), port),
            };
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

    /// The config text of a PostgreSQL worker named `worker_id` on this side's database,
    /// serving HTTP on `port` (e.g. for a process a case starts by hand).
    pub fn worker_toml(&self, worker_id: &str, port: u16) -> String {
        let pg = self.pg.as_ref().expect("a PostgreSQL collector side");
        self.setup.worker_toml(&pg.url, worker_id, port)
    }

    /// Starts one more PostgreSQL worker process (`w<n+1>`) on this side's database and
    /// returns its index in [`Collectors::procs`] and [`Collectors::urls`].
    pub fn add_worker(&mut self) -> usize {
        let i = self.procs.len();
        let port = free_port();
        let id = format!("w{}", i + 1);
        let text = self.worker_toml(&id, port);
        let proc = Service::start_in(&self.setup.dir, "stocksync-collector", &id, &text, port);
        self.urls.push(proc.url.clone());
        self.procs.push(proc);
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

    /// Stops an in-process collector gracefully (its tasks end, its ledger lock is
    /// released); processes are killed and the database stopped.
    pub async fn stop(mut self) {
        if let Some(c) = self.in_process.take() {
            c.stop().await.expect("collector stops");
        }
    }
}
