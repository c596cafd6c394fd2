"""Failed-login back-off (issue #11 finding 9): a guessing source against an honest one, side by side.

For the API (HTTPS) and for CHAP (iSCSI logins straight to a chunk), one source guesses as
fast as it can while another logs in with the right credentials every 0.2 s, both from their
own loopback address against one fresh zbs-lite. Prints the guesser's checked and refused
attempts per second, the honest source's successes and p50 latency, and the ratio of guesses
checked per second to honest logins per second (the back-off should push it well below 1;
without it the guesser is checked thousands of times per second).

Run: .venv/bin/python bench/login_backoff.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zbs_lite.testing import ZbsLiteProcess  # noqa: E402

GUESSER, HONEST = "127.0.0.2", "127.0.0.3"
INITIATOR = "iqn.2024-01.io.bench:node"
CHAP_NAME, CHAP_SECRET = "bench-node", "BenchSecret12345"


def api_login(zl: ZbsLiteProcess, source: str) -> Callable[[str], int]:
    url = urlsplit(zl.api_url)
    ctx = ssl.create_default_context(cafile=zl.ca_path)
    conn = http.client.HTTPSConnection(str(url.hostname), url.port, context=ctx, source_address=(source, 0))

    def login(password: str) -> int:
        conn.request("POST", "/v2/api/login", json.dumps({"username": zl.username, "password": password}))
        resp = conn.getresponse()
        resp.read()
        return resp.status

    return login


def _pdu(flags: int, keys: dict[str, str]) -> bytes:
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
    bhs = bytearray(48)
    bhs[0], bhs[1] = 0x43, flags  # Login Request, immediate
    bhs[5:8] = len(data).to_bytes(3, "big")
    bhs[8:14] = b"\x80\x00\x00\x00\x00\x01"
    return bytes(bhs) + data + b"\0" * (-len(data) % 4)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    bhs = exact(48)
    dlen = int.from_bytes(bhs[5:8], "big")
    data = exact(dlen + (-dlen % 4))[:dlen]
    pairs = dict(p.split("=", 1) for p in data.decode().split("\0") if "=" in p)
    return struct.unpack_from(">H", bhs, 36)[0], pairs


def chap_login(portal: tuple[str, int], target: str, source: str) -> Callable[[str], int]:
    """A CHAP security-stage exchange; returns the login status (0 = accepted)."""

    def login(secret: str) -> int:
        with socket.create_connection(portal, timeout=10, source_address=(source, 0)) as sock:
            sock.sendall(_pdu(0x01, {"InitiatorName": INITIATOR, "TargetName": target, "AuthMethod": "CHAP"}))
            status, _ = _answer(sock)
            if status:
                return status
            sock.sendall(_pdu(0x00, {"CHAP_A": "5"}))
            status, got = _answer(sock)
            if status:
                return status
            challenge = bytes.fromhex(got["CHAP_C"][2:])
            resp = hashlib.md5(bytes([int(got["CHAP_I"])]) + secret.encode() + challenge, usedforsecurity=False)
            sock.sendall(_pdu(0x81, {"CHAP_N": CHAP_NAME, "CHAP_R": "0x" + resp.hexdigest()}))
            return _answer(sock)[0]

    return login


def race(name: str, guess: Callable[[str], int], honest: Callable[[str], int], right: str, seconds: float) -> None:
    checked = refused = 0
    honest_ok, honest_times = 0, []
    stop = threading.Event()

    def honest_loop() -> None:
        nonlocal honest_ok
        while not stop.is_set():
            t0 = time.perf_counter()
            ok = honest(right) in (0, 200)
            honest_times.append(time.perf_counter() - t0)
            honest_ok += ok
            time.sleep(0.2)

    thread = threading.Thread(target=honest_loop)
    thread.start()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status = guess("wrong-guess-000")
        if status in (401, 0x0201):
            checked += 1
        else:
            refused += 1
    stop.set()
    thread.join()
    elapsed = time.monotonic() - started
    honest_rate = len(honest_times) / elapsed
    print(f"{name}: guessing source {checked / elapsed:.2f} checked/s ({checked} in {elapsed:.0f} s), "
          f"{refused / elapsed:.0f} refused/s")  # fmt: skip
    p50 = statistics.median(honest_times) * 1000
    print(f"{name}: honest source {honest_ok}/{len(honest_times)} accepted, p50 {p50:.1f} ms")
    print(f"{name}: ratio guesses checked/s / honest logins/s = {checked / elapsed / honest_rate:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backoff-") as tmp, ZbsLiteProcess(tmp) as zl:
        race("API", api_login(zl, GUESSER), api_login(zl, HONEST), zl.password, args.seconds)
        status, t = zl.call(
            "create-iscsi-target",
            [{"name": "bench-chap", "cluster_id": zl.cluster_id(), "replica_num": 2, "thin_provision": True,
              "chap_enabled": True, "chap_name": "bench-target", "chap_secret": "BenchTarget1234",
              "initiator_chaps": [{"initiator_iqn": INITIATOR, "chap_name": CHAP_NAME, "chap_secret": CHAP_SECRET}]}],
        )  # fmt: skip
        assert status == 200, t
        zl.wait_tasks([t[0]["task_id"]])
        iqn = t[0]["data"]["iqn_name"]
        chunk = zl.chunks[0]
        race("CHAP", chap_login(chunk, iqn, GUESSER), chap_login(chunk, iqn, HONEST), CHAP_SECRET, args.seconds)


if __name__ == "__main__":
    main()
