"""Secret *versions* (never values) for rotation detection.

The controller never reads a secret value: for SSM it calls ``DescribeParameters`` (which returns
the parameter's ``Version`` and no value), for Secrets Manager ``DescribeSecret`` (which returns
``VersionIdsToStages``; the version labelled ``AWSCURRENT`` is the live one). IAM grants exactly
these two reads on ``/oab/*`` (see ops/). A secret that does not exist yet is reported as version
``""``: the deployment then fails with SecretInjectionFailed, which is the user-visible signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oab.controller.errors import classify_aws
from oab.controller.ratelimit import RateLimiter


def _ssm_name(path: str) -> str:
    """An SSM parameter name from a name or an ARN (``...:parameter/oab/x`` -> ``/oab/x``)."""
    if path.startswith("arn:"):
        return "/" + path.split(":parameter/", 1)[1].lstrip("/")
    return path


class SecretVersions:
    """Reads the current version of each secret an agent references."""

    def __init__(self, *, ssm: Any, secretsmanager: Any, limiter: RateLimiter) -> None:
        self._ssm = ssm
        self._sm = secretsmanager
        self._limiter = limiter

    def ssm_version(self, path: str) -> str:
        """The parameter's version number as a string (``""`` if it does not exist)."""
        name = _ssm_name(path)
        self._limiter.acquire("secrets.read")
        try:
            resp = self._ssm.describe_parameters(
                ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
            )
        except Exception as exc:
            raise classify_aws(exc, operation="DescribeParameters") from exc
        params = resp.get("Parameters", [])
        return str(params[0].get("Version", "")) if params else ""

    def secretsmanager_version(self, arn: str) -> str:
        """The version id labelled AWSCURRENT (``""`` if the secret does not exist)."""
        self._limiter.acquire("secrets.read")
        try:
            resp = self._sm.describe_secret(SecretId=arn)
        except Exception as exc:
            err = classify_aws(exc, operation="DescribeSecret")
            if err.code == "ResourceNotFoundException":
                return ""
            raise err from exc
        for version, stages in resp.get("VersionIdsToStages", {}).items():
            if "AWSCURRENT" in stages:
                return str(version)
        return ""

    def versions(self, secrets: Sequence[Mapping[str, str]]) -> dict[str, str]:
        """``{env name: version}`` for secrets given as ``{name, source, path|arn}``."""
        out: dict[str, str] = {}
        for ref in secrets:
            if ref["source"] == "ssm":
                out[ref["name"]] = self.ssm_version(ref["path"])
            else:
                out[ref["name"]] = self.secretsmanager_version(ref["arn"])
        return out
