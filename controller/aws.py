"""AWS client construction: the one place that builds boto3 clients.

Every client honours ``AWS_ENDPOINT_URL`` (boto3 reads it itself), so the same code talks to real
AWS and to the embedded local emulator. Clients are built once in the composition root and passed
down; nothing below this module calls ``boto3.client`` on its own.

Retries happen at one layer only: the clients built here use botocore's ``standard`` retry mode
with a small attempt budget, and callers do not wrap them in a second retry loop, except the
lease client, which gets no botocore retries at all and short timeouts (its caller owns the
retry budget, sized to the renew deadline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Timeouts and retry budget for one family of clients."""

    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_attempts: int = 3

    def to_botocore(self) -> Config:
        """The botocore ``Config`` these options describe."""
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
        )


def make_session(*, region: str | None = None, profile: str | None = None) -> boto3.Session:
    """A boto3 session from the standard credential chain."""
    return boto3.Session(region_name=region, profile_name=profile)


def make_client(
    session: boto3.Session,
    service: str,
    *,
    endpoint_url: str | None = None,
    options: ClientOptions | None = None,
) -> Any:
    """Build a client for ``service``; ``endpoint_url`` overrides ``AWS_ENDPOINT_URL``."""
    opts = options or ClientOptions()
    kwargs: dict[str, Any] = {"config": opts.to_botocore()}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return session.client(service, **kwargs)
