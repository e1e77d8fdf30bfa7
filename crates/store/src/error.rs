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
                    _ if is_transient(db.as_ref()) => Self::Unavailable(err),
                    _ => Self::Database(err),
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// SQLite names the columns, not the constraint: `UNIQUE constraint failed: pages.page_id`.
/// (PostgreSQL names the constraint itself, such as `pages_page_id_key` or `pages_app_id_fkey`.)
fn constraint_from_message(message: &str) -> String {
    message.rsplit_once(": ").map_or(message, |(_, cols)| cols).to_owned()
}

/// Whether an error says the database is out of reach or too busy right now, so that the same
/// request may succeed later.
fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        Some(pg) => is_pg_transient(pg.code()),
        None => is_busy(db.code().as_deref()),
    }
}

/// PostgreSQL's SQLSTATEs for a lost or refused connection (class 08), a server out of resources
/// (class 53: too many connections, out of memory or disk), a server shutting down or starting
/// (57P01–57P03), a statement or lock timeout (57014, 55P03), and transactions aborted by a
/// deadlock or a serialization conflict (40P01, 40001), which succeed when tried again.
fn is_pg_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "40P01" | "40001"
        )
}

/// SQLite's result codes.
fn is_busy(code: Option<&str>) -> bool {
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_errors_worth_retrying_are_transient() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "55P03", "40P01", "40001",
        ] {
            assert!(is_pg_transient(code), "{code}");
        }
        // Unique and reference violations, a missing table, a bad password: retrying cannot help.
        for code in ["23505", "23503", "42P01", "28P01", "22001"] {
            assert!(!is_pg_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_are_transient() {
        assert!(is_busy(Some("5")) && is_busy(Some("517")) && is_busy(Some("6")));
        assert!(!is_busy(Some("19")) && !is_busy(None));
    }
}
