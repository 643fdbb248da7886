//! The writer behind the event loop: it takes the stores' changes in batches and commits each
//! batch in one transaction on a blocking thread, one at a time; a failed batch's changes are
//! marked changed again for the next one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dht_behaviours::providers::ProviderStore;
use dht_behaviours::store::{BoundedStore, is_own};
use libp2p::PeerId;
use libp2p::kad::RecordKey;
use libp2p::kad::store::RecordStore;
use tokio::task::{JoinError, JoinHandle};
use tracing::{info, warn};

use super::rows::{encode_provider_row, encode_row, provider_id};
use super::{Change, FLUSH_EARLY_AT, FLUSH_INTERVAL, FLUSH_MAX_BYTES, RecordDb, unix_ms};
use crate::core::records::Records;

/// How often a disk that keeps refusing writes is warned about (each failure is counted).
pub const WRITE_FAILURE_WARNING_EVERY: Duration = Duration::from_secs(60);

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
/// keys and provider records it took from the stores: they are marked changed again if it fails.
struct Running {
    write: JoinHandle<Result<usize, String>>,
    keys: Vec<RecordKey>,
    providers: Vec<(RecordKey, PeerId)>,
}

/// Changes not yet taken from `records`' stores.
fn pending(records: &mut Records) -> usize {
    records.store_mut().pending_changes() + records.providers_mut().pending_changes()
}

/// Writes the stores' changes behind the event loop: one transaction per [`FLUSH_INTERVAL`] (or
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
    pub fn tick(&mut self, records: &mut Records, local: &PeerId, now: Instant) -> Option<Flushed> {
        let mut flushed = None;
        if let Some(running) = self.running.take() {
            if !running.write.is_finished() {
                self.running = Some(running);
                return None;
            }
            let Running {
                write,
                keys,
                providers,
            } = running;
            let result = futures::FutureExt::now_or_never(write)
                // Finished, so this does not happen; were it to, the keys are kept all the same.
                .unwrap_or_else(|| Ok(Err("lost track of a write".into())));
            flushed = Some(self.outcome(result, keys, providers, records, now));
        }
        let due = now.duration_since(self.last_flush) >= FLUSH_INTERVAL
            || (self.failures == 0 && pending(records) >= FLUSH_EARLY_AT);
        if due {
            self.last_flush = now;
            self.running = self.start(records, local);
        }
        flushed
    }

    /// Waits for the running write, then writes whatever changed since (a clean stop).
    pub async fn finish(&mut self, records: &mut Records, local: &PeerId) -> Vec<Flushed> {
        let mut done = Vec::new();
        if let Some(Running {
            write,
            keys,
            providers,
        }) = self.running.take()
        {
            let result = write.await;
            done.push(self.outcome(result, keys, providers, records, Instant::now()));
        }
        // In batches; a failed one ends it (the disk is refusing: the changes stay marked).
        while let Some(Running {
            write,
            keys,
            providers,
        }) = self.start(records, local)
        {
            let result = write.await;
            let flushed = self.outcome(result, keys, providers, records, Instant::now());
            if let Flushed::Failed(e) = &flushed {
                warn!(
                    "stopping with {} changed records not written to the data directory ({e})",
                    pending(records)
                );
                done.push(flushed);
                break;
            }
            done.push(flushed);
        }
        done
    }

    /// Takes a batch of changes from both stores and starts writing it. Provider records are
    /// small (at most about a kilobyte): [`FLUSH_EARLY_AT`] of them bound the copy well enough.
    fn start(&self, records: &mut Records, local: &PeerId) -> Option<Running> {
        let keys = records
            .store_mut()
            .take_changes_within(FLUSH_EARLY_AT, FLUSH_MAX_BYTES);
        let providers = records.providers_mut().take_changes_within(FLUSH_EARLY_AT);
        if keys.is_empty() && providers.is_empty() {
            return None;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let store = records.store_mut();
        let mut changes: Vec<Change> = keys
            .iter()
            .map(|k| change_for(store, k, local, now, wall))
            .collect();
        let provider_store = records.providers_mut();
        changes.extend(
            providers
                .iter()
                .map(|(k, p)| provider_change_for(provider_store, k, p, now, wall)),
        );
        let db = self.db.clone();
        let write = tokio::task::spawn_blocking(move || {
            db.write(&changes, wall)
                .map(|()| changes.len())
                .map_err(|e| e.to_string())
        });
        Some(Running {
            write,
            keys,
            providers,
        })
    }

    /// Counts a finished write; a failed one's changes are marked changed again, for the next.
    fn outcome(
        &mut self,
        result: Result<Result<usize, String>, JoinError>,
        keys: Vec<RecordKey>,
        providers: Vec<(RecordKey, PeerId)>,
        records: &mut Records,
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
        records.store_mut().mark_changed(keys);
        records.providers_mut().mark_changed(providers);
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

/// The wall-clock time of `at` in unix ms (`now` and `wall` the same moment), at least 1 ms after
/// `wall`, so that an expiring record is never written as "never expires".
fn expiry_ms(at: Instant, now: Instant, wall: SystemTime) -> u64 {
    let left = u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
    unix_ms(wall).saturating_add(left.max(1))
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
            let expires_at = record.expires.map_or(0, |at| expiry_ms(at, now, wall));
            Change::Put {
                key: key.to_vec(),
                row: encode_row(expires_at, record.publisher.as_ref(), &record.value),
                published: is_own(&record, local),
            }
        }
    }
}

/// The state of `provider`'s record of `key` in `store` as a change to write; `now` and `wall`
/// are the same moment.
pub fn provider_change_for(
    store: &ProviderStore,
    key: &RecordKey,
    provider: &PeerId,
    now: Instant,
    wall: SystemTime,
) -> Change {
    let id = provider_id(key, provider);
    match store.get(key, provider) {
        None => Change::RemoveProvider { id },
        Some(record) => {
            // Provider records always expire; one without (not made by the store) lives now.
            let expires_at = expiry_ms(record.expires.unwrap_or(now), now, wall);
            Change::PutProvider {
                id,
                row: encode_provider_row(expires_at, &record.addresses),
            }
        }
    }
}
