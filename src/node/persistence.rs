//! Persistence: with a data directory, a node keeps its records (with wall-clock expiry times) and
//! the list of records it published in a redb database.
//!
//! The in-memory store stays the one kad reads and writes: its trait is synchronous and runs inside
//! the swarm's poll, where nothing may wait on a disk. The store remembers which keys changed; the
//! event loop hands them, in one batch per [`FLUSH_INTERVAL`], to a blocking task that commits one
//! transaction. A crash loses at most the last interval; a clean stop writes everything first.
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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_behaviours::config::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
use dht_behaviours::store::{BoundedStore, is_own};
use dht_behaviours::validation::validate_record;
use libp2p::PeerId;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{Record, RecordKey};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::task::{JoinError, JoinHandle};
use tracing::{info, warn};

use crate::error::{Error, Result};

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

/// Version byte leading every stored row, so the layout can change later.
const ROW_VERSION: u8 = 1;
/// Row header: version, expiry (unix ms, 0 = never), publisher length.
const ROW_HEADER: usize = 1 + 8 + 1;

/// Record key -> row (expiry, publisher, value).
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Keys this node published -> when it first published them (unix ms).
const PUBLISHED: TableDefinition<&[u8], u64> = TableDefinition::new("published");

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
}

/// What a node found in its database at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Unexpired records, with their expiry as an `Instant`.
    pub records: Vec<Record>,
    /// Of those, records this node published.
    pub published: usize,
    /// Rows whose expiry had passed: deleted, never served.
    pub expired: usize,
    /// Rows that could not be decoded or failed validation: deleted.
    pub corrupt: usize,
}

/// A node's record database.
pub struct RecordDb {
    /// `None` after a failed write: redb answers every later operation on a handle that saw an I/O
    /// error with "close and re-open the database", so the next write opens the file again.
    db: Mutex<Option<Database>>,
    path: PathBuf,
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

    /// Reads every record, dropping (and deleting) expired and corrupt rows. `now` and `wall` are
    /// the same moment on the monotonic and the wall clock.
    pub fn load(&self, local: PeerId, now: Instant, wall: SystemTime) -> Result<Loaded> {
        let wall_ms = unix_ms(wall);
        let mut loaded = Loaded::default();
        let mut dead = Vec::new();
        let guard = self.lock();
        let db = guard.as_ref().ok_or_else(|| self.error(CLOSED))?;
        // One read transaction: both tables as of the same commit.
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
                        dead.push(key.to_vec());
                    }
                    Some(row) if row.expires_at != 0 && row.expires_at <= wall_ms => {
                        loaded.expired += 1;
                        dead.push(key.to_vec());
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
                                .then(|| now + Duration::from_millis(row.expires_at - wall_ms));
                        }
                        loaded.records.push(record);
                    }
                }
            }
        }
        drop(tx);
        drop(guard);
        if !dead.is_empty() {
            let changes: Vec<Change> = dead.into_iter().map(|key| Change::Remove { key }).collect();
            self.write(&changes, wall)?;
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
        let guard = self.lock();
        let db = guard.as_ref().ok_or_else(|| self.error(CLOSED))?;
        let tx = db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(RECORDS).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }
}

/// Why a read found no database: a failed write closed it, and no write has reopened it yet.
const CLOSED: &str = "the database is closed after a failed write";

/// Opens (or creates) the database file at `path`, with both tables.
fn open_database(path: &Path) -> Result<Database, String> {
    let db = Database::builder()
        .set_cache_size(DATABASE_CACHE)
        .create(path)
        .map_err(|e| e.to_string())?;
    // Create both tables so a fresh database reads as empty rather than as an error.
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.open_table(RECORDS).map_err(|e| e.to_string())?;
    tx.open_table(PUBLISHED).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

/// How a write of changed records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    /// This many changes are on disk.
    Written(usize),
    /// The write failed; its keys are marked changed again and go with the next one.
    Failed(String),
}

impl crate::status::Counters {
    /// Counts the outcome of a write to the data directory.
    pub(crate) fn count_flush(&mut self, flushed: &Flushed) {
        match flushed {
            Flushed::Written(n) => self.records_written += *n as u64,
            Flushed::Failed(_) => self.write_errors += 1,
        }
    }
}

/// A write running on a blocking thread (how many changes it wrote, or why it failed), with the
/// keys it took from the store: they are marked changed again if it fails.
struct Running {
    write: JoinHandle<Result<usize, String>>,
    keys: Vec<RecordKey>,
}

/// How often a disk that keeps refusing writes is warned about (each failure is counted).
pub const WRITE_FAILURE_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Writes the store's changes behind the event loop: one transaction per [`FLUSH_INTERVAL`] (or
/// sooner past [`FLUSH_EARLY_AT`] changes), on a blocking thread, one at a time. After a failed
/// write the next one waits for the interval even past [`FLUSH_EARLY_AT`]: a full disk is tried
/// once an interval, not at every tick.
pub struct Writer {
    db: Arc<RecordDb>,
    running: Option<Running>,
    last_flush: Instant,
    /// Failed writes since the last one that succeeded.
    failures: u64,
    /// Failed writes not yet in a warning, and when the last warning was.
    unwarned: u64,
    last_warning: Option<Instant>,
}

impl Writer {
    /// A writer to `db`, the last flush taken as `now`.
    pub fn new(db: Arc<RecordDb>, now: Instant) -> Self {
        Self {
            db,
            running: None,
            last_flush: now,
            failures: 0,
            unwarned: 0,
            last_warning: None,
        }
    }

    /// The database file written to.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Called on every tick: collects a finished write, and starts the next one when it is due and
    /// the previous one is done (changes made meanwhile wait: a key is never queued twice).
    pub fn tick(
        &mut self,
        store: &mut BoundedStore,
        local: &PeerId,
        now: Instant,
    ) -> Option<Flushed> {
        let mut flushed = None;
        if let Some(running) = self.running.take() {
            if !running.write.is_finished() {
                self.running = Some(running);
                return None;
            }
            let Running { write, keys } = running;
            flushed = Some(match futures::FutureExt::now_or_never(write) {
                Some(result) => self.outcome(result, keys, store, now),
                // Finished, so this does not happen; were it to, the keys are kept all the same.
                None => self.outcome(Ok(Err("lost track of a write".into())), keys, store, now),
            });
        }
        let due = now.duration_since(self.last_flush) >= FLUSH_INTERVAL
            || (self.failures == 0 && store.pending_changes() >= FLUSH_EARLY_AT);
        if due {
            self.last_flush = now;
            self.running = self.start(store, local);
        }
        flushed
    }

    /// Waits for the running write, then writes whatever changed since (a clean stop).
    pub async fn finish(&mut self, store: &mut BoundedStore, local: &PeerId) -> Vec<Flushed> {
        let mut done = Vec::new();
        if let Some(Running { write, keys }) = self.running.take() {
            done.push(self.outcome(write.await, keys, store, Instant::now()));
        }
        // In batches; a failed one ends it (the disk is refusing: the changes stay marked).
        while let Some(Running { write, keys }) = self.start(store, local) {
            let flushed = self.outcome(write.await, keys, store, Instant::now());
            if let Flushed::Failed(e) = &flushed {
                warn!(
                    "stopping with {} changed records not written to the data directory ({e})",
                    store.pending_changes()
                );
                done.push(flushed);
                break;
            }
            done.push(flushed);
        }
        done
    }

    fn start(&self, store: &mut BoundedStore, local: &PeerId) -> Option<Running> {
        let keys = store.take_changes_within(FLUSH_EARLY_AT, FLUSH_MAX_BYTES);
        if keys.is_empty() {
            return None;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let changes: Vec<Change> = keys
            .iter()
            .map(|k| change_for(store, k, local, now, wall))
            .collect();
        let db = self.db.clone();
        let write = tokio::task::spawn_blocking(move || {
            db.write(&changes, wall)
                .map(|()| changes.len())
                .map_err(|e| e.to_string())
        });
        Some(Running { write, keys })
    }

    /// Counts a finished write; a failed one's keys are marked changed again, for the next write.
    fn outcome(
        &mut self,
        result: Result<Result<usize, String>, JoinError>,
        keys: Vec<RecordKey>,
        store: &mut BoundedStore,
        now: Instant,
    ) -> Flushed {
        let error = match result {
            Ok(Ok(written)) => {
                if self.failures > 0 {
                    info!(
                        failed = self.failures,
                        "writing to the data directory again; the changes kept meanwhile follow"
                    );
                    self.failures = 0;
                    self.unwarned = 0;
                    self.last_warning = None;
                }
                return Flushed::Written(written);
            }
            Ok(Err(e)) => e,
            Err(e) => format!("the database writer failed: {e}"),
        };
        store.mark_changed(keys);
        self.failures += 1;
        self.unwarned += 1;
        let quiet = self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WRITE_FAILURE_WARNING_EVERY);
        if !quiet {
            warn!(
                failed = self.unwarned,
                "could not write records to the data directory ({error}); the changes are kept \
                 in memory and retried every {FLUSH_INTERVAL:?}"
            );
            self.unwarned = 0;
            self.last_warning = Some(now);
        }
        Flushed::Failed(error)
    }
}

/// The state of `key` in `store` as a change to write; `now` and `wall` are the same moment.
pub fn change_for(
    store: &BoundedStore,
    key: &RecordKey,
    local: &PeerId,
    now: Instant,
    wall: SystemTime,
) -> Change {
    match store.get(key) {
        None => Change::Remove { key: key.to_vec() },
        Some(record) => {
            let expires_at = record.expires.map_or(0, |at| {
                // At least 1 ms, so that an expiring record is never written as "never expires".
                unix_ms(wall).saturating_add(
                    u64::try_from(at.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                )
            });
            Change::Put {
                key: key.to_vec(),
                row: encode_row(expires_at, record.publisher.as_ref(), &record.value),
                published: is_own(&record, local),
            }
        }
    }
}

struct Row {
    expires_at: u64,
    publisher: Option<PeerId>,
    value: Vec<u8>,
}

fn encode_row(expires_at: u64, publisher: Option<&PeerId>, value: &[u8]) -> Vec<u8> {
    let publisher = publisher
        .map(|p| p.to_bytes())
        .filter(|p| p.len() <= usize::from(u8::MAX))
        .unwrap_or_default();
    let mut row = Vec::with_capacity(ROW_HEADER + publisher.len() + value.len());
    row.push(ROW_VERSION);
    row.extend_from_slice(&expires_at.to_be_bytes());
    // The filter above keeps the length within a byte.
    row.push(u8::try_from(publisher.len()).unwrap_or(0));
    row.extend_from_slice(&publisher);
    row.extend_from_slice(value);
    row
}

/// Decodes a row; `None` for anything malformed, oversized or failing record validation (a disk
/// can rot like a network can lie).
fn decode_row(key: &[u8], row: &[u8]) -> Option<Row> {
    if key.len() > MAX_KEY_SIZE || row.len() < ROW_HEADER || row[0] != ROW_VERSION {
        return None;
    }
    let expires_at = u64::from_be_bytes(row[1..9].try_into().ok()?);
    let publisher_len = usize::from(row[9]);
    let rest = &row[ROW_HEADER..];
    if rest.len() < publisher_len {
        return None;
    }
    let (publisher, value) = rest.split_at(publisher_len);
    let publisher = if publisher.is_empty() {
        None
    } else {
        Some(PeerId::from_bytes(publisher).ok()?)
    };
    if value.len() > MAX_VALUE_SIZE || validate_record(key, value).is_err() {
        return None;
    }
    Some(Row {
        expires_at,
        publisher,
        value: value.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dht_behaviours::store::StoreLimits;
    use sha2::{Digest, Sha256};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dht-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn content(value: &[u8]) -> Record {
        Record::new(
            RecordKey::from(Sha256::digest(value).to_vec()),
            value.to_vec(),
        )
    }

    #[test]
    fn rows_round_trip_and_garbage_is_refused() {
        let peer = PeerId::random();
        let record = content(b"value");
        let row = encode_row(42, Some(&peer), &record.value);
        let back = decode_row(record.key.as_ref(), &row).expect("decode");
        assert_eq!(
            (back.expires_at, back.publisher, back.value),
            (42, Some(peer), b"value".to_vec())
        );
        assert!(decode_row(record.key.as_ref(), &row[..5]).is_none());
        assert!(decode_row(record.key.as_ref(), &[9; 20]).is_none());
        // A content key whose value was changed on disk.
        let tampered = encode_row(42, None, b"other");
        assert!(decode_row(record.key.as_ref(), &tampered).is_none());
        // A publisher length past the end of the row.
        let mut short = encode_row(0, None, b"");
        short[9] = 200;
        assert!(decode_row(b"free", &short).is_none());
    }

    #[test]
    fn records_survive_a_reopen_with_their_expiry_and_expired_ones_do_not() {
        let dir = temp_dir("reopen");
        let local = PeerId::random();
        let other = PeerId::random();
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut store = BoundedStore::new(local, StoreLimits::default());
        store.track_changes();
        let mut own = content(b"mine");
        own.publisher = Some(local);
        let mut held = content(b"held");
        held.publisher = Some(other);
        held.expires = Some(now + Duration::from_secs(3600));
        let mut dying = content(b"dying");
        dying.expires = Some(now + Duration::from_secs(3));
        for r in [own.clone(), held.clone(), dying.clone()] {
            store.put(r).expect("put");
        }
        let changes: Vec<Change> = store
            .take_changes()
            .iter()
            .map(|k| change_for(&store, k, &local, now, wall))
            .collect();
        {
            let db = RecordDb::open(&dir).expect("open");
            db.write(&changes, wall).expect("write");
            assert_eq!(db.rows().expect("rows"), 3);
        }
        // Reopened five seconds later (simulated on both clocks): the dying record is gone.
        let later = now + Duration::from_secs(5);
        let wall_later = wall + Duration::from_secs(5);
        let db = RecordDb::open(&dir).expect("reopen");
        let loaded = db.load(local, later, wall_later).expect("load");
        assert_eq!(
            (loaded.expired, loaded.corrupt, loaded.published),
            (1, 0, 1)
        );
        assert_eq!(db.rows().expect("rows"), 2, "the expired row is deleted");
        let by_key = |k: &RecordKey| loaded.records.iter().find(|r| r.key == *k).expect("loaded");
        let mine = by_key(&own.key);
        assert_eq!((mine.publisher, mine.expires), (Some(local), None));
        let kept = by_key(&held.key);
        assert_eq!(kept.publisher, Some(other));
        let left = kept
            .expires
            .expect("an expiry")
            .saturating_duration_since(later);
        // The original expiry (one hour after `now`), not a fresh TTL.
        assert!(
            left <= Duration::from_secs(3595) && left >= Duration::from_secs(3594),
            "{left:?}"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn removals_and_lost_ownership_are_written() {
        let dir = temp_dir("remove");
        let local = PeerId::random();
        let now = Instant::now();
        let wall = SystemTime::now();
        let db = RecordDb::open(&dir).expect("open");
        let mut store = BoundedStore::new(local, StoreLimits::default());
        store.track_changes();
        let mut own = Record::new(RecordKey::new(&"/name"), b"v1".to_vec());
        own.publisher = Some(local);
        store.put(own.clone()).expect("put");
        store.put(content(b"gone soon")).expect("put");
        let flush = |store: &mut BoundedStore| {
            let changes: Vec<Change> = store
                .take_changes()
                .iter()
                .map(|k| change_for(store, k, &local, now, wall))
                .collect();
            db.write(&changes, wall).expect("write");
        };
        flush(&mut store);
        store.remove(&content(b"gone soon").key);
        // Another publisher's version of the free key replaces ours: we no longer republish it.
        let mut theirs = own.clone();
        theirs.publisher = Some(PeerId::random());
        theirs.expires = Some(now + Duration::from_secs(60));
        store.put(theirs).expect("put");
        flush(&mut store);
        let loaded = db.load(local, now, wall).expect("load");
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.published, 0);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
