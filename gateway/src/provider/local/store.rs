//! The workspace registry on disk: one redb table, `workspaces`, keyed by workspace id, whose
//! values are JSON documents ([`Stored`]) — the REST object, its owner, and the runtime facts
//! (pid, port) a restarted gateway needs to find a workspace that is still running.
//!
//! JSON rather than a binary encoding because the object is small, written only on state
//! changes, and readable with any tool when an operator has to look. Every call here blocks
//! (redb commits fsync), so the provider runs them on the blocking pool.

use std::path::Path;

use protocol::Workspace;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const WORKSPACES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("workspaces");

/// Where a running workspace's service process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Runtime {
    /// Pid of the service, which also leads its process group.
    pub(super) pid: i32,
    /// Its loopback port, once it printed its readiness line.
    pub(super) port: Option<u16>,
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) workspace: Workspace,
    pub(super) owner: String,
    #[serde(default)]
    pub(super) runtime: Option<Runtime>,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    #[error("the registry {0} is in use by another gateway")]
    InUse(String),
    #[error(transparent)]
    Db(#[from] redb::Error),
    #[error("registry row {key}: {source}")]
    Row {
        key: String,
        source: serde_json::Error,
    },
}

impl<E: Into<redb::Error>> From<E> for Box<StoreError> {
    fn from(e: E) -> Self {
        Box::new(StoreError::Db(e.into()))
    }
}

/// The open registry. redb allows one open handle per file, which also keeps two gateways from
/// sharing a data directory by mistake.
#[derive(Debug)]
pub(super) struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the registry at `path`.
    pub(super) fn open(path: &Path) -> Result<Store, Box<StoreError>> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Box::new(StoreError::InUse(path.display().to_string())));
            }
            Err(e) => return Err(e.into()),
        };
        // Create the table up front so that readers never see "table does not exist".
        let txn = db.begin_write()?;
        txn.open_table(WORKSPACES)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Every row.
    pub(super) fn load(&self) -> Result<Vec<Stored>, Box<StoreError>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WORKSPACES)?;
        let mut rows = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let stored =
                serde_json::from_slice(value.value()).map_err(|source| StoreError::Row {
                    key: key.value().to_owned(),
                    source,
                })?;
            rows.push(stored);
        }
        Ok(rows)
    }

    /// Writes the row of `id` as `current` says it is *now*, or removes it if `current` returns
    /// `None`. `current` runs inside the write transaction, which redb serializes: whichever of
    /// two racing writes commits last also read the state last, so the file never ends up older
    /// than memory.
    pub(super) fn save(
        &self,
        id: Uuid,
        current: impl FnOnce() -> Option<Stored>,
    ) -> Result<(), Box<StoreError>> {
        let key = id.to_string();
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(WORKSPACES)?;
            match current() {
                Some(stored) => {
                    let json = serde_json::to_vec(&stored).map_err(|source| StoreError::Row {
                        key: key.clone(),
                        source,
                    })?;
                    table.insert(key.as_str(), json.as_slice())?;
                }
                None => {
                    table.remove(key.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::provider::{NewWorkspace, Record};
    use protocol::WorkspaceStatus;

    use super::*;

    fn row(owner: &str) -> Stored {
        let mut workspace =
            Record::creating(owner, Uuid::new_v4(), NewWorkspace::default()).workspace;
        workspace.status = WorkspaceStatus::Running;
        Stored {
            workspace,
            owner: owner.to_owned(),
            runtime: Some(Runtime {
                pid: 4242,
                port: Some(40000),
            }),
        }
    }

    #[test]
    fn rows_survive_reopen_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workspaces.redb");
        let (a, b) = (row("alice"), row("bob"));
        {
            let store = Store::open(&path).unwrap();
            store.save(a.workspace.id, || Some(a.clone())).unwrap();
            store.save(b.workspace.id, || Some(b.clone())).unwrap();
            store.save(b.workspace.id, || None).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), vec![a]);
    }

    #[test]
    fn a_second_handle_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workspaces.redb");
        let _first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap_err();
        assert!(matches!(*second, StoreError::InUse(_)), "{second}");
    }
}
