"""A per-replica fault point: an HTTP/1.1-aware asyncio TCP proxy between one replica and AWS.

Design
------
Every replica of a chaos run reaches the emulator only through its own :class:`FaultProxy`, so
the runner can break one replica's network without touching the others, and so every request a
replica makes is seen, timed and classified at one place that the replica cannot bypass.

The proxy parses just enough HTTP/1.1 (request line, headers, ``Content-Length`` bodies; chunked or
close-delimited responses) to know, per request, the AWS service (``X-Amz-Target`` or the SigV4
credential scope), the operation, and for DynamoDB / ECS the parts of the JSON body the invariant
checker needs (table, item key, queue claim fields with the row version written and the version
its condition expects, audit row sequence, lease holder and epoch, fence epoch and position, ECS
service / family / client token / generation), and of the answer the AWS request id (so an ECS
call can be found in the audit row that lists it) and a cancelled transaction's per-item codes (so
a fence rejection is told from a row conflict). Each request becomes one :class:`Event` with two
times on the runner's monotonic clock: ``t_fwd`` (sent upstream, or ``None`` when a fault answered
it) and ``t_done`` (upstream answered). Because the emulator executes requests one at a time, an
event whose ``t_done`` precedes another's ``t_fwd`` was *executed* before it: that is the only
ordering the checker relies on.

Faults (a list of :class:`Fault` rules, first match wins, each with a probability):

- ``drop``: close the client connection without forwarding (the request never happened);
- ``reset``: forward, wait for the answer, then reset the client connection (RST) instead of
  answering: the write happened but the replica cannot know (an ambiguous write);
- ``blackhole``: hold the request unanswered until the rule is removed, then close;
- ``delay``: wait ``delay_s`` and then forward;
- ``http``: answer with a canned AWS error (``status``, ``code``: 500 InternalServerError,
  400 ThrottlingException / ProvisionedThroughputExceededException / ValidationException, 503
  ServiceUnavailable; ``message`` optional), in the JSON (DynamoDB, ECS, SSM, ...) or XML (S3)
  shape botocore parses.

A rule can be narrowed to the DynamoDB writes that put one item (``put=(table, pk)``: e.g. one
agent's commit, whose transaction puts its audit row) and limited to its first ``times``
matches on this proxy (e.g. refuse a commit once, then let the worker's next write through).

Secret watch: response bodies are searched for planted byte strings; a hit is recorded on the
event (the controller must never read a secret value).

Time model: the proxy stamps events with ``time.monotonic()`` of the runner process, shared by
every proxy of a run; nothing else is timed.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["drop", "reset", "blackhole", "delay", "http"]

_CRED_SCOPE = re.compile(rb"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_ARTIFACT_GEN = re.compile(r"artifacts/[^/]+/[^/]+/(\d+)/config\.toml")
_ECS_MUTATIONS = frozenset(
    {
        "CreateService",
        "UpdateService",
        "DeleteService",
        "RegisterTaskDefinition",
        "DeregisterTaskDefinition",
    }
)


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One fault rule; ``service="*"`` matches every service, ``op=None`` every operation."""

    action: Action
    service: str = "*"
    op: str | None = None
    probability: float = 1.0
    delay_s: float = 0.0
    status: int = 500
    code: str = "InternalServerError"
    #: ``http`` only: the error message ("" = a message naming the chaos proxy).
    message: str = ""
    #: Only requests whose parsed writes put an item with this ``(table, pk)``.
    put: tuple[str, str] | None = None
    #: At most this many matches on one proxy (``None``: unlimited).
    times: int | None = None

    def matches(self, service: str, op: str, info: dict[str, Any] | None = None) -> bool:
        """Whether this rule applies to a request (before the probability draw)."""
        if self.service not in ("*", service):
            return False
        if self.op is not None and self.op != op:
            return False
        if self.put is None:
            return True
        table, pk = self.put
        puts = (info or {}).get("puts", [])
        return any(p.get("table") == table and p.get("pk") == pk for p in puts)


@dataclass(kw_only=True)
class Event:
    """One request seen by a proxy (see the module docstring for the two times)."""

    proxy: str
    service: str
    op: str
    t_start: float
    t_fwd: float | None = None
    t_done: float | None = None
    status: int | None = None
    error: str = ""
    fault: str = ""
    delivered: bool = False
    #: The AWS request id of the answer (``x-amzn-RequestId``), "" when none came back.
    request_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    secret_hits: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The upstream executed the request and answered 200 (delivered or not)."""
        return self.status == 200

    def to_json(self) -> dict[str, Any]:
        """Plain form for the artifact file."""
        return asdict(self)


# --------------------------------------------------------------------------- request parsing
def _s(attr: Any) -> str | None:
    if isinstance(attr, dict):
        for kind in ("S", "N"):
            if kind in attr:
                return str(attr[kind])
    return None


def _item_summary(table: str, item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"table": table, "pk": _s(item.get("pk"))}
    for name in (
        "state",
        "owner",
        "claim_token",
        "generation",
        "holder",
        "epoch",
        "token",
        "version",
        "seq",
    ):
        value = _s(item.get(name))
        if value is not None:
            out[name] = value
    return out


def _put_summary(put: dict[str, Any]) -> dict[str, Any]:
    """The item summary of one Put, with the version its condition expects (queue rows)."""
    out = _item_summary(str(put.get("TableName")), put.get("Item") or {})
    expected = (put.get("ExpressionAttributeValues") or {}).get(":v")
    if expected is not None:
        out["cond_version"] = _s(expected)
    return out


def _fence_epoch(check: dict[str, Any]) -> dict[str, Any] | None:
    values = check.get("ExpressionAttributeValues") or {}
    if ":epoch" not in values:
        return None
    return {
        "table": check.get("TableName"),
        "epoch": _s(values.get(":epoch")),
        "holder": _s(values.get(":holder")),
    }


def parse_dynamodb(op: str, body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a DynamoDB request the checker needs (writes only; reads by table)."""
    info: dict[str, Any] = {}
    if op == "PutItem":
        info["puts"] = [_put_summary(body)]
        cond_values = body.get("ExpressionAttributeValues") or {}
        if ":epoch" in cond_values:
            info["cond_epoch"] = _s(cond_values[":epoch"])
    elif op == "TransactWriteItems":
        puts: list[dict[str, Any]] = []
        fences: list[dict[str, Any]] = []
        for index, action in enumerate(body.get("TransactItems") or []):
            if "Put" in action:
                puts.append(_put_summary(action["Put"]))
            elif "ConditionCheck" in action:
                fence = _fence_epoch(action["ConditionCheck"])
                if fence is not None:
                    fences.append({**fence, "index": index})
        info["puts"] = puts
        info["fences"] = fences
    elif "TableName" in body:
        info["table"] = body["TableName"]
    return info


def parse_ecs(op: str, body: dict[str, Any]) -> dict[str, Any]:
    """Target, client token and generation of an ECS mutation."""
    if op not in _ECS_MUTATIONS:
        return {}
    info: dict[str, Any] = {"mutation": True}
    if op == "CreateService":
        info["service"] = body.get("serviceName")
        info["client_token"] = body.get("clientToken")
    elif op in ("UpdateService", "DeleteService"):
        info["service"] = str(body.get("service", "")).rsplit("/", 1)[-1]
    elif op == "RegisterTaskDefinition":
        info["family"] = body.get("family")
        match = _ARTIFACT_GEN.search(json.dumps(body.get("containerDefinitions", [])))
        if match:
            info["generation"] = int(match.group(1))
    elif op == "DeregisterTaskDefinition":
        info["family"] = str(body.get("taskDefinition", "")).rsplit("/", 1)[-1].rsplit(":", 1)[0]
    return info


def classify(headers: dict[str, str], body: bytes) -> tuple[str, str, dict[str, Any]]:
    """``(service, operation, info)`` of one request."""
    target = headers.get("x-amz-target", "")
    auth = headers.get("authorization", "").encode()
    match = _CRED_SCOPE.search(auth)
    service = match.group(1).decode() if match else ""
    op = target.rsplit(".", 1)[-1] if target else ""
    if not service:
        service = "control" if not target else target.split("_", 1)[0].lower()
    if service == "s3" and not op:
        op = "s3"
    info: dict[str, Any] = {}
    if body and service in ("dynamodb", "ecs"):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            info = parse_dynamodb(op, parsed) if service == "dynamodb" else parse_ecs(op, parsed)
    return service, op, info


def error_code_of(status: int, body: bytes) -> str:
    """The AWS error code of a non-200 answer (JSON ``__type`` or XML ``<Code>``)."""
    if status == 200:
        return ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "__type" in data:
            return str(data["__type"]).rsplit("#", 1)[-1]
    except ValueError:
        pass
    match = re.search(rb"<Code>([^<]+)</Code>", body)
    return match.group(1).decode() if match else f"HTTP{status}"


def cancellation_codes(body: bytes) -> list[str]:
    """The per-item codes of a cancelled transaction (``CancellationReasons``), in item order."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    reasons = data.get("CancellationReasons") if isinstance(data, dict) else None
    return [str(r.get("Code") or "None") for r in reasons or [] if isinstance(r, dict)]


def canned_error(service: str, status: int, code: str, message: str = "") -> bytes:
    """A complete HTTP/1.1 error response in the shape botocore parses for ``service``."""
    request_id = uuid.uuid4().hex
    message = message or f"injected by chaos proxy: {code}"
    if service == "s3":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        ctype = "application/xml"
    else:
        prefix = "com.amazonaws.dynamodb.v20120810#" if service == "dynamodb" else ""
        body = json.dumps({"__type": f"{prefix}{code}", "message": message}).encode()
        ctype = "application/x-amz-json-1.0" if service == "dynamodb" else "application/json"
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"x-amzn-RequestId: {request_id}\r\nx-amz-request-id: {request_id}\r\n\r\n"
    ).encode()
    return head + body


# --------------------------------------------------------------------------------- HTTP framing
async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            out += chunk[:-2]
            if size == 0:
                return bytes(out)
    return b""


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout turns close() into a TCP reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


class FaultProxy:
    """One replica's fault point (see the module docstring). Thread-safe control methods."""

    def __init__(
        self,
        name: str,
        *,
        upstream: tuple[str, int],
        planted: Iterable[bytes] = (),
        seed: int = 0,
    ) -> None:
        self.name = name
        self._upstream = upstream
        self._planted = tuple(planted)
        self._rng = random.Random(seed)
        self._faults: tuple[Fault, ...] = ()
        self._fired: list[int] = []  # matches per rule of ``_faults`` (for ``Fault.times``)
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._released = asyncio.Event()  # recreated in the loop; see start()
        self.port = 0

    # ------------------------------------------------------------------- control (any thread)
    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the fault rules; removing a blackhole lets held requests go (closed)."""
        with self._lock:
            self._faults = tuple(faults)
            self._fired = [0] * len(self._faults)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def clear(self) -> None:
        """Remove every fault rule."""
        self.set_faults(())

    def events(self) -> list[Event]:
        """A copy of the recorded events so far."""
        with self._lock:
            return list(self._events)

    def set_planted(self, planted: Iterable[bytes]) -> None:
        """Byte strings that must never appear in a response to this replica."""
        self._planted = tuple(planted)

    # ------------------------------------------------------------------------- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen on a free loopback port, on ``loop`` (running in another thread)."""
        self._loop = loop
        fut = asyncio.run_coroutine_threadsafe(self._start(), loop)
        fut.result(timeout=10)

    async def _start(self) -> None:
        self._released = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 24)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop listening (open connections end with the loop)."""
        if self._loop is None or self._server is None:
            return
        server = self._server

        async def _close() -> None:
            server.close()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)

    def _wake(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    # ---------------------------------------------------------------------------- serving
    def pick(self, service: str, op: str, info: dict[str, Any]) -> Fault | None:
        """The fault to apply to one request, or ``None``: the first rule that matches and is
        not spent decides, by its probability; a rule that fires counts towards its ``times``."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if not fault.matches(service, op, info):
                    continue
                if fault.times is not None and self._fired[index] >= fault.times:
                    continue  # spent: the next rule (or none) decides
                if self._rng.random() >= fault.probability:
                    return None
                self._fired[index] += 1
                return fault
        return None

    def _blackholed(self, service: str, op: str) -> bool:
        with self._lock:
            return any(f.action == "blackhole" and f.matches(service, op) for f in self._faults)

    def _record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                _, headers = _headers(head)
                if headers.get("expect", "").lower() == "100-continue":
                    # botocore waits for this before sending an S3 body; the proxy answers it
                    # itself and strips the header upstream.
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await _read_body(reader, headers)
                keep = await self._one(head, headers, body, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    async def _one(
        self, head: bytes, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        service, op, info = classify(headers, body)
        event = Event(proxy=self.name, service=service, op=op, t_start=time.monotonic(), info=info)
        self._record(event)
        fault = self.pick(service, op, info)
        if fault is not None:
            event.fault = fault.action
            if fault.action == "drop":
                writer.close()
                return False
            if fault.action == "blackhole":
                while self._blackholed(service, op):
                    await self._released.wait()
                writer.close()
                return False
            if fault.action == "http":
                event.status = fault.status
                event.error = fault.code
                writer.write(canned_error(service, fault.status, fault.code, fault.message))
                await writer.drain()
                event.delivered = True
                return True
            if fault.action == "delay":
                await asyncio.sleep(fault.delay_s)
        answer = await self._forward(head, body, event)
        if answer is None:
            writer.close()
            return False
        if fault is not None and fault.action == "reset":
            _rst(writer)
            return False
        writer.write(answer)
        await writer.drain()
        event.delivered = True
        return True

    async def _forward(self, head: bytes, body: bytes, event: Event) -> bytes | None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream, limit=1 << 24)
        except OSError as exc:
            event.error = f"upstream: {exc}"
            return None
        try:
            # One upstream connection per request keeps the framing trivial and the ordering clear.
            lines = head.decode("latin-1").split("\r\n")
            kept = [
                ln
                for ln in lines[1:]
                if ln and not ln.lower().startswith(("connection:", "keep-alive:", "expect:"))
            ]
            request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
            event.t_fwd = time.monotonic()
            up_writer.write(request + body)
            await up_writer.drain()
            resp_head = await _read_head(up_reader)
            if resp_head is None:
                event.error = "upstream closed"
                return None
            status_line, resp_headers = _headers(resp_head)
            if "content-length" in resp_headers or "transfer-encoding" in resp_headers:
                resp_body = await _read_body(up_reader, resp_headers)
            else:
                resp_body = await up_reader.read()
            event.t_done = time.monotonic()
            event.status = int(status_line.split()[1])
            event.request_id = resp_headers.get("x-amzn-requestid", "")
            event.error = error_code_of(event.status, resp_body)
            if event.error == "TransactionCanceledException":
                event.info["cancellation"] = cancellation_codes(resp_body)
            for planted in self._planted:
                if planted in resp_body:
                    event.secret_hits.append(planted.decode(errors="replace"))
            # Re-frame the answer with a Content-Length so the client may keep its connection.
            out_lines = [
                ln
                for ln in resp_head.decode("latin-1").split("\r\n")[1:]
                if ln
                and not ln.lower().startswith(
                    ("content-length:", "transfer-encoding:", "connection:")
                )
            ]
            framed = "\r\n".join(
                [status_line, *out_lines, f"Content-Length: {len(resp_body)}", "", ""]
            )
            return framed.encode("latin-1") + resp_body
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            event.error = f"upstream: {type(exc).__name__}"
            return None
        finally:
            up_writer.close()


class ProxyLoop:
    """The asyncio loop (on one daemon thread) that serves every proxy of a run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-proxy", daemon=True
        )
        self._thread.start()

    def proxy(
        self, name: str, *, upstream: tuple[str, int], planted: Iterable[bytes] = (), seed: int = 0
    ) -> FaultProxy:
        """Start a new proxy on this loop."""
        proxy = FaultProxy(name, upstream=upstream, planted=planted, seed=seed)
        proxy.start(self.loop)
        return proxy

    def close(self) -> None:
        """Cancel open connections, stop the loop and its thread."""

        async def _cancel() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_cancel(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            self.loop.close()
