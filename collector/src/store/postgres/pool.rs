//! A handful of connections shared by a worker's tasks: at most `size` at once, idle ones
//! kept for the next caller, broken ones dropped and replaced on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, GenericClient, NoTls, Statement};

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    config: Config,
    /// TLS for every connection, when the store has a CA file.
    tls: Option<super::tls::Rustls>,
    idle: Mutex<Vec<(Client, Prepared)>>,
    permits: Arc<Semaphore>,
}

/// A connection on loan; returned to the pool on drop unless it broke.
pub struct Conn {
    client: Option<Client>,
    prepared: Prepared,
    pool: Pool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(config: Config, tls: Option<super::tls::Rustls>, size: usize) -> Pool {
        Pool(Arc::new(Inner {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }))
    }

    /// Another pool of `size` on the same database.
    pub fn sibling(&self, size: usize) -> Pool {
        Pool::new(self.0.config.clone(), self.0.tls.clone(), size)
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
            std::iter::from_fn(|| idle.pop()).find(|(c, _)| !c.is_closed())
        };
        let (client, prepared) = match idle {
            Some(c) => c,
            None => (self.connect().await?, Prepared::default()),
        };
        Ok(Conn {
            client: Some(client),
            prepared,
            pool: self.clone(),
            _permit: permit,
        })
    }
}

impl Pool {
    /// A new connection, over TLS when configured; its I/O runs in its own task.
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let ended =
            |e: tokio_postgres::Error| tracing::warn!(error = %e, "postgres connection ended");
        match &self.0.tls {
            Some(tls) => {
                let (client, connection) = self.0.config.connect(tls.clone()).await?;
                tokio::spawn(async move { connection.await.map_err(ended) });
                Ok(client)
            }
            None => {
                let (client, connection) = self.0.config.connect(NoTls).await?;
                tokio::spawn(async move { connection.await.map_err(ended) });
                Ok(client)
            }
        }
    }
}

impl Conn {
    /// The statements prepared on this connection.
    pub fn prepared(&self) -> Prepared {
        self.prepared.clone()
    }
}

/// The statements prepared on one connection, kept with it in the pool: a statement is parsed
/// once per connection, then each call is one round trip instead of two (parse, then bind
/// and execute). Protocol-level statements outlive the transaction that prepared them.
#[derive(Clone, Default)]
pub struct Prepared(Arc<Mutex<HashMap<String, Statement>>>);

impl Prepared {
    /// `sql` prepared on `c`'s connection (which must be the one these statements belong to).
    pub async fn get(
        &self,
        c: &impl GenericClient,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.lock().expect("statements").get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql).await?;
        self.0
            .lock()
            .expect("statements")
            .insert(sql.to_string(), s.clone());
        Ok(s)
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
            let prepared = std::mem::take(&mut self.prepared);
            self.pool
                .0
                .idle
                .lock()
                .expect("pool lock")
                .push((c, prepared));
        }
    }
}
