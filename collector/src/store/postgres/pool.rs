//! A handful of connections shared by a worker's tasks: at most `size` at once, idle ones
//! kept for the next caller, broken ones dropped and replaced on demand.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls};

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection on loan; returned to the pool on drop unless it broke.
pub struct Conn {
    client: Option<Client>,
    pool: Pool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(config: Config, size: usize) -> Pool {
        Pool(Arc::new(Inner {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }))
    }

    /// Another pool of `size` on the same database.
    pub fn sibling(&self, size: usize) -> Pool {
        Pool::new(self.0.config.clone(), size)
    }

    /// Waits for a free slot, then reuses an idle connection or opens one.
    pub async fn get(&self) -> Result<Conn, tokio_postgres::Error> {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("pool semaphore is never closed");
        let idle = {
            let mut idle = self.0.idle.lock().expect("pool lock");
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match idle {
            Some(c) => c,
            None => {
                // Plain TCP or a unix socket: no TLS connector yet (docs/SCALING.md).
                let (client, connection) = self.0.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "postgres connection ended");
                    }
                });
                client
            }
        };
        Ok(Conn {
            client: Some(client),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client until drop")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.client.take().filter(|c| !c.is_closed()) {
            self.pool.0.idle.lock().expect("pool lock").push(c);
        }
    }
}
