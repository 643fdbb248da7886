#!/usr/bin/env python3
"""Reads what bench/profile.sh left in OUT and prints a markdown report: instructions per store
(storing side: the `dht bench` process) and per request served (the target node), by bucket; the
top functions; system calls per store; context switches and CPU per store; perf's user/kernel
split.

  bench/profile_report.py /tmp/profile-old

Buckets come from each instruction's source file (the line tables know which crate an inlined
function came from); instructions in the Rust standard library's files (inlined Vec, HashMap,
fmt...) are charged to the crate of the function they were inlined into, and to "Rust std" when
that function is itself std's. C library code goes by function: malloc and free, memcpy and the
like, the rest.
"""

import glob
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/profile"

BUCKETS = [
    # (bucket, crates)
    ("yamux (libp2p-yamux, yamux)", {"yamux", "libp2p_yamux"}),
    ("noise / ChaCha20-Poly1305 (libp2p-noise, snow, RustCrypto, ring)",
     {"libp2p_noise", "snow", "chacha20poly1305", "chacha20", "poly1305", "universal_hash", "cipher",
      "x25519_dalek", "blake2", "hkdf", "aead", "ring", "ctr", "inout", "zeroize"}),
    ("multistream-select", {"multistream_select"}),
    ("request-response", {"libp2p_request_response"}),
    ("futures-bounded", {"futures_bounded"}),
    ("futures-timer", {"futures_timer"}),
    ("libp2p swarm/core/tcp/other", {"libp2p_swarm", "libp2p_core", "libp2p_tcp", "libp2p_dns", "libp2p_identify",
                                     "libp2p_ping", "libp2p_connection_limits", "libp2p_allow_block_list",
                                     "libp2p_kad", "libp2p", "rw_stream_sink", "libp2p_stream",
                                     "libp2p_plaintext", "if_watch"}),
    ("tokio (scheduler, I/O driver, timers) + mio", {"tokio", "mio", "tokio_util", "tokio_stream", "socket2"}),
    ("futures / channels / locks", {"futures_util", "futures_channel", "futures_core", "futures_task",
                                    "futures_executor", "futures_io", "futures_lite", "async_channel",
                                    "event_listener", "event_listener_strategy", "parking_lot",
                                    "parking_lot_core", "crossbeam_channel", "crossbeam_utils",
                                    "crossbeam_epoch", "atomic_waker", "concurrent_queue", "pin_project_lite",
                                    "asynchronous_codec", "lock_api"}),
    ("protobuf encode/decode (deps: quick-protobuf, prost, unsigned-varint)",
     {"quick_protobuf", "prost", "prost_codec", "unsigned_varint", "quick_protobuf_codec"}),
    ("sha2", {"sha2", "digest", "block_buffer", "generic_array", "cpufeatures"}),
    ("ed25519 / curve25519", {"ed25519_dalek", "ed25519", "curve25519_dalek", "signature"}),
    ("tracing / log", {"tracing", "tracing_core", "tracing_subscriber", "tracing_log", "log", "sharded_slab",
                       "thread_local", "matchers", "regex", "regex_automata", "nu_ansi_term"}),
    ("identities / addresses (libp2p-identity, multiaddr, multihash, bs58)",
     {"libp2p_identity", "multiaddr", "multihash", "bs58", "multibase", "data_encoding", "unsigned_varint_"}),
    ("containers (hashbrown, smallvec, bytes, slab, indexmap...)",
     {"hashbrown", "smallvec", "bytes", "slab", "indexmap", "either", "nohash_hasher", "fnv", "lru", "hashlink",
      "foldhash", "ahash"}),
    ("rand", {"rand", "rand_core", "rand_chacha", "getrandom", "ppv_lite86"}),
    ("redb", {"redb"}),
]
CRATE_BUCKET = {c: b for b, cs in BUCKETS for c in cs}
OURS_DHT = "ours: dht (src/)"
OURS_BEH = "ours: dht_behaviours (behaviours/src/, but kad_wire.rs)"
OURS_WIRE = "ours: protobuf encode/decode (behaviours/src/kad_wire.rs)"
ALLOC = "allocation (malloc/free/realloc, __rust_alloc glue)"
MEMCPY = "memcpy/memmove/memcmp (libc)"
MEMSET = "memset (libc; under callgrind a rep stosb counts one instruction per byte)"
LIBC = "libc other (syscall wrappers, pthread, clock_gettime)"
STD = "Rust std/core/alloc (fmt, collections, sync...)"

VERSIONED = re.compile(r"^(.*?)-\d+\.\d+\.\d+[^/]*$")


def crate_of_file(path):
    """The crate a source file belongs to: registry paths name it; our checkout's paths; std's."""
    if not path or path == "???":
        return None
    if "/behaviours/src/" in path or path.startswith("behaviours/"):
        return "dht_behaviours:wire" if path.endswith("kad_wire.rs") else "dht_behaviours"
    if "/work/main/src/" in path or path.startswith("src/"):
        return "dht"
    if "/rustc/" in path and "/library/" in path:
        return "std"
    m = re.search(r"/rust/deps/([^/]+)/", path)
    if m:
        v = VERSIONED.match(m.group(1))
        return (v.group(1) if v else m.group(1)).replace("-", "_")
    m = re.search(r"/registry/src/[^/]+/([^/]+)/", path) or re.search(r"/git/checkouts/[^/]+/[^/]+/([^/]+)/", path)
    if m:
        v = VERSIONED.match(m.group(1))
        return (v.group(1) if v else m.group(1)).replace("-", "_")
    return None


def crate_of_fn(name):
    """The crate of a demangled Rust function: the self type's for `<T as Trait>::f`."""
    n = name
    while n.startswith("<"):
        n = n[1:]
    n = n.lstrip("&*").replace("mut ", "").replace("dyn ", "")
    first = re.split(r"::|<| as |>", n, maxsplit=1)[0].strip()
    if re.fullmatch(r"[A-Z][A-Za-z0-9]*", first) and " as " in n:
        # `<T as some_crate::Trait>::f`: a generic self type; the trait's crate is the better guess.
        first = re.split(r"::|<", n.split(" as ", 1)[1], maxsplit=1)[0].strip()
    return first or None


def classify(obj, path, fn):
    obj = obj or ""
    if "libc.so" in obj or "ld-linux" in obj or "vdso" in obj or "libpthread" in obj or "libgcc" in obj:
        if re.search(r"malloc|free|calloc|realloc|memalign|_int_|tcache|arena|sysmalloc|consolidate", fn):
            return ALLOC
        if re.search(r"memset", fn):
            return MEMSET
        if re.search(r"mem(cpy|move|cmp|chr)|str(len|cmp|chr)|bcmp", fn):
            return MEMCPY
        return LIBC
    if re.match(r"(__rust_(alloc|dealloc|realloc|alloc_zeroed)|__rdl_|__rg_|alloc::alloc::)", fn):
        return ALLOC
    if fn.startswith("ring_core_") and ("chacha" in fn or "poly1305" in fn):
        return CRATE_BUCKET["ring"]
    if path is None and "__rust_begin_short_backtrace" in fn:
        # A thread's entry (perf, by symbol): tokio's worker loop is inlined into it.
        return CRATE_BUCKET["tokio"]
    c = crate_of_file(path)
    if c in (None, "std"):
        c = crate_of_fn(fn)
        if c in ("core", "alloc", "std", "compiler_builtins"):
            return STD
    if c == "dht":
        return OURS_DHT
    if c == "dht_behaviours":
        return OURS_BEH
    if c == "dht_behaviours:wire":
        return OURS_WIRE
    if c in CRATE_BUCKET:
        return CRATE_BUCKET[c]
    if c is None or c in ("???", ""):
        return "unknown"
    return f"other: {c}"


def parse_callgrind(path):
    """Self cost by (object, file, function), inclusive cost by function, call counts into each
    function, and the total."""
    names = {"fl": {}, "fn": {}, "ob": {}}
    kind_of = {"fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl", "fn": "fn", "cfn": "fn",
               "ob": "ob", "cob": "ob"}
    self_cost = defaultdict(int)
    incl = defaultdict(int)
    calls_in = defaultdict(int)
    call_cost = defaultdict(int)  # (caller, callee) -> inclusive cost of those calls
    call_count = defaultdict(int)
    total = 0
    ob = fl = fi = fn = cfn = None
    pending_call = None
    summary = None

    def name(kind, v):
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        i, n = m.group(1), m.group(2)
        if n is not None:
            names[kind][i] = n
            return n
        return names[kind].get(i, f"({i})")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c0 = line[0]
            if c0.isdigit() or c0 in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call is not None:
                    incl[fn] += cost
                    call_cost[(fn, pending_call)] += cost
                    pending_call = None
                else:
                    self_cost[(ob, fi or fl, fn)] += cost
                    incl[fn] += cost
                    total += cost
                continue
            key, _, val = line.partition("=")
            if key in kind_of and _:
                n = name(kind_of[key], val)
                if key == "ob":
                    ob = n
                elif key == "fl":
                    fl, fi = n, None
                elif key in ("fi", "fe"):
                    fi = n
                elif key == "fn":
                    fn, fi = n, None
                elif key == "cfn":
                    cfn = n
                continue
            if key == "calls":
                pending_call = cfn
                calls_in[cfn] += int(val.split()[0])
                call_count[(fn, cfn)] += int(val.split()[0])
                continue
            if line.startswith("summary:"):
                summary = int(line.split()[1])
    return {"self": self_cost, "incl": incl, "calls_in": calls_in, "call_cost": call_cost,
            "call_count": call_count, "total": total, "summary": summary}


def fmt(n):
    return f"{n:,.0f}"


def callgrind_section(label, path, per, per_label, lines):
    cg = parse_callgrind(path)
    total = cg["total"]
    buckets = defaultdict(int)
    crates = defaultdict(int)
    by_fn = defaultdict(int)
    for (ob, fl, fn), c in cg["self"].items():
        buckets[classify(ob, fl, fn)] += c
        by_fn[fn] += c
    lines.append(f"\n### {label}: {fmt(total / per)} instructions per {per_label}\n")
    lines.append(f"`{os.path.basename(path)}`: {fmt(total)} instructions (summary line {fmt(cg['summary'] or 0)}) "
                 f"over {per:g} {per_label}s.\n")
    lines.append(f"| bucket (self cost, by the instruction's source crate) | instructions per {per_label} | share |")
    lines.append("| --- | ---: | ---: |")
    for b, c in sorted(buckets.items(), key=lambda kv: -kv[1]):
        if c / total < 0.002:
            continue
        lines.append(f"| {b} | {fmt(c / per)} | {100 * c / total:.1f} % |")
    rest = sum(c for c in buckets.values() if c / total < 0.002)
    if rest:
        lines.append(f"| (buckets under 0.2 % each) | {fmt(rest / per)} | {100 * rest / total:.1f} % |")
    memset = sum(c for (ob, fl, fn), c in cg["self"].items() if fn and fn.startswith("__memset"))
    lines.append(f"\nOf these, `__memset_*` is {fmt(memset / per)} per {per_label} ({100 * memset / total:.1f} %): "
                 f"callgrind counts each iteration of `rep stosb` as an instruction, so a memset of n bytes "
                 f"counts about n; in CPU time (perf, below) memset is a fraction of a percent. Without it: "
                 f"**{fmt((total - memset) / per)} instructions per {per_label}**.")
    lines.append(f"\nTop functions by self cost ({per_label}):\n")
    lines.append(f"| function | self per {per_label} | share |")
    lines.append("| --- | ---: | ---: |")
    for fn, c in sorted(by_fn.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"| `{fn[:150]}` | {fmt(c / per)} | {100 * c / total:.1f} % |")
    lines.append(f"\nSelected functions, inclusive (self and everything they call; nested, so these overlap; "
                 f"an entry absent here was inlined away or not called):\n")
    lines.append(f"| function | inclusive per {per_label} | share | calls per {per_label} |")
    lines.append("| --- | ---: | ---: | ---: |")
    for pat in INCLUSIVE_PATTERNS:
        best = [(fn, c) for fn, c in cg["incl"].items() if fn and re.search(pat, fn)]
        for fn, c in sorted(best, key=lambda kv: -kv[1])[:2]:
            if c / total < 0.001:
                continue
            lines.append(f"| `{fn[:140]}` | {fmt(c / per)} | {100 * c / total:.1f} % | {cg['calls_in'].get(fn, 0) / per:.2f} |")
    lines.append(f"\nWho calls the hot leaves (inclusive cost of the calls, per {per_label}; calls per {per_label}):\n")
    lines.append(f"| callee | caller | instructions | calls |")
    lines.append("| --- | --- | ---: | ---: |")
    for pat in CALLEE_PATTERNS:
        rows = [((a, b), c) for (a, b), c in cg["call_cost"].items() if b and re.search(pat, b)]
        for (caller, callee), c in sorted(rows, key=lambda kv: -kv[1])[:4]:
            if c / total < 0.003:
                continue
            lines.append(f"| `{callee[:70]}` | `{(caller or '?')[:110]}` | {fmt(c / per)} | "
                         f"{cg['call_count'].get((caller, callee), 0) / per:.1f} |")
    return cg


REQUESTS_PER_STORE = {}

INCLUSIVE_PATTERNS = [
    r"^libp2p_swarm::connection::Connection<THandler>::poll$",
    r"^yamux::connection::Connection<T>::poll_next_inbound$",
    r"^<multistream_select::negotiated::Negotiated<TInner> as futures_io::if_std::AsyncRead>::poll_read$",
    r"^<libp2p_noise::io::Output<T> as futures_io::if_std::AsyncRead>::poll_read$",
    r"^<libp2p_noise::io::Output<T> as futures_io::if_std::AsyncWrite>::poll_(write|flush)$",
    r"^<snow::resolvers::ring::CipherChaChaPoly as snow::types::Cipher>::(encrypt|decrypt)$",
    r"^<libp2p_swarm::handler::select::ConnectionHandlerSelect<TProto1,TProto2> as libp2p_swarm::handler::ConnectionHandler>::poll$",
    r"^libp2p_request_response::handler::Handler<TCodec>::on_fully_negotiated_(inbound|outbound)",
    r"^libp2p_swarm::Swarm<TBehaviour>::poll_next_event$",
    r"^dht::node::event_loop::kad::<impl dht::node::event_loop::EventLoop>::on_kad$",
    r"^dht::node::event_loop::kad::<impl dht::node::event_loop::EventLoop>::admissible$",
    r"^dht::core::Core::handle$",
    r"^dht::core::server::serve$",
    r"^dht_behaviours::kad_wire::.*(encode|decode)",
    r"^dht_behaviours::kad_codec::",
    r"kbucket::key::Key<libp2p_identity::peer_id::PeerId> as core::convert::From",
    r"^<futures_timer::native::delay::Delay as core::future::future::Future>::poll$",
    r"^futures_timer::native::timer::",
    r"^tracing_core::",
    r"ed25519_dalek::",
    r"^malloc$",
    r"^free$",
]


CALLEE_PATTERNS = [
    r"^__memset",
    r"^__memcpy",
    r"^malloc$",
    r"kbucket::key::Key<libp2p_identity::peer_id::PeerId> as core::convert::From",
    r"^sha2::sha256::compress256$",
    r"^multiaddr::protocol::Protocol::from_bytes$",
    r"^libp2p_identity::peer_id::PeerId::from_bytes$",
]


def strace_section(label, path, per, per_label, lines):
    if not os.path.exists(path):
        return
    rows = []
    total_calls = total_err = 0
    for line in open(path):
        m = re.match(r"\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
        if m:
            calls, errors, sc = int(m.group(4)), int(m.group(5) or 0), m.group(6)
            if sc == "total":
                total_calls, total_err = calls, errors
            else:
                rows.append((sc, calls, errors))
    if not rows:
        return
    lines.append(f"\n### {label}: {total_calls / per:.1f} system calls per {per_label} (strace -c -f)\n")
    lines.append(f"| system call | per {per_label} | of which failed (EAGAIN...) |")
    lines.append("| --- | ---: | ---: |")
    for sc, calls, errors in sorted(rows, key=lambda r: -r[1])[:12]:
        lines.append(f"| {sc} | {calls / per:.2f} | {errors / per:.2f} |")


def perf_section(label, path, lines):
    if not os.path.exists(path):
        return
    try:
        out = subprocess.run(["perf", "report", "-i", path, "--stdio", "--sort", "dso", "-q"],
                             capture_output=True, text=True, timeout=300).stdout
        syms = subprocess.run(["perf", "report", "-i", path, "--stdio", "--sort", "dso,sym", "-q"],
                              capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    try:
        head = subprocess.run(["perf", "report", "-i", path, "--stdio", "--sort", "dso"],
                              capture_output=True, text=True, timeout=300).stdout
        samples = next((l.strip("# \n") for l in head.splitlines() if l.startswith("# Samples")), "")
    except (OSError, subprocess.TimeoutExpired):
        samples = ""
    lines.append(f"\n### {label}: perf record -e cpu-clock (user and kernel samples; {samples})\n")
    lines.append("| share of samples | where |")
    lines.append("| ---: | --- |")
    for l in out.splitlines()[:8]:
        parts = l.split()
        if len(parts) >= 2:
            lines.append(f"| {parts[0]} | {' '.join(parts[1:])} |")
    buckets = defaultdict(float)
    for l in syms.splitlines():
        parts = l.split(None, 3)
        if len(parts) < 4 or not parts[0].endswith("%"):
            continue
        pct, dso, sym = float(parts[0][:-1]), parts[1], parts[3].strip()
        if dso.startswith("[kernel"):
            buckets["kernel (system calls, scheduler, TCP/IP on loopback)"] += pct
        elif dso == "[vdso]":
            buckets["vdso (clock_gettime)"] += pct
        else:
            buckets[classify(dso, None, sym)] += pct
    lines.append("\nThe samples by the buckets above (user space by the sampled function's symbol, so inlined "
                 "code counts for the function it was inlined into):\n")
    lines.append("| bucket | share of CPU time |")
    lines.append("| --- | ---: |")
    for b, pct in sorted(buckets.items(), key=lambda kv: -kv[1]):
        if pct >= 0.5:
            lines.append(f"| {b} | {pct:.1f} % |")
    lines.append("\nTop user-space symbols:\n")
    lines.append("| share | object | symbol |")
    lines.append("| ---: | --- | --- |")
    n = 0
    for l in syms.splitlines():
        if "[kernel" not in l and n < 20:
            parts = l.split()
            if len(parts) >= 4:
                lines.append(f"| {parts[0]} | {parts[1]} | `{' '.join(parts[3:])[:110]}` |")
                n += 1
    lines.append("\nTop kernel symbols (in a VM, cpu-clock samples taken with interrupts off land where they are "
                 "turned back on: finish_task_switch, _raw_spin_unlock_irqrestore):\n")
    lines.append("| share | symbol |")
    lines.append("| ---: | --- |")
    n = 0
    for l in syms.splitlines():
        if "[kernel" in l and n < 15:
            parts = l.split()
            lines.append(f"| {parts[0]} | {' '.join(parts[3:])[:100]} |")
            n += 1


def main():
    lines = ["# Where a verified k = 20 store's CPU goes", ""]
    meta = {}
    for m in glob.glob(os.path.join(OUT, "*.meta.json")):
        meta[os.path.basename(m).split(".")[0]] = json.load(open(m))
    windows = {}
    for w in glob.glob(os.path.join(OUT, "*.window.json")):
        windows[os.path.basename(w).split(".")[0]] = json.load(open(w))
    any_meta = next(iter(meta.values()), {})
    per_mode = ", ".join(f"{m} {v.get('ops', '?')}" for m, v in sorted(meta.items()))
    lines.append(f"Binary `{any_meta.get('bin', '?')}`; {any_meta.get('nodes', '?')} node processes (replication "
                 f"factor 20); `dht bench --ops N --concurrency 1 --size 100` (N per mode: {per_mode}), each "
                 f"mode on a fresh network; the target is node {any_meta.get('target_index', '?')}. Each "
                 f"figure covers the stores between the two marks of its run (the progress bar's count when "
                 f"the hooks ran).")

    def stores(mode):
        w = windows.get(mode)
        if not w or "start" not in w["marks"] or "end" not in w["marks"]:
            return None
        return w["marks"]["end"]["stores_done"] - w["marks"]["start"]["stores_done"]

    # callgrind
    n = stores("callgrind")
    if n:
        lines.append(f"\n## callgrind (instructions), stores {windows['callgrind']['marks']['start']['stores_done']}"
                     f"-{windows['callgrind']['marks']['end']['stores_done']} ({n} stores)")
        lines.append("\nValgrind's CPU has no SHA-NI and no AVX-512: under it sha2 runs its portable compression "
                     "(natively `x86_sha::compress`, a fraction of a percent in perf) and libc its AVX2 "
                     "memcpy/memset, so those buckets count more instructions than the native code runs. Compare "
                     "with the perf section.")
        bench = sorted(glob.glob(os.path.join(OUT, "callgrind.bench.*.1")))
        target = sorted(glob.glob(os.path.join(OUT, "callgrind.target.*.1")))
        if bench:
            callgrind_section("Storing side (the `dht bench` process: writer node, idle reader node)",
                              bench[-1], n, "store", lines)
        if target:
            cg = parse_callgrind(target[-1])
            served = [(fn, c) for fn, c in cg["calls_in"].items() if fn and re.search(r"^dht::core::server::serve$", fn)]
            requests = served[0][1] if served else 0
            REQUESTS_PER_STORE["target"] = requests / n
            lines.append(f"\nRequests the target served in the window (calls of `dht::core::server::serve`): "
                         f"{requests} ({requests / n:.2f} per store)")
            callgrind_section("Target node, per store", target[-1], n, "store", lines)
            if requests:
                callgrind_section("Target node, per request served", target[-1], requests, "request", lines)

    # strace
    n = stores("strace")
    if n:
        lines.append(f"\n## strace -c -f, stores {windows['strace']['marks']['start']['stores_done']}-"
                     f"{windows['strace']['marks']['end']['stores_done']} ({n} stores; strace slows both processes)")
        strace_section("Storing side (bench process)", os.path.join(OUT, "strace.bench.txt"), n, "store", lines)
        strace_section("Target node", os.path.join(OUT, "strace.target.txt"), n, "store", lines)
        if REQUESTS_PER_STORE.get("target"):
            strace_section("Target node, per request served (requests per store as counted under callgrind)",
                           os.path.join(OUT, "strace.target.txt"), n * REQUESTS_PER_STORE["target"], "request", lines)

    # plain: context switches and CPU
    for mode in ("plain", "strace", "perf", "callgrind"):
        n = stores(mode)
        if not n or mode != "plain":
            continue
        w = windows[mode]
        s, e = w["marks"]["start"], w["marks"]["end"]
        secs = e["t"] - s["t"]
        lines.append(f"\n## No tool attached: context switches and CPU, stores {s['stores_done']}-{e['stores_done']} "
                     f"({n} stores in {secs:.2f} s, {n / secs:.0f} stores/s)\n")
        lines.append("Context switches are summed over every thread (`/proc/PID/task/TID/status`); CPU is "
                     "utime + stime (`/proc/PID/stat`, 10 ms ticks).\n")
        lines.append("| process | voluntary switches per store | involuntary per store | CPU ms per store | threads |")
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        tick = os.sysconf("SC_CLK_TCK")
        bench_pid = str(w["pid"])
        target_pid = str(meta.get(mode, {}).get("target_pid", ""))
        node_rows = []
        for pid, a in s["procs"].items():
            b = e["procs"].get(pid)
            if not a or not b:
                continue
            row = ((b["voluntary"] - a["voluntary"]) / n, (b["involuntary"] - a["involuntary"]) / n,
                   1e3 * (b["cpu_ticks"] - a["cpu_ticks"]) / tick / n, b["threads"])
            if pid == bench_pid:
                lines.append(f"| storing side (bench) | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.2f} | {row[3]} |")
            else:
                node_rows.append((pid, row))
        for pid, row in node_rows:
            if pid == target_pid:
                lines.append(f"| target node | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.2f} | {row[3]} |")
        if node_rows:
            import statistics
            med = [statistics.median(r[i] for _, r in node_rows) for i in range(3)]
            tot = [sum(r[i] for _, r in node_rows) for i in range(3)]
            lines.append(f"| each node, median of {len(node_rows)} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.2f} | |")
            lines.append(f"| all {len(node_rows)} nodes together | {tot[0]:.1f} | {tot[1]:.1f} | {tot[2]:.2f} | |")
        lines.append("\nBy thread (threads of one name summed; switches per store):\n")
        lines.append("| process | thread | voluntary | involuntary | CPU ms |")
        lines.append("| --- | --- | ---: | ---: | ---: |")
        for pid, who in ((bench_pid, "storing side (bench)"), (target_pid, "target node")):
            a, b = s["procs"].get(pid), e["procs"].get(pid)
            if not a or not b or "per_thread" not in b:
                continue
            by_name = defaultdict(lambda: [0, 0, 0])
            for tid, t in b["per_thread"].items():
                t0 = a.get("per_thread", {}).get(tid, {"voluntary": 0, "involuntary": 0, "cpu_ticks": 0})
                acc = by_name[t["name"]]
                acc[0] += t["voluntary"] - t0["voluntary"]
                acc[1] += t["involuntary"] - t0["involuntary"]
                acc[2] += (t["cpu_ticks"] or 0) - (t0["cpu_ticks"] or 0)
            for name, (v, i, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
                lines.append(f"| {who} | {name} | {v / n:.1f} | {i / n:.1f} | {1e3 * c / tick / n:.2f} |")
        if REQUESTS_PER_STORE.get("target"):
            r = REQUESTS_PER_STORE["target"]
            for pid, row in node_rows:
                if pid == target_pid:
                    lines.append(f"\nPer request the target served ({r:.2f} requests per store, as counted under "
                                 f"callgrind): {row[0] / r:.1f} voluntary and {row[1] / r:.1f} involuntary switches, "
                                 f"{1e3 * row[2] / r:.0f} µs CPU.")

    # perf
    if stores("perf"):
        lines.append(f"\n## perf, stores {windows['perf']['marks']['start']['stores_done']}-"
                     f"{windows['perf']['marks']['end']['stores_done']}")
        perf_section("Storing side (bench process)", os.path.join(OUT, "perf.bench.data"), lines)
        perf_section("Target node", os.path.join(OUT, "perf.target.data"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
