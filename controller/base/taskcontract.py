"""The task contract: what the renderer puts in an agent's task and the in-task program reads.

Design
------
An agent task has three containers sharing one task volume mounted at :data:`SHARED_DIR`
(``/oab``); the renderer (:mod:`oab.controller.core.render`) writes the task definition and the
in-task program (:mod:`oab.controller.agent`, the ``oab-agent`` command of the controller image)
runs two of the containers. Both sides read the names below, so they cannot drift:

1. :data:`INIT_CONTAINER` (controller image, ``essential: false``) runs :func:`init_command`:
   fetches :data:`ENV_CONFIG_ARTIFACT` and checks it against :data:`ENV_CONFIG_SHA256`, restores
   the :data:`ENV_BOOTSTRAP_FROM` archive, writes ``/oab/config.toml``.
2. :data:`AGENT_CONTAINER` (the stock OpenAB image, unmodified) runs :data:`ENTRY_SCRIPT`
   (:func:`entry_command`): restores HOME, runs ``openab``, answers snapshot requests dropped in
   the inbox and writes the final archive to the outbox on SIGTERM.
3. :data:`SIDECAR_CONTAINER` (controller image, ``essential: false``) runs
   :func:`sidecar_command`: relays on-demand snapshot requests and uploads the outbox archives.

Invariants
----------
- The variables the controller sets (:data:`RESERVED_ENV`) can never be declared by a manifest.
- :func:`config_sha256` is the one digest function of the config artifact: the renderer puts its
  value in the task definition, the reconciler uploads the same text, the init container checks
  it.
- The entry script is POSIX ``sh`` only (stock images have no AWS CLI); the inbox and outbox
  names it spells are :data:`INBOX`, :data:`OUTBOX`, :data:`INBOX_REQUEST`,
  :data:`FINAL_ARCHIVE` and :data:`EXITED_MARKER`.

Time model: the entry script polls the inbox once a second; nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
from typing import Final

INIT_CONTAINER: Final = "oab-init"
SIDECAR_CONTAINER: Final = "oab-sidecar"
AGENT_CONTAINER: Final = "openab"
SHARED_VOLUME: Final = "oab-shared"
SHARED_DIR: Final = "/oab"
#: Folders and files of the shared volume the entry script and the sidecar exchange (each file is
#: published by rename): the on-demand request, the final archive and the exit marker.
INBOX: Final = "inbox"
OUTBOX: Final = "outbox"
INBOX_REQUEST: Final = "snapshot-request"
FINAL_ARCHIVE: Final = "home.tar"
EXITED_MARKER: Final = "exited"
#: Overrides ``SHARED_DIR`` in the init container, the sidecar and the entry script (tests only;
#: the task definition leaves it unset).
ENV_SHARED_DIR: Final = "OAB_SHARED_DIR"

# Environment the renderer sets on the init and sidecar containers (the agent container only
# needs its secrets: everything else reaches it through the shared volume).
ENV_CONFIG_ARTIFACT: Final = "CONFIG_ARTIFACT_PATH"
ENV_CONFIG_SHA256: Final = "CONFIG_SHA256"  # init container only: see ``config_sha256``
ENV_BOOTSTRAP_FROM: Final = "BOOTSTRAP_FROM"
ENV_BUCKET: Final = "OAB_BUCKET"
ENV_NAMESPACE: Final = "OAB_NAMESPACE"
ENV_NAME: Final = "OAB_NAME"
# Optional: extra snapshot denylist patterns (comma or newline separated; ``!pattern`` keeps a
# path the defaults drop) and the on-demand request poll interval in seconds (0 disables
# on-demand snapshots).
ENV_DENYLIST: Final = "OAB_SNAPSHOT_DENYLIST"
ENV_POLL_SECONDS: Final = "OAB_SNAPSHOT_POLL_SECONDS"
#: Container variables the controller sets itself; manifests may not declare them
#: (``spec.env``, ``spec.secrets``).
RESERVED_ENV: Final = frozenset({ENV_CONFIG_ARTIFACT, ENV_BOOTSTRAP_FROM})

# ``stopTimeout`` (seconds between SIGTERM and SIGKILL) the renderer should set. ECS stops the
# agent container first (it depends on the sidecar), so the sidecar's budget covers the agent's
# final archive plus the upload; 120 s is both Fargate's maximum and the Spot notice.
AGENT_STOP_TIMEOUT: Final = 90
SIDECAR_STOP_TIMEOUT: Final = 120

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
rm -f "$outbox/exited"

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
    echo "$status" > "$outbox/exited"
    exit "$status"
  fi
  if ! kill -0 "$child" 2>/dev/null; then
    wait_child
    status=$?
    log "openab exited with status $status"
    echo "$status" > "$outbox/exited"
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


def config_sha256(config_toml: str) -> str:
    """The digest ``CONFIG_SHA256`` carries: sha256 (hex) of the artifact's UTF-8 bytes.

    The renderer computes it from the text it renders and the reconciler uploads that same text
    encoded as UTF-8, so the two sides agree by construction.
    """
    return hashlib.sha256(config_toml.encode("utf-8")).hexdigest()


def init_command() -> list[str]:
    """Command of the init container (an ``oab-agent`` subcommand in the controller image)."""
    return ["oab-agent", "init"]


def sidecar_command() -> list[str]:
    """Command of the snapshot sidecar (an ``oab-agent`` subcommand in the controller image)."""
    return ["oab-agent", "sidecar"]


def entry_command() -> list[str]:
    """``entryPoint`` of the agent container: the stock image's shell running ``ENTRY_SCRIPT``."""
    return ["/bin/sh", "-c", ENTRY_SCRIPT]
