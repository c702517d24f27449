#!/usr/bin/env python3
"""Smoke test and reference benchmark for a PyKMIP test server, using
PyKMIP's own client (ProxyKmipClient) with the test PKI of scripts/kmip-certs.
Run it with the venv's python (scripts/install-pykmip):

  target/pykmip-venv/bin/python scripts/pykmip-smoke.py --port 5696
      DiscoverVersions, Query, then Create (AES-256), Activate,
      Encrypt (AES-256-GCM, 64 bytes), Decrypt, Get Attributes, Revoke,
      Destroy. Exit 0 when every step passed.

  ... scripts/pykmip-smoke.py --port 5696 --bench 5 --connections 4
      AES-256-GCM Encrypt of 64 bytes in a loop on N connections (one thread
      and one client each) for SECONDS; prints one JSON line on stdout:
      {"ops": X, "secs": Y, "ops_per_sec": Z, ...}

  ... scripts/pykmip-smoke.py --port 5696 --client-cert wrong-client --expect-refused
      Exit 0 only if the server refuses that client certificate.
  ... scripts/pykmip-smoke.py --port 5697 --expect-refused
      (against a server started with --cert untrusted) exit 0 only if the
      client refuses the server certificate.

GCM note: ProxyKmipClient.encrypt() returns (data, iv) and drops the GCM
authentication tag that the server does send, and ProxyKmipClient.decrypt()
cannot send one. So Encrypt/Decrypt go through the lower-level
client.proxy.send_request_payload() with the KMIP payload classes, which keep
the tag. PyKMIP's server also requires CryptographicParameters in every
Encrypt/Decrypt request (it does not fall back to the key's attributes) and,
for GCM, a Tag Length; we send a 12-byte IV (left to itself the server would
generate a 16-byte one). The Authenticated Encryption Tag only exists on the
wire from KMIP 1.4 on: with the client's default protocol version 1.2 the
server encrypts in GCM and silently leaves the tag out of the response. Hence
--kmip-version defaults to 1.4 here.
"""

import argparse
import json
import logging
import os
import sys
import threading
import time

from kmip import enums
from kmip.core import exceptions as core_exceptions
from kmip.core import objects as core_objects
from kmip.core.messages import payloads
from kmip.pie import client as pie_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PKI = os.path.join(ROOT, "target", "kmip", "pki")

KMIP_VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0,
    "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}

PLAINTEXT = bytes(range(64))
TAG_LEN = 16


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_client(args):
    pki = args.pki
    return pie_client.ProxyKmipClient(
        hostname=args.host,
        port=args.port,
        cert=os.path.join(pki, args.client_cert + ".crt"),
        key=os.path.join(pki, args.client_cert + ".key"),
        ca=os.path.join(pki, args.ca + ".crt"),
        ssl_version="PROTOCOL_TLSv1_2",
        kmip_version=KMIP_VERSIONS[args.kmip_version],
    )


def gcm_params():
    return core_objects.CryptographicParameters(
        block_cipher_mode=enums.BlockCipherMode.GCM,
        cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
        tag_length=TAG_LEN,
    )


def gcm_encrypt(client, uid, data, iv):
    """Encrypt with AES-GCM; returns (ciphertext, tag)."""
    resp = client.proxy.send_request_payload(
        enums.Operation.ENCRYPT,
        payloads.EncryptRequestPayload(
            unique_identifier=uid,
            cryptographic_parameters=gcm_params(),
            data=data,
            iv_counter_nonce=iv,
        ),
    )
    return resp.data, resp.auth_tag


def gcm_decrypt(client, uid, data, iv, tag):
    resp = client.proxy.send_request_payload(
        enums.Operation.DECRYPT,
        payloads.DecryptRequestPayload(
            unique_identifier=uid,
            cryptographic_parameters=gcm_params(),
            data=data,
            iv_counter_nonce=iv,
            auth_tag=tag,
        ),
    )
    return resp.data


def enum_names(values):
    return [getattr(v, "name", str(v)) for v in values or []]


def smoke(args):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with make_client(args) as c:
        tls = c.proxy.socket
        log("TLS: {} {}".format(tls.version(), tls.cipher()[0]))

        dv = c.proxy.discover_versions()
        versions = [
            "{}.{}".format(v.major, v.minor) for v in dv.protocol_versions
        ]
        log("DiscoverVersions: {}".format(", ".join(versions)))

        q = c.proxy.query(query_functions=[
            enums.QueryFunction.QUERY_OPERATIONS,
            enums.QueryFunction.QUERY_OBJECTS,
            enums.QueryFunction.QUERY_SERVER_INFORMATION,
        ])
        ops = enum_names(q.operations)
        log("Query (KMIP {}): vendor={!r}; operations: {}".format(
            args.kmip_version,
            getattr(q.vendor_identification, "value", q.vendor_identification),
            ", ".join(ops)))

        uid = c.create(
            enums.CryptographicAlgorithm.AES, 256,
            name="keybridge-smoke",
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT,
                enums.CryptographicUsageMask.DECRYPT,
            ])
        log("Create AES-256: uid={}".format(uid))
        c.activate(uid)
        log("Activate: ok")

        iv = os.urandom(12)
        ct, tag = gcm_encrypt(c, uid, PLAINTEXT, iv)
        assert len(ct) == len(PLAINTEXT), "ciphertext length {}".format(len(ct))
        assert tag is not None and len(tag) == TAG_LEN, "GCM tag {!r}".format(tag)
        log("Encrypt AES-256-GCM 64 bytes: ct={}B tag={}B".format(len(ct), len(tag)))

        # Cross-check the server's GCM output with an independent AES-GCM.
        key = c.get(uid).value
        assert AESGCM(key).decrypt(iv, ct + tag, None) == PLAINTEXT
        log("Cross-check: local AESGCM decrypt of server ciphertext+tag: ok")

        assert gcm_decrypt(c, uid, ct, iv, tag) == PLAINTEXT
        log("Decrypt AES-256-GCM (server): ok")

        # What the high-level helper gives back: no tag.
        hl = c.encrypt(
            PLAINTEXT, uid=uid,
            cryptographic_parameters={
                "block_cipher_mode": enums.BlockCipherMode.GCM,
                "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
                "tag_length": TAG_LEN,
            },
            iv_counter_nonce=os.urandom(12))
        log("ProxyKmipClient.encrypt(GCM) returns {} values (data, iv); "
            "the tag is dropped".format(len(hl)))

        _, attrs = c.get_attributes(uid)
        names = sorted(a.attribute_name.value for a in attrs)
        log("Get Attributes: {} attributes: {}".format(len(names), ", ".join(names)))
        state = [a for a in attrs if a.attribute_name.value == "State"]
        if state:
            log("  State = {}".format(state[0].attribute_value.value.name))

        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        log("Revoke: ok")
        c.destroy(uid)
        log("Destroy: ok")
        try:
            c.get(uid)
        except Exception as e:  # noqa: BLE001
            log("Get after Destroy refused as expected: {}".format(
                getattr(e, "reason", e)))
        else:
            raise AssertionError("Get after Destroy succeeded")
    print("pykmip-smoke: OK ({}:{})".format(args.host, args.port))


def expect_refused(args):
    c = make_client(args)
    try:
        c.open()
        # With TLS 1.2 a rejected client certificate shows up at the latest
        # on the first read.
        c.proxy.discover_versions()
    except Exception as e:  # noqa: BLE001
        print("pykmip-smoke: refused as expected: {}: {}".format(
            type(e).__name__, e))
        return 0
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    print("pykmip-smoke: FAIL: connection with client cert {!r} / CA {!r} "
          "was NOT refused".format(args.client_cert, args.ca))
    return 1


def bench(args):
    # One key for everyone, made and activated up front.
    with make_client(args) as c:
        uid = c.create(
            enums.CryptographicAlgorithm.AES, 256, name="keybridge-bench",
            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT])
        c.activate(uid)

    n = args.connections
    clients = [make_client(args) for _ in range(n)]
    for cl in clients:
        cl.open()
        gcm_encrypt(cl, uid, PLAINTEXT, os.urandom(12))  # warm-up

    counts = [0] * n
    errors = []
    start_gate = threading.Barrier(n + 1)
    stop = threading.Event()

    def worker(i):
        cl = clients[i]
        iv = os.urandom(12)
        start_gate.wait()
        try:
            while not stop.is_set():
                gcm_encrypt(cl, uid, PLAINTEXT, iv)
                counts[i] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    time.sleep(args.bench)
    stop.set()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    for cl in clients:
        cl.close()
    if errors:
        log("bench errors: {!r}".format(errors[:3]))
        return 1

    ops = sum(counts)
    print(json.dumps({
        "ops": ops,
        "secs": round(secs, 3),
        "ops_per_sec": round(ops / secs, 1),
        "connections": n,
        "op": "Encrypt AES-256-GCM 64 bytes",
    }))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5696)
    p.add_argument("--pki", default=DEFAULT_PKI,
                   help="directory made by scripts/kmip-certs")
    p.add_argument("--client-cert", default="client",
                   help="basename in --pki of the client cert/key "
                        "(client, wrong-client)")
    p.add_argument("--ca", default="ca",
                   help="basename in --pki of the CA the client trusts")
    p.add_argument("--kmip-version", default="1.4", choices=sorted(KMIP_VERSIONS),
                   help="protocol version of the requests (GCM needs >= 1.4)")
    p.add_argument("--expect-refused", action="store_true")
    p.add_argument("--bench", type=float, metavar="SECONDS")
    p.add_argument("--connections", type=int, default=1, metavar="N")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()

    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)
    else:
        # PyKMIP's config helper forces its logger to INFO and warns that no
        # client config file exists (we pass every setting explicitly), and
        # its client logs expected refusals at ERROR: keep our output clean.
        logging.disable(logging.CRITICAL)

    if args.expect_refused:
        return expect_refused(args)
    if args.bench is not None:
        if args.bench <= 0 or args.connections < 1:
            p.error("--bench SECONDS > 0 and --connections N >= 1")
        return bench(args)
    smoke(args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (core_exceptions.KmipError, AssertionError) as e:
        print("pykmip-smoke: FAIL: {}: {}".format(type(e).__name__, e))
        sys.exit(1)
