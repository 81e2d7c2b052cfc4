"""``configFrom: s3://...``: the agent's config.toml read from the user's S3 object.

Design
    An ``oab.dev/v2`` agent whose ``configFrom`` is an ``s3://`` URL keeps that URL in its stored
    spec; this adapter reads the object (at ``oabctl apply``/``render`` and at every reconcile)
    and hands the text to the renderer verbatim, after the same checks as a local file
    (:func:`oab.controller.api.v2.check_config_text`). The renderer puts the text's sha256 in the
    task definition, so a new object version with new bytes is a new task definition and a new
    rollout.
    The object's version is watched like an auto-restart secret's: the read that produced the
    text also yields the object's version (:attr:`ConfigObject.version`), which the reconciler
    records in the agent's status under :data:`CONFIG_VERSION_KEY` (``secret_versions``, with
    ``watched_secrets[CONFIG_VERSION_KEY] = "s3:<url>"``); the leader's resync reads the current
    version of every watched object (``HeadObject``, batched with the secrets in
    :meth:`oab.controller.adapters.secretversions.SecretVersions.batch`) and enqueues the agent
    when it differs, so a new object is rolled out within one resync period, with no apply.
    Recording the version of the bytes actually rendered (not a later ``HeadObject``) means an
    upload racing with a reconcile is seen by the next resync rather than lost.

Invariants
    - Nothing of the control-plane bucket is ever read as a config
      (:func:`oab.controller.core.tenancy.config_from_refusal`): checked here, before the read,
      since the controller reads with its own role.
    - The size is checked from ``ContentLength`` before the body is read (never more than
      :data:`~oab.controller.api.service.CONFIG_TOML_MAX_CHARS` bytes downloaded).
    - A missing object or a denied read is a :class:`~oab.controller.base.errors.TerminalError`
      (reason ``ConfigUnavailable``): retrying will not create it; a new apply or upload will
      (the next resync reconciles again). Throttling and network errors stay retryable.

Time model: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.api.service import CONFIG_TOML_MAX_CHARS, OABService
from oab.controller.api.v2 import ConfigFileInvalid, check_config_text
from oab.controller.base.errors import TerminalError, classify_aws
from oab.controller.core.tenancy import config_from_refusal

__all__ = [
    "CONFIG_VERSION_KEY",
    "ConfigObject",
    "ConfigObjects",
    "object_version",
    "watch_entry",
    "with_config_object",
    "with_config_text",
]

_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "403")

#: The name a ``configFrom`` object's version has in an agent's status (``secret_versions`` and
#: ``watched_secrets``): not an environment variable name (it has a dot), so it cannot collide
#: with a secret's.
CONFIG_VERSION_KEY = "spec.configFrom"


def watch_entry(url: str) -> str:
    """The ``watched_secrets`` value of a ``configFrom`` object (``"s3:" + url``)."""
    return f"s3:{url}"


def object_version(response: Any) -> str:
    """The version of an object from a ``GetObject``/``HeadObject`` response: its ``VersionId``
    in a versioned bucket, else its ``ETag`` (an unversioned bucket's ``VersionId`` is absent or
    ``"null"``; the ETag then changes with the bytes)."""
    version = str(response.get("VersionId") or "")
    return version if version not in ("", "null") else str(response.get("ETag") or "")


@dataclass(frozen=True, kw_only=True)
class ConfigObject:
    """One read of a ``configFrom`` object."""

    url: str
    text: str
    #: :func:`object_version` of the read (what the resync compares).
    version: str


class ConfigObjects:
    """Reads ``s3://`` config.toml objects, capped and checked; never from
    ``control_plane_bucket``."""

    def __init__(
        self, s3: Any, *, control_plane_bucket: str, limiter: RateLimiter | None = None
    ) -> None:
        self._s3 = s3
        self._control_plane_bucket = control_plane_bucket
        self._limiter = limiter or RateLimiter({})

    def read(self, url: str) -> ConfigObject:
        """The object's text and version; raises ``TerminalError`` (reason
        ``PolicyViolation``, ``ConfigUnavailable`` or ``InvalidConfig``) or a retryable AWS
        error."""
        refusal = config_from_refusal(url, control_plane_bucket=self._control_plane_bucket)
        if refusal is not None:
            raise TerminalError(f"{refusal.message}; {refusal.hint}", reason="PolicyViolation")
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self._limiter.acquire("s3")
        try:
            resp = self._s3.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            err = classify_aws(exc, operation="GetObject")
            if err.code in _MISSING:
                raise TerminalError(
                    f"configFrom {url}: {err.code}; upload the config.toml there (and grant the "
                    "controller s3:GetObject on it)",
                    reason="ConfigUnavailable",
                ) from exc
            raise err from exc
        body = resp["Body"]
        try:
            if int(resp.get("ContentLength", 0)) > CONFIG_TOML_MAX_CHARS:
                raise TerminalError(
                    f"configFrom {url} is larger than {CONFIG_TOML_MAX_CHARS // 1024} KiB",
                    reason="InvalidConfig",
                )
            data = body.read(CONFIG_TOML_MAX_CHARS + 1)
        finally:
            body.close()
        try:
            text = data.decode("utf-8")
            check_config_text(text, source=url)
        except UnicodeDecodeError as exc:
            raise TerminalError(f"configFrom {url} is not UTF-8", reason="InvalidConfig") from exc
        except ConfigFileInvalid as exc:
            raise TerminalError(str(exc), reason="InvalidConfig") from exc
        return ConfigObject(url=url, text=text, version=object_version(resp))


def with_config_object(
    svc: OABService, objects: ConfigObjects
) -> tuple[OABService, ConfigObject | None]:
    """``svc`` with its ``configFrom`` object's text as ``configToml``, and the read (``svc``
    and ``None`` when it has no ``configFrom``); the renderer then delivers the text verbatim."""
    url = svc.spec.config_from
    if url is None:
        return svc, None
    read = objects.read(url)
    spec = svc.spec.model_copy(update={"config_toml": read.text})
    return svc.model_copy(update={"spec": spec}), read


def with_config_text(svc: OABService, objects: ConfigObjects) -> OABService:
    """:func:`with_config_object` without the read."""
    return with_config_object(svc, objects)[0]
