"""``oabctl exec`` and ``oabctl cp``: a command, or a tar stream, in an agent's container.

Registered with :func:`oab.controller.cli.registry.command` when imported (listed in
:data:`oab.controller.cli.main.COMMAND_MODULES`).

Design
------
- Both commands resolve the agent the same way: its stored manifest must exist and say
  ``spec.exec: true``; the Session Manager plugin must be on ``PATH`` (its ``--version`` is read
  first, as the AWS CLI does, so no ECS session is opened that nobody could use); then
  :mod:`oab.controller.adapters.execsession` finds the running task, calls ``ExecuteCommand`` and
  builds the plugin's command line, which this module runs with the user's signals (Ctrl-C,
  Ctrl-\\, Ctrl-Z) left to the plugin, as the AWS CLI does.
- ``exec`` hands the plugin the terminal: stdin only with ``-i`` (otherwise ``/dev/null``), and
  exits with the plugin's status (the plugin does not carry the remote command's status).
- ``cp`` copies SRC *into* the directory DST (``cp -r SRC DST/`` semantics; DST is created).
  ECS Exec sessions are interactive: the plugin prints banners on stdout and the remote
  command runs on a pseudo-terminal (line discipline, echo, CRLF). So the tar travels as
  base64 lines between marker lines, never raw: an upload is read on the remote side up to an
  end marker line (no reliance on end-of-file crossing the terminal), a download is the text
  between begin and end markers with ``\\r`` dropped.
- A downloaded archive comes from a container that runs arbitrary tools: it is hostile. It is
  bounded (:data:`MAX_COPY_BYTES` of tar, :data:`MAX_MEMBERS` entries), every entry must lie
  under the copied name, no entry may lie below a symlink of the archive, and a symlink's
  target must resolve inside the copied tree. It is extracted with the standard library's
  ``data`` filter (no absolute paths, no ``..``, no devices, no links out of the destination,
  no setuid bits) into a staging directory inside DST, and only moved into place when every
  entry passed: a refused archive writes nothing. An existing directory is never merged into.

Invariants: the session token and stream URL are never printed, logged or put into an error
(registered with ``redact``; remote output quoted in errors is scrubbed). Exit codes: 0 done;
1 no such agent, exec not enabled, no running task, no plugin, a refused or failed copy; 3 AWS.

Time model: none; the commands run until the plugin exits.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from oab.controller.adapters.execsession import (
    ExecError,
    ExecNotEnabled,
    ExecTarget,
    find_target,
    open_session,
    plugin_invocation,
)
from oab.controller.adapters.store import StoredObject
from oab.controller.base.redact import scrub
from oab.controller.base.taskcontract import AGENT_CONTAINER
from oab.controller.cli.common import add_namespace, require_agent
from oab.controller.cli.context import Context
from oab.controller.cli.registry import Command, UsageError, command
from oab.controller.core.render import service_name

__all__ = [
    "INSTALL_HINT",
    "MAX_COPY_BYTES",
    "MAX_MEMBERS",
    "PLUGIN",
    "CopyError",
    "PluginMissing",
    "download_script",
    "extract_archive",
    "parse_download",
    "upload_script",
]

PLUGIN: Final = "session-manager-plugin"
INSTALL_HINT: Final = (
    "install the Session Manager plugin for the AWS CLI and put it on PATH: "
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    "session-manager-working-with-install-plugin.html"
)
#: Largest tar ``cp`` moves either way (it is held in memory, base64 adds a third on the wire).
MAX_COPY_BYTES: Final = 64 * 1024 * 1024
#: Most entries a downloaded archive may hold.
MAX_MEMBERS: Final = 100_000

_BEGIN, _END, _EOF, _DONE, _ERROR = (
    "OAB-CP-BEGIN",
    "OAB-CP-END",
    "OAB-CP-EOF",
    "OAB-CP-DONE",
    "OAB-CP-ERROR",
)
_REMOTE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*):(?P<path>.*)$")
# Signals the plugin handles for the remote session (awscli.compat.ignore_user_entered_signals).
_USER_SIGNALS = tuple(
    getattr(signal, n) for n in ("SIGINT", "SIGQUIT", "SIGTSTP") if hasattr(signal, n)
)


class PluginMissing(ExecError):
    """``session-manager-plugin`` is not on ``PATH`` (exit 1, with the install hint)."""

    reason = "PluginMissing"


class CopyError(ExecError):
    """``cp`` failed or refused what it received (exit 1); nothing was written locally."""

    reason = "CopyFailed"


# ------------------------------------------------------------------------ shared resolution
@dataclass(frozen=True, kw_only=True)
class _Prepared:
    plugin: str
    version: str
    target: ExecTarget


def _environ(ctx: Context) -> dict[str, str]:
    return dict(ctx.env if ctx.env is not None else os.environ)


def _prepare(ctx: Context, *, name: str, namespace: str, container: str) -> _Prepared:
    obj: StoredObject = require_agent(ctx.store(), namespace, name)
    agent = f"{namespace}/{name}"
    if obj.deleted:
        raise ExecError(f"agent {agent} is being deleted")
    if obj.spec.get("exec") is not True:
        raise ExecNotEnabled(
            f"ECS Exec is not enabled for agent {agent}: set spec.exec: true in its manifest "
            "and apply (the agent's task restarts once), then retry"
        )
    env = _environ(ctx)
    plugin = shutil.which(PLUGIN, path=env.get("PATH", os.defpath))
    if plugin is None:
        raise PluginMissing(f"{PLUGIN} not found on PATH: {INSTALL_HINT}")
    try:
        version = subprocess.run(
            [plugin, "--version"], capture_output=True, text=True, timeout=30, env=env, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise PluginMissing(f"{plugin} --version failed ({exc}): {INSTALL_HINT}") from exc
    target = find_target(
        ctx.client("ecs"),
        cluster=ctx.settings.cluster,
        service=service_name(namespace, name),
        container=container,
        agent=agent,
    )
    return _Prepared(plugin=plugin, version=version, target=target)


@contextlib.contextmanager
def _user_signals_to_plugin() -> Iterator[None]:
    """Leave Ctrl-C and friends to the plugin (main thread only: tests run elsewhere too)."""
    saved: list[tuple[int, Any]] = []
    try:
        for sig in _USER_SIGNALS:
            saved.append((sig, signal.signal(sig, signal.SIG_IGN)))
    except ValueError:  # not the main thread: signals are not ours to change
        pass
    try:
        yield
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _session(
    ctx: Context, prepared: _Prepared, command_line: str
) -> tuple[list[str], dict[str, str]]:
    ecs = ctx.client("ecs")
    session = open_session(ecs, prepared.target, command=command_line)
    argv, extra = plugin_invocation(
        prepared.plugin,
        session,
        prepared.target,
        version=prepared.version,
        region=str(ecs.meta.region_name),
        profile=ctx.settings.aws_profile,
        endpoint_url=str(ecs.meta.endpoint_url),
    )
    return argv, {**_environ(ctx), **extra}


def _spawn(argv: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, env=env, **kwargs)
    except OSError as exc:
        # Never the argv in the message: it may hold the session.
        raise PluginMissing(f"cannot run {PLUGIN} ({exc.strerror}): {INSTALL_HINT}") from exc


# ------------------------------------------------------------------------------------ exec
def _configure_exec(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="agent name")
    add_namespace(p)
    p.add_argument(
        "-c", "--container", default=AGENT_CONTAINER, help=f"container (default {AGENT_CONTAINER})"
    )
    p.add_argument(
        "-i", "--interactive", action="store_true", help="pass stdin to the remote command"
    )
    p.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- CMD",
        help="command after -- (default /bin/sh)",
    )


class _OptionParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"oabctl exec: {message}")


def _exec_options(ctx: Context, words: list[str]) -> list[str]:
    """The command after ``--``; options written between NAME and ``--`` are applied to ``ctx``.

    argparse hands everything after NAME to the remainder, so ``exec bot -n team -- ls`` would
    otherwise run ``-n team -- ls``.
    """
    cut = words.index("--") if "--" in words else len(words)
    head, command_words = words[:cut], words[cut + 1 :]
    if head:
        parser = _OptionParser(prog="oabctl exec", add_help=False)
        parser.add_argument("-n", "--namespace", default=ctx.args.namespace)
        parser.add_argument("-c", "--container", default=ctx.args.container)
        parser.add_argument("-i", "--interactive", action="store_true")
        opts = parser.parse_args(head)
        ctx.args.namespace, ctx.args.container = opts.namespace, opts.container
        ctx.args.interactive = ctx.args.interactive or opts.interactive
    return command_words


@command("exec", help="run a command in an agent's container (ECS Exec)", configure=_configure_exec)
def _exec(ctx: Context) -> int:
    words = _exec_options(ctx, list(ctx.args.argv))
    command_line = shlex.join(words) if words else "/bin/sh"
    prepared = _prepare(
        ctx, name=ctx.args.name, namespace=ctx.args.namespace, container=ctx.args.container
    )
    argv, env = _session(ctx, prepared, command_line)
    out_fd, err_fd = _fileno(ctx.stdout), _fileno(ctx.stderr)
    in_fd = _fileno(ctx.stdin) if ctx.args.interactive else None
    feed: bytes | None = None
    if ctx.args.interactive and in_fd is None:
        feed = ctx.stdin.read().encode()
    ctx.stdout.flush()
    ctx.stderr.flush()
    with _user_signals_to_plugin():
        proc = _spawn(
            argv,
            env,
            stdin=in_fd if in_fd is not None else (subprocess.PIPE if feed else subprocess.DEVNULL),
            stdout=out_fd if out_fd is not None else subprocess.PIPE,
            stderr=err_fd if err_fd is not None else subprocess.PIPE,
        )
        out, err = proc.communicate(feed)
    if out:
        ctx.stdout.write(scrub(out.decode(errors="replace")))
    if err:
        ctx.stderr.write(scrub(err.decode(errors="replace")))
    return int(proc.returncode)


# -------------------------------------------------------------------------------------- cp
def upload_script(dst: str) -> str:
    """The remote ``sh -c`` script of an upload: base64 lines up to the end marker -> tar -x."""
    d = shlex.quote(dst)
    return (
        f"set -e; mkdir -p -- {d}; sed -n '/^{_EOF}$/q;p' | base64 -d | tar -x -o -f - -C {d}; "
        f"echo {_DONE}"
    )


def download_script(src: str) -> str:
    """The remote ``sh -c`` script of a download: ``tar -c`` of SRC, base64, between markers."""
    parent, base = posixpath.split(src)
    p, b, s = shlex.quote(parent or "/"), shlex.quote(base), shlex.quote(src)
    return (
        f"cd -- {p} || exit 1; "
        f"[ -e {b} ] || [ -L {b} ] || "
        f'{{ echo "{_ERROR} no such file or directory: "{s}; exit 1; }}; '
        f"echo {_BEGIN}; tar -c -f - -- {b} | base64; echo {_END}"
    )


def _remote_path(path: str, *, what: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"{what}: the container path must be absolute (NAME:/path), got {path!r}")
    norm = posixpath.normpath(path)
    if norm == "/" and what == "SRC":
        raise UsageError("SRC: copying the container's whole file system is not supported")
    return norm


def _split(word: str) -> tuple[str, str] | None:
    if word.startswith(("/", "./", "../")):
        return None
    m = _REMOTE.match(word)
    return (m["name"], m["path"]) if m else None


def _tail(text: str, lines: int = 3) -> str:
    shown = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return scrub(" | ".join(s[:200] for s in shown)) or "(no output)"


def _pack(src: Path) -> bytes:
    base = _pack_name(src)
    if not base:
        raise UsageError(f"SRC: cannot copy {src}")
    buf = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym()):
            return None  # devices, FIFOs: never sent
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(src), arcname=base, recursive=True, filter=keep)
    data = buf.getvalue()
    if len(data) > MAX_COPY_BYTES:
        raise CopyError(f"{src} packs to {len(data)} bytes; cp moves at most {MAX_COPY_BYTES}")
    return data


def parse_download(output: bytes) -> bytes:
    """The tar between the markers of a download's session output (pure); :class:`CopyError`."""
    text = output.decode("utf-8", errors="replace").replace("\r", "")
    lines = text.split("\n")
    for line in lines:
        if line.startswith(_ERROR):
            raise CopyError(scrub(line[len(_ERROR) :].strip()))
    try:
        start = lines.index(_BEGIN)
        end = lines.index(_END, start + 1)
    except ValueError:
        raise CopyError(f"the container sent no archive: {_tail(text)}") from None
    payload = "".join(lines[start + 1 : end])
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        bad = next((ln for ln in lines[start + 1 : end] if re.search(r"[^A-Za-z0-9+/=]", ln)), "")
        raise CopyError(f"the container's archive is damaged: {scrub(bad[:200])}") from None
    if len(data) > MAX_COPY_BYTES:
        raise CopyError(f"the archive is larger than {MAX_COPY_BYTES} bytes")
    return data


def _check_members(members: list[tarfile.TarInfo], base: str) -> None:
    if len(members) > MAX_MEMBERS:
        raise CopyError(f"the archive holds more than {MAX_MEMBERS} entries")
    links: set[str] = set()
    for m in members:
        name = posixpath.normpath(m.name)
        if name != base and not name.startswith(base + "/"):
            raise CopyError(f"refused entry {m.name!r}: outside the copied {base!r}")
        parts = name.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise CopyError(f"refused entry {m.name!r}: below a symlink of the archive")
        if m.issym():
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if m.linkname.startswith("/") or not (
                resolved == base or resolved.startswith(base + "/")
            ):
                raise CopyError(f"refused symlink {m.name!r} -> {m.linkname!r}: leaves {base!r}")
            links.add(name)


def extract_archive(data: bytes, *, base: str, dst: Path) -> Path:
    """Extract ``data`` (a tar of ``base``) into the directory ``dst``: all or nothing.

    Returns the path written (``dst/base``). Raises :class:`CopyError` for any refused entry,
    an unreadable archive or an existing directory in the way; then nothing is written.
    """
    target = dst / base
    if target.is_dir() and not target.is_symlink():
        raise CopyError(f"{target} already exists: remove it or copy into another directory")
    dst.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".oabctl-cp-", dir=dst))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                members = tar.getmembers()
                _check_members(members, base)
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as exc:
            raise CopyError(f"refused entry: {exc}") from exc
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CopyError(f"the container's archive cannot be read: {exc}") from exc
        if not os.path.lexists(staging / base):
            raise CopyError(f"the archive does not hold {base!r}")
        if target.is_dir() and not target.is_symlink():
            raise CopyError(f"{target} already exists: remove it or copy into another directory")
        os.replace(staging / base, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _run_captured(argv: list[str], env: dict[str, str], feed: bytes | None) -> bytes:
    with _user_signals_to_plugin():
        proc = _spawn(
            argv,
            env,
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        if feed is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(feed)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the session ended early: its output says why
        out = _read_bounded(proc.stdout, limit=MAX_COPY_BYTES * 4 // 3 + 1024 * 1024)
        if out is None:
            proc.kill()
            proc.wait()
            raise CopyError(f"the container sent more than {MAX_COPY_BYTES} bytes of archive")
        proc.wait()
    return out


def _read_bounded(stream: IO[bytes], *, limit: int) -> bytes | None:
    chunks, size = [], 0
    while chunk := stream.read(1024 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _configure_cp(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="local path, or NAME:/path in the agent")
    p.add_argument("dst", metavar="DST", help="local directory, or NAME:/dir in the agent")
    add_namespace(p)
    p.add_argument(
        "-c", "--container", default=AGENT_CONTAINER, help=f"container (default {AGENT_CONTAINER})"
    )


@command(
    "cp", help="copy files into or out of an agent's container (ECS Exec)", configure=_configure_cp
)
def _cp(ctx: Context) -> int:
    src, dst = _split(ctx.args.src), _split(ctx.args.dst)
    if (src is None) == (dst is None):
        raise UsageError("cp: exactly one of SRC and DST must be NAME:/path (the agent's side)")
    if dst is not None:  # upload
        local = Path(ctx.args.src)
        if not os.path.lexists(local):
            raise CopyError(f"{local}: no such file or directory")
        name, remote = dst[0], _remote_path(dst[1], what="DST")
        data = _pack(local)
        prepared = _prepare(
            ctx, name=name, namespace=ctx.args.namespace, container=ctx.args.container
        )
        argv, env = _session(ctx, prepared, shlex.join(["/bin/sh", "-c", upload_script(remote)]))
        feed = base64.encodebytes(data) + f"{_EOF}\n".encode()
        out = _run_captured(argv, env, feed)
        text = out.decode("utf-8", errors="replace").replace("\r", "")
        if _DONE not in text.split("\n"):
            raise CopyError(f"the upload to {name}:{remote} failed: {_tail(text)}")
        ctx.progress(f"copied {local} to {name}:{posixpath.join(remote, _pack_name(local))}")
        return 0
    assert src is not None
    name, remote = src[0], _remote_path(src[1], what="SRC")
    prepared = _prepare(ctx, name=name, namespace=ctx.args.namespace, container=ctx.args.container)
    argv, env = _session(ctx, prepared, shlex.join(["/bin/sh", "-c", download_script(remote)]))
    data = parse_download(_run_captured(argv, env, None))
    written = extract_archive(data, base=posixpath.basename(remote), dst=Path(ctx.args.dst))
    ctx.progress(f"copied {name}:{remote} to {written}")
    return 0


def _pack_name(local: Path) -> str:
    return local.resolve().name if local.name in ("", ".", "..") else local.name


#: This group's commands (listed in :data:`oab.controller.cli.main.GROUPS`).
COMMANDS: tuple[Command, ...] = (_exec, _cp)
