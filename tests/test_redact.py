"""The one list of credential shapes: every published token form is caught, identifiers are not."""

from __future__ import annotations

import pytest

from oab.controller.base.redact import (
    REDACTED,
    is_secret_key,
    looks_like_secret,
    register_secret,
    scrub,
    scrub_data,
    secret_kind,
)

# Built from parts so that no scanner mistakes this file for a leaked credential.
SAMPLES = {
    "an Anthropic API key": "sk-" + "ant-api03-" + "Ab3dE" * 8,
    "an OpenAI API key": "sk-" + "proj-" + "Zx9Yw" * 8,
    "a GitHub token": "ghp" + "_" + "a1B2c3D4e5" * 4,
    "a Slack token": "xox" + "b-1234567890-1234567890-" + "abcdefghijABCDEFGHIJ1234",
    "a Discord bot token": "MTA" + "x" * 21 + "." + "Gh3k2L" + "." + "q" * 30,
    "a Telegram bot token": "123456789" + ":AA" + "F" * 33,
    "an AWS access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "an AWS secret access key": "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY",
    "a JSON web token": "eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0In0" + ".abcdefghij123",
    "a PEM private key": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY---",
    "a bearer token": "Bearer " + "abcdef123456.xyz",
    "a URL with a password": "wss://bot:" + "hunter22" + "@gateway.example.com/ws",
}
EXTRA = {
    "Slack app-level token": "xapp" + "-1-A0123456789-1234567890123-" + "abcdef0123456789",
    "GitHub fine-grained token": "github" + "_pat_" + "11ABCDEFG0" * 4,
    "Google API key": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
}


@pytest.mark.parametrize(("kind", "value"), sorted(SAMPLES.items()))
def test_each_shape_is_named_and_redacted(kind: str, value: str) -> None:
    text = f"before {value} after"
    assert secret_kind(text) == kind
    assert looks_like_secret(text)
    out = scrub(text)
    assert value not in out
    assert out.startswith("before ")
    assert REDACTED in out


@pytest.mark.parametrize("value", sorted(EXTRA.values()))
def test_more_shapes_are_caught(value: str) -> None:
    assert looks_like_secret(value)
    assert scrub(value) == REDACTED


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:ecs:us-east-1:123456789012:service/oab/oab-team-a-bot",
        "0123456789abcdef0123456789abcdef01234567",  # a git SHA (hex, 40 characters)
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256
        "4d8a0a0e-5a55-4f5c-9d43-6f1f6ec1a3d5",
        "3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",  # an S3 version id
        "${DISCORD_BOT_TOKEN}",
        "/oab/team-a/bot/discord-token",
        "s3://bucket/agents/team-a/home.tar.gz",
        "kiro-cli acp --trust-all-tools",
        "https://example.com/path?x=1",
        "skip-ant-farm",  # near miss of sk-ant-
        "A" * 40,  # 40 characters of one class: not an AWS secret key
    ],
)
def test_identifiers_are_not_secrets(value: str) -> None:
    assert secret_kind(value) is None
    assert scrub(value) == value


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("token", True),
        ("app_token", True),
        ("bot_token", True),
        ("secret", True),
        ("client_secret", True),
        ("secret_value", True),
        ("SecretString", True),
        ("api_key", True),
        ("authorization", True),
        ("http.request.header.authorization", True),
        ("aws_secret_access_key", True),
        ("x-amz-security-token", True),
        ("oab.idempotency_token", False),
        ("claim_token", False),
        ("clientToken", False),
        ("next_token", False),
        ("secret_arn", False),
        ("secret_name", False),
        ("secret_versions", False),
        ("oab.agent.key", False),
        ("name", False),
    ],
)
def test_secret_key_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


def test_registered_values_are_redacted_and_short_ones_ignored() -> None:
    register_secret("plain-but-registered-1")
    register_secret("abc")
    assert scrub("x plain-but-registered-1 y abc") == f"x {REDACTED} y abc"


MORE_SHAPES = {
    "a GitLab token": "glpat" + "-" + "AbCdEfGhIjKlMnOpQrSt",
    "a Hugging Face token": "hf" + "_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123",
    "an npm token": "npm" + "_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "a Kiro API key": "ksk" + "_" + "AbCdEfGhIjKlMnOpQrSt12",
    "an AWS session token": "IQoJb3JpZ2lu" + "X2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD" * 3,
}


@pytest.mark.parametrize(("kind", "value"), sorted(MORE_SHAPES.items()))
def test_added_shapes(kind: str, value: str) -> None:
    assert secret_kind(f"x {value} y") == kind
    assert value not in scrub(f"x {value} y")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=plainvalue123 next", f"token={REDACTED} next"),
        ('app_token="a quoted value" x', f'app_token="{REDACTED}" x'),
        ("client_secret='it\\'s' tail", f"client_secret='{REDACTED}' tail"),
        ('{"secret": "hunter2", "name": "bob"}', f'{{"secret": "{REDACTED}", "name": "bob"}}'),
        (
            "{'X-Amz-Security-Token': b'opaque-session-blob', 'Host': 'sqs'}",
            f"{{'X-Amz-Security-Token': b'{REDACTED}', 'Host': 'sqs'}}",
        ),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA== more", f"Authorization: {REDACTED} more"),
        ("--token=abcdefg --other=1", f"--token={REDACTED} --other=1"),
        ("password = s3cret!", f"password = {REDACTED}"),
    ],
)
def test_values_assigned_to_secret_names_are_redacted(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "password: ${DB_PASSWORD}",
        "secret: arn:aws:secretsmanager:us-east-1:123456789012:secret:bot",
        "max_tokens=4096 total_tokens: 10 prompt_tokens=3",
        "secret_arn=arn:aws:secretsmanager:us-east-1:1:secret:x",
        "no assignment here, token is a word",
        "key=value name=bot",
    ],
)
def test_references_and_ordinary_assignments_are_kept(text: str) -> None:
    assert scrub(text) == text


def test_scrub_data_walks_structures_by_key_and_value() -> None:
    value = {
        "token": "anything",
        "nested": {"password": 1, "list": [SAMPLES["a GitHub token"], 2, None]},
        "tuple": ("ok", b"ghp_" + b"a1B2c3D4e5" * 4),
        "n": 3,
        "flag": True,
    }
    assert scrub_data(value) == {
        "token": REDACTED,
        "nested": {"password": REDACTED, "list": [REDACTED, 2, None]},
        "tuple": ("ok", REDACTED),
        "n": 3,
        "flag": True,
    }
    assert scrub_data("plain", key="api_key") == REDACTED
