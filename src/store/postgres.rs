//! The PostgreSQL side of the store: a `tokio-postgres` connection driven by a runtime of
//! its own (one thread, shared by every connection of the process), so that the store's
//! synchronous API works from any thread, also from inside another runtime. Statements are
//! prepared once per connection; a connection that broke is made again on the next call.
//! TCP keepalives end the session of a node that died, so its row locks go with it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use super::sql::{self, Conn, Engine, Error, Result, Row, Value};

/// How long a statement may wait for a lock or run before it fails (and is tried later).
const STATEMENT_TIMEOUT: &str = "20s";
const LOCK_TIMEOUT: &str = "10s";

pub struct Pg {
    config: tokio_postgres::Config,
    client: Mutex<Arc<tokio_postgres::Client>>,
    statements: Mutex<HashMap<String, tokio_postgres::Statement>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herold-db")
            .enable_all()
            .build()
            .expect("a runtime for the database connections")
    })
}

/// Waits for `f` on this thread (which may belong to another runtime: the connection's IO
/// runs on the database runtime, never here).
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

impl Pg {
    /// Connects to `url` (`postgres://user@host:port/dbname`), with `password` if given.
    pub fn connect(url: &str, password: Option<String>) -> anyhow::Result<Pg> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        if let Some(p) = password {
            config.password(p);
        }
        config
            .application_name("herold")
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .options(format!(
                "-c statement_timeout={STATEMENT_TIMEOUT} -c lock_timeout={LOCK_TIMEOUT} -c timezone=UTC"
            ));
        let client = open(&config)?;
        Ok(Pg {
            config,
            client: Mutex::new(Arc::new(client)),
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// The client, connected anew if the last one broke.
    fn client(&self) -> Result<Arc<tokio_postgres::Client>> {
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_closed() {
            *c = Arc::new(open(&self.config).map_err(|e| Error::Other(format!("{e:#}")))?);
            self.statements
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        Ok(c.clone())
    }

    fn statement(
        &self,
        client: &tokio_postgres::Client,
        sql: &str,
    ) -> Result<tokio_postgres::Statement> {
        let sql = sql::postgres_sql(sql);
        if let Some(s) = self
            .statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql.as_ref())
        {
            return Ok(s.clone());
        }
        let s = block_on(client.prepare(&sql))?;
        self.statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.into_owned(), s.clone());
        Ok(s)
    }

    /// Runs statements without parameters (DDL, `VACUUM`).
    pub fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        block_on(client.batch_execute(sql))?;
        Ok(())
    }

    /// Runs `f` in a transaction on one connection: committed when it gives `Ok`, rolled
    /// back otherwise. A connection lost midway fails the transaction (never a reconnect
    /// inside it).
    pub fn transaction<T>(&self, f: impl FnOnce(&dyn Conn) -> Result<T>) -> Result<T> {
        let session = Session {
            pg: self,
            client: self.client()?,
        };
        block_on(session.client.batch_execute("BEGIN"))?;
        match f(&session) {
            Ok(v) => {
                block_on(session.client.batch_execute("COMMIT"))?;
                Ok(v)
            }
            Err(e) => {
                let _ = block_on(session.client.batch_execute("ROLLBACK"));
                Err(e)
            }
        }
    }
}

/// Statements on one connection.
struct Session<'a> {
    pg: &'a Pg,
    client: Arc<tokio_postgres::Client>,
}

impl Conn for Session<'_> {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn exec(&self, sql: &str, args: &[Value]) -> Result<u64> {
        let st = self.pg.statement(&self.client, sql)?;
        Ok(block_on(self.client.execute(&st, &params(args)))?)
    }

    fn rows(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let st = self.pg.statement(&self.client, sql)?;
        block_on(self.client.query(&st, &params(args)))?
            .iter()
            .map(sql::postgres_row)
            .collect()
    }
}

fn params(args: &[Value]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn open(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let config = config.clone();
    let rt = runtime();
    let tls = config.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
    let connecting = rt.spawn(async move {
        if tls {
            let connector = super::pgtls::Rustls::new().map_err(|e| e.to_string())?;
            let (client, connection) = config
                .connect(connector)
                .await
                .map_err(|e| Error::from(e).to_string())?;
            tokio::spawn(watch(connection));
            Ok::<_, String>(client)
        } else {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| Error::from(e).to_string())?;
            tokio::spawn(watch(connection));
            Ok(client)
        }
    });
    block_on(connecting)
        .map_err(|e| anyhow::anyhow!("database connection task: {e}"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))
}

/// Drives a connection until it ends, and says why it ended.
async fn watch<F: Future<Output = std::result::Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!("database connection ended: {}", Error::from(e));
    }
}

impl Conn for Pg {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn exec(&self, sql: &str, args: &[Value]) -> Result<u64> {
        Session {
            pg: self,
            client: self.client()?,
        }
        .exec(sql, args)
    }

    fn rows(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        Session {
            pg: self,
            client: self.client()?,
        }
        .rows(sql, args)
    }
}
