"""What a secret looks like: the one list of credential shapes, for refusing and for redacting.

Design
------
Secrets reach the control plane only by reference (``spec.secrets``); their values never pass
through it. This module is the defence in depth behind that rule, used in two directions:

- **refuse**: :func:`secret_kind` names the credential shape a manifest value has (``"a Slack
  token"``) so that ``oabctl apply`` refuses a literal token anywhere in a spec, without echoing
  the value back;
- **redact**: :func:`scrub` replaces every credential-shaped substring (and every value handed to
  :func:`register_secret`) with :data:`REDACTED`, for spans, log records and stored free text.
  It also redacts the value of every ``name=value`` / ``"name": "value"`` / ``Name: value``
  assignment in free text whose *name* holds a credential (``token=...``, ``'X-Amz-Security-
  Token': b'...'`` in a botocore header dump), whatever the value looks like.
  :func:`is_secret_key` says whether an attribute or field *name* holds a credential, whatever
  its value; :func:`scrub_data` applies both rules to structured values (log ``extra`` fields,
  span attributes).

The shapes are the published formats of the tokens OpenAB agents and their platforms use
(Discord, Slack, Telegram, Anthropic, OpenAI, GitHub, GitLab, Google, Hugging Face, npm, Kiro,
AWS access keys and STS session tokens, JWTs, PEM private keys) plus a generic high-entropy
AWS-secret-key form. Each pattern is anchored on a distinctive prefix or
structure, so ordinary identifiers (ARNs, hashes, UUIDs, S3 version ids) do not match;
``tests/test_redact.py`` holds examples of each and of the near misses.

Invariants: pure and thread-safe; the registry of known values only grows (values of 6+
characters, so a short common word never blanks out logs).
"""

from __future__ import annotations

import re
import threading
from typing import Final

__all__ = [
    "REDACTED",
    "is_secret_key",
    "looks_like_secret",
    "register_secret",
    "scrub",
    "scrub_data",
    "secret_kind",
]

REDACTED: Final = "[REDACTED]"

#: Field and attribute names whose value is a credential whatever it looks like.
_SECRET_KEY = re.compile(
    r"(?i)(?:.*password.*|.*passwd.*|.*secret|.*secret_?\w*(?:key|value|string|token).*"
    r"|secrets?|authorization|proxy-authorization|.*credentials?|.*private_?key.*|.*api_?key.*"
    r"|.*token|.*tokens|.*access_?key_?id|cookie|set-cookie|x-api-key|x-amz-security-token)"
)
#: Names that match :data:`_SECRET_KEY` but hold identifiers of this system, never credentials.
_NOT_SECRET_KEY = re.compile(
    r"(?i)(?:.*(?:idempotency|claim|client|continuation|next|page|pagination|request|cancel"
    r"|sync|resume)_?token|.*_(?:arn|name|names|version|versions|id|ids|ref|refs|path|count)"
    # LLM usage counters, not credentials: max_tokens, prompt_tokens, total_tokens, ...
    r"|(?:max|min|total|input|output|prompt|completion|cached|reasoning)_?tokens?)"
)

#: (what it is, pattern). Order matters only for the name reported by :func:`secret_kind`.
_SHAPES: Final[tuple[tuple[str, str], ...]] = (
    (
        "a PEM private key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[^-]*(?:-----END [A-Z0-9 ]*PRIVATE KEY-----)?",
    ),
    ("an Anthropic API key", r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
    ("an OpenAI API key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ("a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ("a GitLab token", r"\bgl(?:pat|dt|ptt|rt|oas)-[A-Za-z0-9_-]{20,}"),
    ("a Google API key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("an npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("a Kiro API key", r"\bksk_[A-Za-z0-9_-]{20,}"),
    ("a Slack token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{10,}"),
    ("a Slack webhook URL", r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"),
    ("a Discord bot token", r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
    ("a Telegram bot token", r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}"),
    ("an AWS access key id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    # STS session tokens are long base64 blobs with a fixed prefix (before the 40-char form).
    ("an AWS session token", r"(?<![A-Za-z0-9/+])(?:IQoJb3JpZ2lu|FwoGZXIvYXdz)[A-Za-z0-9/+=]{40,}"),
    # 40 characters of base64: the AWS secret access key form (the mixed-case-and-digit test
    # that keeps hex digests out is applied in code, see _real).
    ("an AWS secret access key", r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    ("a bearer token", r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    ("a JSON web token", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("a URL with a password", r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^\s:/@]++:[^\s@/]{3,}@"),
)
_COMPILED: Final = tuple((name, re.compile(pattern)) for name, pattern in _SHAPES)
_ANY: Final = re.compile(
    "|".join(f"(?P<g{i}>{pattern})" for i, (_n, pattern) in enumerate(_SHAPES))
)

_known: set[str] = set()
_known_lock = threading.Lock()


def is_secret_key(name: str) -> bool:
    """Whether a field or attribute called ``name`` holds a credential (its last dotted part)."""
    last = name.rsplit(".", 1)[-1]
    return _SECRET_KEY.fullmatch(last) is not None and _NOT_SECRET_KEY.fullmatch(last) is None


_AWS_SECRET = "an AWS secret access key"


def _real(kind: str, text: str) -> bool:
    """Whether a pattern match is a credential (filters the generic 40-character form)."""
    if kind != _AWS_SECRET:
        return True
    classes = (any(c.isupper() for c in text), any(c.islower() for c in text))
    return all(classes) and any(c.isdigit() for c in text)


def secret_kind(value: str) -> str | None:
    """The credential shape ``value`` contains (``"a Slack token"``), or ``None``.

    Safe to put in an error message: it names the shape, never the value.
    """
    for name, pattern in _COMPILED:
        if any(_real(name, m.group(0)) for m in pattern.finditer(value)):
            return name
    return None


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` contains a credential-shaped substring."""
    return secret_kind(value) is not None


def _redact_match(match: re.Match[str]) -> str:
    index = int(str(match.lastgroup)[1:])
    return REDACTED if _real(_SHAPES[index][0], match.group(0)) else match.group(0)


# ``name = value`` in free text: a quoted or bare name (header, dict repr, JSON, key=value, CLI
# flag), ``=`` or ``:``, then a quoted value (Python bytes reprs too) or a bare word (with its
# auth scheme: "Basic xyz" is one value). Names are only tried at word starts, and the bare-value
# forms are possessive, so a long run of word characters costs linear time.
_ASSIGNMENT: Final = re.compile(
    r"""(?<![\w.-])(?P<key>(?P<kq>["']?)-{0,2}[A-Za-z_][\w.-]*+(?P=kq))"""
    r"""(?P<sep>[ \t]*[=:][ \t]*)"""
    r"""(?:b?(?P<q>["'])(?P<qv>(?:\\.|(?!(?P=q))[^\\\n])*+)(?P=q)"""
    r"""|(?P<bv>(?:(?i:basic|bearer|digest|token|negotiate)[ \t]+)?[^\s,;&'"}\])]++))"""
)
# Values that only *name* a credential, or are already redacted: kept for debugging.
_REFERENCE = re.compile(r"(?:arn:|\$\{|aws-sm://|ssm:|\[REDACTED\])")


def _redact_assignment(match: re.Match[str]) -> str:
    name = match.group("key").strip("\"'-")
    value = match.group("qv") if match.group("q") else match.group("bv")
    if not value or not is_secret_key(name) or _REFERENCE.match(value):
        return match.group(0)
    start, end = match.span("qv" if match.group("q") else "bv")
    offset = match.start()
    text = match.group(0)
    return text[: start - offset] + REDACTED + text[end - offset :]


def register_secret(value: str) -> None:
    """Redact ``value`` wherever :func:`scrub` sees it (values of 6+ characters only)."""
    if len(value) >= 6:
        with _known_lock:
            _known.add(value)


def scrub(text: str) -> str:
    """``text`` with every credential-shaped or registered secret substring redacted, and the
    value of every assignment to a credential-named field (``token=...``)."""
    with _known_lock:
        known = list(_known)
    out = text
    for secret in known:  # first: a registered value may also have a shape, or a name
        if secret in out:
            out = out.replace(secret, REDACTED)
    out = _ANY.sub(_redact_match, out)
    return _ASSIGNMENT.sub(_redact_assignment, out)


#: How deep :func:`scrub_data` descends into nested containers; deeper levels become text.
MAX_SCRUB_DEPTH: Final = 8


def scrub_data(value: object, *, key: str = "", depth: int = 0) -> object:
    """A copy of ``value`` safe to log or export: under a credential-named ``key`` it is
    :data:`REDACTED`; strings and bytes are :func:`scrub`-bed; mappings, lists and tuples are
    walked (keys judged by :func:`is_secret_key`); numbers, booleans and ``None`` are kept; any
    other object becomes its scrubbed ``str``.
    """
    if key and is_secret_key(key):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if depth < MAX_SCRUB_DEPTH:
        if isinstance(value, dict):
            return {k: scrub_data(v, key=str(k), depth=depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub_data(v, depth=depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(scrub_data(v, depth=depth + 1) for v in value)
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not stop logging
        return f"<{type(value).__name__}>"
    return scrub(text)
