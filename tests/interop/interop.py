"""Interop test: py-libp2p, an independent libp2p implementation, against running `dht` nodes.

Usage: interop.py DHT_BINARY ADDR_A ADDR_B ADDR_C   (full multiaddrs with /p2p/<id>)
Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
"""

import base64
from datetime import datetime, timedelta, timezone
import hashlib
import json
import logging
import re
import secrets
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import base58
import multiaddr
import trio
import varint
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.ping import ID as PING, perform_ping_roundtrip
from libp2p.identity.identify.identify import ID as IDENTIFY, parse_identify_response
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.records.ipns import IPNSValidator
from libp2p.records.pubkey import PublicKeyValidator
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import BlankValidator, NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

KAD = "/ipfs/kad/1.0.0"
# Our free keys travel as their bytes; go, js and py accept `/namespace/...` keys whose namespace
# has a validator. The convention: `/dht/<name>`, with a permissive validator for "dht".
NAMESPACE = "dht"
STEP = 30  # seconds any single check may take
BIG = 60 * 1024

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok: " if ok else "FAILED: ") + name + (f" ({detail})" if detail and not ok else ""), flush=True)


async def dht_cli(binary, *args, stdin=b""):
    """Runs the `dht` binary without blocking trio: the py-libp2p server must keep answering."""
    with trio.fail_after(STEP):
        p = await trio.run_process(
            [binary, "-v", "0", *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def brief(err: str) -> str:
    """The first line of an error output (clap's usage text follows it)."""
    return next((line for line in err.splitlines() if line.strip()), "")


def validator():
    return NamespacedValidator({NAMESPACE: BlankValidator()})


async def raw_get_value(host, peer_id, key: bytes):
    """A GET_VALUE message built by hand, for keys that are not UTF-8 (our 32-byte content keys)."""
    stream = await host.new_stream(peer_id, [KAD])
    msg = Message()
    msg.type = Message.MessageType.GET_VALUE
    msg.key = key
    data = msg.SerializeToString()
    await stream.write(varint.encode(len(data)) + data)
    reply = Message()
    reply.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 4 * 1024 * 1024))
    await stream.close()
    return reply


async def raw_get_providers(host, peer_id, key: bytes):
    """The peer ids a node lists for GET_PROVIDERS of key, asked by hand."""
    stream = await host.new_stream(peer_id, [KAD])
    try:
        msg = Message()
        msg.type = Message.MessageType.GET_PROVIDERS
        msg.key = key
        data = msg.SerializeToString()
        await stream.write(varint.encode(len(data)) + data)
        reply = Message()
        reply.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 4 * 1024 * 1024))
        return [ID(p.id) for p in reply.providerPeers]
    finally:
        await stream.close()


async def wait_for(predicate, what, within=STEP):
    with trio.move_on_after(within):
        while True:
            if await predicate():
                return True
            await trio.sleep(0.2)
    print(f"  gave up waiting for {what}", flush=True)
    return False


async def raw_put_value(host, peer_id, key: bytes, value: bytes, within=10):
    """A PUT_VALUE built by hand (py-libp2p's put_value takes text keys, sent as their UTF-8, so it
    cannot name the binary /pk/ and /ipns/ keys). True when the peer echoes it, as a node does when
    it stores the record; a node that refuses one answers nothing (or resets the stream)."""
    stream = await host.new_stream(peer_id, [KAD])
    try:
        msg = Message()
        msg.type = Message.MessageType.PUT_VALUE
        msg.key = key
        msg.record.key = key
        msg.record.value = value
        data = msg.SerializeToString()
        await stream.write(varint.encode(len(data)) + data)
        with trio.move_on_after(within):
            try:
                reply = Message()
                reply.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 4 * 1024 * 1024))
            except Exception:
                return False
            return reply.type == Message.MessageType.PUT_VALUE and reply.key == key
        return False
    finally:
        await stream.close()


async def guarded(name, run, *args):
    """Runs one check; an exception fails that check alone and the next one still runs."""
    try:
        with trio.fail_after(2 * STEP):
            await run(name, *args)
    except Exception as e:
        check(name, False, f"{type(e).__name__}: {e}")


def sha256_multihash():
    return b"\x12\x20" + hashlib.sha256(secrets.token_bytes(32)).digest()


def cid_v0(mh: bytes) -> str:
    """The CIDv0 of a sha2-256 multihash: the multihash in base58btc (Qm...)."""
    return base58.b58encode(mh).decode()


def cid_v1(mh: bytes, codec=0x70) -> str:
    """A CIDv1 in base32 (bafy... for dag-pb): multibase prefix b, version 1, codec, multihash."""
    return "b" + base64.b32encode(bytes([1, codec]) + mh).decode().lower().rstrip("=")


def cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
    raise ValueError(n)


def dag_cbor(item) -> bytes:
    """DAG-CBOR for what an IPNS record holds: unsigned ints, bytes, text and text-keyed maps
    (keys sorted by their encoded length, then bytewise)."""
    if isinstance(item, int) and item >= 0:
        return cbor_head(0, item)
    if isinstance(item, bytes):
        return cbor_head(2, len(item)) + item
    if isinstance(item, str):
        return cbor_head(3, len(item.encode())) + item.encode()
    if isinstance(item, dict):
        keys = sorted(item, key=lambda k: (len(dag_cbor(k)), dag_cbor(k)))
        return cbor_head(5, len(item)) + b"".join(dag_cbor(k) + dag_cbor(item[k]) for k in keys)
    raise TypeError(type(item))


def pb_field(number: int, value) -> bytes:
    """One protobuf field: an int as a varint, bytes length-delimited."""
    if isinstance(value, int):
        return varint.encode(number << 3) + varint.encode(value)
    return varint.encode(number << 3 | 2) + varint.encode(len(value)) + value


def rfc3339_nanos(t: datetime) -> bytes:
    return (t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond * 1000:09d}Z").encode()


def ipns_record(private_key, value: bytes, sequence=1, corrupt=False) -> bytes:
    """An IpnsEntry with only signatureV2 (8) and data (9), valid for a day, as the spec allows;
    `corrupt` flips a bit of the signature."""
    data = dag_cbor({
        "Value": value,
        "ValidityType": 0,
        "Validity": rfc3339_nanos(datetime.now(timezone.utc) + timedelta(days=1)),
        "Sequence": sequence,
        "TTL": 300 * 10**9,
    })
    signature = private_key.sign(b"ipns-signature:" + data)
    if corrupt:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    return pb_field(8, signature) + pb_field(9, data)


class Lines:
    """Lines of a subprocess's output, read without blocking trio."""

    def __init__(self, stream):
        self.stream, self.buf, self.seen = stream, b"", []

    async def until(self, predicate, within=STEP):
        """The first line for which predicate is true, or None at EOF or after `within` seconds."""
        with trio.move_on_after(within):
            while True:
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    line = line.decode(errors="replace").rstrip("\r")
                    self.seen.append(line)
                    if predicate(line):
                        return line
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return None
                self.buf += chunk
        return None


def console_line(line: str) -> str:
    """A console output line without any prompt in front of it."""
    return re.sub(r"^(\S*> )+", "", line)


async def py_provides_dht_finds(name, net):
    """py-libp2p's server announces a CID-shaped key: our nodes take its ADD_PROVIDER, and
    `dht findprovs` lists it as a provider."""
    mh = sha256_multihash()
    announced = await net.server_dht.provider_store.provide(mh)
    holders = []

    async def held():
        # ADD_PROVIDER is fire-and-forget: wait until one of our nodes lists the provider.
        for info in net.infos:
            if net.server.get_id() in await raw_get_providers(net.client, info.peer_id, mh):
                holders.append(info.peer_id)
        return bool(holders)

    await wait_for(held, "our nodes to take py-libp2p's ADD_PROVIDER")
    code, out, err = await dht_cli(net.binary, "findprovs", cid_v0(mh), "-c", net.addrs[1])
    lines = out.decode(errors="replace").splitlines()
    ok = holders and code == 0 and any(line.split()[:1] == [net.server_id] for line in lines)
    check(name, ok, f"py announced to others: {announced}; held by {len(holders)} of our nodes; "
                    f"findprovs exit {code}, {lines}, {brief(err)}")


async def dht_provides_py_finds(name, net):
    """A `dht -i` console provides a key; py-libp2p's find_providers returns that node."""
    mh = sha256_multihash()
    proc = await trio.lowlevel.open_process(
        [net.binary, "-v", "0", "-i", "-l", "/ip4/127.0.0.1/tcp/0", "-c", net.addrs[0]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    out = Lines(proc.stdout)
    try:
        line = await out.until(lambda l: console_line(l).startswith("peer id:"))
        node_id = line.split()[-1] if line else None
        await out.until(lambda l: console_line(l).startswith("ready"))
        await proc.stdin.send_all(f"provide {cid_v0(mh)}\n".encode())
        line = await out.until(lambda l: console_line(l).startswith(("provided", "unknown command"))
                               or "error" in l.lower())
        provided = line is not None and console_line(line).startswith("provided")

        async def found():
            providers = await net.client_dht.provider_store.find_providers(mh)
            return node_id in {p.peer_id.to_string() for p in providers}

        ok = provided and await wait_for(found, "py-libp2p to find our provider")
        await proc.stdin.send_all(b"q\n")
        with trio.move_on_after(STEP):
            await proc.wait()
        check(name, ok and proc.returncode == 0, f"exit {proc.returncode}, console said {out.seen[-8:]}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def put_everywhere(net, key: bytes, value: bytes):
    """Raw PUT_VALUE to each of our three nodes; which of them stored it."""
    return [await raw_put_value(net.client, info.peer_id, key, value) for info in net.infos]


def pk_record(valid: bool):
    """A /pk/ key and value: the public key of the key's peer, or of another peer."""
    owner, other = create_new_key_pair(), create_new_key_pair()
    peer = ID.from_pubkey(owner.public_key)
    value = (owner if valid else other).public_key.serialize()
    try:  # py-libp2p's validator names /pk/ keys by the multihash in hex
        PublicKeyValidator().validate("/pk/" + peer.to_bytes().hex(), value)
        py_valid = True
    except InvalidRecordType:
        py_valid = False
    return b"/pk/" + peer.to_bytes(), value, py_valid


def ipns_entry(valid: bool):
    """An /ipns/ key and a V2-only record pointing at /ipfs/bafy...; invalid: signature altered."""
    owner = create_new_key_pair()
    peer = ID.from_pubkey(owner.public_key)
    path = b"/ipfs/" + cid_v1(sha256_multihash()).encode()
    record = ipns_record(owner.private_key, path, corrupt=not valid)
    try:
        IPNSValidator().validate("/ipns/" + peer.to_base58(), record)
        py_valid = True
    except InvalidRecordType:
        py_valid = False
    return peer, b"/ipns/" + peer.to_bytes(), path, record, py_valid


async def accepted(name, net, key, value, py_valid):
    stored = await put_everywhere(net, key, value)
    code, out, err = await dht_cli(net.binary, "get", "hex:" + key.hex(), "-c", net.addrs[1])
    check(name, py_valid and all(stored) and code == 0 and out == value,
          f"valid for py-libp2p: {py_valid}; stored by {stored}; dht get exit {code}: {brief(err)}")


async def refused(name, net, key, value, py_valid):
    stored = await put_everywhere(net, key, value)
    code, out, err = await dht_cli(net.binary, "get", "hex:" + key.hex(), "-c", net.addrs[1])
    check(name, not py_valid and not any(stored) and code != 0 and "error:" in err,
          f"valid for py-libp2p: {py_valid}; stored by {stored}; dht get exit {code}, {len(out)} bytes: {brief(err)}")


async def pk_valid(name, net):
    await accepted(name, net, *pk_record(valid=True))


async def pk_invalid(name, net):
    await refused(name, net, *pk_record(valid=False))


async def ipns_valid(name, net):
    _, key, _, record, py_valid = ipns_entry(valid=True)
    await accepted(name, net, key, record, py_valid)


async def ipns_invalid(name, net):
    _, key, _, record, py_valid = ipns_entry(valid=False)
    await refused(name, net, key, record, py_valid)


async def ipns_resolve(name, net):
    peer, key, path, record, _ = ipns_entry(valid=True)
    stored = await put_everywhere(net, key, record)
    code, out, err = await dht_cli(net.binary, "ipns", "resolve", peer.to_base58(), "-c", net.addrs[1])
    check(name, code == 0 and out.strip() == path, f"stored by {stored}; exit {code}, {out[:80]!r}: {brief(err)}")


async def ipns_publish(name, net):
    """`dht ipns publish` stores a record that py-libp2p's IPNS validator accepts, pointing at PATH."""
    path = b"/ipfs/" + cid_v1(sha256_multihash()).encode()
    with tempfile.TemporaryDirectory() as tmp:
        code, out, err = await dht_cli(net.binary, "ipns", "publish", path.decode(),
                                       "--key-file", f"{tmp}/key", "-c", net.addrs[0])
    words = out.decode(errors="replace").split()
    published = words[0].removeprefix("/ipns/") if code == 0 and words else None
    if published is None:
        return check(name, False, f"publish exit {code}, {words}: {brief(err)}")
    key = b"/ipns/" + ID.from_base58(published).to_bytes()
    reply = await raw_get_value(net.client, net.infos[2].peer_id, key)
    try:
        parsed = IPNSValidator().validate_with_details("/ipns/" + published, reply.record.value)
        problem = None if parsed.value == path else f"points at {parsed.value!r}"
    except InvalidRecordType as e:
        problem = f"py-libp2p refuses it: {e}"
    check(name, problem is None, f"{words}; {problem}")


async def named_keys(name, net):
    """`/pk/PEER` and `/ipns/PEER` on our command line name the binary keys other nodes use."""
    key, value, _ = pk_record(valid=True)
    peer = ID(key[len(b"/pk/"):])
    stored = await put_everywhere(net, key, value)
    pk = await dht_cli(net.binary, "get", f"/pk/{peer.to_base58()}", "-c", net.addrs[1])
    peer, key, _, record, _ = ipns_entry(valid=True)
    stored += await put_everywhere(net, key, record)
    ipns = await dht_cli(net.binary, "get", f"/ipns/{peer.to_base58()}", "-c", net.addrs[1])
    check(name, pk[:2] == (0, value) and ipns[:2] == (0, record),
          f"stored by {stored}; /pk/ exit {pk[0]}: {brief(pk[2])}; /ipns/ exit {ipns[0]}: {brief(ipns[2])}")


async def findpeer(name, net):
    port = str(net.server.get_addrs()[0].value_for_protocol("tcp"))
    code, out, err = await dht_cli(net.binary, "findpeer", net.server_id, "-c", net.addrs[1])
    lines = out.decode(errors="replace").split()
    ports = {m.group(1) for line in lines if (m := re.search(r"/tcp/(\d+)", line))}
    check(name, code == 0 and port in ports, f"listening on {port}; exit {code}, {lines}: {brief(err)}")


async def main(binary, addrs):
    infos = [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in addrs]
    a, b, c = infos
    addr_b = addrs[1]

    client = new_host(key_pair=create_new_key_pair())
    server = new_host(key_pair=create_new_key_pair())
    server_listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    finished = False
    async with client.run(listen_addrs=[]), server.run(listen_addrs=[server_listen]), trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 12 * STEP
        client_dht = KadDHT(client, DHTMode.CLIENT, validator=validator(), validator_changed=True)
        server_dht = KadDHT(server, DHTMode.SERVER, validator=validator(), validator_changed=True)
        async with background_trio_service(client_dht), background_trio_service(server_dht):
            for info in infos:
                await client.connect(info)
                await client_dht.add_peer(info.peer_id)

            # 1. identify and ping.
            stream = await client.new_stream(a.peer_id, [IDENTIFY])
            raw = b""
            with trio.fail_after(STEP):
                try:
                    while chunk := await stream.read(65536):
                        raw += chunk
                except StreamEOF:
                    pass
            ident = parse_identify_response(raw)
            check("identify: agent version dht/...", ident.agent_version.startswith("dht/"), ident.agent_version)
            check("identify: lists /ipfs/kad/1.0.0 and /ipfs/ping/1.0.0",
                  KAD in ident.protocols and str(PING) in ident.protocols, list(ident.protocols))
            stream = await client.new_stream(a.peer_id, [PING])
            rtts = [await perform_ping_roundtrip(stream) for _ in range(3)]
            check("ping: three round trips", len(rtts) == 3, rtts)

            # 2. py-libp2p stores with PUT_VALUE; our `dht get` through another node returns it.
            key = f"/{NAMESPACE}/from-python-{secrets.token_hex(4)}"
            value = b"stored by py-libp2p " + secrets.token_bytes(16)
            await client_dht.put_value(key, value)
            code, out, err = await dht_cli(binary, "get", key, "-c", addr_b)
            check("py-libp2p PUT_VALUE, dht get returns it", code == 0 and out == value, err)

            # 3. `dht put` stores; py-libp2p reads it back with GET_VALUE, byte for byte.
            key = f"/{NAMESPACE}/from-rust-{secrets.token_hex(4)}"
            value = b"stored by dht \x00\x01\xff" + secrets.token_bytes(16)
            code, out, err = await dht_cli(binary, "put", "--at", key, "-", "-c", addrs[0], stdin=value)
            got = await client_dht.get_value(key) if code == 0 else None
            check("dht put, py-libp2p get_value returns it byte for byte", got == value, err or repr(got))
            content = secrets.token_bytes(100)
            code, out, err = await dht_cli(binary, "put", "-", "-c", addrs[0], stdin=content)
            content_key = bytes.fromhex(out.split()[0].decode()) if code == 0 else b""
            reply = await raw_get_value(client, c.peer_id, content_key) if code == 0 else None
            check("content key: raw GET_VALUE returns the value under its SHA-256",
                  reply is not None and reply.record.value == content
                  and hashlib.sha256(reply.record.value).digest() == content_key, err)

            # 4. py-libp2p as a DHT server holds a record only it has; our nodes find and fetch it.
            for info in infos:
                await server.connect(info)
            server_id = server.get_id().to_string()

            async def routed():
                code, out, _ = await dht_cli(binary, "info", addrs[0], "--json")
                return code == 0 and server_id in {e["peer"] for e in json.loads(out)["routing_table"]}

            check("our node routes the py-libp2p server (identify fed kad)", await wait_for(routed, "routing"))
            key = f"/{NAMESPACE}/only-python-{secrets.token_hex(4)}"
            value = b"held by py-libp2p alone " + secrets.token_bytes(16)
            server_dht.value_store.put(key.encode(), value)
            code, out, err = await dht_cli(binary, "get", key, "-c", addr_b)
            check("a record only py-libp2p holds is fetched by dht get", code == 0 and out == value, err)

            # 5. 60 KiB in both directions.
            key = f"/{NAMESPACE}/big-python-{secrets.token_hex(4)}"
            value = secrets.token_bytes(BIG)
            await client_dht.put_value(key, value)
            code, out, err = await dht_cli(binary, "get", key, "-c", addr_b)
            check("60 KiB: py-libp2p to dht", code == 0 and out == value, err or f"{len(out)} bytes")
            key = f"/{NAMESPACE}/big-rust-{secrets.token_hex(4)}"
            value = secrets.token_bytes(BIG)
            code, _, err = await dht_cli(binary, "put", "--at", key, "-", "-c", addrs[2], stdin=value)
            got = await client_dht.get_value(key) if code == 0 else None
            check("60 KiB: dht to py-libp2p", got == value, err or f"{len(got or b'')} bytes")

            # 6. Providers, peers and the /pk/ and /ipns/ records (issue #16).
            for info in infos:
                await server_dht.add_peer(info.peer_id)
            net = SimpleNamespace(binary=binary, addrs=addrs, infos=infos, client=client, server=server,
                                  client_dht=client_dht, server_dht=server_dht, server_id=server_id)
            await guarded("py-libp2p provides: our nodes hold it, dht findprovs finds it", py_provides_dht_finds, net)
            await guarded("dht -i provides, py-libp2p find_providers finds it", dht_provides_py_finds, net)
            await guarded("/pk/ record from py-libp2p: stored, dht get returns it", pk_valid, net)
            await guarded("/pk/ record with another peer's key: refused", pk_invalid, net)
            await guarded("/ipns/ record built in Python: stored, dht get returns it", ipns_valid, net)
            await guarded("/ipns/ record with a bad signature: refused", ipns_invalid, net)
            await guarded("dht ipns resolve reads a Python-built /ipns/ record", ipns_resolve, net)
            await guarded("dht ipns publish: py-libp2p's IPNS validator accepts the record", ipns_publish, net)
            await guarded("dht get /pk/PEER and /ipns/PEER name the binary keys", named_keys, net)
            await guarded("dht findpeer finds the py-libp2p server's address", findpeer, net)
            finished = True
            nursery.cancel_scope.cancel()
    if not finished:
        check("every check ran before the overall deadline", False)

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    # py-libp2p logs (with tracebacks) every peer that hangs up, e.g. our short-lived clients.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    sys.exit(1 if trio.run(main, sys.argv[1], sys.argv[2:]) else 0)
