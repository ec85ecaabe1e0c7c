//! Starting and stopping local clusters (primary and streaming replica).

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

/// Settings of a new primary.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// `fsync`: off for tests (speed), on for benchmarks (realism).
    pub fsync: bool,
    /// Extra lines appended to postgresql.conf.
    pub extra_conf: Vec<String>,
    /// Serve TLS only: a self-signed certificate (openssl), and pg_hba
    /// rejecting unencrypted TCP connections.
    pub tls_only: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 100,
            fsync: false,
            extra_conf: Vec::new(),
            tls_only: false,
        }
    }
}

/// A running local cluster; stopped (immediately) and deleted on drop.
pub struct Cluster {
    /// Holds data dir, socket dir and log; deleted on drop.
    dir: TempDir,
    /// The loopback TCP port the server listens on.
    port: u16,
    /// Directory of initdb, pg_ctl, pg_basebackup of one Postgres version.
    bin: PathBuf,
    /// The non-root user the server runs as when we are root (Postgres refuses root).
    run_as: Option<(u32, u32)>,
    /// Whether the server is (believed to be) running.
    running: bool,
}

impl Cluster {
    /// initdb + start a primary with `pg_stat_statements` and `wal_level=replica`.
    pub fn start() -> io::Result<Cluster> {
        Cluster::start_with(ClusterOptions::default())
    }

    pub fn start_with(options: ClusterOptions) -> io::Result<Cluster> {
        let bin = postgres_bin_dir()?;
        let run_as = non_root_user()?;
        let dir = owned_temp_dir(run_as)?;
        let mut cluster = Cluster {
            port: 0,
            bin,
            run_as,
            running: false,
            dir,
        };
        let data = cluster.data_dir();
        cluster.run_checked(
            Command::new(cluster.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync"),
            "initdb",
        )?;
        let conf = format!(
            "\n# pgshift test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = {max}\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             pg_stat_statements.track = all\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             fsync = {fsync}\n\
             synchronous_commit = {fsync}\n\
             full_page_writes = {fsync}\n\
             shared_buffers = '128MB'\n\
             max_wal_size = '2GB'\n\
             log_min_messages = warning\n\
             {extra}\n",
            sock = cluster.dir.path().display(),
            max = options.max_connections,
            fsync = if options.fsync { "on" } else { "off" },
            extra = options.extra_conf.join("\n"),
        );
        append(&data.join("postgresql.conf"), &conf)?;
        if options.tls_only {
            cluster.enable_tls_only()?;
        }
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// A streaming replica of this primary (`pg_basebackup -R`), started and in recovery.
    pub fn start_replica(&self) -> io::Result<Cluster> {
        let dir = owned_temp_dir(self.run_as)?;
        let mut replica = Cluster {
            port: 0,
            bin: self.bin.clone(),
            run_as: self.run_as,
            running: false,
            dir,
        };
        let data = replica.data_dir();
        match self.streaming_client("pg_basebackup") {
            Some(basebackup) => {
                replica.run_checked(
                    Command::new(basebackup)
                        .args([
                            "-h",
                            "127.0.0.1",
                            "-U",
                            "postgres",
                            "-X",
                            "stream",
                            "-R",
                            "--checkpoint=fast",
                        ])
                        .args(["-p", &self.port.to_string()])
                        .arg("--no-sync")
                        .arg("-D")
                        .arg(&data),
                    "pg_basebackup",
                )?;
            }
            None => self.copy_for_replica(&data)?,
        }
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\nunix_socket_directories = '{}'\n",
                replica.dir.path().display()
            ),
        )?;
        replica.start_on_free_port()?;
        Ok(replica)
    }

    /// A base backup without pg_basebackup (the npm registry's binaries have
    /// none, and Debian's refuses a newer server): the low-level backup API
    /// around a file copy, in one psql session, then `standby.signal` and
    /// `primary_conninfo` as `pg_basebackup -R` writes them.
    fn copy_for_replica(&self, data: &Path) -> io::Result<()> {
        fs::create_dir_all(data)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(data, Some(uid), Some(gid))?;
        }
        fs::set_permissions(data, fs::Permissions::from_mode(0o700))?;
        let (start, stop) = if self.major() >= 15 {
            (
                "pg_backup_start('pgshift replica', true)",
                "pg_backup_stop(true)",
            )
        } else {
            (
                "pg_start_backup('pgshift replica', true, false)",
                "pg_stop_backup(false, true)",
            )
        };
        let from = self.data_dir();
        let script = format!(
            "\\set ON_ERROR_STOP 1\nSELECT {start};\n\
             \\! cp -a '{from}/.' '{to}/' && rm -rf '{to}/pg_wal' '{to}/postmaster.pid' '{to}/postmaster.opts' && mkdir -p '{to}/pg_wal/archive_status'\n\
             \\t on\n\\a\n\\o '{to}/backup_label'\nSELECT labelfile FROM {stop};\n\\o\n",
            from = from.display(),
            to = data.display(),
        );
        self.psql_script("postgres", &script)?;
        if let Some((uid, gid)) = self.run_as {
            for entry in ["pg_wal", "pg_wal/archive_status", "backup_label"] {
                std::os::unix::fs::chown(data.join(entry), Some(uid), Some(gid))?;
            }
        }
        fs::write(data.join("standby.signal"), "")?;
        append(
            &data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres'\n",
                self.port
            ),
        )
    }

    /// A client program that can stream from this server (its own, or
    /// Debian's when that is not older): None on servers newer than every
    /// client here (the npm registry's binaries ship none).
    pub fn streaming_client(&self, name: &str) -> Option<PathBuf> {
        client_tool(&self.bin, name).filter(|t| tool_major(t) >= self.major())
    }

    /// The server's major version (14, 15, …), from its binaries.
    pub fn major(&self) -> u32 {
        tool_major(&self.bin.join("postgres"))
    }

    fn enable_tls_only(&self) -> io::Result<()> {
        let data = self.data_dir();
        self.run_checked(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                ])
                .arg("-keyout")
                .arg(data.join("server.key"))
                .arg("-out")
                .arg(data.join("server.crt")),
            "openssl",
        )?;
        fs::set_permissions(data.join("server.key"), fs::Permissions::from_mode(0o600))?;
        append(&data.join("postgresql.conf"), "ssl = on\n")?;
        let hba = data.join("pg_hba.conf");
        let rest = fs::read_to_string(&hba)?;
        fs::write(
            &hba,
            format!("hostnossl all all 127.0.0.1/32 reject\n{rest}"),
        )?;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A directory the server may write, inside the cluster's own (for a
    /// tablespace, say); removed with the cluster.
    pub fn server_dir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        Ok(path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A connection URL for `dbname` as the superuser `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The server log, for diagnosing a failed test.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL through psql (used by setup code that is not under test):
    /// the server's own, else Debian's (a client talks to newer servers).
    pub fn psql(&self, dbname: &str, sql: &str) -> io::Result<String> {
        let psql = client_tool(&self.bin, "psql").ok_or_else(|| {
            io::Error::other("psql not found: install Debian's postgresql-client")
        })?;
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", dbname, "-c", sql])
            .output()?;
        check("psql", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a psql script (with meta-commands) in one session.
    fn psql_script(&self, dbname: &str, script: &str) -> io::Result<()> {
        let psql = client_tool(&self.bin, "psql").ok_or_else(|| {
            io::Error::other("psql not found: install Debian's postgresql-client")
        })?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("script.sql");
        fs::write(&file, script)?;
        let out = Command::new(psql)
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", dbname, "-f"])
            .arg(&file)
            .output()?;
        check("psql", &out)
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) -> io::Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    /// Stops the server now (like a crash: no checkpoint).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
            self.running = false;
        }
    }

    /// Restarts the server on the same port (crash-restart when `immediate`).
    pub fn restart(&mut self, immediate: bool) -> io::Result<()> {
        let mode = if immediate { "immediate" } else { "fast" };
        self.pg_ctl(&["stop", "-m", mode, "-w"])?;
        self.running = false;
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-o",
            &format!("-p {}", self.port),
        ])?;
        self.running = true;
        Ok(())
    }

    fn start_on_free_port(&mut self) -> io::Result<()> {
        // Another test may grab the same free port between our probe and
        // the server's bind: retry on a new port.
        let mut last_err = None;
        for _ in 0..5 {
            self.port = free_port()?;
            let started = self.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "60",
                "-o",
                &format!("-p {}", self.port),
            ]);
            match started {
                Ok(_) => {
                    self.running = true;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not start postgres")))
    }

    fn pg_ctl(&self, args: &[&str]) -> io::Result<Output> {
        let log = self.dir.path().join("server.log");
        self.run_checked(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(log)
                .args(args),
            "pg_ctl",
        )
    }

    fn run_checked(&self, cmd: &mut Command, what: &str) -> io::Result<Output> {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").current_dir(self.dir.path());
        let out = cmd.output()?;
        check(what, &out).map_err(|e| io::Error::other(format!("{e}\n{}", self.log())))?;
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check(what: &str, out: &Output) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A temp dir the server's user owns (initdb needs to create its data dir in it).
fn owned_temp_dir(run_as: Option<(u32, u32)>) -> io::Result<TempDir> {
    let dir = tempfile::Builder::new().prefix("pgshift-pg-").tempdir()?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Postgres refuses to run as root: when we are root, run it as `postgres`
/// (created by Debian's packages) or else `nobody`.
fn non_root_user() -> io::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for user in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(Some((uid, gid)));
        }
    }
    Err(io::Error::other(
        "running as root and found neither a `postgres` nor a `nobody` user to run Postgres as",
    ))
}

/// Finds the directory of the Postgres server binaries: `PGSHIFT_TEST_PGBIN`
/// (see `scripts/postgres-binaries`), `PG_BIN`, then `initdb` on PATH, then
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir() -> io::Result<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(find_bin_dir)
        .clone()
        .ok_or_else(|| {
            io::Error::other(
                "Postgres server binaries not found: install them (Debian: apt-get install postgresql) \
                 or set PG_BIN to the directory holding initdb",
            )
        })
}

fn find_bin_dir() -> Option<PathBuf> {
    for var in ["PGSHIFT_TEST_PGBIN", "PG_BIN"] {
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                let real = fs::canonicalize(&initdb).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A client program: beside the server's binaries, else the newest of
/// Debian's, else on PATH.
fn client_tool(bin: &Path, name: &str) -> Option<PathBuf> {
    let own = bin.join(name);
    if own.is_file() {
        return Some(own);
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let tool = e.path().join("bin").join(name);
            tool.is_file().then_some((v, tool))
        })
        .collect();
    debian.sort();
    if let Some((_, tool)) = debian.pop() {
        return Some(tool);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The major version a Postgres program reports (`… (PostgreSQL) 18.4`); 0 when unknown.
fn tool_major(tool: &Path) -> u32 {
    Command::new(tool)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let version = text.split_whitespace().last()?.to_string();
            version.split(['.', 'b', 'r']).next()?.parse().ok()
        })
        .unwrap_or(0)
}
