//! Storage errors in the terms callers act on.

/// A storage failure. Backends turn their codes into these variants.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference constraint refused the write; `constraint` names it.
    #[error("conflicts with existing data ({constraint})")]
    Conflict { constraint: String },
    /// The database could not be reached or is busy beyond its timeout.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A stored secret does not open with this master key.
    #[error("a stored secret cannot be opened: is PAGEWIRE_MASTER_KEY the key this data was written with?")]
    Sealed(#[from] pagewire_core::CryptoError),
    /// A stored value is not what this version of Pagewire wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migrating the database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) => {
                use sqlx::error::ErrorKind;
                match db.kind() {
                    ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => Self::Conflict {
                        constraint: db
                            .constraint()
                            .map(str::to_owned)
                            .unwrap_or_else(|| constraint_from_message(db.message())),
                    },
                    _ if is_busy(db.code().as_deref()) => Self::Unavailable(err),
                    _ => Self::Database(err),
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// SQLite names the columns, not the constraint: `UNIQUE constraint failed: pages.page_id`.
fn constraint_from_message(message: &str) -> String {
    message.rsplit_once(": ").map_or(message, |(_, cols)| cols).to_owned()
}

fn is_busy(code: Option<&str>) -> bool {
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}
