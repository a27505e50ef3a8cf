use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached; callers retry with backoff.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A migration line (see [`crate::MigrationLine`]) could not be applied.
    #[error("{owner} migrations failed: {source}")]
    MigrateLine {
        owner: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("invalid stored value: {0}")]
    Corrupt(String),
    /// A task try wrote after losing its lease (see [`crate::TaskFence`]); nothing was committed.
    #[error("stale task try: {0}")]
    Fenced(String),
    /// Another writer changed the rows this write depends on; nothing was committed, a retry re-reads them.
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// An operator action (clear, mark) that the run's current state does not allow; the message says why and
    /// what would work. Nothing was written.
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// The write was refused because the task try lost its lease: the try must stop, another owns the work.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced(_))
    }

    /// Connection-level failures that a retry may cure (as opposed to constraint or SQL errors).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Sql(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                ) || matches!(e, sqlx::Error::Database(d) if d.code().as_deref().is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "40001" || c == "40P01" || c == "5" || c == "517"))
            }
            _ => false,
        }
    }
}
