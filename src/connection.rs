//! Connecting to Postgres: connection strings, TLS, and the session settings
//! every pgshift connection starts with.
//!
//! `tokio-postgres` understands `sslmode=disable|prefer|require`; libpq users
//! also write `verify-ca` and `verify-full`, so those are read here and turned
//! into a certificate-verifying TLS connector.

use std::str::FromStr;
use std::time::Duration;

use native_tls::TlsConnector;
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};
use tracing::debug;

use crate::error::{Error, Result};

/// An unreachable server must be an error in seconds, not a hang.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How strictly the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// `disable`, `prefer`, `require`: encryption without identity checks, as libpq does.
    None,
    /// `verify-ca`: the chain must lead to a trusted root.
    Chain,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// A parsed connection string. Never printed whole: it may hold a password.
#[derive(Clone)]
pub struct Target {
    config: Config,
    verify: Verify,
    wal_compression: WalCompression,
}

/// What pgshift's sessions compress the full pages they write to the WAL
/// with (Postgres 15 and later, superusers only; others keep the server's
/// setting). An index build writes every page of the index to the WAL, and
/// while it does, each commit of the application waits to flush that
/// backlog; the update engine's backfill writes a full page image of each
/// page it first touches after a checkpoint.
///
/// Measured on a 20M-row bigint key under the benchmark's load: the build
/// wrote 391 MB of WAL uncompressed, 227 MB with lz4, 121 MB with zstd; the
/// application's writes over 3x their p99 during it were 10-14%, 7%, 2%;
/// the build took 4.4, 4.5, 6.2 s. At 1M rows unthrottled, the update
/// engine took 2.63x the blocking ALTER with lz4, 2.72x without, 3.37x with
/// zstd (each against the blocking ALTER of its own run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalCompression {
    /// lz4, else zstd: as fast as without, for unthrottled work.
    Fast,
    /// zstd, else lz4: the least WAL, while the application's latency is
    /// paced (the command line's default).
    #[default]
    Small,
}

impl WalCompression {
    /// The methods in the order they are taken, where the server has them.
    pub fn preference(self) -> [&'static str; 2] {
        match self {
            WalCompression::Fast => ["lz4", "zstd"],
            WalCompression::Small => ["zstd", "lz4"],
        }
    }

    /// Sets the first method of the preference the session may set
    /// (SETTABLE_WAL_COMPRESSION); without one, the server's setting stays.
    fn sql(self) -> String {
        let [first, _] = self.preference();
        format!(
            "SELECT set_config('wal_compression', m, false) \
             FROM ({SETTABLE_WAL_COMPRESSION}) settable(m) ORDER BY m = '{first}' DESC LIMIT 1"
        )
    }
}

/// The `wal_compression` methods pgshift may set for its sessions: the ones
/// this server was built with, and only for a superuser (an ordinary role
/// cannot set it). The session setup and the catalog's WAL estimate read
/// the same query, so the plan counts what the sessions will do.
pub(crate) const SETTABLE_WAL_COMPRESSION: &str =
    "SELECT m FROM pg_settings, unnest(enumvals) m, pg_roles \
     WHERE name = 'wal_compression' AND m IN ('lz4', 'zstd') \
       AND rolname = current_user AND rolsuper";

impl Target {
    /// Parses a libpq-style URL or key=value string. `what` names the flag in errors.
    pub fn parse(conn: &str, what: &str) -> Result<Target> {
        let (rewritten, verify) = extract_verify_mode(conn);
        let mut config = Config::from_str(&rewritten).map_err(|e| {
            // The parser's message names the bad key, never the value of a password.
            Error::Usage(format!("invalid {what}: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        Ok(Target {
            config,
            verify,
            wal_compression: WalCompression::Fast,
        })
    }

    /// The same target, whose sessions compress their WAL with `method`.
    pub fn with_wal_compression(mut self, method: WalCompression) -> Target {
        self.wal_compression = method;
        self
    }

    /// What each session runs first.
    fn session_settings(&self) -> String {
        format!("{SESSION_SETTINGS}; {}", self.wal_compression.sql())
    }

    /// `host:port/dbname (user name)`, for messages; never includes the password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self
            .config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres");
        match self.config.get_user() {
            Some(user) => format!("{host}:{port}/{db} (user {user})"),
            None => format!("{host}:{port}/{db}"),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The TLS connector this target asks for.
    pub fn tls(&self) -> Result<MakeTlsConnector> {
        let mut builder = TlsConnector::builder();
        match self.verify {
            Verify::None => {
                builder.danger_accept_invalid_certs(true);
                builder.danger_accept_invalid_hostnames(true);
            }
            Verify::Chain => {
                builder.danger_accept_invalid_hostnames(true);
            }
            Verify::Full => {}
        }
        let connector = builder
            .build()
            .map_err(|e| Error::Runtime(format!("could not set up TLS: {e}")))?;
        Ok(MakeTlsConnector::new(connector))
    }

    /// Opens one connection named `application_name` and applies pgshift's session settings.
    pub async fn connect(&self, application_name: &str) -> Result<Client> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        // connect_timeout bounds the TCP connect; a server that accepts but
        // never answers the startup must not hang us either.
        let limit = *config
            .get_connect_timeout()
            .unwrap_or(&DEFAULT_CONNECT_TIMEOUT)
            * 2;
        let (client, connection) =
            match tokio::time::timeout(limit, config.connect(self.tls()?)).await {
                Ok(result) => result.map_err(|source| Error::Connect {
                    target: self.describe(),
                    source,
                })?,
                Err(_) => {
                    return Err(Error::Runtime(format!(
                        "could not connect to {}: no answer within {} s",
                        self.describe(),
                        limit.as_secs()
                    )))
                }
            };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!("connection closed: {e}");
            }
        });
        client
            .batch_execute(&self.session_settings())
            .await
            .map_err(Error::db("could not apply session settings"))?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
                &[],
            )
            .await
            .map_err(Error::db("could not read the server version"))?;
        require_supported(&self.describe(), row.get(0), row.get(1))?;
        Ok(client)
    }
}

/// The oldest Postgres pgshift is tested on and supports.
pub const MIN_SERVER_VERSION: i32 = 140000;

/// Refuses a server older than [`MIN_SERVER_VERSION`] (exit 2): its
/// catalogs and statistics views differ from those pgshift reads.
pub fn require_supported(server: &str, version_num: i32, version: &str) -> Result<()> {
    if version_num >= MIN_SERVER_VERSION {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: format!("the server at {server}"),
        reason: format!(
            "it runs PostgreSQL {version}, and pgshift supports PostgreSQL 14 and later (tested on 14 to 18)"
        ),
    })
}

impl Target {
    /// A bounded pool of at most `size` connections, each with the session settings.
    pub fn pool(&self, application_name: &str, size: usize) -> Result<deadpool_postgres::Pool> {
        use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
        let mut config = self.config.clone();
        config.application_name(application_name);
        let manager = Manager::from_config(
            config,
            self.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let settings = self.session_settings();
        Pool::builder(manager)
            .max_size(size)
            .post_create(Hook::async_fn(move |client, _| {
                let settings = settings.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&settings)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| Error::Runtime(format!("could not build the connection pool: {e}")))
    }

    /// Takes a connection from `pool`, mapping errors to ones that name the server.
    pub async fn checkout(
        &self,
        pool: &deadpool_postgres::Pool,
    ) -> Result<deadpool_postgres::Object> {
        pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => Error::Connect {
                target: self.describe(),
                source,
            },
            other => Error::Runtime(format!("could not connect to {}: {other}", self.describe())),
        })
    }
}

/// Every pgshift session starts with these:
/// - `lock_timeout`: a DDL statement waiting for a lock makes every later
///   query on that table queue behind it; a short default bounds that queue
///   even for statements that forget to set their own.
/// - `idle_in_transaction_session_timeout`: if pgshift itself hangs inside a
///   transaction, the server ends it instead of holding locks forever.
/// - `statement_timeout = 0`: long work (index builds) sets its own bound.
/// - `deadlock_timeout = 100ms`, for superusers only (others may not set it;
///   asking first keeps an error out of the server log): when one of our
///   lock requests waits for autovacuum, the server cancels the worker once
///   the wait reaches `deadlock_timeout` (1 s by default), and the
///   application queues behind us all that time.
///
/// Then `wal_compression` (see WalCompression).
const SESSION_SETTINGS: &str = "SET lock_timeout = '2s'; \
     SET idle_in_transaction_session_timeout = '60s'; \
     SET statement_timeout = 0; \
     SELECT set_config('deadlock_timeout', '100ms', false) \
       FROM pg_roles WHERE rolname = current_user AND rolsuper";

/// Replaces `sslmode=verify-ca|verify-full` (which tokio-postgres rejects)
/// by `require` and reports how strictly to verify.
fn extract_verify_mode(conn: &str) -> (String, Verify) {
    for (mode, verify) in [
        ("sslmode=verify-full", Verify::Full),
        ("sslmode=verify-ca", Verify::Chain),
    ] {
        if let Some(pos) = conn.find(mode) {
            let mut out = conn.to_string();
            out.replace_range(pos..pos + mode.len(), "sslmode=require");
            return (out, verify);
        }
    }
    (conn.to_string(), Verify::None)
}

/// Whether `sslmode` asks for TLS at all (for messages and tests).
pub fn ssl_mode(target: &Target) -> SslMode {
    target.config.get_ssl_mode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_14_are_refused_with_their_version() {
        let err = require_supported("127.0.0.1:5432", 130016, "13.16").unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::InputError);
        let msg = err.to_string();
        assert!(
            msg.contains("PostgreSQL 13.16") && msg.contains("14 and later"),
            "{msg}"
        );
        assert!(require_supported("s", 140000, "14.0").is_ok());
        assert!(require_supported("s", 180004, "18.4").is_ok());
    }

    #[test]
    fn verify_full_becomes_require_with_full_verification() {
        let t = Target::parse(
            "postgres://u@db.example:6432/app?sslmode=verify-full",
            "url",
        )
        .unwrap();
        assert_eq!(t.verify, Verify::Full);
        assert_eq!(ssl_mode(&t), SslMode::Require);
        let t = Target::parse("host=h sslmode=verify-ca", "url").unwrap();
        assert_eq!(t.verify, Verify::Chain);
        let t = Target::parse("host=h sslmode=disable", "url").unwrap();
        assert_eq!(t.verify, Verify::None);
        assert_eq!(ssl_mode(&t), SslMode::Disable);
    }

    #[test]
    fn describe_never_shows_the_password() {
        let t = Target::parse("postgres://alice:s3cret@db.example:6432/app", "url").unwrap();
        let d = t.describe();
        assert_eq!(d, "db.example:6432/app (user alice)");
        assert!(!d.contains("s3cret"));
        let t = Target::parse("host=h port=7 user=bob password=hunter2 dbname=x", "url").unwrap();
        assert_eq!(t.describe(), "h:7/x (user bob)");
    }

    #[test]
    fn bad_strings_are_usage_errors_without_the_secret() {
        let err = Target::parse(
            "postgres://alice:s3cret@h/db?sslmode=bogus",
            "--database-url",
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("--database-url"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn connect_timeout_has_a_default() {
        let t = Target::parse("host=h", "url").unwrap();
        assert_eq!(
            t.config().get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        let t = Target::parse("host=h connect_timeout=1", "url").unwrap();
        assert_eq!(
            t.config().get_connect_timeout(),
            Some(&Duration::from_secs(1))
        );
    }
}
