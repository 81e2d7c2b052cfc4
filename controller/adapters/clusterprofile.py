"""Reads and writes the cluster profile (``config/cluster.json``) in the control-plane bucket.

The profile itself is :class:`oab.controller.core.clusterprofile.ClusterProfile`. Reading treats
a missing object or bucket as "no profile yet" (before the first ``oabctl init``); any other S3
failure is an :class:`~oab.controller.base.errors.AwsError`. Writing lets botocore's errors
through to the caller (``oabctl init`` reports which step failed).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.base.errors import classify_aws
from oab.controller.base.names import CLUSTER_PROFILE_KEY
from oab.controller.core.clusterprofile import ClusterProfile

__all__ = ["read_cluster_profile", "write_cluster_profile"]

_READ = f"s3.GetObject {CLUSTER_PROFILE_KEY}"
_ABSENT = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


def read_cluster_profile(s3: Any, bucket: str) -> ClusterProfile | None:
    """The profile ``init`` stored in the bucket, or None before the first ``init``."""
    try:
        body = s3.get_object(Bucket=bucket, Key=CLUSTER_PROFILE_KEY)["Body"].read()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _ABSENT:
            return None
        raise classify_aws(exc, operation=_READ) from exc
    except BotoCoreError as exc:
        raise classify_aws(exc, operation=_READ) from exc
    return ClusterProfile.from_json(json.loads(body))


def write_cluster_profile(s3: Any, bucket: str, profile: ClusterProfile) -> None:
    """Store ``profile`` (pretty JSON) at ``config/cluster.json``."""
    s3.put_object(
        Bucket=bucket,
        Key=CLUSTER_PROFILE_KEY,
        Body=json.dumps(profile.to_json(), indent=2).encode(),
        ContentType="application/json",
    )
