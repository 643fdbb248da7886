//! Persistence: with a data directory, a node keeps its records (with wall-clock expiry times), the
//! list of records it published and its provider records (peers' and its own) in a redb database.
//!
//! The in-memory stores stay the ones the node reads and writes: they are synchronous and run
//! inside the event loop, where nothing may wait on a disk. The stores remember what changed; the
//! event loop hands it, in one batch per [`FLUSH_INTERVAL`], to a blocking task that commits one
//! transaction ([`Writer`]). A crash loses at most the last interval; a clean stop writes
//! everything first.
//!
//! A write that fails (a full disk, an I/O error) loses nothing: its keys are marked changed again
//! and go with the next write, once per interval, until the disk takes them (the set of changed
//! keys is bounded by the store: one entry per key held or removed). redb refuses every operation
//! on a database that saw an I/O error, so a failed write closes it and the next one reopens it.
//!
//! redb is a pure-Rust, single-file, crash-safe (copy-on-write B-trees, checksummed commits)
//! embedded key-value store with no background threads and no C build: it fits a node that writes
//! small batches rarely and reads everything once at start. fjall (an LSM tree) would suit heavy
//! write loads better, at the price of compaction threads and more memory.
//!
//! - this file: the database, its tables, reading at start and writing one batch;
//! - `rows`: how records and provider records are laid out;
//! - `writer`: the batched writes behind the event loop ([`Writer`]).

mod rows;
/// The longest a row read back may still live: an expiry further out is no expiry this node
/// wrote (rows expire within a TTL), and would overflow the clock on some platforms.
pub const MAX_ROW_LIFETIME: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// What is left, capped at [`MAX_ROW_LIFETIME`], of a row expiring at `expires_at` (unix ms).
fn remaining(expires_at: u64, wall_ms: u64) -> Duration {
    Duration::from_millis(expires_at.saturating_sub(wall_ms)).min(MAX_ROW_LIFETIME)
}

#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tracing::warn;

use crate::core::records::Records;
use crate::error::{Error, Result};
use rows::{decode_provider_id, decode_provider_row, decode_row};
pub use writer::{Flushed, WRITE_FAILURE_WARNING_EVERY, Writer, change_for, provider_change_for};

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "records.redb";
/// The identity key file inside a data directory (unless a key file is given).
pub const KEY_FILE: &str = "node.key";
/// How often changed records are written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Changed keys that make the event loop write before the interval is up.
pub const FLUSH_EARLY_AT: usize = 4096;
/// Bytes of keys and values one write copies and commits at most (a backlog, built while a slow
/// disk wrote the last batch, goes in several): the copy is made on the event loop.
pub const FLUSH_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Memory redb may use to cache database pages (its default is 1 GiB).
pub const DATABASE_CACHE: usize = 8 * 1024 * 1024;

/// Record key -> row (expiry, publisher, value).
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Keys this node published -> when it first published them (unix ms).
const PUBLISHED: TableDefinition<&[u8], u64> = TableDefinition::new("published");
/// Provider id (record key and provider) -> provider row (expiry, addresses).
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");

/// One key's new state, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key holds this row now; `published` when this node is its publisher.
    Put {
        /// Record key.
        key: Vec<u8>,
        /// Encoded row.
        row: Vec<u8>,
        /// Whether this node published it.
        published: bool,
    },
    /// The key is gone (expired, removed).
    Remove {
        /// Record key.
        key: Vec<u8>,
    },
    /// A provider record holds this row now.
    PutProvider {
        /// Encoded record key and provider.
        id: Vec<u8>,
        /// Encoded row (expiry, addresses).
        row: Vec<u8>,
    },
    /// A provider record is gone (expired, removed).
    RemoveProvider {
        /// Encoded record key and provider.
        id: Vec<u8>,
    },
}

/// What a node found in its database at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Unexpired records, with their expiry as an `Instant`.
    pub records: Vec<Record>,
    /// Of those, records this node published.
    pub published: usize,
    /// Unexpired provider records: the database holds them until [`restore_providers`] puts them
    /// in the node's store (built later, by the event loop).
    pub providers: usize,
    /// Rows (records and provider records) whose expiry had passed: deleted, never served.
    pub expired: usize,
    /// Rows (records and provider records) that could not be decoded or failed validation:
    /// deleted.
    pub corrupt: usize,
}

/// A node's record database.
pub struct RecordDb {
    /// `None` after a failed write: redb answers every later operation on a handle that saw an I/O
    /// error with "close and re-open the database", so the next write opens the file again.
    db: Mutex<Option<Database>>,
    path: PathBuf,
    /// Provider records read by [`RecordDb::load`], until [`restore_providers`] takes them.
    loaded_providers: Mutex<Vec<ProviderRecord>>,
}

impl std::fmt::Debug for RecordDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordDb")
            .field("path", &self.path)
            .finish()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Puts the provider records [`RecordDb::load`] read back in `records` (each with its expiry) and
/// turns on their change tracking, so that what changes from now on is written back; does nothing
/// without a database. Returns `records`, for the caller to go on with.
pub fn restore_providers<'a>(db: Option<&RecordDb>, records: &'a mut Records) -> &'a mut Records {
    let Some(db) = db else {
        return records;
    };
    let now = Instant::now();
    let loaded = std::mem::take(
        &mut *db
            .loaded_providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let total = loaded.len();
    let refused = loaded
        .into_iter()
        .map(|p| records.restore_provider(p, now))
        .filter(Result::is_err)
        .count();
    if refused > 0 {
        warn!(
            refused,
            total, "provider records in the data directory exceed the store's limits; not loaded"
        );
    }
    records.providers_mut().track_changes();
    records
}

impl RecordDb {
    /// Opens the database in `dir`, creating the directory and the file when missing.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(DATABASE_FILE);
        let err = |reason: String| Error::Persistence {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::Persistence {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let db = open_database(&path).map_err(err)?;
        Ok(Self {
            db: Mutex::new(Some(db)),
            path,
            loaded_providers: Mutex::new(Vec::new()),
        })
    }

    /// The database handle: `None` from a failed write until the next write reopens it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Database>> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Persistence {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Reads every record, dropping (and deleting) expired and corrupt rows, and every provider
    /// record, which it holds for [`restore_providers`]. `now` and `wall` are the same moment on
    /// the monotonic and the wall clock.
    pub fn load(&self, local: PeerId, now: Instant, wall: SystemTime) -> Result<Loaded> {
        let wall_ms = unix_ms(wall);
        let mut loaded = Loaded::default();
        let mut dead = Vec::new();
        let mut providers = Vec::new();
        let guard = self.lock();
        let db = guard.as_ref().ok_or_else(|| self.error(CLOSED))?;
        // One read transaction: every table as of the same commit.
        let tx = db.begin_read().map_err(|e| self.error(e))?;
        let mut published = HashSet::new();
        for row in tx
            .open_table(PUBLISHED)
            .map_err(|e| self.error(e))?
            .iter()
            .map_err(|e| self.error(e))?
        {
            let (k, _) = row.map_err(|e| self.error(e))?;
            published.insert(k.value().to_vec());
        }
        {
            let table = tx.open_table(RECORDS).map_err(|e| self.error(e))?;
            for row in table.iter().map_err(|e| self.error(e))? {
                let (k, v) = row.map_err(|e| self.error(e))?;
                let key = k.value();
                match decode_row(key, v.value()) {
                    None => {
                        loaded.corrupt += 1;
                        dead.push(Change::Remove { key: key.to_vec() });
                    }
                    Some(row) if row.expires_at != 0 && row.expires_at <= wall_ms => {
                        loaded.expired += 1;
                        dead.push(Change::Remove { key: key.to_vec() });
                    }
                    Some(row) => {
                        let mut record = Record::new(RecordKey::from(key.to_vec()), row.value);
                        if published.contains(key) {
                            // Our own copy: no expiry; every replication round re-stores it.
                            record.publisher = Some(local);
                            loaded.published += 1;
                        } else {
                            record.publisher = row.publisher;
                            record.expires = (row.expires_at != 0)
                                .then(|| now + remaining(row.expires_at, wall_ms));
                        }
                        loaded.records.push(record);
                    }
                }
            }
        }
        {
            let table = tx.open_table(PROVIDERS).map_err(|e| self.error(e))?;
            for row in table.iter().map_err(|e| self.error(e))? {
                let (k, v) = row.map_err(|e| self.error(e))?;
                let id = k.value();
                let decoded = decode_provider_id(id).zip(decode_provider_row(v.value()));
                match decoded {
                    None => {
                        loaded.corrupt += 1;
                        dead.push(Change::RemoveProvider { id: id.to_vec() });
                    }
                    Some((_, row)) if row.expires_at <= wall_ms => {
                        loaded.expired += 1;
                        dead.push(Change::RemoveProvider { id: id.to_vec() });
                    }
                    Some(((key, provider), row)) => {
                        let mut record = ProviderRecord::new(key, provider, row.addrs);
                        record.expires = Some(now + remaining(row.expires_at, wall_ms));
                        providers.push(record);
                    }
                }
            }
        }
        drop(tx);
        drop(guard);
        loaded.providers = providers.len();
        *self
            .loaded_providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = providers;
        if !dead.is_empty() {
            self.write(&dead, wall)?;
        }
        Ok(loaded)
    }

    /// Writes `changes` in one transaction (durable when it returns). A failure closes the
    /// database (redb refuses a handle that saw an I/O error); the next write opens it again.
    pub fn write(&self, changes: &[Change], wall: SystemTime) -> Result<()> {
        let mut guard = self.lock();
        let db = match guard.take() {
            Some(db) => db,
            None => open_database(&self.path).map_err(|e| self.error(e))?,
        };
        let written = self.write_to(&db, changes, wall);
        if written.is_ok() {
            *guard = Some(db);
        }
        written
    }

    fn write_to(&self, db: &Database, changes: &[Change], wall: SystemTime) -> Result<()> {
        let tx = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.error(e))?;
            let mut published = tx.open_table(PUBLISHED).map_err(|e| self.error(e))?;
            let mut providers = tx.open_table(PROVIDERS).map_err(|e| self.error(e))?;
            for change in changes {
                match change {
                    Change::Put {
                        key,
                        row,
                        published: own,
                    } => {
                        records
                            .insert(key.as_slice(), row.as_slice())
                            .map_err(|e| self.error(e))?;
                        if *own {
                            let known = published
                                .get(key.as_slice())
                                .map_err(|e| self.error(e))?
                                .is_some();
                            if !known {
                                published
                                    .insert(key.as_slice(), unix_ms(wall))
                                    .map_err(|e| self.error(e))?;
                            }
                        } else {
                            published
                                .remove(key.as_slice())
                                .map_err(|e| self.error(e))?;
                        }
                    }
                    Change::Remove { key } => {
                        records.remove(key.as_slice()).map_err(|e| self.error(e))?;
                        published
                            .remove(key.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    Change::PutProvider { id, row } => {
                        providers
                            .insert(id.as_slice(), row.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    Change::RemoveProvider { id } => {
                        providers.remove(id.as_slice()).map_err(|e| self.error(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in the records table.
    pub fn rows(&self) -> Result<u64> {
        self.count(RECORDS)
    }

    /// Rows in the provider records table.
    pub fn provider_rows(&self) -> Result<u64> {
        self.count(PROVIDERS)
    }

    fn count(&self, table: TableDefinition<&[u8], &[u8]>) -> Result<u64> {
        let guard = self.lock();
        let db = guard.as_ref().ok_or_else(|| self.error(CLOSED))?;
        let tx = db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(table).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }
}

/// Why a read found no database: a failed write closed it, and no write has reopened it yet.
const CLOSED: &str = "the database is closed after a failed write";

/// Opens (or creates) the database file at `path`, with every table.
fn open_database(path: &Path) -> Result<Database, String> {
    let db = Database::builder()
        .set_cache_size(DATABASE_CACHE)
        .create(path)
        .map_err(|e| e.to_string())?;
    // Create every table so a fresh database (or one written before a table existed) reads as
    // empty rather than as an error.
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.open_table(RECORDS).map_err(|e| e.to_string())?;
    tx.open_table(PUBLISHED).map_err(|e| e.to_string())?;
    tx.open_table(PROVIDERS).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(db)
}
