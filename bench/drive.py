#!/usr/bin/env python3
"""Drivers for bench/opendht.sh and bench/profile.sh (run with /usr/bin/python3: the OpenDHT client
needs Debian's python3-opendht, which only the system interpreter has).

  drive.py ours     --bin DHT --connect ADDR --ops N --concurrency C [--size S] --node-pids P,P,..
                    runs `dht bench --json` under a pseudo-terminal (so it draws its progress bar,
                    which marks the end of the store phase), samples every node's and the client's
                    CPU time from /proc every 10 ms, and prints one JSON line per phase.
  drive.py opendht  --nodes N --base PORT --ops N [--runs C1,C2] [--size S] --workdir DIR
                    per run (concurrency): starts N dhtnode processes, runs the client (below), samples
                    the same way, counts which nodes hold each value (`ld`), stops the nodes.
  drive.py odclient (internal) the OpenDHT client: a DhtRunner stores N values, a fresh one fetches them.
  drive.py table    FILE.jsonl   prints the side-by-side table.
  drive.py window   (for profile.sh) runs a command that is or wraps `dht bench` under a
                    pseudo-terminal and runs hooks when the store phase passes two points.

Every child gets PR_SET_PDEATHSIG (SIGKILL), so none outlives the driver.
"""

import argparse
import ctypes
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
CLOCK_OFFSET = time.time() - time.monotonic()  # Unix time to CLOCK_MONOTONIC
BAR = re.compile(r"(store|fetch)\s*\[[= ]*\]\s*(\d+)/(\d+)")


def _pdeathsig():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(cmd, **kw):
    return subprocess.Popen(cmd, preexec_fn=_pdeathsig, **kw)


def stop(procs, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds, every process still running."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            p.terminate()
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- CPU sampling ----------------------------------------------------------------------------------


class Sampler:
    """CPU time (utime + stime, in ticks) of a set of processes, read from /proc/PID/stat every
    `period` seconds, summed per group; `at(t)` interpolates linearly between samples."""

    def __init__(self, groups, period=0.01):
        self.groups = {g: [os.open(f"/proc/{p}/stat", os.O_RDONLY) for p in pids] for g, pids in groups.items()}
        self.period = period
        self.samples = []  # (t, {group: ticks})
        self.last = {}
        self.take()

    def add(self, group, pid):
        self.groups.setdefault(group, []).append(os.open(f"/proc/{pid}/stat", os.O_RDONLY))

    @staticmethod
    def ticks(fd):
        try:
            s = os.pread(fd, 4096, 0).decode()
        except OSError:  # the process is gone (its last reading stands)
            return None
        f = s[s.rindex(")") + 2:].split()
        return int(f[11]) + int(f[12])  # fields 14 and 15: utime, stime

    def take(self):
        t = time.monotonic()
        row = {}
        for g, fds in self.groups.items():
            total = 0
            for fd in fds:
                v = self.ticks(fd)
                if v is None:
                    v = self.last.get(fd, 0)
                self.last[fd] = v
                total += v
            row[g] = total
        self.samples.append((t, row))
        return t

    def due(self):
        return self.samples[-1][0] + self.period - time.monotonic()

    def at(self, t, group):
        s = self.samples
        if t <= s[0][0]:
            return s[0][1].get(group, 0)
        for (t0, r0), (t1, r1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                a, b = r0.get(group, 0), r1.get(group, 0)
                return a + (b - a) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
        return s[-1][1].get(group, 0)

    def seconds(self, t0, t1, group):
        return (self.at(t1, group) - self.at(t0, group)) / TICK

    def close(self):
        for fds in self.groups.values():
            for fd in fds:
                os.close(fd)


def phase_row(impl, op, conc, size, sampler, t0, t1, ops, errors, throughput, p50, p90, p99, copies, note=""):
    nodes = sampler.seconds(t0, t1, "nodes")
    client = sampler.seconds(t0, t1, "client")
    return {
        "impl": impl, "op": op, "concurrency": conc, "size": size, "ops": ops, "errors": errors,
        "seconds": t1 - t0, "throughput": throughput, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "node_cpu_s": nodes, "client_cpu_s": client,
        "node_cpu_ms_per_op": 1e3 * nodes / ops if ops else 0.0,
        "client_cpu_ms_per_op": 1e3 * client / ops if ops else 0.0,
        "copies": copies, "note": note,
    }


# --- our node: `dht bench` under a pseudo-terminal ------------------------------------------------


class BarWatcher:
    """Reads the pseudo-terminal of a `dht bench` and reports each new progress-bar reading.
    A draw may arrive in pieces (stderr is unbuffered), so a reading counts only when its total is
    the expected one; each (label, done) is reported once."""

    def __init__(self, fd, total):
        self.fd, self.total, self.buf, self.seen, self.text = fd, total, "", set(), []

    def read(self):
        try:
            data = os.read(self.fd, 65536).decode(errors="replace")
        except OSError:  # EIO: the child closed the terminal
            return None
        self.text.append(data)
        self.buf = (self.buf + data)[-4096:]
        out = []
        for m in BAR.finditer(self.buf):
            label, done, total = m.group(1), int(m.group(2)), int(m.group(3))
            if total != self.total or (label, done) in self.seen:
                continue
            self.seen.add((label, done))
            out.append((label, done))
        return out


def run_bench_pty(cmd, total, sampler, on_bar=None, deadline=900.0, stdout_path=None, on_spawn=None):
    """Runs `cmd` with stderr on a pseudo-terminal; returns (returncode, stdout text, events, pid),
    events being (monotonic time, label, done) for every progress reading."""
    master, slave = pty.openpty()
    out = open(stdout_path, "w+") if stdout_path else subprocess.PIPE
    proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=slave, close_fds=True)
    os.close(slave)
    if on_spawn:
        on_spawn(proc.pid)
    if sampler is not None:
        sampler.add("client", proc.pid)
    watcher = BarWatcher(master, total)
    events = []
    end = time.monotonic() + deadline
    stdout_chunks = []
    try:
        while True:
            if time.monotonic() > end:
                raise TimeoutError(f"{cmd[0]} bench did not finish within {deadline:.0f} s")
            wait = max(0.0, sampler.due()) if sampler is not None else 0.1
            fds = [master] + ([proc.stdout] if out is subprocess.PIPE else [])
            r, _, _ = select.select(fds, [], [], wait)
            if sampler is not None and sampler.due() <= 0:
                sampler.take()
            if out is subprocess.PIPE and proc.stdout in r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if chunk:
                    stdout_chunks.append(chunk)
            if master in r:
                got = watcher.read()
                if got is None:
                    break
                now = time.monotonic()
                for label, done in got:
                    events.append((now, label, done))
                    if on_bar:
                        on_bar(now, label, done)
        proc.wait(timeout=max(1.0, end - time.monotonic()))
        if out is subprocess.PIPE:
            rest = proc.stdout.read()
            stdout_chunks.append(rest or b"")
            text = b"".join(stdout_chunks).decode()
        else:
            out.seek(0)
            text = out.read()
        if sampler is not None:
            sampler.take()
        return proc.returncode, text, events, proc.pid, "".join(watcher.text)
    finally:
        if proc.poll() is None:
            stop([proc])
        os.close(master)


def cmd_ours(a):
    pids = [int(p) for p in a.node_pids.split(",") if p]
    sampler = Sampler({"nodes": pids, "client": []})
    cmd = [a.bin, "-v", "1", "bench", "-c", a.connect, "--ops", str(a.ops), "--concurrency",
           str(a.concurrency), "--size", str(a.size), "--json"]
    rc, text, events, _, tty = run_bench_pty(cmd, a.ops, sampler, deadline=a.deadline)
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"dht bench printed no report (exit {rc}); its terminal said:\n{tty[-2000:]}")
    r = json.loads(lines[-1])
    store_end = next((t for t, l, d in events if l == "store" and d == a.ops), None)
    if store_end is None and "started_unix" not in r["store"]:
        sys.exit("no end of the store phase seen on the progress bar")
    fetch_end_seen = next((t for t, l, d in events if l == "fetch" and d == a.ops), None)
    s, f = r["store"], r["fetch"]
    if "started_unix" in s and "started_unix" in f:
        # Newer builds say when each phase began and ended.
        t0, t1 = s["started_unix"] - CLOCK_OFFSET, s["ended_unix"] - CLOCK_OFFSET
        t2 = f["ended_unix"] - CLOCK_OFFSET
    else:
        t0, t1, t2 = store_end - s["seconds"], store_end, store_end + f["seconds"]
    copies = {str(k): v for k, v in r["stored_count"].items()}
    note = ""
    if fetch_end_seen is not None and abs(fetch_end_seen - t2) > 0.05 and r["fetch"]["ops"] > 1:
        note = f"fetch end seen {1e3 * (fetch_end_seen - t2):+.0f} ms from its timing"
    rows = [
        phase_row("ours", "store", a.concurrency, a.size, sampler, t0, t1, s["ops"], s["errors"],
                  s["throughput"], s["p50_ms"], s["p90_ms"], s["p99_ms"], copies, note),
        phase_row("ours", "fetch", a.concurrency, a.size, sampler, t1, t2, f["ops"], f["errors"],
                  f["throughput"], f["p50_ms"], f["p90_ms"], f["p99_ms"], None, note),
    ]
    sampler.close()
    for row in rows:
        print(json.dumps(row), flush=True)


# --- OpenDHT ---------------------------------------------------------------------------------------


class DhtNodes:
    """N dhtnode processes on 127.0.0.1 (UDP), each with its console on a pipe."""

    def __init__(self, n, base, netid, workdir):
        self.procs, self.outs, self.base = [], [], base
        for i in range(n):
            args = ["dhtnode", "-U", "-n", str(netid), "-p", str(base + i)]
            if i > 0:
                args += ["-b", f"127.0.0.1:{base}"]
            out = open(os.path.join(workdir, f"dhtnode{i}.out"), "w+")
            err = open(os.path.join(workdir, f"dhtnode{i}.err"), "w")
            self.procs.append(spawn(args, stdin=subprocess.PIPE, stdout=out, stderr=err, close_fds=True))
            self.outs.append(out)
            if i == 0:
                time.sleep(0.2)

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def command(self, line, expect, timeout=10.0):
        """Sends `line` to every node's console; returns each node's answer (the output that
        appeared after it, once it contains `expect`)."""
        starts = []
        for p, out in zip(self.procs, self.outs):
            out.seek(0, os.SEEK_END)
            starts.append(out.tell())
            if p.poll() is not None:
                raise RuntimeError(f"dhtnode {p.pid} exited with {p.returncode}")
            p.stdin.write((line + "\n").encode())
            p.stdin.flush()
        answers = [None] * len(self.procs)
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(a is None for a in answers):
            for i, out in enumerate(self.outs):
                if answers[i] is None:
                    out.seek(starts[i])
                    text = out.read()
                    if expect in text:
                        answers[i] = text
            time.sleep(0.05)
        if any(a is None for a in answers):
            raise TimeoutError(f"dhtnode did not answer `{line}` within {timeout:.0f} s")
        time.sleep(0.1)  # the rest of the answer
        for i, out in enumerate(self.outs):
            out.seek(starts[i])
            answers[i] = out.read()
        return answers

    def known_nodes(self):
        """(good, dubious) IPv4 nodes each node knows."""
        res = []
        for text in self.command("ll", "IPv6 stats:"):
            m = re.search(r"IPv4 stats:\s*\nKnown nodes: (\d+) good, (\d+) dubious", text)
            res.append((int(m.group(1)), int(m.group(2))) if m else (0, 0))
        return res

    def holders(self, keys):
        """How many nodes hold a value under each of `keys`."""
        keys = set(keys)
        counts = dict.fromkeys(keys, 0)
        for text in self.command("ld", "Total ", timeout=30.0):
            for m in re.finditer(r"Storage ([0-9a-f]{40}) [^\n]*?(\d+) values", text):
                if m.group(1) in keys and int(m.group(2)) > 0:
                    counts[m.group(1)] += 1
        return counts

    def stop(self):
        for p in self.procs:
            try:
                if p.poll() is None:
                    p.stdin.close()  # end of input: dhtnode's console quits
            except OSError:
                pass
        stop(self.procs, grace=10.0)


def cmd_opendht(a):
    """One fresh network per run: a client's DhtRunners are full nodes, and once the client has
    exited the nodes still route to them for a while (a request to a dead one waits out its
    timeout), so a second client on the same network would pay for the first."""
    import random
    rows = []
    for run, conc in enumerate(a.runs):
        netid = random.randint(1, 2**31)
        nodes = DhtNodes(a.nodes, a.base, netid, a.workdir)
        try:
            # Ready when every node knows at least 8 others (OpenDHT stores on the 8 closest) and
            # no count has changed for two seconds (20 nodes settle in about 4 s).
            deadline, history = time.monotonic() + 60, []
            while True:
                time.sleep(1.0)
                known = nodes.known_nodes()
                history.append(known)
                if min(g + d for g, d in known) >= min(8, a.nodes - 1) and history[-3:] == [known] * 3:
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"OpenDHT nodes not ready within 60 s (good, dubious nodes known: {known})")
            print(f"# OpenDHT nodes ready; good nodes each knows: {sorted(g for g, _ in known)}",
                  file=sys.stderr)
            keys_path = os.path.join(a.workdir, f"odkeys{run}.txt")
            cmd = [sys.executable, os.path.abspath(__file__), "odclient", "--bootstrap",
                   f"127.0.0.1:{a.base}", "--net", str(netid), "--ops", str(a.ops), "--concurrency",
                   str(conc), "--size", str(a.size), "--port", str(a.base + a.nodes), "--keys", keys_path]
            sampler = Sampler({"nodes": nodes.pids, "client": []})
            proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, close_fds=True)
            sampler.add("client", proc.pid)
            events, result, buf = {}, None, b""
            end = time.monotonic() + a.deadline
            try:
                while True:
                    if time.monotonic() > end:
                        raise TimeoutError(f"OpenDHT client did not finish within {a.deadline:.0f} s")
                    r, _, _ = select.select([proc.stdout], [], [], max(0.0, sampler.due()))
                    if sampler.due() <= 0:
                        sampler.take()
                    if r:
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if not chunk:
                            break
                        buf += chunk
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            msg = json.loads(line)
                            if "event" in msg:
                                events[msg["event"]] = msg["t"]
                            else:
                                result = msg
                proc.wait(timeout=30)
                sampler.take()
            finally:
                if proc.poll() is None:
                    stop([proc])
            if proc.returncode != 0 or result is None:
                sys.exit(f"OpenDHT client failed (exit {proc.returncode})")
            keys = [l.strip() for l in open(keys_path) if l.strip()]
            dist = {}
            for c in nodes.holders(keys).values():
                dist[str(c)] = dist.get(str(c), 0) + 1
            for op in ("store", "fetch"):
                p = result[op]
                rows.append(phase_row(
                    "opendht", op, conc, a.size, sampler, events[f"{op}_start"], events[f"{op}_end"],
                    p["ops"], p["errors"], p["throughput"], p["p50_ms"], p["p90_ms"], p["p99_ms"],
                    dist if op == "store" else None))
            sampler.close()
        finally:
            nodes.stop()
    for row in rows:
        print(json.dumps(row), flush=True)


def quantiles(lat):
    lat = sorted(lat)

    def q(x):
        if not lat:
            return 0.0
        i = min(len(lat), max(1, int(-(-len(lat) * x // 1))))
        return lat[i - 1] * 1e3

    return q(0.5), q(0.9), q(0.99)


def die(msg):
    """Ends the OpenDHT client at once (a normal exit would run OpenDHT's destructors, which can
    wait forever for a runner thread that waits for the GIL)."""
    sys.stderr.write(f"{msg}\n")
    sys.stderr.flush()
    os._exit(1)


def cmd_odclient(a):
    """OpenDHT's side of the workload, printed as JSON lines: events with CLOCK_MONOTONIC times
    (the driver's clock too), then one result."""
    import opendht as dht

    def emit(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    host, port = a.bootstrap.rsplit(":", 1)

    def runner(p):
        cfg = dht.DhtConfig()
        cfg.setNetwork(a.net)
        cfg.setRateLimit(-1, -1)  # as the nodes' -U
        r = dht.DhtRunner()
        r.run(port=p, config=cfg)
        r.bootstrap(host, port)
        # Joined once a lookup (for a random key) ends having found at least 8 nodes. (Nothing
        # here may call a DhtRunner method that takes its lock, getRoutingTablesLog for one, while
        # a callback may be due: the callback waits for the GIL this thread holds, and the call
        # for the lock the callback's thread holds.)
        deadline = time.monotonic() + 30
        while True:
            found = threading.Event()
            seen = []

            def done(ok, nodes):
                seen.append(len(nodes) if ok else 0)
                found.set()

            r.get(dht.InfoHash.getRandom(), get_cb=lambda v: True, done_cb=done)
            if not found.wait(30):
                die("OpenDHT client: lookup unanswered for 30 s")
            if seen[0] >= 8:
                return r
            if time.monotonic() > deadline:
                die(f"OpenDHT client could not join within 30 s (a lookup found {seen[0]} nodes)")
            time.sleep(0.2)

    run_id = os.urandom(8).hex()
    keys = [dht.InfoHash.get(f"{run_id}-{i}") for i in range(a.ops)]

    def value(i):
        tag = f"{run_id}-{i:010}-".encode()
        return (tag + os.urandom(a.size))[: a.size]

    values = [value(i) for i in range(a.ops)]
    with open(a.keys, "w") as f:
        for k in keys:
            f.write(str(k) + "\n")

    def drive(label, start_op):
        """Runs a.ops operations, a.concurrency at a time; start_op(i, done) starts operation i and
        calls done(ok) when it ends."""
        lock = threading.Condition()
        state = {"in_flight": 0, "errors": 0, "finished": 0}
        lat = []

        def finish(t0, ok):
            took = time.perf_counter() - t0
            with lock:
                state["in_flight"] -= 1
                state["finished"] += 1
                if ok:
                    lat.append(took)
                else:
                    state["errors"] += 1
                lock.notify()

        emit(event=f"{label}_start", t=time.monotonic())
        started = time.perf_counter()
        for i in range(a.ops):
            with lock:
                while state["in_flight"] >= a.concurrency:
                    if not lock.wait(60):
                        die(f"{label} {i}: no answer within 60 s")
                state["in_flight"] += 1
            start_op(i, finish)
        with lock:
            while state["finished"] < a.ops:
                if not lock.wait(60):
                    die(f"{label}: no answer within 60 s")
        elapsed = time.perf_counter() - started
        emit(event=f"{label}_end", t=time.monotonic())
        p50, p90, p99 = quantiles(lat)
        return {"ops": a.ops, "errors": state["errors"], "seconds": elapsed,
                "throughput": len(lat) / elapsed, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}

    writer = runner(a.port)
    def put(i, finish):
        t0 = time.perf_counter()

        def done(ok, nodes):
            finish(t0, ok)

        writer.put(keys[i], dht.Value(values[i]), done_cb=done)

    store = drive("store", put)

    reader = runner(a.port + 1)  # a fresh node: nothing stored on it

    def get(i, finish):
        t0 = time.perf_counter()
        want = values[i]
        got = {"ok": False}

        def on_value(v):
            if v.data == want:
                got["ok"] = True
                return False  # the first right value ends the get
            return True

        def done(ok, nodes):
            finish(t0, got["ok"])

        reader.get(keys[i], get_cb=on_value, done_cb=done)

    fetch = drive("fetch", get)
    emit(store=store, fetch=fetch)
    # No shutdown()/join(): join waits for the runner's thread with the GIL held while that thread
    # waits for the GIL to run the shutdown callback. The process's end closes the sockets.
    os._exit(0)


# --- the table -------------------------------------------------------------------------------------


def cmd_table(a):
    rows = [json.loads(l) for l in open(a.file) if l.strip().startswith("{")]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"side by side: {a.nodes} node processes each on 127.0.0.1, {a.ops} operations per phase, "
          f"{a.size}-byte values, {os.cpu_count()} cores ({cpu}), {time.strftime('%Y-%m-%d')}")
    print("CPU per op: utime+stime from /proc/PID/stat over the phase, divided by its operations")
    head = (f"{'implementation':<15}{'op':<7}{'in flight':>9}{'ops':>6}{'errors':>7}{'ops/s':>10}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'nodes CPU ms/op':>17}{'client CPU ms/op':>18}  copies per value")
    print(head)
    for r in rows:
        copies = ""
        if r["copies"]:
            copies = ", ".join(f"{k}x{v}" for k, v in sorted(r["copies"].items(), key=lambda kv: -int(kv[0])))
        name = {"ours": "dht (ours)", "opendht": "OpenDHT"}[r["impl"]]
        print(f"{name:<15}{r['op']:<7}{r['concurrency']:>9}{r['ops']:>6}{r['errors']:>7}{r['throughput']:>10.1f}"
              f"{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['node_cpu_ms_per_op']:>17.3f}"
              f"{r['client_cpu_ms_per_op']:>18.3f}  {copies}")
    notes = [f"{r['impl']} {r['op']} x{r['concurrency']}: {r['note']}" for r in rows if r.get("note")]
    for n in notes:
        print(f"  note: {n}")
    errors = sum(r["errors"] for r in rows)
    print(f"operations that failed: {errors}")
    return 1 if errors else 0


# --- profile windows -------------------------------------------------------------------------------


def task_switches(pid):
    """Voluntary and involuntary context switches summed over the process's threads (the
    process's own status line counts its main thread only)."""
    vol = inv = 0
    per_thread = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            name, v, i = "?", 0, 0
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("voluntary_ctxt_switches"):
                    v = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    i = int(line.split()[1])
            fd = os.open(f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY)
            ticks = Sampler.ticks(fd)
            os.close(fd)
            vol += v
            inv += i
            per_thread[tid] = {"name": name, "voluntary": v, "involuntary": i, "cpu_ticks": ticks}
        except OSError:
            pass
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    cpu = Sampler.ticks(fd)
    os.close(fd)
    return {"voluntary": vol, "involuntary": inv, "threads": len(tids), "cpu_ticks": cpu,
            "per_thread": per_thread}


def cmd_window(a):
    """Runs `a.command` (a `dht bench`, possibly under valgrind or another wrapper) under a pty. When
    the store bar first shows at least START of OPS done, runs --at-start; when it first shows at
    least END, runs --at-end. Both hooks are shell commands, given STORES_DONE and BENCH_PID. Also
    records context switches and CPU of the bench process and of --watch PIDs at both points.
    Prints a JSON summary."""
    watch = [int(p) for p in a.watch.split(",") if p]
    marks = {}
    pid_box = {}

    def snap(name, done, now):
        pids = watch + ([pid_box["pid"]] if "pid" in pid_box else [])
        marks[name] = {"stores_done": done, "t": now,
                       "procs": {str(p): task_switches(p) for p in pids}}

    def hook(cmd, done):
        if cmd:
            env = dict(os.environ, STORES_DONE=str(done), BENCH_PID=str(pid_box.get("pid", "")))
            subprocess.run(["bash", "-c", cmd], env=env, check=False)

    def on_bar(now, label, done):
        if label != "store":
            return
        if "start" not in marks and done >= a.start and done < a.end:
            snap("start", done, now)
            hook(a.at_start, done)
            marks["start"]["hook_returned_at"] = time.monotonic()
        elif "start" in marks and "end" not in marks and done >= a.end:
            snap("end", done, now)
            hook(a.at_end, done)
            marks["end"]["hook_returned_at"] = time.monotonic()

    rc, text, events, pid, tty = run_bench_pty(a.command, a.ops, None, on_bar=on_bar,
                                               deadline=a.deadline, stdout_path=a.stdout,
                                               on_spawn=lambda p: pid_box.update(pid=p))
    report = None
    for l in text.splitlines():
        if l.startswith("{"):
            report = json.loads(l)
    print(json.dumps({"exit": rc, "pid": pid, "marks": marks, "report": report,
                      "bar_events": len(events)}), flush=True)
    if a.tty_log:
        open(a.tty_log, "w").write(tty)
    if "start" not in marks or "end" not in marks:
        sys.exit("the store phase's progress never passed both marks")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("ours")
    o.add_argument("--bin", required=True)
    o.add_argument("--connect", required=True)
    o.add_argument("--ops", type=int, default=1000)
    o.add_argument("--concurrency", type=int, default=1)
    o.add_argument("--size", type=int, default=100)
    o.add_argument("--node-pids", required=True)
    o.add_argument("--deadline", type=float, default=900)
    d = sub.add_parser("opendht")
    d.add_argument("--nodes", type=int, default=20)
    d.add_argument("--base", type=int, required=True)
    d.add_argument("--ops", type=int, default=1000)
    d.add_argument("--runs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    d.add_argument("--size", type=int, default=100)
    d.add_argument("--workdir", required=True)
    d.add_argument("--deadline", type=float, default=900)
    c = sub.add_parser("odclient")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--net", type=int, required=True)
    c.add_argument("--ops", type=int, default=1000)
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--size", type=int, default=100)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--keys", required=True)
    t = sub.add_parser("table")
    t.add_argument("file")
    t.add_argument("--nodes", type=int, default=20)
    t.add_argument("--ops", type=int, default=1000)
    t.add_argument("--size", type=int, default=100)
    w = sub.add_parser("window")
    w.add_argument("--ops", type=int, required=True)
    w.add_argument("--start", type=int, required=True)
    w.add_argument("--end", type=int, required=True)
    w.add_argument("--at-start", default="")
    w.add_argument("--at-end", default="")
    w.add_argument("--watch", default="")
    w.add_argument("--stdout", default=None)
    w.add_argument("--tty-log", default=None)
    w.add_argument("--deadline", type=float, default=3600)
    w.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.cmd == "window" and a.command[:1] == ["--"]:
        a.command = a.command[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit({"ours": cmd_ours, "opendht": cmd_opendht, "odclient": cmd_odclient,
              "table": cmd_table, "window": cmd_window}[a.cmd](a))


if __name__ == "__main__":
    main()
