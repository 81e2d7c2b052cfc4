"""The composition root only wires: every client (STS and the lease's too) from the one factory
with the settings' profile, and no AWS request while a replica is being built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oab.controller.base.errors import AwsError
from oab.controller.runtime.replica import Clients, Replica, election_config
from oab.controller.testing import replica_settings

#: Nothing listens here: any request fails at once.
_NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def profiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A profile ``tidy`` whose credentials differ from the environment's."""
    creds = tmp_path / "credentials"
    creds.write_text(
        "[tidy]\naws_access_key_id = AKIATIDYPROFILE0001\naws_secret_access_key = tidy-secret\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile tidy]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return "tidy"


def _access_key(client: Any) -> str:
    return str(client._request_signer._credentials.get_frozen_credentials().access_key)


def test_every_client_including_sts_and_the_lease_uses_the_profile(profiled: str) -> None:
    settings = replica_settings(_NOWHERE, bucket="bkt", aws_profile=profiled)
    clients = Clients.build(settings, election=election_config(settings))
    for name in ("dynamodb", "s3", "ecs", "ssm", "secretsmanager", "sts", "lease"):
        assert _access_key(getattr(clients, name)) == "AKIATIDYPROFILE0001", name
    # The lease's client keeps the elector's retry budget: one attempt, short timeouts.
    assert clients.lease.meta.config.retries["total_max_attempts"] == 1


class _Http:
    """The HTTP half of a short-circuited botocore call."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


def test_the_render_context_asks_sts_with_the_profile(profiled: str) -> None:
    # The boundary answers: no cluster profile in S3, and STS names the caller's account.
    replica = Replica(replica_settings(_NOWHERE, bucket="bkt", aws_profile=profiled))
    asked: list[str] = []

    def no_profile(**_: Any) -> tuple[_Http, dict[str, Any]]:
        return _Http(404), {"Error": {"Code": "NoSuchKey", "Message": "absent"}}

    def caller(**_: Any) -> tuple[_Http, dict[str, Any]]:
        asked.append(_access_key(replica.clients.sts))
        return _Http(200), {"Account": "111122223333", "Arn": "arn", "UserId": "u"}

    replica.clients.s3.meta.events.register("before-call.s3.GetObject", no_profile)
    replica.clients.sts.meta.events.register("before-call.sts.GetCallerIdentity", caller)
    assert asked == []  # wiring asked nothing
    assert replica.reconciler is replica.reconciler  # built once, on first use
    assert asked == ["AKIATIDYPROFILE0001"]


def test_building_a_replica_makes_no_request_and_start_makes_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    replica = Replica(replica_settings(_NOWHERE, bucket="bkt"))  # nothing to reach: no error
    with pytest.raises(AwsError) as raised:
        replica.start()  # the render context's read is the first request
    assert raised.value.code == "EndpointConnectionError"
    assert not replica.elector.running
