"""The embedded local AWS: moto's server with every request serialized.

Design
------
moto's stock server handles each connection on its own thread with no lock around the
DynamoDB or S3 backends. Measured on these machines (``../shared/reference/local-aws.md``), that
loses acknowledged writes when transactions run concurrently and occasionally lets two
conditional writers win. Every high-availability result of this project would be meaningless on
such a store, so this module serves moto's WSGI application behind **one global lock**: the
server still accepts connections on many threads (a slow client cannot stall the accept loop),
but exactly one request is inside moto at any moment, response body included.

The server always runs in its own process (``python -m oab.controller.local.emulator``) so that test
processes, replica processes and the CLI all reach it over loopback exactly as they would reach
AWS, through ``AWS_ENDPOINT_URL``. It binds 127.0.0.1 only.

With ``--dataplane`` (``start(dataplane=True)``) the same process also runs the simulated ECS
data plane of :mod:`oab.controller.local.dataplane` behind the same lock, and serves its control
API under ``/_oab/dataplane/``.

moto backs every ``TransactWriteItems`` up by deep-copying each table it touches, so a commit's
cost grows with the size of the run log and the status table (quadratic over a long run: 1,000
agents slowed to 0.1 reconciles/s). :func:`_item_level_transaction_undo` replaces that backup with
one of the items the transaction names (each item may appear once in a transaction, so their
prior values are the whole undo); the all-or-nothing outcome is unchanged and tested.

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

#: Credentials and region that make boto3 happy against the emulator. Never real secrets.
LOCAL_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # the emulator's well-known dummy value
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

_READY_PREFIX = "OAB-LOCALAWS-LISTENING "


def _item_level_transaction_undo() -> None:
    """Back transactions up item by item instead of table by table (see the module doc)."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    if getattr(models.DynamoDBBackend.transact_write_items, "_oab_item_undo", False):
        return

    class _NoTableCopies:
        """Stands in for ``copy`` in moto's module: tables are no longer copied for backup."""

        @staticmethod
        def deepcopy(obj: Any, memo: Any = None) -> Any:
            return obj if isinstance(obj, Table) else copy.deepcopy(obj, memo)

    models.copy = _NoTableCopies  # type: ignore[assignment,attr-defined]
    stock = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items[:100]:
            try:
                ((op_type, op),) = entry.items()
                table = self.get_table(op["TableName"])
                if op_type == "Put":
                    names = [table.hash_key_attr, table.range_key_attr]
                    key = {n: op["Item"][n] for n in names if n is not None}
                else:
                    key = op["Key"]
                before = self.get_item(op["TableName"], key)
            except Exception:  # malformed: moto rejects it before writing anything
                continue
            undo.append((op["TableName"], key, before.to_json()["Attributes"] if before else None))
        try:
            stock(self, transact_items)
        except Exception:
            for table_name, key, attrs in reversed(undo):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise

    transact_write_items._oab_item_undo = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _read_body_first(environ: dict[str, Any]) -> None:
    """Read the request body before the lock is taken, and serve it from memory.

    A client stopped (SIGSTOP, as the chaos tests do) between sending a request's headers and
    its body would otherwise hold the one lock while the server waits for the body: every other
    client, the one that must depose the stopped leader included, would wait with it.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > 0:
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))


def _serialized_app(*, dataplane: bool = False) -> Callable[..., Iterable[bytes]]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    _item_level_transaction_undo()

    inner = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()
    sim = None
    if dataplane:
        # The simulated ECS data plane shares the request lock, so its changes are atomic with
        # every API request (see oab.controller.local.dataplane).
        from oab.controller.local.dataplane import CONTROL_PREFIX, DataPlane

        sim = DataPlane(lock)
        sim.install()
        sim.start()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if sim is not None and path.startswith(CONTROL_PREFIX):
            return sim.handle_control(environ, start_response)
        _read_body_first(environ)
        with lock:
            # Materialise the body inside the lock: moto may build it lazily from shared state.
            body = list(inner(environ, start_response))
            if sim is not None and path == "/moto-api/reset":
                sim.on_reset()
            return body

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    out: IO[str] | None = None,
    dataplane: bool = False,
) -> None:
    """Serve the serialized emulator until SIGTERM/SIGINT; prints the bound port first.

    ``dataplane`` also runs the simulated ECS data plane (``oab.controller.local.dataplane``).
    """
    from werkzeug.serving import make_server

    server = make_server(host, port, _serialized_app(dataplane=dataplane), threaded=True)
    bound = server.server_address[1]
    stream = out or sys.stdout
    stream.write(f"{_READY_PREFIX}{bound}\n")
    stream.flush()

    def _stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.serve_forever()


@dataclass
class LocalAWS:
    """A running emulator process and the environment that points clients at it."""

    endpoint: str
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the emulator listens on."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 at this emulator."""
        return {**LOCAL_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def apply_env(self) -> None:
        """Export :meth:`env` into this process's environment."""
        os.environ.update(self.env())

    def reset(self) -> None:
        """Drop every resource in every emulated service (moto's reset API)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    def healthy(self) -> bool:
        """True when the emulator answers its data endpoint."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=5) as r:
                json.loads(r.read() or b"{}")
            return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the emulator process (no-op for an emulator this handle did not start)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def __enter__(self) -> LocalAWS:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start(*, port: int = 0, startup_timeout: float = 60.0, dataplane: bool = False) -> LocalAWS:
    """Start the serialized emulator in a child process and wait until it answers.

    ``dataplane`` runs the simulated ECS data plane inside it (control API:
    ``oab.controller.local.dataplane.DataPlaneControl(handle.endpoint)``).
    """
    env = {**os.environ, **LOCAL_ENV}
    env.pop("AWS_ENDPOINT_URL", None)
    argv = [sys.executable, "-m", "oab.controller.local.emulator", "--port", str(port)]
    argv += ["--exit-with-parent", str(os.getpid())]
    if dataplane:
        argv.append("--dataplane")
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + startup_timeout
    bound: int | None = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"local AWS exited with code {proc.returncode} before listening")
            continue
        if line.startswith(_READY_PREFIX):
            bound = int(line[len(_READY_PREFIX) :].strip())
            break
    if bound is None:
        proc.kill()
        raise RuntimeError(f"local AWS did not start within {startup_timeout:.0f} s")
    # Keep draining stdout so the child never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    handle = LocalAWS(endpoint=f"http://127.0.0.1:{bound}", process=proc)
    while not handle.healthy():
        if time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError("local AWS is listening but does not answer")
        time.sleep(0.05)
    return handle


def main(argv: list[str] | None = None) -> None:
    """``python -m oab.controller.local.emulator [--port N] [--dataplane]``: serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--dataplane", action="store_true", help="simulate ECS tasks and deployments"
    )
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        metavar="PID",
        help="exit once PID is no longer this process's parent (start() passes its own pid)",
    )
    args = parser.parse_args(argv)
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    if args.exit_with_parent is not None:
        threading.Thread(
            target=_exit_when_orphaned, args=(args.exit_with_parent,), daemon=True
        ).start()
    serve(args.host, args.port, dataplane=args.dataplane)


def _exit_when_orphaned(parent: int) -> None:
    """Exit once ``parent`` is no longer this process's parent.

    A SIGKILLed parent (an interrupted test run) cannot clean up; the emulator is then
    re-parented and notices within half a second. The pid comes from the parent itself, so a
    parent that died while the emulator was still starting is noticed too.
    """
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    main()
