//! Persistence against a real disk (issue #15, point 8): a node killed with SIGKILL while it
//! writes, and a data directory on a filesystem that fills up. Real `dht` processes on real
//! filesystems, driven through their console (`-i`): `s VALUE` stores, `l` lists the node's own
//! store, `i` shows its write counters.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dht::node::persistence::FLUSH_INTERVAL;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::{POLL, forward_lines};

const BIN: &str = env!("CARGO_BIN_EXE_dht");
/// Longest a node may take to start, or a console command to answer.
const ANSWER: Duration = Duration::from_secs(10);
/// The warning a failed write logs.
const WRITE_FAILED: &str = "could not write records to the data directory";

/// A `dht -i` process with a data directory: its console on stdin and stdout, its log on stderr.
struct Node {
    child: Child,
    stdin: ChildStdin,
    out: mpsc::UnboundedReceiver<String>,
    err: mpsc::UnboundedReceiver<String>,
    /// Every log line read so far.
    log: Vec<String>,
    /// The listen address, with `/p2p/<id>`.
    addr: String,
    /// Records it read from its data directory at start (its banner).
    loaded: usize,
}

impl Node {
    /// Starts a lone node on an OS-chosen port with `dir` as its data directory; returns once its
    /// console is ready.
    async fn start(dir: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["-i", "-l", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
            .arg(dir)
            .env("NO_COLOR", "1")
            .env("DHT_VERBOSE", "3")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn dht");
        let stdin = child.stdin.take().expect("stdin");
        let out = forward_lines(child.stdout.take().expect("stdout"));
        let err = forward_lines(child.stderr.take().expect("stderr"));
        let mut node = Self {
            child,
            stdin,
            out,
            err,
            log: Vec::new(),
            addr: String::new(),
            loaded: 0,
        };
        // With a console the banner goes to standard error, then "ready" once the node is up.
        let banner = node.log_line_with("data dir:").await;
        node.loaded = banner
            .rsplit_once('(')
            .and_then(|(_, n)| n.strip_suffix(" records)"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no record count in {banner:?}"));
        let listening = node.log_line_with("listening on").await;
        node.addr = listening
            .split_whitespace()
            .last()
            .expect("an address")
            .to_owned();
        node.log_line_with("ready").await;
        node
    }

    /// Waits for a log line containing `text` and returns it.
    async fn log_line_with(&mut self, text: &str) -> String {
        crate::common::line_with(&mut self.err, &mut self.log, text, ANSWER).await
    }

    /// The first log line containing `text`, logged already or waited for.
    async fn logged(&mut self, text: &str) -> String {
        match self.read_log().iter().find(|l| l.contains(text)) {
            Some(line) => line.clone(),
            None => self.log_line_with(text).await,
        }
    }

    /// Reads the log lines written so far.
    fn read_log(&mut self) -> &[String] {
        while let Ok(line) = self.err.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the console");
        self.stdin.flush().await.expect("flush the console");
    }

    /// Runs a console command; returns its output, up to the line `last` accepts.
    async fn command(&mut self, line: &str, last: impl Fn(&str) -> bool) -> Vec<String> {
        self.send(line).await;
        let deadline = Instant::now() + ANSWER;
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.out.recv()).await {
                Ok(Some(l)) => {
                    let done = last(&l) || l.starts_with("error:");
                    lines.push(l);
                    if done {
                        return lines;
                    }
                }
                Ok(None) => panic!(
                    "the console closed during {line:.40?} (saw {lines:?}); log: {:#?}",
                    self.read_log()
                ),
                Err(_) => panic!("no answer to {line:.40?} within {ANSWER:?} (saw {lines:?})"),
            }
        }
    }

    /// Stores `value` through the console; panics unless it is stored.
    async fn store(&mut self, value: &str) -> String {
        let out = self.command(&format!("s {value}"), |_| true).await;
        let key = dht::Key::for_value(value.as_bytes()).to_string();
        assert!(
            out[0].starts_with(&format!("{key} ")),
            "storing {value:.30?} answered {out:?}"
        );
        key
    }

    /// The keys in the node's own store.
    async fn local_keys(&mut self) -> HashSet<String> {
        let out = self.command("l", |l| l.ends_with(" records")).await;
        let (count, rows) = out.split_last().expect("a count line");
        assert!(!count.starts_with("error:"), "l answered {out:?}");
        let keys: HashSet<String> = rows
            .iter()
            .map(|r| r.split_whitespace().next().expect("a key").to_owned())
            .collect();
        assert_eq!(count, &format!("{} records", keys.len()), "{out:?}");
        keys
    }

    /// Changes written to the data directory, and failed writes (the `i` command's counters).
    async fn write_counters(&mut self) -> (u64, u64) {
        let out = self.command("i", |l| l.starts_with("uptime:")).await;
        let line = out
            .iter()
            .find(|l| l.starts_with("persistence:"))
            .unwrap_or_else(|| panic!("no persistence line in {out:?}"));
        // persistence:    DIR (N changes written, M failed writes)
        let counts = line
            .rsplit_once('(')
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no counters in {line:?}"));
        let numbers: Vec<u64> = counts
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match numbers.as_slice() {
            [written, failed] => (*written, *failed),
            _ => panic!("unexpected counters in {line:?}"),
        }
    }

    /// Polls the write counters until `done` accepts them; fails the test after `within`.
    async fn wait_for_counters(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn((u64, u64)) -> bool,
    ) -> (u64, u64) {
        let deadline = Instant::now() + within;
        loop {
            let counters = self.write_counters().await;
            if done(counters) {
                return counters;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}: (written, failed) = {counters:?}; \
                 log: {:#?}",
                self.read_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL: no goodbye, no final write.
    async fn kill_9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(ANSWER, self.child.wait())
            .await
            .expect("gone after SIGKILL")
            .expect("wait");
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    }

    /// A clean stop, which writes every change first: `q` on the console, then end of input.
    /// (Not SIGTERM: `dht -i` stops its node on SIGTERM but then waits for a line on standard
    /// input before it exits.) Returns the log.
    async fn quit(mut self) -> Vec<String> {
        self.send("q").await;
        drop(self.stdin);
        let status = tokio::time::timeout(ANSWER, self.child.wait())
            .await
            .expect("exits within 10 s of q")
            .expect("wait");
        // The rest of the log, up to the end of the process's standard error.
        while let Ok(Some(line)) = tokio::time::timeout(ANSWER, self.err.recv()).await {
            self.log.push(line);
        }
        assert_eq!(status.code(), Some(0), "a clean stop: {:#?}", self.log);
        assert!(
            !self.log.iter().any(|l| l.contains("panicked")),
            "a panic: {:#?}",
            self.log
        );
        self.log
    }
}

/// Start-up read the database without finding a corrupt row.
fn assert_no_corrupt_rows(node: &mut Node) {
    let log = node.read_log();
    let read = log
        .iter()
        .find(|l| l.contains("records read from the data directory"))
        .unwrap_or_else(|| panic!("no start-up read in the log: {log:#?}"));
    assert!(read.contains("corrupt=0"), "{read}");
}

/// A fresh directory for this test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dht-it-disk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A distinct value of about `len` bytes (printable, one console line).
fn value(tag: &str, i: usize, len: usize) -> String {
    let head = format!("{tag} {i} ");
    let fill = len.saturating_sub(head.len());
    format!("{head}{}", "x".repeat(fill))
}

/// Stores a second: a steady load the disk keeps up with (2 MB/s of values). "A crash loses at most
/// the last second" holds only then: a node made to store faster than it writes builds a backlog,
/// and a crash loses the backlog (a console storing 2 KiB values as fast as it can does 10,000 to
/// 20,000 a second on this 2-core machine; the writer commits about 8,000 a second).
const RATE: u32 = 1000;
/// How long each round stores before the records so far are marked as ones that must survive.
const SAFE_PHASE: Duration = Duration::from_millis(1500);
/// How long it stores after that before it watches for the next write to kill the node in.
const ARMED_AFTER: Duration = Duration::from_millis(1000);
/// Longest the node may take to report the safe records written (a loaded machine included).
const WRITTEN_WITHIN: Duration = Duration::from_secs(30);
const ROUNDS: usize = 3;

/// The database file's size and modification time: they change when a write reaches it.
fn file_state(path: &Path) -> (u64, std::time::SystemTime) {
    let meta = std::fs::metadata(path).expect("the database file");
    (meta.len(), meta.modified().expect("mtime"))
}

/// kill -9 while records are being stored and written, three times on the same data directory:
/// each restart opens the database (not corrupt) and holds, in its own store, every record the
/// node had reported written before the kill (and held at its start); records stored after that
/// may be lost, and no record appears that was never stored.
/// Each kill comes as the database file changes, with a store in flight: most likely while a write
/// is under way (a random moment would mostly fall between two writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_while_writing_restarts_with_every_record_it_reported_written() {
    let dir = scratch("kill9");
    let db = dir.join(dht::node::persistence::DATABASE_FILE);
    // Every record ever sent to the node.
    let mut sent: HashSet<String> = HashSet::new();
    // What the node must hold after the last kill: what it held when it started that round (read
    // from disk, so written already), and what it reported written before the kill.
    let mut must_hold: HashSet<String> = HashSet::new();
    let mut at_risk = 0;
    for round in 0..=ROUNDS {
        let mut node = Node::start(&dir).await;
        assert_no_corrupt_rows(&mut node);
        let held = node.local_keys().await;
        assert_eq!(held.len(), node.loaded);
        let missing = must_hold.difference(&held).count();
        assert_eq!(
            missing,
            0,
            "after kill {round}: {missing} of the {} records that were on disk or reported \
             written before the kill are gone",
            must_hold.len()
        );
        assert!(held.is_subset(&sent), "a record nobody stored");
        if round > 0 {
            println!(
                "after kill {round}: {} records held, all {} that had to be, and {} of the {at_risk} \
                 stored after them",
                held.len(),
                must_hold.len(),
                held.len() - must_hold.len(),
            );
        }
        if round == ROUNDS {
            node.quit().await;
            break;
        }
        // Store at RATE. The records of the first phase must survive: the node's own counter
        // says when they are written (every store is a change of its own key), which no
        // timing margin could promise on a loaded machine. Then store on, and once armed send
        // one more store and kill the moment the database file changes.
        let mut safe: Vec<String> = Vec::new();
        let mut risky: Vec<String> = Vec::new();
        let started = Instant::now();
        let mut i = 0u32;
        let mut pace = || {
            i += 1;
            // Pacing the load (not waiting for anything): the store due now.
            started + Duration::from_secs(1) * i / RATE
        };
        while started.elapsed() < SAFE_PHASE {
            tokio::time::sleep_until(pace()).await;
            let v = value(&format!("round {round}"), safe.len(), 2048);
            safe.push(node.store(&v).await);
        }
        let written = safe.len() as u64;
        let wait = WRITTEN_WITHIN;
        node.wait_for_counters(wait, "the first phase written", |(w, _)| w >= written)
            .await;
        let armed_at = Instant::now() + ARMED_AFTER;
        let mut armed = None;
        loop {
            tokio::time::sleep_until(pace()).await;
            let v = value(&format!("round {round} late"), risky.len(), 2048);
            match armed {
                Some(before) if file_state(&db) != before => {
                    node.send(&format!("s {v}")).await;
                    risky.push(dht::Key::for_value(v.as_bytes()).to_string());
                    break;
                }
                Some(_) => assert!(
                    Instant::now() < armed_at + 3 * FLUSH_INTERVAL + WRITTEN_WITHIN,
                    "the database file did not change while records were stored"
                ),
                None if Instant::now() >= armed_at => armed = Some(file_state(&db)),
                None => {}
            }
            risky.push(node.store(&v).await);
        }
        assert!(node.running(), "the node died before the kill");
        node.kill_9().await;
        assert!(
            safe.len() > 200,
            "too few stores to prove anything: {}",
            safe.len()
        );
        at_risk = risky.len();
        sent.extend(risky);
        must_hold = held;
        for k in safe {
            must_hold.insert(k.clone());
            sent.insert(k);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for the test; unmounted when dropped, whatever happened.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) on `dir`. Fails the test, saying
    /// why, where mounting is not allowed: the test cannot prove anything without it.
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs and needs to mount one, which takes root (CAP_SYS_ADMIN; \
             CI runs as root): `mount -t tmpfs` on {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Gives the filesystem `size` in all.
    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                // A process killed on the way out may hold it a moment longer: detach it now,
                // the kernel frees it when the last file closes.
                c.arg("-l");
            }
            c.arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount {}", self.dir.display());
        }
    }
}

/// Runs `dht get KEY -c ADDR`: a second process fetches over the network.
async fn fetch_from(addr: &str, key: &str) -> Vec<u8> {
    let mut child = Command::new(BIN)
        .args(["get", key, "-c", addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dht get");
    let mut out = Vec::new();
    let mut err = String::new();
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        let (a, b) = tokio::join!(so.read_to_end(&mut out), se.read_to_string(&mut err));
        a.and(b).expect("read output");
        child.wait().await.expect("wait")
    })
    .await
    .expect("dht get finishes");
    assert!(status.success(), "dht get {key}: {err}");
    out
}

/// Size of the full filesystem: room for the database's first pages and a few dozen records.
const SMALL: &str = "1m";
/// Size once space comes back.
const BIG: &str = "64m";
/// Values of this size fill [`SMALL`] in a few dozen stores.
const VALUE_SIZE: usize = 30 * 1024;

/// The data directory's filesystem fills up: the write fails (ENOSPC), the failure is logged and
/// counted, the node keeps storing into memory and serving fetches, and the unwritten changes are
/// kept. Once space comes back they are written, and after a clean stop a restart holds every
/// record, those stored while the disk was full included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_but_the_node_serves_on_and_loses_nothing_once_space_is_back() {
    let root = scratch("full");
    let data = root.join("data");
    let disk = Tmpfs::mount(&data, SMALL);
    let mut node = Node::start(&data).await;
    let mut keys = Vec::new();

    // Fill it: a few records at a time, each batch written, until a write fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for _ in 0..10 {
            keys.push(node.store(&value("filling", keys.len(), VALUE_SIZE)).await);
        }
        let stored = keys.len() as u64;
        let (_, failed) = node
            .wait_for_counters(
                Duration::from_secs(5),
                "the batch written, or a failed write",
                |(written, failed)| written == stored || failed > 0,
            )
            .await;
        if failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed write after {} records of {VALUE_SIZE} bytes on a {SMALL} disk",
            keys.len()
        );
    }
    let failed = node.logged(WRITE_FAILED).await;
    assert!(
        failed.contains("WARN") && failed.contains("No space left on device"),
        "{failed}"
    );
    let (_, failures) = node.write_counters().await;
    let full_at = keys.len();

    // Full: stores still go into memory, and the node serves them.
    for i in 0..20 {
        keys.push(node.store(&value("while full", i, VALUE_SIZE)).await);
    }
    let last = keys.last().expect("a key").clone();
    let fetched = fetch_from(&node.addr, &last).await;
    assert_eq!(fetched, value("while full", 19, VALUE_SIZE).into_bytes());
    let held = node.local_keys().await;
    assert!(
        keys.iter().all(|k| held.contains(k)),
        "a record went missing"
    );
    // Later writes keep failing (and are retried: a write is attempted every interval).
    node.wait_for_counters(
        Duration::from_secs(5),
        "another failed write while the disk is full",
        |(_, failed)| failed > failures,
    )
    .await;
    assert!(node.running(), "the node died on a full disk");
    // Warned once, not at every retry (at most once a minute); the counter counts them all.
    let warnings = node
        .read_log()
        .iter()
        .filter(|l| l.contains(WRITE_FAILED))
        .count();
    assert_eq!(warnings, 1, "{:#?}", node.read_log());
    println!(
        "disk full after {full_at} records; {} stored in all",
        keys.len()
    );

    // Space comes back: every change is written by the next flushes.
    disk.resize(BIG);
    let total = keys.len() as u64;
    node.wait_for_counters(
        Duration::from_secs(10),
        "every change written once space is back",
        |(written, _)| written >= total,
    )
    .await;
    node.logged("writing to the data directory again").await;
    node.quit().await;

    // A restart on the same directory holds every record.
    let mut node = Node::start(&data).await;
    assert_no_corrupt_rows(&mut node);
    assert_eq!(node.loaded, keys.len());
    let held = node.local_keys().await;
    let missing = keys.iter().filter(|k| !held.contains(*k)).count();
    assert_eq!(missing, 0, "records lost after the disk was full");
    node.quit().await;
    drop(disk);
    let _ = std::fs::remove_dir_all(&root);
}
