"""Interop test: py-libp2p, an independent libp2p implementation, against running `dht` nodes.

Usage: interop.py DHT_BINARY ADDR_A ADDR_B ADDR_C   (full multiaddrs with /p2p/<id>)
Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
"""

import hashlib
import json
import logging
import secrets
import sys

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
from libp2p.peer.peerinfo import info_from_p2p_addr
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


async def wait_for(predicate, what, within=STEP):
    with trio.move_on_after(within):
        while True:
            if await predicate():
                return True
            await trio.sleep(0.2)
    print(f"  gave up waiting for {what}", flush=True)
    return False


async def main(binary, addrs):
    infos = [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in addrs]
    a, b, c = infos
    addr_b = addrs[1]

    client = new_host(key_pair=create_new_key_pair())
    server = new_host(key_pair=create_new_key_pair())
    server_listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with client.run(listen_addrs=[]), server.run(listen_addrs=[server_listen]), trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 10 * STEP
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
            nursery.cancel_scope.cancel()

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    # py-libp2p logs (with tracebacks) every peer that hangs up, e.g. our short-lived clients.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    sys.exit(1 if trio.run(main, sys.argv[1], sys.argv[2:]) else 0)
