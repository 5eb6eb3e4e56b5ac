//! SQLite storage every process's stores share: how a database is opened ([`sqlite`]), the
//! group-commit writer ([`group_commit`]), a database's identity and migrations
//! ([`store_identity`]), and the private state directory with its lock ([`state_dir`]).

pub mod group_commit;
pub mod sqlite;
pub mod state_dir;
pub mod store_identity;
