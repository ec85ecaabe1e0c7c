//! Typed errors and the exit-code contract.
//!
//! Exit codes are an API that scripts and CI depend on (see the README):
//! 0 success; 1 a check failed or a guard refused, nothing unsafe done;
//! 2 usage or input error, nothing changed; 3 runtime failure, state kept.

use std::path::PathBuf;

/// Exit codes of the CLI contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    CheckFailed = 1,
    InputError = 2,
    RuntimeFailure = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A check or a guard said no; nothing unsafe was done.
    #[error("{0}")]
    Refused(String),

    #[error("migration file {} does not exist", path.display())]
    MigrationNotFound { path: PathBuf },

    #[error("could not read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: u64,
        message: String,
    },

    #[error("table {table} does not exist")]
    UnknownTable { table: String },

    #[error("column {column} does not exist in table {table}")]
    UnknownColumn { table: String, column: String },

    /// The change is valid SQL but pgshift cannot do it online and safely.
    #[error("{what} cannot be migrated online: {reason}")]
    Unsupported { what: String, reason: String },

    #[error("{0}")]
    Usage(String),

    #[error("migration {name} was started from a file with checksum {started}, but {path} now has checksum {now}; restore the original file, or run `pgshift rollback {name}` and start again")]
    FileChanged {
        name: String,
        path: String,
        started: String,
        now: String,
    },

    #[error("no migration named {name} has been started on this database")]
    UnknownMigration { name: String },

    #[error("could not connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{context}")]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Refused(_) => ExitCode::CheckFailed,
            Error::MigrationNotFound { .. }
            | Error::Read { .. }
            | Error::Write { .. }
            | Error::Parse { .. }
            | Error::UnknownTable { .. }
            | Error::UnknownColumn { .. }
            | Error::Unsupported { .. }
            | Error::Usage(_)
            | Error::FileChanged { .. }
            | Error::UnknownMigration { .. } => ExitCode::InputError,
            Error::Connect { .. } | Error::Database { .. } | Error::Runtime(_) => {
                ExitCode::RuntimeFailure
            }
        }
    }

    /// Wraps a database error with what pgshift was doing when it happened.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Database { context, source }
    }

    /// The SQLSTATE of the underlying database error, if any.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Database { source, .. } | Error::Connect { source, .. } => source.code(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
