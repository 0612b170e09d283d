#!/usr/bin/env python3
"""An in-memory `wasmcloud:keyvalue` provider plugin for Sigil, in Python.

It speaks the plugin wire format version 2 (the Rust reference is
providers/src/plugin/wire.rs and serve.rs) with only nats-py, nkeys/PyNaCl and msgpack.
It serves Get, Set (with its TTL), Delete, Exists and Increment; any other operation
fails and names it. Every key is stored under its link's prefix: the link's `prefix`
config, or else the calling actor's public key and a colon, so no actor sees another's.

Configuration, from the environment like the Rust SDK's `PluginConfig::from_env`:
SIGIL_NATS_URL, SIGIL_LATTICE, SIGIL_PROVIDER_SEED or SIGIL_PROVIDER_SEED_FILE,
SIGIL_PROVIDER_CLAIMS (a token, or a file holding it), SIGIL_CLUSTER_ISSUERS.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import sys
import time
import uuid

import msgpack
import nacl.exceptions
import nacl.signing
import nats
import nkeys

WIRE_VERSION = 2
CONTRACT = "wasmcloud:keyvalue"
QUEUE_GROUP = "sigil-provider"
CLOCK_SKEW_MS = 30_000  # how far apart the host's and the plugin's clocks may be
SEEN_LIMIT = 1 << 20  # most envelope IDs remembered against replay
MAX_KEY_BYTES = 1024
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# nkeys prefix bytes: a public key starts with one (C cluster, V service); a seed with
# two, packing S and the key's kind.
PREFIX_SEED, PREFIX_CLUSTER, PREFIX_SERVICE = 18 << 3, 2 << 3, 21 << 3
SERVICE_SEED = bytes([PREFIX_SEED | PREFIX_SERVICE >> 5, (PREFIX_SERVICE & 31) << 3])


class Fatal(Exception):
    """The plugin cannot start."""


class Refused(Exception):
    """A request whose envelope does not pass (answered with kind `refused`)."""


class Failed(Exception):
    """The provider failed the request; the text is for the actor (kind `failed`)."""


def log(text):
    print(f"kv_plugin: {text}", file=sys.stderr, flush=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    """Unpadded base64url, as strictly as the Rust side: no padding, no other alphabet."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # ValueError if bad
    if b64url(raw) != text:  # Python's decoder skips stray characters: refuse them
        raise ValueError("not canonical base64url")
    return raw


def body_hash(body):
    return hashlib.sha256(body).hexdigest().upper()  # upper-case hex, as the envelope has it


def now_ms():
    return time.time_ns() // 1_000_000


def decode_nkey(text, header, what):
    """An nkey's 32 raw bytes. An nkey is RFC 4648 base32 without padding of its prefix
    byte(s), the 32 key bytes, and a CRC16 (little-endian) of all that comes before."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise Fatal(f"{what} is not a valid nkey (not base32)") from None
    body, crc = raw[:-2], raw[-2:]
    if len(body) != len(header) + 32 or nkeys.crc16(body) != int.from_bytes(crc, "little"):
        raise Fatal(f"{what} is not a valid nkey (bad length or checksum)")
    if body[: len(header)] != header:
        raise Fatal(f"{what} is not the right kind of nkey")
    return body[len(header) :]


def service_public_key(verify_key):
    body = bytes([PREFIX_SERVICE]) + bytes(verify_key)
    crc = nkeys.crc16(body).to_bytes(2, "little")
    return base64.b32encode(body + crc).decode().rstrip("=")


# What serde requires of the JSON objects on the wire: each field and its check. Unknown
# fields are ignored; a field in OPTIONAL may be absent and then takes that default.
def _str(v):
    return isinstance(v, str)


def _uint(bits):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**bits


def _int64(v):
    return isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX


ACTOR = {"subject": _str, "name": _str, "issuer": _str,
         "caps": lambda v: isinstance(v, list) and all(map(_str, v))}
ENVELOPE = {"v": _uint(32), "kind": lambda v: v in ("invoke", "link.put", "link.del"),
            "actor": ACTOR, "contract": _str, "link": _str, "operation": _str,
            "hash": _str, "deadline_ms": _uint(64), "lattice": _str, "subject": _str}
CLAIMS = {"jti": _str, "iat": _uint(64), "exp": _uint(64), "iss": _str, "sub": _str,
          "sigil": ENVELOPE}
LINK = {"actor": ACTOR, "contract": _str, "link": _str, "provider": _str,
        "config": lambda v: isinstance(v, dict) and all(map(_str, [*v, *v.values()]))}
# `lattice` and `subject` default to "" so that a version 1 envelope, which lacks them,
# is refused for its version rather than as malformed.
OPTIONAL = {"operation": "", "provider": "", "config": {}, "lattice": "", "subject": ""}


def conform(value, schema):
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    out = {}
    for name, check in schema.items():
        if name not in value and name in OPTIONAL:
            out[name] = OPTIONAL[name]
        elif name not in value:
            raise ValueError(f"missing field `{name}`")
        elif isinstance(check, dict):
            out[name] = conform(value[name], check)
        elif check(value[name]):
            out[name] = value[name]
        else:
            raise ValueError(f"invalid value for field `{name}`")
    return out


def part(text, what):
    """One part of the envelope token, decoded, or a refusal that names it."""
    try:
        return unb64url(text)
    except ValueError:
        raise Refused(f"the envelope's {what} is not base64url") from None


def refusal_jti(token):
    """The envelope ID a refusal is signed for: the `jti` the token claims, read without
    checking anything (the refusal may be about the signature), or "" when there is no
    readable one. The host accepts only a refusal signed for its own request's ID."""
    try:
        jti = json.loads(unb64url(token.split(".")[1]))["jti"]
    except (AttributeError, IndexError, ValueError, KeyError, TypeError):
        return ""
    if not isinstance(jti, str) or len(jti) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]*", jti):
        return ""
    return jti


class Verifier:
    """Checks envelopes exactly as the Rust `EnvelopeVerifier::verify` does, in its order."""

    def __init__(self, own_key, lattice, issuers):
        self.own_key, self.lattice, self.seen, self.trusted = own_key, lattice, {}, {}
        for issuer in issuers:
            if not issuer.startswith("C"):
                raise Fatal(f"{issuer} is not a cluster public key (they start with C)")
            raw = decode_nkey(issuer, bytes([PREFIX_CLUSTER]), issuer)
            self.trusted[issuer] = nacl.signing.VerifyKey(raw)
        if not self.trusted:
            raise Fatal("no cluster issuers are trusted: name at least one host cluster key")

    def verify(self, token, kind, subject, body):
        if token is None:
            raise Refused("the request carries no Sigil-Invocation envelope")
        parts = token.split(".")
        if len(parts) != 3:
            raise Refused("the envelope is not a three-part token")
        head, segment, sig = parts
        try:
            header = json.loads(part(head, "header"))
        except ValueError:
            raise Refused("the envelope's header is not JSON") from None
        if not isinstance(header, dict) or header.get("alg") != "Ed25519":
            raise Refused("the envelope is not signed with Ed25519")
        try:
            claims = conform(json.loads(part(segment, "claims")), CLAIMS)
        except ValueError as e:
            raise Refused(f"the envelope's claims are not valid: {e}") from None
        issuer = self.trusted.get(claims["iss"])
        if issuer is None:
            raise Refused(f"the envelope is signed by {claims['iss']}, which is not a "
                          "trusted host cluster key")
        sig = part(sig, "signature")
        try:
            # The signature covers `<header>.<claims>` exactly as sent, as in any JWT.
            issuer.verify(f"{head}.{segment}".encode(), sig)
        except nacl.exceptions.CryptoError:  # BadSignatureError, or a wrong length
            raise Refused("the envelope's signature does not verify (forged or altered)") \
                from None
        env = claims["sigil"]
        if claims["sub"] != self.own_key:
            raise Refused(f"the envelope is meant for {claims['sub']}, not this plugin "
                          f"({self.own_key})")
        if env["v"] != WIRE_VERSION:
            raise Refused(f"wire version {env['v']} is not supported (this plugin speaks "
                          f"{WIRE_VERSION})")
        if env["lattice"] != self.lattice:
            raise Refused(f"the envelope is for lattice {env['lattice']!r}, not "
                          f"{self.lattice!r} (replayed from another lattice)")
        if env["kind"] != kind:
            raise Refused(f"the envelope is for a {env['kind']} request, not {kind}")
        if env["subject"] != subject:
            raise Refused(f"the envelope is for subject {env['subject']}, not {subject} "
                          "(replayed to another subject)")
        if env["hash"] != body_hash(body):
            raise Refused("the body does not match the envelope's hash (altered in transit)")
        now = now_ms()
        # The envelope's deadline_ms decides expiry; its `exp` claim is not checked.
        if now > env["deadline_ms"] + CLOCK_SKEW_MS:
            raise Refused("the envelope expired (its caller stopped waiting)")
        if claims["iat"] * 1000 > now + CLOCK_SKEW_MS:
            raise Refused("the envelope was issued in the future (check the clocks)")
        if len(self.seen) >= SEEN_LIMIT:  # forget IDs that could no longer pass anyway
            self.seen = {j: until for j, until in self.seen.items() if until >= now}
            if len(self.seen) >= SEEN_LIMIT:
                raise Refused("too many envelopes in flight to check for replays")
        if claims["jti"] in self.seen:
            raise Refused(f"the envelope {claims['jti']} was used before (a replay)")
        self.seen[claims["jti"]] = env["deadline_ms"] + CLOCK_SKEW_MS
        return claims


class Store:
    """Plain values by full (prefixed) key, each with its expiry (monotonic) or None."""

    def __init__(self):
        self.entries = {}

    def get(self, key):
        value, expires = self.entries.get(key, (None, None))
        if expires is not None and expires <= time.monotonic():
            del self.entries[key]
            return None
        return value

    def dispatch(self, prefix, op, payload):
        """One call of the contract (docs/contracts.md): its MessagePack request in, its
        MessagePack response out, encoded as the Rust provider does (bare values)."""
        if op not in ("Get", "Set", "Delete", "Exists", "Increment"):
            raise Failed(f"{CONTRACT} has no operation `{op}`")
        try:  # a map keyed by field name; one value, no trailing bytes
            req = msgpack.unpackb(payload, raw=False)
        except Exception as e:  # msgpack raises several types: all mean a bad payload
            raise Failed(f"invalid {op} request: {e}") from None
        if not isinstance(req, dict):
            raise Failed(f"invalid {op} request: expected a map keyed by field name")
        name = req.get("key", "")
        if not isinstance(name, str):
            raise Failed(f"invalid {op} request: `key` is not a string")
        if not name or len(name.encode()) > MAX_KEY_BYTES:
            raise Failed(f"invalid {op} request: the key is empty or longer than "
                         f"{MAX_KEY_BYTES} bytes")
        key = prefix + name
        if op == "Get":
            return msgpack.packb(self.get(key))  # bin, or nil for a missing key
        if op == "Exists":
            return msgpack.packb(self.get(key) is not None)
        if op == "Delete":
            existed = self.get(key) is not None
            self.entries.pop(key, None)
            return msgpack.packb(existed)
        if op == "Set":
            value, ttl = req.get("value", b""), req.get("ttl_seconds")
            if isinstance(value, list) and all(_uint(8)(b) for b in value):
                value = bytes(value)  # decoders also accept bytes as an array of integers
            if not isinstance(value, bytes):
                raise Failed("invalid Set request: `value` is not bytes")
            if ttl is not None and (not _uint(32)(ttl) or ttl == 0):
                raise Failed("invalid Set request: ttl_seconds must be a positive number of "
                             "seconds, or nil to keep the key")
            self.entries[key] = (value, None if ttl is None else time.monotonic() + ttl)
            return b""  # an empty response is a zero-length payload
        delta = req.get("delta", 0)  # Increment
        if not _int64(delta):
            raise Failed("invalid Increment request: `delta` is not a 64-bit integer")
        current = self.get(key)  # a missing key counts as 0
        text = "0" if current is None else current.decode("ascii", "replace")
        # A counter is the canonical decimal form of an i64, as Redis keeps it: no `+`,
        # no leading zeros, no spaces.
        if len(text) > 20 or not re.fullmatch(r"-?[0-9]+", text) or \
                str(int(text)) != text or not _int64(int(text)):
            raise Failed(f"Increment: key `{name}` does not hold a decimal integer, so it "
                         "cannot be incremented")
        total = int(text) + delta
        if not _int64(total):
            raise Failed(f"Increment: key `{name}` would go past the range of a 64-bit "
                         "signed integer")
        expires = self.entries.get(key, (None, None))[1]  # an increment keeps the expiry
        self.entries[key] = (str(total).encode(), expires)
        return msgpack.packb(total)  # a bare i64


class Plugin:
    def __init__(self, nc, signing_key, claims, verifier):
        self.nc, self.key, self.claims, self.verifier = nc, signing_key, claims, verifier
        self.instance = uuid.uuid4().hex  # a new ID per process, so hosts see restarts
        self.links = {}  # (actor key, link name) -> key prefix
        self.store = Store()

    def sign_answer(self, jti, body, outcome):
        # Every answer is signed over `answer.<jti>.<HEX SHA-256 of body>.<ok|error kind>`.
        text = f"answer.{jti}.{body_hash(body)}.{outcome}"
        return b64url(self.key.sign(text.encode()).signature)

    async def reply(self, msg, body, headers=None):
        if msg.reply:
            await self.nc.publish(msg.reply, body, headers=headers)

    async def answer(self, msg, jti, body):
        await self.reply(msg, body, {"Sigil-Response": self.sign_answer(jti, body, "ok")})

    async def refuse(self, msg, kind, text, jti=None):
        if jti is None:  # the envelope did not pass: sign for the ID it claims, if any
            jti = refusal_jti(self.token(msg))
        if kind == "refused":
            log(f"refused {msg.subject.split('.', 4)[-1]}: {text}")  # invoke, link.put, ...
        body = text.encode()
        await self.reply(msg, body, {"Sigil-Error": kind,
                                     "Sigil-Response": self.sign_answer(jti, body, kind)})

    @staticmethod
    def token(msg):
        # nats-py keeps only the last value of a repeated header, so a request with two
        # Sigil-Invocation headers cannot be told apart here. That is safe: the token read
        # is checked in full, and the plugin acts only on what it signs.
        return (msg.headers or {}).get("Sigil-Invocation")

    def check(self, msg, kind):
        return self.verifier.verify(self.token(msg), kind, msg.subject, msg.data)

    async def on_identify(self, msg):
        try:
            # Sign `identify.<nonce>` (UTF-8): the prefix keeps a challenge from ever being
            # the text of an answer, so no one can get an answer signed by asking.
            nonce = f"identify.{json.loads(msg.data)['nonce']}".encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            return await self.refuse(msg, "refused", "malformed identity challenge")
        answer = {"version": WIRE_VERSION, "claims": self.claims,
                  "signature": b64url(self.key.sign(nonce).signature), "instance": self.instance}
        await self.reply(msg, json.dumps(answer).encode())  # no signed headers here

    async def on_link(self, msg):
        # One subscription for link.put and link.del, so a removal never overtakes its
        # addition (separate subscriptions run in separate tasks in nats-py).
        kind = "link." + msg.subject.rsplit(".", 1)[-1]
        if kind not in ("link.put", "link.del"):
            return await self.refuse(msg, "refused", f"no such request {kind}")
        try:
            claims = self.check(msg, kind)
        except Refused as e:
            return await self.refuse(msg, "refused", str(e))
        jti, env = claims["jti"], claims["sigil"]
        try:
            link = conform(json.loads(msg.data), LINK)
        except ValueError as e:
            return await self.refuse(msg, "failed", f"malformed link: {e}", jti)
        if any(link[f] != env[f] for f in ("actor", "contract", "link")):
            return await self.refuse(msg, "refused", "the link does not match its envelope",
                                     jti)
        if link["contract"] != CONTRACT:
            return await self.refuse(msg, "failed", f"this plugin serves {CONTRACT}, not "
                                     f"{link['contract']}", jti)
        key = (link["actor"]["subject"], link["link"])
        self.links.pop(key, None)
        if kind == "link.put":
            unknown = sorted(set(link["config"]) - {"prefix"})
            if unknown:
                return await self.refuse(msg, "failed", f"invalid configuration: unknown key "
                                         f"`{unknown[0]}`; this provider reads `prefix`", jti)
            self.links[key] = link["config"].get("prefix", "").strip() or f"{key[0]}:"
        await self.answer(msg, jti, b"")

    async def on_invoke(self, msg):
        try:
            claims = self.check(msg, "invoke")
        except Refused as e:
            return await self.refuse(msg, "refused", str(e))
        env = claims["sigil"]
        prefix = self.links.get((env["actor"]["subject"], env["link"]))
        if prefix is None:  # restarted, say: the host sends the link and tries again
            return await self.refuse(msg, "unknown-link", f"no link `{env['link']}` for actor "
                                     f"{env['actor']['subject']} on this plugin", claims["jti"])
        try:
            response = self.store.dispatch(prefix, env["operation"], msg.data)
        except Failed as e:
            return await self.refuse(msg, "failed", str(e), claims["jti"])
        await self.answer(msg, claims["jti"], response)

    async def on_health(self, msg):
        await self.reply(msg, json.dumps({"healthy": True}).encode())


def setting(name):
    value = os.environ.get(name, "")
    return value if value.strip() else None


def read(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise Fatal(f"cannot read {what} {path}: {e}") from None


async def main():
    seed = setting("SIGIL_PROVIDER_SEED")
    if seed is None and setting("SIGIL_PROVIDER_SEED_FILE"):
        seed = read(setting("SIGIL_PROVIDER_SEED_FILE"), "SIGIL_PROVIDER_SEED_FILE")
    if seed is None:
        raise Fatal("set SIGIL_PROVIDER_SEED (or SIGIL_PROVIDER_SEED_FILE) to the plugin's "
                    "service seed (SV...)")
    # nkeys 0.2.1 rejects service (SV...) seeds, so the seed is decoded here.
    key = nacl.signing.SigningKey(decode_nkey(seed.strip(), SERVICE_SEED, "the provider seed"))
    me = service_public_key(key.verify_key)
    claims = setting("SIGIL_PROVIDER_CLAIMS")
    if claims is None:
        raise Fatal("set SIGIL_PROVIDER_CLAIMS to the plugin's provider claims (a token, or a "
                    "file holding it)")
    if not claims.lstrip().startswith("ey"):
        claims = read(claims.strip(), "SIGIL_PROVIDER_CLAIMS")
    claims = claims.strip()
    issuers = setting("SIGIL_CLUSTER_ISSUERS")
    if issuers is None:
        raise Fatal("set SIGIL_CLUSTER_ISSUERS to the cluster keys (C...) of the hosts to serve")
    lattice = setting("SIGIL_LATTICE") or "default"
    verifier = Verifier(me, lattice, [s.strip() for s in issuers.split(",") if s.strip()])
    try:  # our own claims, unverified: the host verifies them against its policy
        own = json.loads(unb64url(claims.split(".")[1]))
        subject, capid = own["sub"], (own.get("wascap") or {}).get("capid", "")
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        raise Fatal("the provider claims cannot be read") from None
    if subject != me:
        raise Fatal(f"the provider claims are for {subject}, but this plugin's key is {me}")
    if capid != CONTRACT:
        raise Fatal(f"the provider claims name the contract {capid!r}, but the provider "
                    f"serves {CONTRACT}")
    url = setting("SIGIL_NATS_URL") or "nats://127.0.0.1:4222"
    stop = asyncio.Event()

    async def closed():
        stop.set()

    async def nats_error(e):
        log(f"NATS: {e!r}")

    try:  # fail soon when NATS is down at start, as the Rust SDK does ...
        nc = await nats.connect(url, name=f"sigil-plugin-{me}", connect_timeout=5,
                                max_reconnect_attempts=1, reconnect_time_wait=0.2,
                                error_cb=nats_error, closed_cb=closed)
    except Exception as e:
        raise Fatal(f"cannot connect to NATS at {url}: {e}") from None
    # ... but once joined, reconnect for as long as it takes. nats-py applies the same
    # settings to the first connection and to reconnections, so they change in place.
    nc.options.update(max_reconnect_attempts=-1, reconnect_time_wait=2)
    plugin = Plugin(nc, key, claims, verifier)
    base = f"sigil.{lattice}.prov.{me}"
    try:
        await nc.subscribe(f"{base}.identify", cb=plugin.on_identify)
        await nc.subscribe(f"{base}.link.*", cb=plugin.on_link)
        # Replicas of a plugin share the calls through the queue group.
        await nc.subscribe(f"{base}.invoke", queue=QUEUE_GROUP, cb=plugin.on_invoke)
        await nc.subscribe(f"{base}.health", queue=QUEUE_GROUP, cb=plugin.on_health)
        # Announce (re)starts, so hosts prove us again and send their links.
        hello = {"key": me, "instance": plugin.instance}
        await nc.publish(f"sigil.{lattice}.prov.hello", json.dumps(hello).encode())
        await nc.flush()
    except Exception as e:  # an invalid lattice name, or NATS gone already
        await nc.close()
        raise Fatal(f"cannot join the lattice {lattice!r} on {url}: {e}") from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"serving {CONTRACT} as {me} on lattice {lattice}")
    await stop.wait()
    log("stopping")
    if not nc.is_closed:
        await nc.drain()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Fatal as e:
        log(f"error: {e}")
        sys.exit(1)
