//! A running collector side: its URLs, its processes or in-process collectors, its
//! database; stopped, restarted and asked what its workers hold.

use std::path::PathBuf;

use stocksync_collector::Collector;

use super::{Backend, Setup};
use crate::support::postgres::Postgres;
use crate::support::{free_port, get_blocking, toml_config, Service};

/// A running collector side. Dropping it kills the processes, then stops the database.
pub struct Collectors {
    pub backend: Backend,
    /// Every collector's HTTP URL: the SQLite collector's, or each worker's in order.
    pub urls: Vec<String>,
    /// The collector processes, to kill and restart: the SQLite collector's when started
    /// with [`CollectorSpec::start_processes`], else each PostgreSQL worker's.
    pub procs: Vec<Service>,
    in_process: Vec<Collector>,
    pub(super) setup: Setup,
    /// The PostgreSQL server (last field: dropped after the workers).
    pub pg: Option<Postgres>,
}

impl Collectors {
    pub(super) fn empty(setup: Setup, pg: Option<Postgres>) -> Collectors {
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
    pub(super) fn spawn(&mut self, i: usize, text: &str, port: u16) {
        let name = match self.backend {
            Backend::Sqlite => "collector".to_string(),
            Backend::Postgres => format!("w{}", i + 1),
        };
        let proc = Service::start_in_env_args(
            &self.setup.dir,
            "stocksync-collector",
            &name,
            text,
            port,
            &self.setup.env,
            &self.setup.args,
        );
        self.urls.push(proc.url.clone());
        self.procs.push(proc);
    }

    pub(super) async fn start_all_in_process(&mut self) {
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
    pub(super) fn check_health(&self) {
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
        let health = crate::support::get(&format!("{}/healthz", self.urls[i]))
            .await
            .body;
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
        crate::support::wait_for(&what, std::time::Duration::from_secs(20), || async {
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
            sum += crate::support::metric(url, name).await;
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
