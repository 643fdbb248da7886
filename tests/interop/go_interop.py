"""Interop test: go-libp2p-kad-dht (the go-libp2p-daemon `p2pd`) against our `dht` nodes in Amino mode.

Usage: go_interop.py DHT_BINARY P2PD
Starts three of our nodes (`dht -i --amino`, a console each) and Go DHT nodes driven through their
control sockets (p2pd_client.py), all on 127.0.0.1 at ports the kernel picks. First a Go client
alone with our nodes (providers, /pk/ and /ipns/ records both ways, IPNS sequences), then three Go
servers join: peer routing both ways, and everything either side stores found by the other.
Prints one line per check (with its duration) and "N passed, M failed"; exits non-zero on any
failure. Every wait polls against a deadline; the daemons and nodes are stopped on every exit. A
failed run keeps its logs (GO_INTEROP_DHT_VERBOSE=4 makes our nodes' logs detailed);
GO_INTEROP_DETAILS=1 prints what each check saw, passed or not.
"""

import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.crypto.rsa import create_new_key_pair as rsa_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.records.ipns import IPNSValidator

sys.dont_write_bytecode = True  # no __pycache__ beside the sources for the two local imports
from interop import cid_v0, cid_v1, ipns_record, raw_get_providers, sha256_multihash
from p2pd_client import Daemon, DaemonError, peer_bytes, split_p2p

STEP = 20  # seconds for any single command or DHT request
PROPAGATION = 10  # seconds a fire-and-forget announcement (ADD_PROVIDER) may take to be served
BUDGET = 120  # seconds for the whole run; checks not started by then fail
RAW_CODEC = 0x55

results = []
started = time.monotonic()


def check(name, ok, detail="", took=None):
    results.append(bool(ok))
    shown = detail and (not ok or os.environ.get("GO_INTEROP_DETAILS"))
    line = ("ok: " if ok else "FAILED: ") + name + (f" ({detail})" if shown else "")
    print(line + (f"  [{took:.1f} s]" if took is not None else ""), flush=True)


def guarded(name, run, *args):
    """Runs one check: run returns (ok, detail); an exception fails that check alone."""
    if time.monotonic() - started > BUDGET:
        return check(name, False, f"not run: the {BUDGET} s budget is spent")
    t = time.monotonic()
    try:
        ok, detail = run(*args)
    except Exception as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    check(name, ok, detail, time.monotonic() - t)


def poll(attempt, within, interval=0.25):
    """Calls attempt() -> (done, detail) until done or the deadline; returns the last answer.
    A DaemonError counts as not done (its message becomes the detail)."""
    deadline = time.monotonic() + within
    while True:
        try:
            done, detail = attempt()
        except DaemonError as e:
            done, detail = False, f"daemon: {e}"
        left = deadline - time.monotonic()
        if done or left <= 0:
            return done, detail
        time.sleep(min(interval, left))


def dht(binary, *args, stdin=b"", within=STEP):
    """Runs a one-shot `dht` command: (exit status or None on timeout, stdout bytes, stderr's first line)."""
    try:
        p = subprocess.run([binary, "-v", "0", *args], input=stdin, capture_output=True, timeout=within)
    except subprocess.TimeoutExpired:
        return None, b"", f"no exit within {within} s"
    err = next((l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()), "")
    return p.returncode, p.stdout, err


def port_of(addr: str):
    m = re.search(r"/tcp/(\d+)", addr)
    return m and m.group(1)


def console_line(line: str) -> str:
    """A console output line without any prompt in front of it."""
    return re.sub(r"^(\S*> )+", "", line)


class Console:
    """One of our nodes: `dht -i --amino` on 127.0.0.1 at a port the kernel picks; commands go to
    its standard input, and its output (status lines and results) is read line by line."""

    def __init__(self, binary, workdir, name, connect=()):
        self.name = name
        verbosity = os.environ.get("GO_INTEROP_DHT_VERBOSE", "0")  # our nodes' -v, for their logs
        cmd = [binary, "-v", verbosity, "-i", "--amino", "-l", "/ip4/127.0.0.1/tcp/0"]
        for addr in connect:
            cmd += ["-c", addr]
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        self.peer_id = self.addr = None

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            self.lines.put(console_line(line.rstrip("\n")))
        self.lines.put(None)

    def until(self, predicate, within=STEP):
        """The first new line for which predicate is true; None at end of output or after `within` s."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                self.lines.put(None)
                return None
            self.seen.append(line)
            if predicate(line):
                return line
        return None

    def start(self, within=STEP):
        line = self.until(lambda l: l.startswith("listening on "), within)
        if line is None:
            raise RuntimeError(f"{self.name} did not start: {self.seen[-5:]}")
        self.addr = line.split()[-1]
        self.peer_id = split_p2p(self.addr)[1]
        if self.until(lambda l: l.startswith("ready"), within) is None:
            raise RuntimeError(f"{self.name} not ready: {self.seen[-5:]}")
        return self

    def command(self, text, answer, within=STEP):
        """Sends a command; the line starting with `answer` (or an error line), or None."""
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.until(lambda l: l.startswith((answer, "error:")), within)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("q\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.log.close()


def ed25519_key_file(path, private_key):
    """A libp2p protobuf private key (the format of `dht --key-file` and `p2pd -id`): Ed25519, its
    seed then its public key."""
    seed = private_key.to_bytes()
    public = private_key.get_public_key().to_bytes()
    with open(path, "wb") as f:
        f.write(b"\x08\x01\x12\x40" + seed + public)


def pk_record(kind="rsa"):
    """A /pk/ key (binary multihash of the peer id) and its value (the public key protobuf)."""
    pair = rsa_pair() if kind == "rsa" else ed25519_pair()
    peer = ID.from_pubkey(pair.public_key)
    return peer.to_base58(), b"/pk/" + peer.to_bytes(), pair.public_key.serialize()


def new_path() -> bytes:
    return b"/ipfs/" + cid_v1(sha256_multihash()).encode()


def ipns_parsed(name: str, record: bytes):
    """py-libp2p's IPNS validator's reading of a record (raises when it is invalid)."""
    return IPNSValidator().validate_with_details("/ipns/" + name, record)


def providers_of(binary, key: str, via: str, want: str, within=PROPAGATION):
    """Polls `dht findprovs KEY -c via` until it lists peer `want` (within=0: asks once)."""

    def attempt():
        code, out, err = dht(binary, "findprovs", key, "-c", via)
        peers = [line.split()[0] for line in out.decode(errors="replace").splitlines() if line.strip()]
        return want in peers, f"findprovs exit {code}: {peers or err}"

    return poll(attempt, within)


def providers_held(addrs, mh: bytes):
    """The provider peer ids each of our nodes lists for a multihash: a GET_PROVIDERS to each alone
    (not a lookup), sent by a py-libp2p host."""

    async def ask():
        host = new_host(key_pair=ed25519_pair())
        held = []
        async with host.run(listen_addrs=[]):
            try:
                with trio.fail_after(STEP):
                    for addr in addrs:
                        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                        await host.connect(info)
                        held.append([p.to_base58() for p in await raw_get_providers(host, info.peer_id, mh)])
            finally:
                await host.close()
        return held

    return trio.run(ask)


def go_providers_of(daemon, cid: bytes, want: str):
    """Polls the daemon's FIND_PROVIDERS until it lists peer `want`."""

    def attempt():
        found = daemon.control.find_providers(cid, count=1, within=10)
        return want in [p for p, _ in found], f"{daemon.name} FIND_PROVIDERS: {found}"

    return poll(attempt, PROPAGATION)


# --- a Go client with our three nodes ---

def go_closest(net):
    ours = {n.peer_id for n in net.ours}

    def attempt():
        got = net.go.control.get_closest_peers(secrets.token_bytes(32), within=5)
        return ours <= set(got), f"GET_CLOSEST_PEERS: {got}"

    return poll(attempt, STEP)


def go_first_provide(net):
    """A fresh Go client's first PROVIDE must reach every one of our nodes, and `dht findprovs`
    must find it. go-libp2p-kad-dht keeps one kad stream per peer: the lookup's FIND_NODE and then
    ADD_PROVIDER go on the same stream. After 4 failed reuses with a peer (streamReuseTries) it
    falls back to one message per stream, so a node that answers once and closes loses ADD_PROVIDER
    only from peers that met it recently, which is what the closest peers of a CID usually are; the
    client's bootstrap lookups alone use up those tries. So its connections to our nodes are closed
    first (Go drops its per-peer stream state with them), and the provide's lookup dials them again.
    One PROVIDE, never repeated; each node is then polled for the record, and findprovs asked once."""
    ours = {n.peer_id for n in net.ours}
    for rounds in range(1, 4):
        for n in net.ours:
            net.go.control.disconnect(n.peer_id)
        gone, _ = poll(lambda: (not ours & set(net.go.control.list_peers()), ""), 2)
        # A lookup cut short by the disconnection drops the peer from Go's routing table: check
        # that the table still holds our nodes (this lookup opens the streams the PROVIDE reuses).
        try:
            if ours <= set(net.go.control.get_closest_peers(secrets.token_bytes(32), within=5)):
                break
        except DaemonError:
            pass
        for n in net.ours:
            net.go.control.connect(n.addr)
        go_closest(net)
    else:
        return False, "set-up: the Go client's routing table kept losing our nodes when disconnected"
    mh = sha256_multihash()
    t = time.monotonic()
    net.go.control.provide(bytes([1, RAW_CODEC]) + mh, within=STEP)
    took = time.monotonic() - t
    holders = []

    def all_hold():
        holders[:] = providers_held([n.addr for n in net.ours], mh)
        return all(net.go.peer_id in p for p in holders), ""

    held, _ = poll(all_hold, PROPAGATION)
    found, detail = providers_of(net.binary, cid_v1(mh, RAW_CODEC), net.ours[1].addr, net.go.peer_id,
                                 within=0)
    count = sum(net.go.peer_id in p for p in holders)
    return held and found, (f"disconnected {rounds}x{'' if gone else ' (it reconnected at once)'}; "
                            f"Go's PROVIDE answered OK in {took:.1f} s; {count} of our 3 nodes list Go as a "
                            f"provider (GET_PROVIDERS to each){'' if held else f' after {PROPAGATION} s'}; {detail}")


def our_provide(net):
    mh = sha256_multihash()
    node = net.ours[0]
    line = node.command(f"provide {cid_v0(mh)}", "provided")
    if not (line or "").startswith("provided"):
        return False, f"console: {line or node.seen[-3:]}"
    found, detail = go_providers_of(net.go, mh, node.peer_id)
    return found, f"console: {line}; {detail}"


def pk_go_to_ours(net):
    peer, key, value = pk_record("rsa")
    net.go.control.put_value(key, value, within=STEP)
    code, out, err = dht(net.binary, "get", f"/pk/{peer}", "-c", net.ours[2].addr)
    return code == 0 and out == value, f"dht get exit {code}, {len(out)} bytes: {err}"


def pk_ours_to_go(net):
    peer, key, value = pk_record("rsa")
    code, out, err = dht(net.binary, "put", "--at", f"/pk/{peer}", "-", "-c", net.ours[0].addr, stdin=value)
    if code != 0:
        return False, f"dht put exit {code}: {err}"
    got = net.go.control.get_value(key, within=STEP)
    return got == value, f"dht put: {out.decode().strip()}; Go GET_VALUE: {len(got)} bytes, differs"


def ipns_ours_to_go(net):
    path = new_path()
    key_file = os.path.join(net.workdir, "publisher.key")
    code, out, err = dht(net.binary, "ipns", "publish", path.decode(), "--key-file", key_file,
                         "-c", net.ours[1].addr)
    words = out.decode(errors="replace").split()
    if code != 0 or not words:
        return False, f"dht ipns publish exit {code}: {err}"
    name = words[0].removeprefix("/ipns/")
    record = net.go.control.get_value(b"/ipns/" + peer_bytes(name), within=STEP)
    parsed = ipns_parsed(name, record)
    return parsed.value == path, f"published {words}; Go's record points at {parsed.value!r}"


def ipns_python_via_go(net):
    """A record built in Python (V2 only, sequence 5), stored by Go's PUT_VALUE; `dht ipns resolve`."""
    path = new_path()
    record = ipns_record(net.ipns_key.private_key, path, sequence=5)
    net.go.control.put_value(net.ipns_key_bytes, record, within=STEP)
    code, out, err = dht(net.binary, "ipns", "resolve", net.ipns_name, "-c", net.ours[2].addr)
    return code == 0 and out.strip() == path, f"resolve exit {code}, {out.strip()!r}: {err}"


def ipns_higher_wins_go(net):
    """`dht ipns publish` with the same key goes one past the network's sequence 5; Go's GET_VALUE
    (the Go client itself holds sequence 5) returns our sequence 6."""
    path = new_path()
    key_file = os.path.join(net.workdir, "python-ipns.key")
    ed25519_key_file(key_file, net.ipns_key.private_key)
    code, out, err = dht(net.binary, "ipns", "publish", path.decode(), "--key-file", key_file,
                         "-c", net.ours[1].addr)
    words = out.decode(errors="replace").split()
    if code != 0 or words[:2] != [f"/ipns/{net.ipns_name}", "6"]:
        return False, f"dht ipns publish exit {code}: {words or err} (expected sequence 6)"
    parsed = ipns_parsed(net.ipns_name, net.go.control.get_value(net.ipns_key_bytes, within=STEP))
    return (parsed.sequence, parsed.value) == (6, path), \
        f"Go GET_VALUE: sequence {parsed.sequence}, {parsed.value!r}"


def ipns_higher_wins_ours(net):
    """Go's PUT_VALUE of sequence 7 (built in Python) replaces our nodes' sequence 6."""
    path = new_path()
    record = ipns_record(net.ipns_key.private_key, path, sequence=7)
    net.go.control.put_value(net.ipns_key_bytes, record, within=STEP)
    code, out, err = dht(net.binary, "ipns", "resolve", net.ipns_name, "-c", net.ours[0].addr)
    return code == 0 and out.strip() == path, f"resolve exit {code}, {out.strip()!r}: {err}"


# --- the mixed network: three Go servers join ---

def mixed_formed(net):
    """Every Go server's lookup reaches our three nodes and the other Go servers; each of our nodes
    routes the three Go servers."""
    servers = {s.peer_id for s in net.servers}
    everyone = servers | {n.peer_id for n in net.ours}

    def attempt():
        missing = []
        for s in net.servers:
            got = set(s.control.get_closest_peers(secrets.token_bytes(32), within=5))
            if lack := everyone - {s.peer_id} - got:
                missing.append(f"{s.name} lookup lacks {sorted(lack)}")
        for n in net.ours:
            code, out, err = dht(net.binary, "info", n.addr, "--json")
            routed = {e["peer"] for e in json.loads(out)["routing_table"]} if code == 0 else set()
            if lack := servers - routed:
                missing.append(f"{n.name} routes none of {sorted(lack)} {err}")
        return not missing, "; ".join(missing)

    return poll(attempt, STEP)


def go_find_peer(net):
    """A Go server drops its connection to one of our nodes, then finds it with FIND_PEER."""
    s, target = net.servers[0], net.ours[1]
    s.control.disconnect(target.peer_id)
    addrs = s.control.find_peer(target.peer_id, within=STEP)
    return port_of(target.addr) in {port_of(a) for a in addrs}, f"listens at {target.addr}; FIND_PEER: {addrs}"


def our_find_peer(net, via, target):
    code, out, err = dht(net.binary, "findpeer", target.peer_id, "-c", via)
    lines = out.decode(errors="replace").split()
    return code == 0 and port_of(target.addr) in {port_of(l) for l in lines}, \
        f"listens at {target.addr}; findpeer exit {code}: {lines or err}"


def mixed_go_stores(net):
    """Each Go server puts a /pk/ and an /ipns/ record and provides a CID."""
    stored = []
    for i, s in enumerate(net.servers):
        peer, key, value = pk_record("ed25519")
        s.control.put_value(key, value, within=STEP)
        pair = ed25519_pair()
        name = ID.from_pubkey(pair.public_key)
        path = new_path()
        s.control.put_value(b"/ipns/" + name.to_bytes(), ipns_record(pair.private_key, path), within=STEP)
        mh = sha256_multihash()
        s.control.provide(bytes([1, RAW_CODEC]) + mh, within=STEP)
        stored.append(SimpleNamespace(server=s, pk=(peer, value), ipns=(name.to_base58(), path), mh=mh))
    return stored


def mixed_ours_find_pk(net, stored):
    bad = []
    for i, r in enumerate(stored):
        peer, value = r.pk
        code, out, err = dht(net.binary, "get", f"/pk/{peer}", "-c", net.ours[i].addr)
        if code != 0 or out != value:
            bad.append(f"{r.server.name}'s via {net.ours[i].name}: exit {code}, {len(out)} bytes: {err}")
    return not bad, "; ".join(bad)


def mixed_ours_find_ipns(net, stored):
    bad = []
    for i, r in enumerate(stored):
        name, path = r.ipns
        via = net.ours[(i + 1) % 3]
        code, out, err = dht(net.binary, "ipns", "resolve", name, "-c", via.addr)
        if code != 0 or out.strip() != path:
            bad.append(f"{r.server.name}'s via {via.name}: exit {code}, {out.strip()!r}: {err}")
    return not bad, "; ".join(bad)


def mixed_ours_find_providers(net, stored):
    bad = []
    for i, r in enumerate(stored):
        via = net.ours[(i + 2) % 3]
        found, detail = providers_of(net.binary, cid_v0(r.mh), via.addr, r.server.peer_id)
        if not found:
            bad.append(f"{r.server.name}'s via {via.name}: {detail}")
    return not bad, "; ".join(bad)


def mixed_our_stores(net):
    """Each of our nodes: a /pk/ record (`dht put` through it), its own IPNS name and a provided CID
    (its console)."""
    stored = []
    for n in net.ours:
        peer, key, value = pk_record("ed25519")
        code, out, err = dht(net.binary, "put", "--at", f"/pk/{peer}", "-", "-c", n.addr, stdin=value)
        if code != 0:
            raise RuntimeError(f"dht put through {n.name}: exit {code}: {err}")
        path = new_path()
        line = n.command(f"ipns publish {path.decode()}", "published")
        if not (line or "").startswith("published"):
            raise RuntimeError(f"{n.name} ipns publish: {line or n.seen[-3:]}")
        mh = sha256_multihash()
        line = n.command(f"provide {cid_v0(mh)}", "provided")
        if not (line or "").startswith("provided"):
            raise RuntimeError(f"{n.name} provide: {line or n.seen[-3:]}")
        stored.append(SimpleNamespace(node=n, pk=(key, value), path=path, mh=mh))
    return stored


def mixed_go_finds_pk(net, stored):
    bad = []
    for i, r in enumerate(stored):
        s = net.servers[i]
        key, value = r.pk
        try:
            got = s.control.get_value(key, within=STEP)
        except DaemonError as e:
            got = f"error: {e}"
        if got != value:
            what = got if isinstance(got, str) else f"{len(got)} bytes, not the record"
            bad.append(f"{r.node.name}'s via {s.name}: {what}")
    return not bad, "; ".join(bad)


def mixed_go_finds_ipns(net, stored):
    bad = []
    for i, r in enumerate(stored):
        s = net.servers[(i + 1) % 3]
        try:
            record = s.control.get_value(b"/ipns/" + peer_bytes(r.node.peer_id), within=STEP)
            parsed = ipns_parsed(r.node.peer_id, record)
            if parsed.value != r.path:
                bad.append(f"{r.node.name}'s via {s.name}: points at {parsed.value!r}")
        except Exception as e:
            bad.append(f"{r.node.name}'s via {s.name}: {type(e).__name__}: {e}")
    return not bad, "; ".join(bad)


def mixed_go_finds_providers(net, stored):
    bad = []
    for i, r in enumerate(stored):
        s = net.servers[(i + 2) % 3]
        found, detail = go_providers_of(s, r.mh, r.node.peer_id)
        if not found:
            bad.append(f"{r.node.name}'s: {detail}")
    return not bad, "; ".join(bad)


def main(binary, p2pd):
    workdir = tempfile.mkdtemp(prefix="go-interop-")
    procs = []

    def start(proc):
        procs.append(proc)
        return proc

    try:
        a = start(Console(binary, workdir, "ours-a")).start()
        ours = [a] + [start(Console(binary, workdir, f"ours-{x}", [a.addr])).start() for x in "bc"]
        go = start(Daemon(p2pd, workdir, "go-client", server=False,
                          bootstrap=[n.addr for n in ours])).wait_ready()
        ipns_key = ed25519_pair()
        ipns_id = ID.from_pubkey(ipns_key.public_key)
        net = SimpleNamespace(binary=binary, workdir=workdir, ours=ours, go=go, ipns_key=ipns_key,
                              ipns_name=ipns_id.to_base58(), ipns_key_bytes=b"/ipns/" + ipns_id.to_bytes())
        print(f"our nodes: {', '.join(n.addr for n in ours)}; Go client {go.peer_id}", flush=True)

        guarded("Go client: GET_CLOSEST_PEERS returns our three nodes", go_closest, net)
        guarded("Go client's first PROVIDE: all 3 of our nodes hold it, dht findprovs finds it", go_first_provide, net)
        guarded("dht -i provide: Go's FIND_PROVIDERS finds our node", our_provide, net)
        guarded("/pk/ record (RSA) put by Go's PUT_VALUE: dht get returns it", pk_go_to_ours, net)
        guarded("/pk/ record (RSA) put by dht put: Go's GET_VALUE returns it", pk_ours_to_go, net)
        guarded("dht ipns publish: Go's GET_VALUE returns the record, valid, pointing at the path",
                ipns_ours_to_go, net)
        guarded("IPNS record built in Python, put by Go's PUT_VALUE: dht ipns resolve reads it",
                ipns_python_via_go, net)
        guarded("IPNS: our sequence 6 beats the Go client's own 5 in its GET_VALUE", ipns_higher_wins_go, net)
        guarded("IPNS: Go's PUT_VALUE of sequence 7 beats our 6 in dht ipns resolve", ipns_higher_wins_ours, net)

        net.servers = [start(Daemon(p2pd, workdir, f"go-server-{i}", server=True,
                                    bootstrap=[n.addr for n in ours])) for i in (1, 2, 3)]
        for s in net.servers:
            s.wait_ready()
        print(f"Go servers: {', '.join(s.addr for s in net.servers)}", flush=True)
        guarded("mixed network: each Go server's lookup reaches all 5 other servers; ours route the Go servers",
                mixed_formed, net)
        guarded("Go server's FIND_PEER (after DISCONNECT) finds our node's address", go_find_peer, net)
        guarded("dht findpeer through our node finds a Go server's address",
                our_find_peer, net, ours[0].addr, net.servers[1])
        guarded("dht findpeer through a Go server finds another Go server's address",
                our_find_peer, net, net.servers[0].addr, net.servers[2])

        try:
            go_stored = mixed_go_stores(net)
        except Exception as e:
            go_stored, why = None, f"Go servers could not store: {type(e).__name__}: {e}"
        for name, run in (
                ("mixed: /pk/ records put by each Go server: dht get returns them", mixed_ours_find_pk),
                ("mixed: IPNS records put by each Go server: dht ipns resolve reads them", mixed_ours_find_ipns),
                ("mixed: each Go server's PROVIDE: dht findprovs finds it", mixed_ours_find_providers)):
            if go_stored:
                guarded(name, run, net, go_stored)
            else:
                check(name, False, why)
        try:
            our_stored = mixed_our_stores(net)
        except Exception as e:
            our_stored, why = None, f"our nodes could not store: {type(e).__name__}: {e}"
        for name, run in (
                ("mixed: /pk/ records put through each of our nodes: Go's GET_VALUE returns them", mixed_go_finds_pk),
                ("mixed: each of our nodes' IPNS name: Go's GET_VALUE returns a valid record", mixed_go_finds_ipns),
                ("mixed: each of our nodes' provide: Go's FIND_PROVIDERS finds it", mixed_go_finds_providers)):
            if our_stored:
                guarded(name, run, net, our_stored)
            else:
                check(name, False, why)
    except Exception as e:
        check("set-up (our nodes and the Go daemons start)", False, f"{type(e).__name__}: {e}")
    except (KeyboardInterrupt, SystemExit):
        check("every check ran (the run was interrupted)", False)
    finally:
        for p in reversed(procs):
            p.stop()

    failed = results.count(False)
    if failed:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Go interop: {time.monotonic() - started:.0f} s", flush=True)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    # SIGTERM unwinds like Ctrl-C, so the nodes and daemons are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # py-libp2p logs (with tracebacks) every peer that hangs up.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    sys.exit(1 if main(sys.argv[1], sys.argv[2]) else 0)
