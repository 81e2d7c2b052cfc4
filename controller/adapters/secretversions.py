"""Secret *versions* (never values) for rotation detection.

The controller never reads a secret value: for SSM it calls ``DescribeParameters`` (which returns
the parameter's ``Version`` and no value), for Secrets Manager ``DescribeSecret`` (which returns
``VersionIdsToStages``; the version labelled ``AWSCURRENT`` is the live one). IAM grants exactly
these two reads on ``/oab/*`` (see ops/). A secret that does not exist yet is reported as version
``""``: the deployment then fails with SecretInjectionFailed, which is the user-visible signal.

An ``oab.dev/v2`` ``configFrom: s3://`` object is watched the same way (source ``s3``, see
:mod:`oab.controller.adapters.configsource`): ``HeadObject`` (no body) gives its version. The
bucket is the tenant's, so a missing object or a denied read is version ``""`` (no enqueue; the
agent's next reconcile reports ``ConfigUnavailable``), never an error that would end the resync
of every other agent; throttling and network errors stay retryable, as for secrets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oab.controller.adapters.configsource import object_version
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.base.errors import classify_aws

#: ``HeadObject`` errors that mean "no readable object": version ``""`` (see the docstring).
_S3_UNREADABLE = ("NoSuchKey", "NoSuchBucket", "NotFound", "404", "AccessDenied", "403")


def _ssm_name(path: str) -> str:
    """An SSM parameter name from a name or an ARN (``...:parameter/oab/x`` -> ``/oab/x``)."""
    if path.startswith("arn:"):
        return "/" + path.split(":parameter/", 1)[1].lstrip("/")
    return path


class SecretVersions:
    """Reads the current version of each secret an agent references."""

    def __init__(
        self, *, ssm: Any, secretsmanager: Any, limiter: RateLimiter, s3: Any = None
    ) -> None:
        self._ssm = ssm
        self._sm = secretsmanager
        self._s3 = s3
        self._limiter = limiter

    def s3_version(self, url: str) -> str:
        """The version of the ``s3://BUCKET/KEY`` object (``""`` when it cannot be read, or
        without an S3 client)."""
        if self._s3 is None:
            return ""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self._limiter.acquire("s3")
        try:
            resp = self._s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            err = classify_aws(exc, operation="HeadObject")
            if err.code in _S3_UNREADABLE:
                return ""
            raise err from exc
        return object_version(resp)

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

    def batch(self, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Versions of many secrets in few calls: ``{(source, path|arn): version}``.

        SSM: ``DescribeParameters`` with up to 50 names per call. Secrets Manager: one
        ``ListSecrets`` listing of the ``oab/`` prefix (100 per page, versions included), then
        ``DescribeSecret`` only for ARNs the listing did not cover. This is what keeps a no-op
        resync cheap with many auto-restart secrets. S3 (``configFrom`` objects): one
        ``HeadObject`` per distinct URL.
        """
        wanted = sorted(set(refs))
        out: dict[tuple[str, str], str] = {}
        names = {_ssm_name(where): where for source, where in wanted if source == "ssm"}
        found: dict[str, str] = {}
        ordered = sorted(names)
        for i in range(0, len(ordered), 50):
            kwargs: dict[str, Any] = {
                "ParameterFilters": [
                    {"Key": "Name", "Option": "Equals", "Values": ordered[i : i + 50]}
                ],
                "MaxResults": 50,
            }
            while True:
                self._limiter.acquire("secrets.read")
                try:
                    resp = self._ssm.describe_parameters(**kwargs)
                except Exception as exc:
                    raise classify_aws(exc, operation="DescribeParameters") from exc
                for param in resp.get("Parameters", []):
                    found[str(param["Name"])] = str(param.get("Version", ""))
                if not resp.get("NextToken"):
                    break
                kwargs["NextToken"] = resp["NextToken"]
        for name, where in names.items():
            out[("ssm", where)] = found.get(name, "")
        for url in sorted({where for source, where in wanted if source == "s3"}):
            out[("s3", url)] = self.s3_version(url)
        arns = [where for source, where in wanted if source == "secretsmanager"]
        if arns:
            listed = self._list_secret_versions()
            for arn in arns:
                out[("secretsmanager", arn)] = (
                    listed[arn] if arn in listed else self.secretsmanager_version(arn)
                )
        return out

    def _list_secret_versions(self) -> dict[str, str]:
        listed: dict[str, str] = {}
        kwargs: dict[str, Any] = {
            "Filters": [{"Key": "name", "Values": ["oab/"]}],
            "MaxResults": 100,
        }
        while True:
            self._limiter.acquire("secrets.read")
            try:
                resp = self._sm.list_secrets(**kwargs)
            except Exception as exc:
                raise classify_aws(exc, operation="ListSecrets") from exc
            for secret in resp.get("SecretList", []):
                for version, stages in secret.get("SecretVersionsToStages", {}).items():
                    if "AWSCURRENT" in stages:
                        listed[str(secret["ARN"])] = str(version)
            if not resp.get("NextToken"):
                return listed
            kwargs["NextToken"] = resp["NextToken"]

    def versions(self, secrets: Sequence[Mapping[str, str]]) -> dict[str, str]:
        """``{env name: version}`` for secrets given as ``{name, source, path|arn}``."""
        out: dict[str, str] = {}
        for ref in secrets:
            if ref["source"] == "ssm":
                out[ref["name"]] = self.ssm_version(ref["path"])
            else:
                out[ref["name"]] = self.secretsmanager_version(ref["arn"])
        return out
