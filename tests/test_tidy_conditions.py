"""One place reads S3's condition failures: ``base.errors.precondition_failed`` turns them into
``PreconditionFailed`` (an ``OabError`` carrying the key and S3's code) for the object store,
the artifact write and the snapshot request alike."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters.objectstore import PreconditionFailed as StorePreconditionFailed
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.base.errors import OabError, PreconditionFailed, precondition_failed
from oab.controller.testing import AWS


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "PutObject")


@pytest.mark.parametrize("code", ["PreconditionFailed", "ConditionalRequestConflict", "412", "409"])
def test_every_condition_code_is_a_precondition_failure(code: str) -> None:
    failed = precondition_failed(_error(code), key="k")
    assert isinstance(failed, PreconditionFailed)
    assert (failed.key, failed.code, failed.retryable) == ("k", code, True)


@pytest.mark.parametrize("code", ["AccessDenied", "NoSuchKey", "SlowDown", ""])
def test_other_failures_are_not(code: str) -> None:
    assert precondition_failed(_error(code), key="k") is None
    assert precondition_failed(ValueError(code), key="k") is None


def test_the_store_raises_the_one_error_in_the_hierarchy() -> None:
    assert StorePreconditionFailed is PreconditionFailed
    assert issubclass(PreconditionFailed, OabError)


def test_a_lost_conditional_put_on_s3_is_precondition_failed(aws: AWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="tidy-conditions")
    store = S3ObjectStore(s3, "tidy-conditions")
    first = store.put("manifests/a/b.yaml", b"one", if_match=None, metadata={})
    with pytest.raises(PreconditionFailed) as lost:
        store.put("manifests/a/b.yaml", b"two", if_match=None, metadata={})
    assert lost.value.key == "manifests/a/b.yaml"
    assert lost.value.code in {"PreconditionFailed", "412"}
    assert first.etag
