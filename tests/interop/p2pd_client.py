"""A minimal client of the go-libp2p-daemon (`p2pd`) control protocol, and a runner for the daemon.

The control socket carries varint-length-delimited protobuf `Request`s and `Response`s
(`p2pd.proto`, shipped beside the daemon). Lookups stream: a `Response` whose `dht` is BEGIN, then
bare `DHTResponse`s (VALUE ...) up to one of type END. The few messages used here are encoded and
decoded by hand: no protoc, no generated code.

Every call opens its own connection (the daemon serves each connection in turn, one request at a
time), so calls may come from several threads, and every read has a deadline.
"""

import os
import socket
import subprocess
import time

import base58
import multiaddr

# Request.Type
IDENTIFY, CONNECT, DHT, LIST_PEERS, DISCONNECT = 0, 1, 4, 5, 7
# DHTRequest.Type
FIND_PEER, FIND_PROVIDERS, GET_CLOSEST_PEERS, GET_VALUE, PUT_VALUE, PROVIDE = 0, 2, 3, 5, 7, 8
# Response.Type and DHTResponse.Type
OK, ERROR = 0, 1
BEGIN, VALUE, END = 0, 1, 2

MAX_MESSAGE = 4 * 1024 * 1024


class DaemonError(Exception):
    """The daemon answered ERROR, or did not answer in time."""


# --- protobuf wire format: varints (wire type 0) and length-delimited bytes (wire type 2) ---

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes, i: int):
    n = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, i


def field(number: int, value) -> bytes:
    """One field: an int as a varint, bytes (or a nested message) length-delimited; None: absent;
    a list: the field repeated."""
    if value is None:
        return b""
    if isinstance(value, list):
        return b"".join(field(number, v) for v in value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields) -> bytes:
    """A message from (number, value) pairs."""
    return b"".join(field(n, v) for n, v in fields)


def decode(buf: bytes) -> dict:
    """{field number: [values]}: ints for varints, bytes for length-delimited fields (nested
    messages are decoded by the caller); fixed-width fields are skipped."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            size, i = read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def first(fields: dict, number: int, default=None):
    return fields.get(number, [default])[0]


# --- peer ids and multiaddrs ---

def peer_text(peer_id: bytes) -> str:
    return base58.b58encode(peer_id).decode()


def peer_bytes(text: str) -> bytes:
    return base58.b58decode(text)


def addr_text(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception:
        return "0x" + raw.hex()


def addr_bytes(text: str) -> bytes:
    return multiaddr.Multiaddr(text).to_bytes()


def split_p2p(addr: str):
    """'/ip4/.../tcp/P/p2p/ID' -> ('/ip4/.../tcp/P', 'ID')."""
    base, _, peer = addr.rpartition("/p2p/")
    return base, peer


def peer_info(raw: bytes):
    """A PeerInfo message: (peer id text, [multiaddr text])."""
    f = decode(raw)
    return peer_text(first(f, 1, b"")), [addr_text(a) for a in f.get(2, [])]


# --- the control client ---

class Control:
    def __init__(self, path: str):
        self.path = path

    def _connect(self, within: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(within)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def _read(sock: socket.socket, deadline: float) -> bytes:
        """One varint-length-delimited message, by the deadline."""

        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonError("no answer from the daemon in time")
                sock.settimeout(left)
                try:
                    chunk = sock.recv(n - len(data))
                except socket.timeout:
                    raise DaemonError("no answer from the daemon in time") from None
                if not chunk:
                    raise DaemonError("the daemon closed the control connection")
                data += chunk
            return data

        size = shift = 0
        while True:
            byte = exactly(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if size > MAX_MESSAGE:
            raise DaemonError(f"oversized control message ({size} bytes)")
        return exactly(size)

    def call(self, request: bytes, within: float, stream=False):
        """Sends one Request; returns the decoded Response, and for a streaming answer also the
        decoded DHTResponses that followed it (END excluded)."""
        deadline = time.monotonic() + within
        with self._connect(within) as sock:
            sock.sendall(varint(len(request)) + request)
            response = decode(self._read(sock, deadline))
            if first(response, 1, OK) != OK:
                error = decode(first(response, 2, b""))
                raise DaemonError(first(error, 1, b"(no message)").decode(errors="replace"))
            if not stream:
                return response
            dht = decode(first(response, 5, b""))
            if first(dht, 1, BEGIN) != BEGIN:
                raise DaemonError(f"a streaming answer that does not BEGIN: {dht}")
            items = []
            while True:
                item = decode(self._read(sock, deadline))
                if first(item, 1, VALUE) == END:
                    return response, items
                items.append(item)

    def identify(self, within=5.0):
        """(peer id text, [multiaddr text])."""
        ident = decode(first(self.call(message((1, IDENTIFY)), within), 4, b""))
        return peer_text(first(ident, 1, b"")), [addr_text(a) for a in ident.get(2, [])]

    def connect(self, addr: str, within=10.0):
        """Connects to a peer at a full multiaddr (with /p2p/<id>)."""
        base, peer = split_p2p(addr)
        req = message((1, CONNECT), (2, message((1, peer_bytes(peer)), (2, [addr_bytes(base)]),
                                                (3, int(within)))))
        self.call(req, within + 2)

    def disconnect(self, peer: str, within=5.0):
        self.call(message((1, DISCONNECT), (7, message((1, peer_bytes(peer))))), within)

    def list_peers(self, within=5.0):
        """{peer id text: [multiaddr text]} of the connected peers."""
        response = self.call(message((1, LIST_PEERS)), within)
        return dict(peer_info(p) for p in response.get(6, []))

    def _dht(self, kind: int, within: float, stream=False, peer=None, cid=None, key=None, value=None,
             count=None):
        # The daemon's own timeout is in whole seconds; ours is a little longer, to read its answer.
        timeout = max(1, int(within))
        req = message((1, DHT), (5, message((1, kind), (2, peer), (3, cid), (4, key), (5, value),
                                            (6, count), (7, timeout))))
        return self.call(req, timeout + 3, stream)

    def find_peer(self, peer: str, within=20.0):
        """[multiaddr text] of a peer, looked up in the DHT."""
        response = self._dht(FIND_PEER, within, peer=peer_bytes(peer))
        return peer_info(first(decode(first(response, 5, b"")), 2, b""))[1]

    def get_closest_peers(self, key: bytes, within=20.0):
        """[peer id text] the DHT returns as the closest to key."""
        _, items = self._dht(GET_CLOSEST_PEERS, within, stream=True, key=key)
        return [peer_text(first(i, 3, b"")) for i in items]

    def find_providers(self, cid: bytes, count=20, within=20.0):
        """[(peer id text, [multiaddr text])] of the providers of a binary CID."""
        _, items = self._dht(FIND_PROVIDERS, within, stream=True, cid=cid, count=count)
        return [peer_info(first(i, 2, b"")) for i in items]

    def get_value(self, key: bytes, within=20.0) -> bytes:
        response = self._dht(GET_VALUE, within, key=key)
        return first(decode(first(response, 5, b"")), 3, b"")

    def put_value(self, key: bytes, value: bytes, within=20.0):
        self._dht(PUT_VALUE, within, key=key, value=value)

    def provide(self, cid: bytes, within=20.0):
        self._dht(PROVIDE, within, cid=cid)


class Daemon:
    """A running `p2pd` with its DHT in server or client mode, listening on 127.0.0.1 at a port
    the kernel picks, its control socket and its log in workdir."""

    def __init__(self, p2pd: str, workdir: str, name: str, server: bool, bootstrap=(), key_file=None):
        self.name = name
        self.socket = os.path.join(workdir, f"{name}.sock")
        self.log_path = os.path.join(workdir, f"{name}.log")
        cmd = [p2pd, "-q", "-listen", "/unix" + self.socket, "-hostAddrs", "/ip4/127.0.0.1/tcp/0",
               "-dhtServer" if server else "-dhtClient"]
        if bootstrap:
            cmd += ["-b", "-bootstrapPeers", ",".join(bootstrap)]
        if key_file:
            cmd += ["-id", key_file]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.control = Control(self.socket)
        self.peer_id, self.addrs = None, []

    def wait_ready(self, within=15.0):
        """Polls IDENTIFY until the daemon answers; sets peer_id and addrs (full, with /p2p/)."""
        deadline = time.monotonic() + within
        last = "no control socket"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"{self.name} exited with status {self.proc.returncode}: {self.log_tail()}")
            if os.path.exists(self.socket):
                try:
                    peer, addrs = self.control.identify(within=2)
                    tcp = [a for a in addrs if "/tcp/" in a]
                    if tcp:
                        self.peer_id = peer
                        self.addrs = [f"{a}/p2p/{peer}" for a in tcp]
                        return self
                    last = f"no TCP address yet: {addrs}"
                except (OSError, DaemonError) as e:
                    last = str(e)
            time.sleep(0.05)
        raise DaemonError(f"{self.name} not ready within {within:.0f} s: {last}; {self.log_tail()}")

    @property
    def addr(self) -> str:
        return self.addrs[0]

    def log_tail(self, lines=5) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(tail) or "(empty log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
