//! Supervision of a process's long-running tasks (consumers, forwarders, HTTP servers).
//!
//! Every such task is critical: a consumer that stopped while `/healthz` says ok is the
//! silent failure this module exists to prevent. Tasks run in one `JoinSet`; the first one to
//! end before shutdown (with an error, a panic, or even `Ok`) is reported with its name, the
//! process stops with that error, and systemd (`Restart=always`) starts it again. Meanwhile
//! [`TaskHealth`] tells `/healthz` which tasks run.
//!
//! The supervisor also owns the shutdown signal (mini-redis's `shutdown.rs`): every task takes
//! [`Supervisor::shutdown_signal`], finishes its current batch when it turns true and returns;
//! [`Supervisor::stop`] raises it and waits for all of them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// Which tasks run, for `/healthz`.
#[derive(Default)]
pub struct TaskHealth {
    /// Name and, once it ended, why.
    tasks: Mutex<Vec<(&'static str, Option<String>)>>,
}

impl TaskHealth {
    /// `(name, None)` for a running task, `(name, Some(reason))` for one that ended.
    pub fn snapshot(&self) -> Vec<(&'static str, Option<String>)> {
        self.tasks.lock().expect("task health lock").clone()
    }

    /// True while every task runs.
    pub fn all_running(&self) -> bool {
        self.snapshot().iter().all(|(_, ended)| ended.is_none())
    }

    fn set(&self, name: &'static str, ended: Option<String>) {
        let mut tasks = self.tasks.lock().expect("task health lock");
        match tasks.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = ended,
            None => tasks.push((name, ended)),
        }
    }
}

/// Owns a process's long-running tasks and the signal that stops them.
pub struct Supervisor {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
    health: Arc<TaskHealth>,
    shutdown: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Supervisor {
        Supervisor {
            set: JoinSet::new(),
            names: HashMap::new(),
            health: Arc::default(),
            shutdown: watch::channel(false).0,
        }
    }
}

impl Supervisor {
    /// Turns true when the tasks are asked to stop (cancellation): a task returns once it does.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Asks every task to stop and waits for them; the first failure is returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        self.join_all().await
    }

    /// The health view shared with `/healthz`.
    pub fn health(&self) -> Arc<TaskHealth> {
        self.health.clone()
    }

    /// Starts `task` under `name` (names should be unique).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
        self.health.set(name, None);
    }

    /// Waits until any task ends and returns why, naming it. An `Ok` end counts too: before
    /// shutdown no task may end. Never resolves when there are no tasks. Cancel-safe.
    pub async fn wait(&mut self) -> anyhow::Error {
        let Some(ended) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (name, reason) = self.record(ended);
        anyhow::anyhow!(
            "task `{name}` ended: {}; stopping so that the service manager restarts the process",
            reason.unwrap_or_else(|| "it returned without being asked to stop".into())
        )
    }

    /// After shutdown was signalled: waits for every task; the first failure is returned.
    pub async fn join_all(mut self) -> anyhow::Result<()> {
        let mut first = None;
        while let Some(ended) = self.set.join_next_with_id().await {
            if let (name, Some(reason)) = self.record(ended) {
                first.get_or_insert_with(|| anyhow::anyhow!("task `{name}` failed: {reason}"));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Marks a finished task in the health view; returns its name and error, if any.
    fn record(
        &mut self,
        ended: Result<(Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> (&'static str, Option<String>) {
        let (id, reason) = match ended {
            Ok((id, Ok(()))) => (id, None),
            Ok((id, Err(e))) => (id, Some(format!("{e:#}"))),
            Err(e) if e.is_panic() => (e.id(), Some(format!("panicked: {}", panic_text(e)))),
            Err(e) => (e.id(), Some("cancelled".into())),
        };
        let name = self.names.remove(&id).unwrap_or("unnamed");
        self.health.set(
            name,
            Some(reason.clone().unwrap_or_else(|| "stopped".into())),
        );
        (name, reason)
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_reported_by_name_even_when_it_panics() {
        let mut tasks = Supervisor::default();
        let health = tasks.health();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("consume", async { panic!("poison") });
        let error = tasks.wait().await.to_string();
        assert!(
            error.contains("`consume`") && error.contains("poison"),
            "{error}"
        );
        assert!(!health.all_running());
        let snapshot = health.snapshot();
        assert_eq!(snapshot[0], ("forever", None));
        assert!(snapshot[1].1.as_deref().unwrap().contains("poison"));
    }

    #[tokio::test]
    async fn stop_raises_the_signal_and_waits_for_every_task() {
        let mut tasks = Supervisor::default();
        let finished = Arc::new(Mutex::new(Vec::new()));
        for name in ["consume", "http"] {
            let mut signal = tasks.shutdown_signal();
            let finished = finished.clone();
            tasks.spawn(name, async move {
                signal.wait_for(|stop| *stop).await?;
                finished.lock().unwrap().push(name);
                Ok(())
            });
        }
        tasks.stop().await.unwrap();
        assert_eq!(finished.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_task_that_fails_while_stopping_is_reported_by_stop() {
        let mut tasks = Supervisor::default();
        let mut signal = tasks.shutdown_signal();
        tasks.spawn("publish", async move {
            signal.changed().await?;
            anyhow::bail!("could not flush")
        });
        let error = tasks.stop().await.unwrap_err().to_string();
        assert!(
            error.contains("`publish`") && error.contains("flush"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_a_failure_too() {
        let mut tasks = Supervisor::default();
        tasks.spawn("prune", async { Ok(()) });
        assert!(tasks
            .wait()
            .await
            .to_string()
            .contains("without being asked"));
    }
}
