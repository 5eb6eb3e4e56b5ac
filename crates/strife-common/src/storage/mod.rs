//! SQLite storage every process's stores share: how a database is opened ([`sqlite`]), the
//! group-commit writer ([`group_commit`]), a database's identity and migrations
//! ([`store_identity`]), and the private state directory with its lock ([`state_dir`]). What a
//! SQLite error becomes ([`storage_failure`]) is here, where the writer and every store reach it.

pub mod group_commit;
pub mod sqlite;
pub mod state_dir;
pub mod store_identity;

use crate::Failure;

/// Whether a SQLite error means trouble with the storage itself rather than with the request
/// or the code: disk full, an I/O error, a file that cannot be opened, or a lock held too long.
/// Such a write did not happen and may well succeed later, so callers hear a transient
/// `UNAVAILABLE` (retry) instead of `INTERNAL`, which clients treat as final.
pub fn is_storage_trouble(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        )
    )
}

/// The failure a storage error becomes: transient `UNAVAILABLE` naming the file for storage
/// trouble ([`is_storage_trouble`]), `INTERNAL` (detail logged, not sent) for anything else.
pub fn storage_failure(file: &str, error: rusqlite::Error) -> Failure {
    if is_storage_trouble(&error) {
        tracing::warn!(file, %error, "storage write failed; answering UNAVAILABLE");
        Failure::Unavailable(format!("storage write failed at {file}; retry"))
    } else {
        Failure::internal(&format!("{file} storage"), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn storage_trouble_is_transient_and_names_the_file() {
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_IOERR_FSYNC,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_BUSY,
        ] {
            let failure = storage_failure("gateway.db", sqlite_error(code));
            assert_eq!(
                failure,
                Failure::Unavailable("storage write failed at gateway.db; retry".into()),
                "code {code}"
            );
        }
        let constraint = storage_failure("bank.db", sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
        assert!(matches!(constraint, Failure::Internal(_)), "{constraint:?}");
    }
}
