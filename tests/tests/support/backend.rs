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
//! ([`Collectors`]'s start returns `None`), unless `STOCKSYNC_REQUIRE_POSTGRES=1`.
//! Each variant starts its own server (about a second): cases never share one.

use stocksync_collector::Collector;

use super::postgres::Postgres;
use super::{collector_toml, free_port, get, get_blocking, toml_config, Service, TempDir};

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

/// How to start the collector side; see [`CollectorSpec::start`].
pub struct CollectorSpec<'a> {
    backend: Backend,
    dir: &'a TempDir,
    broker_port: u16,
    extra: String,
    warehouses: Vec<String>,
    workers: usize,
    lease_secs: u64,
    http_port: Option<u16>,
}

impl<'a> CollectorSpec<'a> {
    /// One collector (SQLite) or two workers (PostgreSQL) on the broker at `broker_port`,
    /// files in `dir`.
    pub fn new(backend: Backend, dir: &'a TempDir, broker_port: u16) -> CollectorSpec<'a> {
        CollectorSpec {
            backend,
            dir,
            broker_port,
            extra: String::new(),
            warehouses: Vec::new(),
            workers: 2,
            lease_secs: 3,
            http_port: None,
        }
    }

    /// TOML appended to every collector's config (catalog, channels, orders, tokens, ...).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// Warehouses the PostgreSQL workers share out (`[store] warehouses`), besides those
    /// of `[[locations]]`; a worker needs at least one. Ignored on SQLite.
    pub fn warehouses(mut self, warehouses: &[&str]) -> Self {
        self.warehouses = warehouses.iter().map(|w| w.to_string()).collect();
        self
    }

    /// How many PostgreSQL workers (default 2). Ignored on SQLite.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The PostgreSQL lease time (default 3 s, the shortest allowed). Ignored on SQLite.
    pub fn lease_secs(mut self, secs: u64) -> Self {
        self.lease_secs = secs;
        self
    }

    /// The HTTP port of the (first) collector, e.g. one a test reserved to know it up front.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// The config text of PostgreSQL worker `worker_id` on `pg`, serving HTTP on `port`:
    /// the same as a SQLite collector's plus a `[store]` table, its unused ledger path its own.
    pub fn worker_toml(&self, pg: &Postgres, worker_id: &str, port: u16) -> String {
        let store = format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{worker_id}\"\nlease_secs = {}\nwarehouses = {:?}\n",
            pg.url, self.lease_secs, self.warehouses
        );
        collector_toml(
            self.dir,
            self.broker_port,
            port,
            &format!("{}{store}", self.extra),
        )
        .replace(
            &format!("{:?}", self.dir.join("ledger.db")),
            &format!("{:?}", self.dir.join(&format!("unused-{worker_id}.db"))),
        )
    }

    /// The SQLite collector's config text, serving HTTP on `port`.
    pub fn sqlite_toml(&self, port: u16) -> String {
        collector_toml(self.dir, self.broker_port, port, &self.extra)
    }

    /// Starts the collector side: on SQLite one collector inside the test process (so a
    /// case can stop it gracefully), on PostgreSQL its own server and the worker processes.
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    pub async fn start(self) -> Option<Collectors> {
        let collectors = match self.backend {
            Backend::Sqlite => {
                let config = self.sqlite_toml(self.http_port.unwrap_or(0));
                let collector = Collector::start(toml_config(&config))
                    .await
                    .expect("collector starts");
                Collectors {
                    backend: Backend::Sqlite,
                    urls: vec![format!("http://{}", collector.http_addr)],
                    procs: Vec::new(),
                    in_process: Some(collector),
                    pg: None,
                }
            }
            Backend::Postgres => self.start_workers()?,
        };
        for url in &collectors.urls {
            let health = get(&format!("{url}/healthz")).await.body;
            assert_eq!(
                health["backend"].as_str(),
                self.backend.health_name(),
                "{health}"
            );
        }
        Some(collectors)
    }

    /// Starts the collector side as OS processes that a case can SIGKILL and restart (see
    /// [`Collectors::procs`]): one SQLite collector process or the PostgreSQL workers.
    /// Blocking; `None` as for [`CollectorSpec::start`].
    pub fn start_processes(self) -> Option<Collectors> {
        let collectors = match self.backend {
            Backend::Sqlite => {
                let port = self.http_port.unwrap_or_else(free_port);
                let text = self.sqlite_toml(port);
                let proc =
                    Service::start(self.dir, "stocksync-collector", "collector", &text, port);
                Collectors {
                    backend: Backend::Sqlite,
                    urls: vec![proc.url.clone()],
                    procs: vec![proc],
                    in_process: None,
                    pg: None,
                }
            }
            Backend::Postgres => self.start_workers()?,
        };
        for url in &collectors.urls {
            let health = get_blocking(&format!("{url}/healthz")).body;
            assert_eq!(
                health["backend"].as_str(),
                self.backend.health_name(),
                "{health}"
            );
        }
        Some(collectors)
    }

    fn start_workers(&self) -> Option<Collectors> {
        let pg = Postgres::start(self.dir)?;
        let procs: Vec<Service> = (1..=self.workers)
            .map(|i| {
                let port = match (i, self.http_port) {
                    (1, Some(port)) => port,
                    _ => free_port(),
                };
                let id = format!("w{i}");
                let text = self.worker_toml(&pg, &id, port);
                Service::start(self.dir, "stocksync-collector", &id, &text, port)
            })
            .collect();
        Some(Collectors {
            backend: Backend::Postgres,
            urls: procs.iter().map(|p| p.url.clone()).collect(),
            procs,
            in_process: None,
            pg: Some(pg),
        })
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
    /// The PostgreSQL server (last field: dropped after the workers).
    pub pg: Option<Postgres>,
}

impl Collectors {
    /// The first collector's URL (the SQLite collector, or worker `w1`).
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The in-process SQLite collector, if that is how it was started.
    pub fn collector(&self) -> Option<&Collector> {
        self.in_process.as_ref()
    }

    /// Stops an in-process collector gracefully (its tasks end, its ledger lock is
    /// released); processes are killed and the database stopped.
    pub async fn stop(mut self) {
        if let Some(c) = self.in_process.take() {
            c.stop().await.expect("collector stops");
        }
    }
}
