"""Agent start-up (``oab-agent``): the contract between task definition and stock OpenAB image.

Design: init container + minimal in-image step (see ops/README.md for the trade-offs). Each agent
task has three containers sharing one task volume mounted at ``SHARED_DIR`` (``/oab``):

1. ``INIT_CONTAINER`` (controller image, ``essential: false``) runs ``init_command()``: downloads
   ``CONFIG_ARTIFACT_PATH`` to ``/oab/config.toml`` and, when ``BOOTSTRAP_FROM`` is set, downloads
   the bootstrap archive, validates it against hostile content and writes a sanitized re-packed
   ``/oab/home.tar``. Any failure exits non-zero; the agent container depends on ``SUCCESS`` so the
   task fails visibly and the deployment circuit breaker keeps the previous task.
2. ``AGENT_CONTAINER`` (the stock image, unmodified) runs ``/bin/sh -c ENTRY_SCRIPT``: extracts
   ``/oab/home.tar`` into ``$HOME`` (adds or overwrites only: files the image ships stay),
   runs ``openab run -c /oab/config.toml``, answers on-demand snapshot requests dropped in
   ``/oab/inbox`` and, on SIGTERM, forwards the signal, waits for openab, and writes a final
   ``/oab/outbox/home.tar``.
3. ``SIDECAR_CONTAINER`` (controller image, ``essential: false``) runs ``sidecar_command()``: polls
   the control-plane bucket for on-demand snapshot requests, relays them to the inbox, and
   uploads every outbox archive (denylist-filtered) to the ``bootstrapFrom`` location as a new
   object version. The agent container depends on the sidecar's ``START`` so ECS stops the agent
   first and the sidecar is still there to upload the final archive.

Invariants:
- ``config.toml`` lives outside HOME and is written last, atomically (temp + rename); it never
  enters a snapshot (the sidecar drops it again in case an older archive put one in HOME).
- Nothing from an archive reaches HOME unless it passed validation (see ``agent_archive``).
- Every file exchanged through the shared volume is published by rename, so a reader never sees a
  partial file.

Time model: the entry script polls the inbox once a second; the sidecar uses an injected
monotonic clock for its bounded waits and wall time only for the stored snapshot timestamps.
"""

from __future__ import annotations

from typing import Final

INIT_CONTAINER: Final = "oab-init"
SIDECAR_CONTAINER: Final = "oab-sidecar"
AGENT_CONTAINER: Final = "openab"
SHARED_VOLUME: Final = "oab-shared"
SHARED_DIR: Final = "/oab"

# Environment the renderer sets on the init and sidecar containers (the agent container only
# needs its secrets: everything else reaches it through the shared volume).
ENV_CONFIG_ARTIFACT: Final = "CONFIG_ARTIFACT_PATH"
ENV_BOOTSTRAP_FROM: Final = "BOOTSTRAP_FROM"
ENV_BUCKET: Final = "OAB_BUCKET"
ENV_NAMESPACE: Final = "OAB_NAMESPACE"
ENV_NAME: Final = "OAB_NAME"

# The entry script of the agent container. POSIX sh only (dash and busybox compatible): stock
# images have /bin/sh and tar but no AWS CLI. ``OAB_SHARED_DIR`` and ``OPENAB_BIN`` exist for the
# tests; the task definition leaves them unset.
ENTRY_SCRIPT: Final = r"""
set -u
oab="${OAB_SHARED_DIR:-/oab}"
openab_bin="${OPENAB_BIN:-openab}"
inbox="$oab/inbox"
outbox="$oab/outbox"
log() { echo "oab-entry: $*" >&2; }
if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ]; then
  log "HOME is unset or not a directory"; exit 64
fi
if [ ! -f "$oab/config.toml" ]; then
  log "$oab/config.toml is missing (did $oab come from the init container?)"; exit 66
fi
if [ -f "$oab/home.tar" ]; then
  # -o: never restore archived owners, even when the image runs as root.
  tar -x -o -f "$oab/home.tar" -C "$HOME" || { log "restoring $oab/home.tar failed"; exit 65; }
  log "restored $oab/home.tar into $HOME"
fi
mkdir -p "$inbox" "$outbox" 2>/dev/null || true

snapshot() {
  # $1 = final file name in the outbox. tar exit 1 means "some file changed while read",
  # which is still a usable archive; anything above is a failure.
  tmp="$outbox/.$1.tmp"
  tar -c -f "$tmp" -C "$HOME" .
  rc=$?
  if [ "$rc" -le 1 ]; then
    mv -f "$tmp" "$outbox/$1" && log "snapshot written to $outbox/$1" && return 0
  fi
  rm -f "$tmp"
  log "snapshot to $outbox/$1 failed (tar exit $rc)"
  return 1
}

wait_child() {
  # wait returns early (status > 128) when a trapped signal arrives; only trust the status
  # once the child is really gone.
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || return "$rc"
  done
}

term=0
trap 'term=1' TERM INT
"$openab_bin" run -c "$oab/config.toml" &
child=$!
log "started openab (pid $child)"
while :; do
  if [ "$term" -eq 1 ]; then
    log "SIGTERM: stopping openab and taking the final snapshot"
    kill -TERM "$child" 2>/dev/null
    wait_child
    status=$?
    snapshot home.tar
    exit "$status"
  fi
  if ! kill -0 "$child" 2>/dev/null; then
    wait_child
    status=$?
    log "openab exited with status $status"
    exit "$status"
  fi
  if [ -f "$inbox/snapshot-request" ]; then
    id=$(tr -cd 'A-Za-z0-9_.-' < "$inbox/snapshot-request")
    rm -f "$inbox/snapshot-request"
    [ -n "$id" ] || id=unnamed
    snapshot "snapshot-$id.tar"
  fi
  # A background sleep keeps the loop interruptible: wait returns as soon as TERM arrives.
  sleep 1 &
  wait $! 2>/dev/null
done
"""


def init_command() -> list[str]:
    """Command of the init container (an ``oab-agent`` subcommand in the controller image)."""
    return ["oab-agent", "init"]


def sidecar_command() -> list[str]:
    """Command of the snapshot sidecar (an ``oab-agent`` subcommand in the controller image)."""
    return ["oab-agent", "sidecar"]


def entry_command() -> list[str]:
    """``entryPoint`` of the agent container: the stock image's shell running ``ENTRY_SCRIPT``."""
    return ["/bin/sh", "-c", ENTRY_SCRIPT]
