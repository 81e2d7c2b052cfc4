"""``configFrom: s3://...``: the agent's config.toml read from the user's S3 object.

Design
    An ``oab.dev/v2`` agent whose ``configFrom`` is an ``s3://`` URL keeps that URL in its stored
    spec; this adapter reads the object (at ``oabctl apply``/``render`` and at every reconcile)
    and hands the text to the renderer verbatim, after the same checks as a local file
    (:func:`oab.controller.api.v2.check_config_text`). The renderer puts the text's sha256 in the
    task definition, so a new object version with new bytes is a new task definition and a new
    rollout; the object's ``VersionId`` is reported for status and logs.

Invariants
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

__all__ = ["ConfigObject", "ConfigObjects", "with_config_text"]

_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "403")


@dataclass(frozen=True, kw_only=True)
class ConfigObject:
    """One read of a ``configFrom`` object."""

    url: str
    text: str
    version_id: str


class ConfigObjects:
    """Reads ``s3://`` config.toml objects, capped and checked."""

    def __init__(self, s3: Any, *, limiter: RateLimiter | None = None) -> None:
        self._s3 = s3
        self._limiter = limiter or RateLimiter({})

    def read(self, url: str) -> ConfigObject:
        """The object's text and version; raises ``TerminalError`` (reason
        ``ConfigUnavailable`` or ``InvalidConfig``) or a retryable AWS error."""
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
        return ConfigObject(url=url, text=text, version_id=str(resp.get("VersionId") or ""))


def with_config_text(svc: OABService, objects: ConfigObjects) -> OABService:
    """``svc`` with its ``configFrom`` object's text as ``configToml`` (unchanged when it has
    no ``configFrom``); the renderer then delivers the text verbatim."""
    url = svc.spec.config_from
    if url is None:
        return svc
    text = objects.read(url).text
    return svc.model_copy(update={"spec": svc.spec.model_copy(update={"config_toml": text})})
