"""OpenAB's real ``config.toml``, modelled for ``spec.config`` and checked for ``configFrom``.

Design
    Each TOML table of OpenAB's config (``openab run -c PATH``) is one pydantic model whose keys
    are exactly OpenAB's snake_case names, because users copy them from config.toml files and
    OpenAB's docs. The model follows one OpenAB release, :data:`OPENAB_RELEASE` (its
    ``crates/openab-core/src/config.rs`` at :data:`OPENAB_CONFIG_SOURCE`): every table and key it
    reads, each with its type and the spellings its deserializers accept (``per-thread`` and
    ``PER_THREAD``, ``multibot-mentions`` and ``multibot_mentions``...).

    A key the model does not know is **not** an error: OpenAB ignores unknown keys (``[mcp]``
    excepted), and a newer OpenAB may read it. It is kept verbatim in config.toml and reported by
    :func:`config_warnings` with its path and, when it is one edit away from a known key of the
    same table, the key it probably meant. ``oabctl apply/diff/render --strict`` turn these
    warnings into errors (for CI). Known keys with a wrong type or value stay errors.

    Only the handful of "record-style" keys from the design record are accepted under their
    camelCase/legacy names and mapped onto OpenAB (``agent.backend`` -> ``agent.preset``,
    ``discord.enabled``, ``discord.channelIds`` -> ``discord.allowed_channels``); keys with no
    OpenAB meaning (``agent.model``, ``discord.botId``, ``discord.guildId``, ``steering``,
    ``memory``, ``tools``) are rejected with a hint. A verbatim config.toml (``configFrom``,
    :func:`check_config_toml`) reaches OpenAB unchanged, so there these shorthands are errors
    (OpenAB would silently ignore them).

Invariants
    - A ``spec.config`` has ``[agent]`` with a command (given or from ``agent.preset``); a
      verbatim file may omit it (OpenAB 0.10 images name their agent in
      ``OPENAB_AGENT_COMMAND``). Both need at least one chat platform table (:data:`PLATFORMS`).
    - Discord/Slack ids are strings. A YAML number where an id is expected is rejected with a hint
      to quote it: YAML turns long numbers into floats and silently loses digits.
    - Token fields (:data:`TOKEN_FIELDS`) hold only a ``${VAR}`` placeholder or a
      ``${secrets.KEY}`` reference to ``[secrets.refs]``, never a literal (the only literals are
      documented non-secrets: ``stt.api_key = "not-needed"`` for local STT servers, and ``""`` =
      "unset, read the env variable" in the tables OpenAB resolves from ``PREFIX_*`` variables).
      OpenAB substitutes placeholders from its environment in the file's text before parsing it;
      what each placeholder may refer to is checked one level up (``OABServiceSpec``), where
      ``spec.secrets`` and ``spec.env`` are known.
    - Every ``${secrets.KEY}`` names a key of ``[secrets.refs]`` (OpenAB leaves unknown ones in
      place, which would make the literal text the token).
    - Every integer has a documented range well inside the Rust type OpenAB reads it into (TOML
      integers are i64; an out-of-range value would stop the agent at start-up).
    - Cron jobs follow OpenAB's ``validate_cronjobs``: schedule and time zone valid
      (``oab.controller.api.cronexpr``), platform one OpenAB schedules on and configured here.
    - Unknown keys hold only TOML values (no ``null``), so whatever passes renders.
    - ``to_toml_dict`` is the single rendering entry point; the renderer feeds its result to
      tomli-w unchanged. Known keys keep their declared order, unknown keys follow in input order.

Errors raised from validators are ``PydanticCustomError`` whose context may carry ``hint`` (what
to write instead) and ``path`` (below the failing location); ``oab.controller.api.issues`` turns
them into field-path issues. Inputs are hidden from pydantic's own error strings so a literal
token typed into a manifest never reaches a log.

There is no time in this module.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema
from pydantic_core import PydanticCustomError

from oab.controller.api import cronexpr
from oab.controller.api.issues import FieldIssue, issues_from_validation_error
from oab.controller.base.errors import InvalidInput

__all__ = [
    "CONVENTIONAL_TOKENS",
    "MAX_CONFIG_TOML_BYTES",
    "OPENAB_CONFIG_SOURCE",
    "OPENAB_RELEASE",
    "PLACEHOLDER_RE",
    "PLATFORMS",
    "PRESETS",
    "SECRET_REF_RE",
    "TOKEN_FIELDS",
    "AgentConfig",
    "AgentPreset",
    "ConfigCheck",
    "ConfigTomlError",
    "ConfigWarning",
    "CronConfig",
    "CronJob",
    "DiscordConfig",
    "GatewayConfig",
    "MarkdownConfig",
    "OpenABConfig",
    "PoolConfig",
    "Preset",
    "ReactionEmojis",
    "ReactionTiming",
    "ReactionsConfig",
    "SlackConfig",
    "SttConfig",
    "check_config_toml",
    "config_warnings",
    "placeholders_in",
    "wire_conventional_tokens",
]

#: The OpenAB release whose config.toml this module models (README, ``oabctl version``).
OPENAB_RELEASE: Final = "0.10.0"
#: Where the model was read: OpenAB's config loader at this commit.
OPENAB_CONFIG_SOURCE: Final = "openabdev/openab crates/openab-core/src/config.rs @1f3daf2"

#: OpenAB's own substitution pattern (``\$\{(\w+)\}`` in its config loader), applied to the
#: file's *text* before it is parsed as TOML.
PLACEHOLDER_RE = re.compile(r"\$\{(\w+)\}")
#: OpenAB's ``[secrets.refs]`` substitution (``\$\{secrets\.([^}]+)\}``), applied after the above.
SECRET_REF_RE = re.compile(r"\$\{secrets\.([^}]+)\}")

#: The chat platform tables; OpenAB refuses to start without at least one of them.
PLATFORMS: Final = (
    "discord",
    "slack",
    "gateway",
    "telegram",
    "line",
    "lineworks",
    "wecom",
    "googlechat",
    "teams",
    "feishu",
)
#: The tables whose unset fields OpenAB reads from ``PREFIX_FIELD`` environment variables.
_ENV_PREFIX: Final = {
    "telegram": "TELEGRAM_",
    "line": "LINE_",
    "lineworks": "LINEWORKS_",
    "wecom": "WECOM_",
    "googlechat": "GOOGLE_CHAT_",
    "teams": "TEAMS_",
    "feishu": "FEISHU_",
}
#: The fields that hold a credential: each is a whole ``${VAR}`` placeholder (or a
#: ``${secrets.KEY}`` reference), and only these may name a secret of ``spec.secrets`` (any
#: other field would print or pass the value on).
TOKEN_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("discord", "bot_token"),
        ("slack", "bot_token"),
        ("slack", "app_token"),
        ("gateway", "token"),
        ("stt", "api_key"),
        ("telegram", "bot_token"),
        ("telegram", "secret_token"),
        ("line", "channel_secret"),
        ("line", "channel_access_token"),
        ("lineworks", "bot_secret"),
        ("lineworks", "client_secret"),
        ("lineworks", "private_key"),
        ("wecom", "secret"),
        ("wecom", "token"),
        ("wecom", "encoding_aes_key"),
        ("googlechat", "sa_key_json"),
        ("googlechat", "access_token"),
        ("teams", "app_secret"),
        ("feishu", "app_secret"),
        ("feishu", "verification_token"),
        ("feishu", "encrypt_key"),
        ("filestore", "secret_access_key"),
    }
)
#: Token fields and the secret name that fills them when a manifest declares it and the
#: config leaves the field out (``wire_conventional_tokens``). The platform tables' names are
#: the variables OpenAB itself falls back to, so the wiring changes nothing for OpenAB; it
#: keeps the token out of the agent's environment (an unconsumed secret is inherited).
CONVENTIONAL_TOKENS: Final[dict[tuple[str, str], str]] = {
    ("discord", "bot_token"): "DISCORD_BOT_TOKEN",
    ("slack", "bot_token"): "SLACK_BOT_TOKEN",
    ("slack", "app_token"): "SLACK_APP_TOKEN",
    **{
        (table, key): _ENV_PREFIX[table] + key.upper()
        for table, key in sorted(TOKEN_FIELDS)
        if table in _ENV_PREFIX
    },
}
#: Largest verbatim config.toml accepted (OpenAB's documented examples are a few KiB).
MAX_CONFIG_TOML_BYTES: Final = 256 * 1024
#: Deepest nesting of tables and arrays in a verbatim config.toml (the model's deepest is 4).
_MAX_DEPTH: Final = 16

# Validation patterns are applied with ``fullmatch``: ``match`` with ``$`` also accepts a trailing
# newline, and ``${TOKEN}\n`` would put a newline into the substituted config.toml.
_WHOLE_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_SECRET_REF_RE = re.compile(r"\$\{secrets\.([^}\s]+)\}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DISCORD_ID_RE = re.compile(r"[0-9]{17,20}")
# Slack ids: U/W (users), B (bots), C/G/D (channels); uppercase letters and digits.
_SLACK_ID_RE = re.compile(r"[A-Z][A-Z0-9]{2,}")
_TOML_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")

Preset = Literal["kiro", "claude", "codex", "gemini", "copilot", "opencode", "cursor"]


class AgentPreset(BaseModel):
    """The command line a known agent backend needs (values of ``PRESETS``)."""

    model_config = ConfigDict(frozen=True)

    command: str
    args: tuple[str, ...]
    working_dir: str


#: Known backends: OpenAB's documented ACP entry points (README agent table, docs/<agent>.md,
#: the images' ``OPENAB_AGENT_COMMAND``); working_dir is the image's HOME (``/home/agent`` for
#: the Debian images of kiro and cursor, ``/home/node`` for the node-based CLIs).
PRESETS: dict[str, AgentPreset] = {
    "kiro": AgentPreset(
        command="kiro-cli", args=("acp", "--trust-all-tools"), working_dir="/home/agent"
    ),
    "claude": AgentPreset(command="claude-agent-acp", args=(), working_dir="/home/node"),
    "codex": AgentPreset(command="codex-acp", args=(), working_dir="/home/node"),
    "gemini": AgentPreset(command="gemini", args=("--acp",), working_dir="/home/node"),
    "copilot": AgentPreset(command="copilot", args=("--acp", "--stdio"), working_dir="/home/node"),
    "opencode": AgentPreset(command="opencode", args=("acp",), working_dir="/home/node"),
    "cursor": AgentPreset(command="cursor-agent", args=("acp",), working_dir="/home/agent"),
}


def _error(
    kind: str, message: str, hint: str | None = None, *, path: str | None = None
) -> PydanticCustomError:
    # Messages are passed through ctx so that braces in them (``${VAR}``) are never mistaken
    # for pydantic's template fields.
    ctx: dict[str, Any] = {"text": message}
    if hint:
        ctx["hint"] = hint
    if path:
        ctx["path"] = path
    return PydanticCustomError(kind, "{text}", ctx)


def _verbatim(info: ValidationInfo) -> bool:
    """True when validating a config.toml that reaches OpenAB unchanged (``configFrom``)."""
    return isinstance(info.context, Mapping) and bool(info.context.get("verbatim"))


def _quote_hint(value: object) -> str:
    return (
        'quote the id exactly as Discord/Slack shows it, e.g. "123456789012345678": unquoted, '
        "YAML reads a number and long numbers silently lose digits"
    )


def _not_a_number(value: object) -> object:
    if isinstance(value, bool):
        raise _error("id_type", "ids must be quoted strings, got a boolean")
    if isinstance(value, int | float):
        raise _error(
            "id_not_string",
            f"ids must be strings, got the YAML number {value!r}",
            _quote_hint(value),
        )
    return value


def _id_chars(platform: str) -> AfterValidator:
    """Refuse ids with whitespace or control characters: never a real id, and a trailing
    newline would end up inside config.toml. Other format mismatches are warnings
    (:func:`config_warnings`): OpenAB's own docs use ids such as ``YOUR_CHANNEL_ID``."""

    def check(value: str) -> str:
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise _error(
                f"{platform}_id",
                f"{platform.capitalize()} ids hold no spaces, line breaks or control characters",
                _ID_FORMATS[platform][1],
            )
        return value

    return AfterValidator(check)


#: Platform -> (id pattern, what the ids look like). A mismatch is a warning, not an error.
_ID_FORMATS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "discord": (
        _DISCORD_ID_RE,
        "Discord ids are 17-20 digit snowflakes; copy them with Developer Mode > Copy ID",
    ),
    "slack": (
        _SLACK_ID_RE,
        "Slack ids look like C0123ABCD (channels) or U0123ABCD (users); copy the member or "
        "channel id, not the display name",
    ),
}


DiscordId = Annotated[
    StrictStr,
    BeforeValidator(_not_a_number),
    _id_chars("discord"),
    Field(json_schema_extra={"examples": ["123456789012345678"]}),
]
SlackId = Annotated[
    StrictStr,
    BeforeValidator(_not_a_number),
    _id_chars("slack"),
    Field(json_schema_extra={"examples": ["C0123ABCD"]}),
]
#: An id of a platform whose id format this model does not check (gateway, Telegram, LINE...).
PlainId = Annotated[StrictStr, BeforeValidator(_not_a_number)]


def _token(*literals: str) -> AfterValidator:
    """A token field: a whole ``${VAR}`` / ``${secrets.KEY}``, or one of ``literals``."""

    def check(value: str) -> str:
        if value in literals:
            return value
        if _WHOLE_PLACEHOLDER_RE.fullmatch(value) or _WHOLE_SECRET_REF_RE.fullmatch(value):
            return value
        # Never echo the value: it may be a real token.
        raise _error(
            "literal_secret",
            "a token must be a ${VAR} placeholder, not a literal value",
            "put the token in SSM or Secrets Manager, declare it in spec.secrets "
            "(e.g. name: DISCORD_BOT_TOKEN) and write bot_token: ${DISCORD_BOT_TOKEN}",
        )

    return AfterValidator(check)


TokenPlaceholder = Annotated[StrictStr, _token()]
#: A token of a table OpenAB resolves from ``PREFIX_*`` env variables: ``""`` means "unset".
EnvToken = Annotated[StrictStr, _token("")]


def _env_name(value: str) -> str:
    if _ENV_NAME_RE.fullmatch(value) is None:
        raise _error(
            "env_name",
            f"{value!r} is not an environment variable name",
            "use letters, digits and underscores, not starting with a digit",
        )
    return value


EnvName = Annotated[StrictStr, AfterValidator(_env_name)]


def _spelling(
    what: str, words: tuple[str, ...], *, dashes: bool = True, exact: bool = False
) -> tuple[Any, AfterValidator]:
    """A string OpenAB compares after lowercasing (and ``-`` -> ``_``); kept as written.

    The JSON Schema gets a pattern accepting exactly the same spellings, so editors agree with
    the model.
    """

    def fold(value: str) -> str:
        if exact:
            return value
        value = value.lower()
        return value.replace("-", "_") if dashes else value

    accepted = {fold(w) for w in words}

    def check(value: str) -> str:
        if fold(value) not in accepted:
            raise _error(
                "enum",
                f"{value[:40]!r} is not a {what} OpenAB accepts",
                "write one of " + ", ".join(words),
            )
        return value

    def letters(word: str) -> str:
        out = ""
        for char in fold(word):
            if char == "_" and dashes and not exact:
                out += "[-_]"
            elif char.isalpha() and not exact:
                out += f"[{char}{char.upper()}]"
            else:
                out += re.escape(char)
        return out

    pattern = "^(" + "|".join(letters(w) for w in words) + ")$"
    return Field(json_schema_extra={"pattern": pattern}), AfterValidator(check)


#: JSON Schema of a key that is never valid (the record-style keys refused with a hint): with
#: unknown keys allowed, the schema must name them to keep refusing them.
_NEVER = WithJsonSchema({"not": {}})


def _refuse(message: str, hint: str) -> BeforeValidator:
    """A validator that accepts nothing: the key exists only to explain what to write instead."""

    def refuse(value: object) -> object:
        raise _error("unsupported_key", message, hint)

    return BeforeValidator(refuse)


def _toml_value(value: object, depth: int = 0) -> str | None:
    """Why ``value`` (an unknown key's) has no TOML spelling, or ``None`` when it has one."""
    if depth > _MAX_DEPTH:
        return "is nested too deeply"
    if value is None:
        return "is null, which TOML cannot write"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a non-string key"
            reason = _toml_value(item, depth + 1)
            if reason:
                return reason
    elif isinstance(value, list):
        for item in value:
            reason = _toml_value(item, depth + 1)
            if reason:
                return reason
    elif not isinstance(value, str | int | float | bool):
        return f"is a {type(value).__name__}, which TOML cannot write"
    return None


class _Table(BaseModel):
    """Base of every config.toml table: OpenAB's snake_case keys; unknown keys kept, reported."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, validate_default=False)
    #: The platform whose id format this table's string lists hold (``_ID_FORMATS``), if any.
    _ids: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _unknown_keys_are_toml(self) -> _Table:
        for key, value in (self.model_extra or {}).items():
            reason = _toml_value(value)
            if reason:
                raise _error(
                    "unknown_value",
                    f"unknown key {key} {reason}",
                    "remove it or give it a TOML value (string, number, boolean, list, table)",
                    path=key,
                )
        return self


class _StrictTable(_Table):
    """A table OpenAB reads with ``deny_unknown_fields``: an unknown key stops OpenAB."""

    model_config = ConfigDict(extra="forbid")


_Model = Annotated[
    Any,
    _NEVER,
    _refuse(
        "agent.model has no meaning in OpenAB; the agent CLI chooses its model",
        "pass the model to the CLI through agent.args (e.g. ['--model', 'NAME']) or agent.env "
        "(e.g. ANTHROPIC_MODEL)",
    ),
]


class AgentConfig(_Table):
    """``[agent]``: the ACP agent process OpenAB spawns per session."""

    preset: Preset | None = Field(
        default=None,
        description="Known backend; fills command/args/working_dir (explicit values win). "
        "Not written to config.toml.",
    )
    backend: Annotated[
        Preset | None,
        Field(
            description="Record-style alias of preset (deprecated).",
            json_schema_extra={"deprecated": True},
        ),
    ] = None
    command: StrictStr | None = Field(default=None, min_length=1)
    args: list[StrictStr] | None = None
    working_dir: StrictStr | None = Field(default=None, min_length=1)
    env: dict[EnvName, StrictStr] = Field(default_factory=dict)
    inherit_env: list[EnvName] = Field(
        default_factory=list,
        description="Container variables passed through to the agent (its environment is "
        "cleared). Secrets from spec.secrets are added automatically.",
    )
    model: _Model = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _resolve_preset(self, info: ValidationInfo) -> AgentConfig:
        if _verbatim(info):
            for key in ("preset", "backend"):
                if getattr(self, key) is not None:
                    raise _error(
                        "shorthand_in_file",
                        f"agent.{key} is an oab.dev/v1 spec.config shorthand, not an OpenAB key",
                        "config.toml reaches OpenAB verbatim: write agent.command, agent.args "
                        "and agent.working_dir (oabctl render of a v1 manifest shows them)",
                        path=key,
                    )
            return self
        if self.backend is not None:
            if self.preset is not None and self.preset != self.backend:
                raise _error(
                    "preset_conflict",
                    f"agent.backend {self.backend!r} contradicts agent.preset {self.preset!r}",
                    "write only agent.preset (backend is the record-style name for it)",
                )
            self.preset = self.backend
            self.backend = None
        if self.command is None and self.preset is None:
            raise _error(
                "missing_command",
                "agent needs a command",
                "set agent.command, or agent.preset to one of " + ", ".join(PRESETS),
            )
        return self

    def resolved(self) -> tuple[str, list[str], str | None]:
        """``(command, args, working_dir)`` after applying the preset; explicit values win."""
        preset = PRESETS[self.preset] if self.preset else None
        command = self.command or (preset.command if preset else "")
        default_args = list(preset.args) if preset else []
        args = list(self.args) if self.args is not None else default_args
        working_dir = self.working_dir or (preset.working_dir if preset else None)
        return command, args, working_dir


def _yaml_bool_word(true_word: str | None) -> BeforeValidator:
    # YAML 1.1 reads an unquoted `off` as false; OpenAB itself accepts true/false for these
    # settings, so map the booleans onto its words instead of bouncing a natural manifest.
    def convert(value: object) -> object:
        if value is False:
            return "off"
        if value is True and true_word is not None:
            return true_word
        return value

    return BeforeValidator(convert)


# OpenAB's custom deserializers: AllowBots lowercases (off|none|false, mentions, all|true);
# AllowUsers and MessageProcessingMode also turn "-" into "_"; ToolDisplay lowercases;
# markdown.tables and the Teams indicator are exact (serde rename_all).
_BOTS = _spelling("allow_bot_messages value", ("off", "none", "false", "mentions", "all", "true"))
_USERS = _spelling("allow_user_messages value", ("involved", "mentions", "multibot-mentions"))
_MODE = _spelling("message_processing_mode", ("per-message", "per-thread", "per-lane"), dashes=True)
_TOOLS = _spelling("tool_display value", ("full", "compact", "none", "off", "hidden"))
_TABLES = _spelling("markdown.tables value", ("code", "bullets", "off"), exact=True)
_ON_FAILURE = _spelling("on_failure value", ("abort", "warn"), exact=True)
AllowBotMessages = Annotated[StrictStr, _yaml_bool_word("all"), _BOTS[0], _BOTS[1]]
AllowUserMessages = Annotated[StrictStr, _USERS[0], _USERS[1]]
ProcessingMode = Annotated[StrictStr, _MODE[0], _MODE[1]]
ToolDisplay = Annotated[StrictStr, _yaml_bool_word(None), _TOOLS[0], _TOOLS[1]]
OnFailure = Annotated[StrictStr, _ON_FAILURE[0], _ON_FAILURE[1]]

#: Bounds of OpenAB's counters and timers (all far inside its u32/u64/usize types).
Count = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Seconds = Annotated[StrictInt, Field(ge=1, le=31_536_000)]
Bytes = Annotated[StrictInt, Field(ge=1, le=1 << 40)]


def _tokens_may_be_wired(schema: dict[str, Any]) -> None:
    # In a manifest, a missing token is filled from a declared conventional secret
    # (wire_conventional_tokens) before this model sees it: editors must not flag its absence.
    required = [k for k in schema.get("required", []) if k not in ("bot_token", "app_token")]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


class _ChatTable(_Table):
    """Keys Discord and Slack share."""

    model_config = ConfigDict(json_schema_extra=_tokens_may_be_wired)

    allow_all_channels: StrictBool | None = None
    allow_all_users: StrictBool | None = None
    allow_bot_messages: AllowBotMessages | None = None
    allow_user_messages: AllowUserMessages | None = None
    max_bot_turns: StrictInt | None = Field(default=None, ge=1, le=1000)
    message_processing_mode: ProcessingMode | None = None
    max_buffered_messages: StrictInt | None = Field(default=None, ge=1, le=10_000)
    max_batch_tokens: StrictInt | None = Field(default=None, ge=1, le=10_000_000)


_BotId = Annotated[
    Any,
    _NEVER,
    _refuse(
        "discord.botId has no meaning in OpenAB; the bot learns its own id from its token",
        "remove it; to accept messages from other bots use allow_bot_messages and trusted_bot_ids",
    ),
]
_GuildId = Annotated[
    Any,
    _NEVER,
    _refuse(
        "discord.guildId has no meaning in OpenAB; access is controlled per channel and user",
        "list the channels in allowed_channels (and users in allowed_users or roles in "
        "allowed_role_ids)",
    ),
]


class DiscordConfig(_ChatTable):
    """``[discord]``: one bot token, one gateway connection."""

    model_config = ConfigDict(populate_by_name=False)
    _ids: ClassVar[str] = "discord"

    bot_token: TokenPlaceholder
    allowed_channels: list[DiscordId] | None = None
    allowed_users: list[DiscordId] | None = None
    trusted_bot_ids: list[DiscordId] | None = None
    allowed_role_ids: list[DiscordId] | None = None
    allow_dm: StrictBool | None = None
    enabled: Annotated[
        StrictBool | None,
        Field(
            description="Record-style switch: false drops the section (deprecated).",
            json_schema_extra={"deprecated": True},
        ),
    ] = Field(default=None, exclude=True)
    channel_ids: Annotated[
        list[DiscordId] | None,
        Field(
            alias="channelIds",
            description="Record-style alias of allowed_channels (deprecated).",
            json_schema_extra={"deprecated": True},
        ),
    ] = Field(default=None, exclude=True)
    bot_id: _BotId = Field(default=None, alias="botId", exclude=True)
    guild_id: _GuildId = Field(default=None, alias="guildId", exclude=True)

    @model_validator(mode="after")
    def _map_channel_ids(self, info: ValidationInfo) -> DiscordConfig:
        if _verbatim(info):
            for key, alias in (("enabled", "enabled"), ("channel_ids", "channelIds")):
                if getattr(self, key) is not None:
                    raise _error(
                        "shorthand_in_file",
                        f"discord.{alias} is an oab.dev/v1 spec.config shorthand, not an "
                        "OpenAB key",
                        "config.toml reaches OpenAB verbatim: remove [discord] to disable it "
                        "and list channels in allowed_channels",
                        path=alias,
                    )
        if self.channel_ids is not None:
            if self.allowed_channels is not None:
                raise _error(
                    "duplicate_key",
                    "discord.channelIds and discord.allowed_channels are both set",
                    "keep only allowed_channels (channelIds is the record-style name for it)",
                )
            self.allowed_channels = self.channel_ids
            self.channel_ids = None
        return self


class SlackConfig(_ChatTable):
    """``[slack]``: Socket Mode app (bot token + app-level token)."""

    _ids: ClassVar[str] = "slack"

    bot_token: TokenPlaceholder
    app_token: TokenPlaceholder
    allowed_channels: list[SlackId] | None = None
    allowed_users: list[SlackId] | None = None
    trusted_bot_ids: list[SlackId] | None = None
    assistant_mode: StrictBool | None = Field(default=None, description="Default true.")
    streaming: StrictBool | None = Field(default=None, description="Default true.")


class GatewayConfig(_Table):
    """``[gateway]``: a custom WebSocket gateway (Telegram, LINE, Teams, ...)."""

    url: Annotated[StrictStr, Field(pattern=r"^wss?://[^\s/]+(/\S*)?$")]
    platform: StrictStr | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]*$")
    token: TokenPlaceholder | None = None
    bot_username: StrictStr | None = Field(default=None, min_length=1)
    allowed_channels: list[PlainId] | None = None
    allowed_users: list[PlainId] | None = None
    allow_all_channels: StrictBool | None = None
    allow_all_users: StrictBool | None = None
    streaming: StrictBool | None = None
    message_processing_mode: ProcessingMode | None = None
    max_buffered_messages: StrictInt | None = Field(default=None, ge=1, le=10_000)
    max_batch_tokens: StrictInt | None = Field(default=None, ge=1, le=10_000_000)
    allow_bot_messages: StrictBool | None = Field(
        default=None, description="A boolean here (a word in [discord]/[slack]); default false."
    )
    trusted_bot_ids: list[PlainId] | None = None
    streaming_placeholder: StrictBool | None = None
    gateway_ack_timeout_secs: StrictInt | None = Field(
        default=None, ge=1, le=86_400, description="Default 12; more than 10 for Teams."
    )
    telegram_rich_messages: StrictBool | None = None


class _AccessTable(_Table):
    """Keys every webhook platform table shares (OpenAB's default: deny all users)."""

    webhook_path: StrictStr | None = Field(default=None, pattern=r"^/\S*$")
    allow_all_users: StrictBool | None = None
    allowed_users: list[PlainId] | None = None


class TelegramConfig(_AccessTable):
    """``[telegram]``: the Telegram webhook adapter (unset fields from ``TELEGRAM_*``)."""

    bot_token: EnvToken | None = None
    secret_token: EnvToken | None = None
    trusted_source_only: StrictBool | None = None
    rich_messages: StrictBool | None = None
    streaming: StrictBool | None = None


class LineConfig(_AccessTable):
    """``[line]``: the LINE webhook adapter (unset fields from ``LINE_*``)."""

    channel_secret: EnvToken | None = None
    channel_access_token: EnvToken | None = None


class LineWorksConfig(_AccessTable):
    """``[lineworks]``: the LINE WORKS adapter (unset fields from ``LINEWORKS_*``)."""

    bot_id: StrictStr | None = None
    bot_secret: EnvToken | None = None
    client_id: StrictStr | None = None
    client_secret: EnvToken | None = None
    service_account: StrictStr | None = None
    private_key: EnvToken | None = None
    private_key_file: StrictStr | None = None
    require_mention: StrictBool | None = None
    bot_name: StrictStr | None = None
    rich_messages: StrictBool | None = None
    ack_message: StrictStr | None = None


class WecomConfig(_AccessTable):
    """``[wecom]``: the WeCom adapter (unset fields from ``WECOM_*``)."""

    corp_id: StrictStr | None = None
    secret: EnvToken | None = None
    token: EnvToken | None = None
    encoding_aes_key: EnvToken | None = None
    agent_id: StrictStr | None = None
    streaming_enabled: StrictBool | None = None
    debounce_secs: StrictInt | None = Field(default=None, ge=0, le=3600)


class GoogleChatConfig(_AccessTable):
    """``[googlechat]``: the Google Chat adapter (unset fields from ``GOOGLE_CHAT_*``)."""

    enabled: StrictBool | None = Field(default=None, description="Default false.")
    sa_key_json: EnvToken | None = None
    sa_key_file: StrictStr | None = None
    access_token: EnvToken | None = None
    audience: StrictStr | None = None


class TeamsConfig(_AccessTable):
    """``[teams]``: the Microsoft Teams adapter (unset fields from ``TEAMS_*``)."""

    app_id: StrictStr | None = None
    app_secret: EnvToken | None = None
    allowed_tenants: list[PlainId] | None = None
    oauth_endpoint: Annotated[StrictStr, Field(pattern=r"^https://\S+$")] | None = None
    openid_metadata: Annotated[StrictStr, Field(pattern=r"^https://\S+$")] | None = None
    dedupe_ttl_secs: Seconds | None = None
    route_ttl_secs: Seconds | None = None
    max_route_entries: Count | None = None
    reactions_enabled: StrictBool | None = None
    processing_indicator: Literal["off", "message"] | None = None
    streaming: StrictBool | None = None
    inbound_attachments: StrictBool | None = None
    conversation_registry_path: StrictStr | None = None
    conversation_registry_max_entries: StrictInt | None = Field(default=None, ge=1, le=10_000)
    conversation_registry_ttl_secs: StrictInt | None = Field(default=None, ge=1, le=1 << 40)
    allowed_teams: list[PlainId] | None = None
    allowed_channels: list[PlainId] | None = None
    allow_personal: StrictBool | None = None
    allow_group_chats: StrictBool | None = None


class FeishuConfig(_AccessTable):
    """``[feishu]``: the Feishu/Lark adapter (unset fields from ``FEISHU_*``)."""

    app_id: StrictStr | None = None
    app_secret: EnvToken | None = None
    verification_token: EnvToken | None = None
    encrypt_key: EnvToken | None = None
    domain: Literal["feishu", "lark"] | None = None
    connection_mode: Literal["websocket", "webhook"] | None = None
    allowed_groups: list[PlainId] | None = None
    require_mention: StrictBool | None = None
    allow_bots: Literal["off", "mentions", "all"] | None = None
    allow_user_messages: Literal["multibot_mentions", "mentions", "involved"] | None = None
    trusted_bot_ids: list[PlainId] | None = None
    max_bot_turns: StrictInt | None = Field(default=None, ge=1, le=1000)
    dedupe_ttl_secs: Seconds | None = None
    message_limit: Count | None = None
    session_ttl_hours: StrictInt | None = Field(default=None, ge=1, le=8760)
    card_streaming_mode: Literal["auto", "post", "card"] | None = None
    card_fallback_to_post: StrictBool | None = None
    card_promote_bytes: Bytes | None = None
    card_idle_finalize_ms: StrictInt | None = Field(default=None, ge=0, le=3_600_000)


class AgentCoreConfig(_Table):
    """``[agentcore]``: run the agent in Amazon Bedrock AgentCore instead of the container."""

    runtime_arn: Annotated[
        StrictStr,
        Field(pattern=r"^arn:aws[a-z-]*:bedrock-agentcore:[a-z0-9-]+:[0-9]{12}:runtime/\S+$"),
    ]
    shell_command: StrictStr | None = None
    cancel_strategy: Literal["stop", "noop"] | None = None


def _no_acp_servers(value: object) -> object:
    raise _error(
        "removed_key",
        "mcp.acp_servers was removed from OpenAB (2026-07-31) and stops it at start-up",
        "remove the [[mcp.acp_servers]] entries",
    )


class McpConfig(_StrictTable):
    """``[mcp]``: OpenAB's loopback MCP endpoint (its presence enables it; unknown keys refused).

    OpenAB reads this table with ``deny_unknown_fields``, so here too an unknown key is an error.
    """

    listen: StrictStr | None = Field(
        default=None,
        pattern=r"^(127\.[0-9.]+|localhost|\[::1\]):[0-9]{1,5}$",
        description="Loopback address; default 127.0.0.1:8848.",
    )
    tunnel_timeout_seconds: Seconds | None = None
    acp_servers: Annotated[SkipJsonSchema[Any], BeforeValidator(_no_acp_servers)] = Field(
        default=None, exclude=True
    )


class PoolConfig(_Table):
    """``[pool]``: agent sessions kept alive per bot."""

    max_sessions: StrictInt | None = Field(default=None, ge=1, le=1000, description="Default 10.")
    session_ttl_hours: StrictInt | None = Field(
        default=None, ge=1, le=8760, description="Default 4 (at most a year)."
    )
    prompt_hard_timeout_secs: StrictInt | None = Field(
        default=None, ge=1, le=86_400, description="Default 1800 (at most a day)."
    )
    liveness_check_secs: StrictInt | None = Field(
        default=None, ge=1, le=3600, description="Default 30."
    )
    hung_grace_secs: StrictInt | None = Field(
        default=None, ge=0, le=86_400, description="Default 120."
    )
    default_config_options: dict[StrictStr, StrictStr] | None = None


class ReactionEmojis(_Table):
    """``[reactions.emojis]``: the status emoji per stage."""

    queued: StrictStr | None = None
    thinking: StrictStr | None = None
    tool: StrictStr | None = None
    coding: StrictStr | None = None
    web: StrictStr | None = None
    done: StrictStr | None = None
    error: StrictStr | None = None


#: Upper bound of every ``[reactions.timing]`` value.
_HOUR_MS = 3_600_000


class ReactionTiming(_Table):
    """``[reactions.timing]``: milliseconds, each at most an hour."""

    debounce_ms: StrictInt | None = Field(default=None, ge=0, le=_HOUR_MS)
    stall_soft_ms: StrictInt | None = Field(default=None, ge=0, le=_HOUR_MS)
    stall_hard_ms: StrictInt | None = Field(default=None, ge=0, le=_HOUR_MS)
    done_hold_ms: StrictInt | None = Field(default=None, ge=0, le=_HOUR_MS)
    error_hold_ms: StrictInt | None = Field(default=None, ge=0, le=_HOUR_MS)

    @model_validator(mode="after")
    def _soft_before_hard(self) -> ReactionTiming:
        soft, hard = self.stall_soft_ms, self.stall_hard_ms
        if soft is not None and hard is not None and soft > hard:
            raise _error(
                "stall_order",
                f"stall_soft_ms ({soft}) is greater than stall_hard_ms ({hard})",
                "the soft stall warning must come before the hard one",
            )
        return self


class ReactionsConfig(_Table):
    """``[reactions]``: emoji status reactions on the triggering message."""

    enabled: StrictBool | None = None
    remove_after_reply: StrictBool | None = None
    emojis: ReactionEmojis | None = None
    timing: ReactionTiming | None = None
    tool_display: ToolDisplay | None = None
    narration_display: StrictBool | None = None
    mapping: dict[StrictStr, StrictStr] | None = Field(
        default=None, description="Tool or :shortcode: -> emoji."
    )


class MarkdownConfig(_Table):
    """``[markdown]``: how Markdown tables are sent to chat platforms without tables."""

    tables: Annotated[StrictStr, _yaml_bool_word(None), _TABLES[0], _TABLES[1]] | None = None


class SttConfig(_Table):
    """``[stt]``: speech-to-text for voice messages (OpenAI-compatible endpoint)."""

    enabled: StrictBool | None = None
    # "not-needed" is OpenAB's documented value for local servers that take no key (docs/stt.md).
    api_key: Annotated[StrictStr, _token("not-needed")] | None = None
    model: StrictStr | None = None
    base_url: Annotated[StrictStr, Field(pattern=r"^https?://\S+$")] | None = None
    echo_transcript: StrictBool | None = None


def _cron_schedule(value: str) -> str:
    try:
        cronexpr.parse_cron(value)
    except cronexpr.CronError as exc:
        message = f"not a cron expression OpenAB accepts: {exc}"
        raise _error("cron_schedule", message, exc.hint) from None
    return value


def _timezone(value: str) -> str:
    try:
        return cronexpr.check_timezone(value)
    except cronexpr.CronError as exc:
        raise _error("timezone", str(exc), exc.hint) from None


#: The platforms OpenAB's cron scheduler posts to (``VALID_PLATFORMS`` in cron.rs).
CronPlatform = Literal["discord", "slack", "telegram", "googlechat", "lineworks", "teams"]


class CronJob(_Table):
    """``[[cron.jobs]]``: a message sent to the agent on a schedule."""

    enabled: StrictBool | None = None
    schedule: Annotated[StrictStr, AfterValidator(_cron_schedule)]
    channel: Annotated[StrictStr, BeforeValidator(_not_a_number), Field(min_length=1)]
    message: StrictStr = Field(min_length=1)
    platform: CronPlatform | None = Field(
        default=None, description="Default discord; its table must be configured."
    )
    sender_name: StrictStr | None = None
    thread_id: Annotated[StrictStr, BeforeValidator(_not_a_number)] | None = None
    timezone: Annotated[StrictStr, AfterValidator(_timezone)] | None = Field(
        default=None, description="IANA time zone of the schedule (OpenAB's default: UTC)."
    )
    id: StrictStr | None = None
    teams_tenant_id: StrictStr | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _teams_fields(self) -> CronJob:
        # cron.rs validate_cron_target_fields: Teams jobs name their tenant, other jobs do not.
        if self.platform == "teams":
            if self.teams_tenant_id is None:
                raise _error(
                    "teams_tenant",
                    "a Teams job needs teams_tenant_id",
                    "add teams_tenant_id",
                    path="teams_tenant_id",
                )
            if self.thread_id is not None or self.id is not None:
                raise _error(
                    "teams_job",
                    "a Teams job may not set thread_id or id",
                    "remove them",
                    path="thread_id" if self.thread_id is not None else "id",
                )
        elif self.teams_tenant_id is not None:
            raise _error(
                "teams_tenant",
                'teams_tenant_id is only valid when platform is "teams"',
                "remove it",
                path="teams_tenant_id",
            )
        usercron_only = [k for k in (self.model_extra or {}) if k.startswith("disable_on_success")]
        if usercron_only:
            raise _error(
                "usercron_only",
                f"{usercron_only[0]} is only supported in usercron [[jobs]], OpenAB refuses it "
                "in [[cron.jobs]]",
                "remove it (or move the job to the usercron file)",
                path=usercron_only[0],
            )
        return self


class CronConfig(_Table):
    """``[cron]``: scheduled prompts."""

    jobs: list[CronJob] | None = None
    usercron_enabled: StrictBool | None = None
    usercron_path: StrictStr | None = Field(
        default=None, min_length=1, description="Relative to $HOME/.openab/, or absolute."
    )


class HookSeed(_Table):
    """``[hooks.pre_seed]``: S3 objects copied into HOME before the agent starts."""

    sources: list[Annotated[StrictStr, Field(pattern=r"^s3://\S+$")]] = Field(max_length=5)
    target: StrictStr | None = None
    region: StrictStr | None = None
    endpoint_url: StrictStr | None = None
    max_bytes: Bytes | None = None
    timeout_seconds: Seconds | None = None
    on_failure: OnFailure | None = None


class Hook(_Table):
    """``[hooks.pre_boot]`` / ``[hooks.pre_shutdown]``: exactly one of script, inline, url."""

    script: StrictStr | None = None
    inline: StrictStr | None = None
    url: Annotated[StrictStr, Field(pattern=r"^https://\S+$")] | None = None
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    timeout_seconds: Seconds | None = None
    on_failure: OnFailure | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Hook:
        given = [k for k in ("script", "inline", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise _error(
                "hook_source",
                f"a hook needs exactly one of script, inline, url (got {len(given)})",
                "keep one",
            )
        if self.url is not None and self.sha256 is None:
            raise _error(
                "hook_sha256", "a url hook needs sha256", "add the script's sha256", path="sha256"
            )
        return self


class HooksConfig(_Table):
    """``[hooks]``: lifecycle hooks (Unix only)."""

    pre_seed: HookSeed | None = None
    pre_boot: Hook | None = None
    pre_shutdown: Hook | None = None


class WorkspaceConfig(_Table):
    """``[workspace]``: named paths the agent may be pointed at."""

    aliases: dict[StrictStr, StrictStr] | None = None


def _secret_ref(value: str) -> str:
    # OpenAB's secrets.rs: aws-sm://ID#KEY (split on the last '#') or exec://SCRIPT [ARG [ARG]].
    if value.startswith("aws-sm://"):
        secret, sep, key = value[len("aws-sm://") :].rpartition("#")
        if sep and secret and key and not any(c.isspace() for c in value):
            return value
        raise _error(
            "secret_ref",
            "an aws-sm:// reference needs a secret id and a JSON key",
            "write aws-sm://SECRET-NAME-OR-ARN#json-key",
        )
    if value.startswith("exec://"):
        parts = value[len("exec://") :].split()
        if 1 <= len(parts) <= 3:
            return value
        raise _error(
            "secret_ref",
            "an exec:// reference is a script and at most two arguments",
            "write exec://SCRIPT [ARG1] [ARG2]",
        )
    raise _error(
        "secret_ref",
        "unrecognized secret reference scheme",
        "write aws-sm://SECRET#json-key or exec://SCRIPT",
    )


class SecretsAws(_Table):
    """``[secrets.aws]``: the Secrets Manager client used for ``aws-sm://``."""

    region: StrictStr | None = None
    endpoint_url: StrictStr | None = None


class SecretsExec(_Table):
    """``[secrets.exec]``: the ``exec://`` runner."""

    timeout_seconds: Seconds | None = None


class SecretsConfig(_Table):
    """``[secrets]``: values OpenAB resolves itself and substitutes as ``${secrets.KEY}``."""

    aws: SecretsAws | None = None
    exec: SecretsExec | None = None
    refs: dict[StrictStr, Annotated[StrictStr, AfterValidator(_secret_ref)]] | None = None


class AmbientPool(_Table):
    """``[ambient.pool]``."""

    max_sessions: Count | None = None
    session_ttl_minutes: Count | None = None
    context_flushes: Count | None = None


class AmbientDiscord(_Table):
    """``[ambient.discord]``."""

    _ids: ClassVar[str] = "discord"

    channels: list[DiscordId] | None = None
    allow_bot_messages: StrictBool | None = None


class AmbientConfig(_Table):
    """``[ambient]``: background reading of channels, flushed to the agent in batches."""

    enabled: StrictBool | None = None
    flush_interval_seconds: Seconds | None = None
    flush_max_messages: Count | None = None
    flush_hard_cap: Count | None = None
    context_window: Count | None = None
    max_concurrent_flushes: Count | None = None
    flush_timeout_seconds: Seconds | None = None
    instructions_file: StrictStr | None = None
    debug: StrictBool | None = None
    pool: AmbientPool | None = None
    discord: AmbientDiscord | None = None


class FilestoreConfig(_Table):
    """``[filestore]``: attachments stored in S3 and handed to the agent by presigned URL."""

    bucket: StrictStr = Field(min_length=1)
    region: StrictStr = Field(min_length=1)
    endpoint: StrictStr | None = None
    prefix: StrictStr | None = None
    presigned_ttl: Seconds | None = None
    max_file_size_mb: StrictInt | None = Field(default=None, ge=1, le=500)
    access_key_id: StrictStr | None = None
    secret_access_key: TokenPlaceholder | None = None


_Steering = Annotated[
    Any,
    _NEVER,
    _refuse(
        "steering has no meaning in OpenAB's config.toml",
        "ship steering files in the bootstrap archive (spec.bootstrapFrom) where the agent CLI "
        "reads them (e.g. ~/.kiro/steering)",
    ),
]
_Memory = Annotated[
    Any,
    _NEVER,
    _refuse(
        "memory has no meaning in OpenAB's config.toml; agent memory is files in HOME",
        "restore it at start with spec.bootstrapFrom (s3://bucket/key.tar.gz) and save it with "
        "oabctl snapshot",
    ),
]
_Tools = Annotated[
    Any,
    _NEVER,
    _refuse(
        "tools has no meaning in OpenAB's config.toml; tools belong to the agent CLI",
        "configure them through agent.args (e.g. kiro's --trust-all-tools) or the CLI's own "
        "config files in the bootstrap archive",
    ),
]


def _unset_agent() -> AgentConfig:
    # A verbatim file may omit [agent]; a spec.config may not (checked in OpenABConfig).
    return AgentConfig.model_construct()


class OpenABConfig(_Table):
    """``spec.config``: the whole config.toml.

    Call ``to_toml_dict`` for the dict the renderer writes; ``placeholders()`` lists every
    ``${VAR}`` the file will need at run time; :func:`config_warnings` lists its unknown keys.
    """

    agent: AgentConfig = Field(default_factory=_unset_agent)
    discord: DiscordConfig | None = None
    slack: SlackConfig | None = None
    gateway: GatewayConfig | None = None
    pool: PoolConfig | None = None
    reactions: ReactionsConfig | None = None
    markdown: MarkdownConfig | None = None
    stt: SttConfig | None = None
    cron: CronConfig | None = None
    steering: _Steering = Field(default=None, exclude=True)
    memory: _Memory = Field(default=None, exclude=True)
    tools: _Tools = Field(default=None, exclude=True)
    telegram: TelegramConfig | None = None
    line: LineConfig | None = None
    lineworks: LineWorksConfig | None = None
    wecom: WecomConfig | None = None
    googlechat: GoogleChatConfig | None = None
    teams: TeamsConfig | None = None
    feishu: FeishuConfig | None = None
    agentcore: AgentCoreConfig | None = None
    mcp: McpConfig | None = None
    hooks: HooksConfig | None = None
    workspace: WorkspaceConfig | None = None
    secrets: SecretsConfig | None = None
    ambient: AmbientConfig | None = None
    filestore: FilestoreConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_disabled_discord(cls, data: Any, info: ValidationInfo) -> Any:
        # Record-style `discord: {enabled: false}` means "no Discord": drop the table before it
        # is validated, since a disabled table is usually incomplete (no bot_token). A verbatim
        # file keeps it, to refuse the shorthand OpenAB would ignore.
        if isinstance(data, dict) and not _verbatim(info):
            discord = data.get("discord")
            if isinstance(discord, dict) and discord.get("enabled") is False:
                data = {k: v for k, v in data.items() if k != "discord"}
        return data

    @model_validator(mode="after")
    def _whole_file_rules(self, info: ValidationInfo) -> OpenABConfig:
        if "agent" not in self.model_fields_set and not _verbatim(info):
            raise _error(
                "missing", "agent: required field is missing", "add agent.preset or agent.command"
            )
        if not any(getattr(self, name) is not None for name in PLATFORMS):
            raise _error(
                "missing_platform",
                "config needs at least one of " + ", ".join(PLATFORMS),
                "add a discord table with bot_token: ${DISCORD_BOT_TOKEN} (or slack, telegram, "
                "gateway...)",
            )
        self._check_cron_platforms()
        self._check_secret_refs()
        return self

    def _check_cron_platforms(self) -> None:
        # cron.rs validate_cronjobs: the job's platform must be configured (main.rs decides
        # which: the table is present; Google Chat must also be enabled).
        jobs = (self.cron.jobs if self.cron else None) or []
        for i, job in enumerate(jobs):
            platform = job.platform or "discord"
            table = getattr(self, platform)
            if table is None or (platform == "googlechat" and not self.googlechat_enabled()):
                where = f"cron.jobs[{i}].platform" if job.platform else f"cron.jobs[{i}]"
                raise _error(
                    "cron_platform",
                    f'cron job platform "{platform}" is not configured'
                    + ("" if job.platform else " (the default platform)"),
                    f"add a {platform} table, or set platform to one that is configured",
                    path=where,
                )

    def googlechat_enabled(self) -> bool:
        """Whether ``[googlechat]`` is switched on (OpenAB's default is off)."""
        return self.googlechat is not None and bool(self.googlechat.enabled)

    def _check_secret_refs(self) -> None:
        refs = set(self.secrets.refs or {}) if self.secrets else set()
        for path, key in _secret_ref_uses(self.model_dump(mode="json", exclude_none=True)):
            if key not in refs:
                raise _error(
                    "secret_ref_missing",
                    f"${{secrets.{key}}} names no key of [secrets.refs]",
                    f'add {key} = "aws-sm://SECRET#json-key" under [secrets.refs] (OpenAB would '
                    "leave the text in place)",
                    path=_dotted(path),
                )

    def placeholders(self) -> set[str]:
        """Every ``${VAR}`` name used anywhere in the rendered file."""
        return {name for _path, name in self.placeholder_uses()}

    def placeholder_uses(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``(field path, VAR)`` for each placeholder occurrence, in document order."""
        return list(placeholders_in(self.model_dump(mode="json", exclude_none=True)))

    def secret_refs(self) -> dict[str, str]:
        """``[secrets.refs]``: key -> ``aws-sm://`` or ``exec://`` reference."""
        return dict(self.secrets.refs or {}) if self.secrets else {}

    def to_toml_dict(self, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """The config.toml content as plain data for tomli-w.

        ``secret_names`` are the container variables injected for this agent (spec.secrets and
        plain spec.env names). Those not consumed by a ``${VAR}`` placeholder are for the agent
        CLI, whose environment OpenAB clears, so they are appended to ``[agent].inherit_env``;
        placeholder-only variables (bot tokens) are deliberately not passed to the agent, which
        runs arbitrary tools. List one in ``inherit_env`` yourself if the agent needs it too.
        Unknown keys are written as given, after the known keys of their table.
        """
        out = self.model_dump(mode="json", exclude_none=True)
        agent = out["agent"]
        command, args, working_dir = self.agent.resolved()
        agent.pop("preset", None)
        agent["command"] = command
        agent["args"] = args
        if working_dir is not None:
            agent["working_dir"] = working_dir
        used = self.placeholders()
        inherit = list(self.agent.inherit_env)
        for name in sorted(set(secret_names)):
            if name not in used and name not in inherit:
                inherit.append(name)
        agent["inherit_env"] = inherit
        if not agent["env"]:
            del agent["env"]
        if not inherit:
            del agent["inherit_env"]
        # Key order is part of the artifact's bytes: keep OpenAB's conventional order.
        ordered = {k: agent[k] for k in _AGENT_ORDER if k in agent}
        ordered.update((k, v) for k, v in agent.items() if k not in ordered)
        out["agent"] = ordered
        known = {k: out[k] for k in _TABLE_ORDER if k in out}
        known.update((k, v) for k, v in out.items() if k not in known)
        return known


_AGENT_ORDER = ("command", "args", "working_dir", "env", "inherit_env")
_TABLE_ORDER = (
    "discord",
    "slack",
    "gateway",
    "telegram",
    "line",
    "lineworks",
    "wecom",
    "googlechat",
    "teams",
    "feishu",
    "agentcore",
    "agent",
    "pool",
    "reactions",
    "markdown",
    "stt",
    "cron",
    "mcp",
    "hooks",
    "workspace",
    "secrets",
    "ambient",
    "filestore",
)


def placeholders_in(
    data: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield ``(path, VAR)`` for every ``${VAR}`` inside strings (and mapping keys) of ``data``."""
    yield from _matches(data, path, PLACEHOLDER_RE)


def _secret_ref_uses(
    data: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    yield from _matches(data, path, SECRET_REF_RE)


def _matches(
    data: Any, path: tuple[str | int, ...], pattern: re.Pattern[str]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(data, str):
        for match in pattern.finditer(data):
            yield path, match.group(1)
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _matches(key, (*path, key), pattern)
            yield from _matches(value, (*path, key), pattern)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _matches(item, (*path, i), pattern)


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ------------------------------------------------------------------------------ unknown keys


@dataclass(frozen=True, kw_only=True)
class ConfigWarning:
    """A key this model does not know: kept in config.toml, reported with its path."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{_dotted(self.path)}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


#: Keys that older OpenAB releases or docs spelled differently.
_RENAMED: Final[dict[tuple[str, ...], str]] = {
    ("cronjobs",): "OpenAB reads scheduled jobs from [[cron.jobs]]; [[cronjobs]] is the old "
    "top-level spelling",
}


def config_warnings(config: OpenABConfig) -> list[ConfigWarning]:
    """One warning per key the model does not know, and per id that cannot be one.

    OpenAB ignores unknown keys, and a newer OpenAB may read them, so they never block an apply;
    when a key is one typo away from a known key of its table, the hint names that key (the
    table's setting keeps its default until the spelling is fixed). A Discord/Slack id of the
    wrong shape (``YOUR_CHANNEL_ID`` copied from OpenAB's docs) is accepted by OpenAB and never
    matches anything: also a warning.
    """
    return list(_walk(config, ()))


def _walk(model: BaseModel, path: tuple[str | int, ...]) -> Iterator[ConfigWarning]:
    fields = type(model).model_fields
    known = [f.alias or name for name, f in fields.items() if not f.exclude]
    for key in model.model_extra or {}:
        where = (*path, key)
        hint = _RENAMED.get(tuple(str(p) for p in where))
        if hint is None:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            hint = f"did you mean {near[0]}?" if near else None
        yield ConfigWarning(
            path=where,
            message=f"unknown key (not in OpenAB {OPENAB_RELEASE}'s config); kept in "
            "config.toml as written",
            hint=hint,
        )
    platform = model._ids if isinstance(model, _Table) else None
    id_format = _ID_FORMATS.get(platform or "")
    for name, info in fields.items():
        value = getattr(model, name, None)
        key = info.alias or name
        if id_format and isinstance(value, list) and not info.exclude:
            pattern, looks = id_format
            for i, item in enumerate(value):
                if isinstance(item, str) and pattern.fullmatch(item) is None:
                    yield ConfigWarning(
                        path=(*path, key, i),
                        message=f"{item[:40]!r} is not a {platform} id, so OpenAB will never "
                        "match it",
                        hint=looks,
                    )
        if isinstance(value, BaseModel):
            yield from _walk(value, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _walk(item, (*path, key, i))


# ---------------------------------------------------------------------------- token wiring


def wire_conventional_tokens(config: object, declared: Iterable[str]) -> object:
    """``config`` with each missing token field set to ``${NAME}`` of its declared secret.

    A manifest that declares ``DISCORD_BOT_TOKEN`` in ``spec.secrets`` and enables ``discord``
    without a ``bot_token`` means "use that secret" (the design record's shape, and what fleets
    already do). Only tables the config has are touched, only when the field is absent, and only
    with names in :data:`CONVENTIONAL_TOKENS`; anything else is returned unchanged. Pure: a new
    mapping is returned, ``config`` is never modified.
    """
    if not isinstance(config, Mapping):
        return config
    names = set(declared)
    out: dict[Any, Any] = dict(config)
    for (table, key), name in CONVENTIONAL_TOKENS.items():
        section = out.get(table)
        if not isinstance(section, Mapping) or key in section or name not in names:
            continue
        if table == "discord" and section.get("enabled") is False:
            continue
        out[table] = {**section, key: "${" + name + "}"}
    return out


# ------------------------------------------------------------------------ verbatim files


class ConfigTomlError(InvalidInput):
    """A config.toml file OpenAB would refuse (or ``--strict`` refuses). Not retryable.

    ``issues`` carry field paths (empty for syntax errors); ``line`` is set for syntax errors.
    """

    reason = "InvalidConfigToml"

    def __init__(self, source: str, issues: list[FieldIssue], *, line: int | None = None) -> None:
        self.source = source
        self.issues = issues
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(
            "\n".join(
                f"{where}: {issue}"
                if issue.path
                else f"{where}: {issue.message}"
                + (f"; {issue.hint}" if not issue.path and issue.hint else "")
                for issue in issues
            )
        )


@dataclass(frozen=True, kw_only=True)
class ConfigCheck:
    """What :func:`check_config_toml` found in a config.toml that passed.

    ``placeholders`` are the ``(path, VAR)`` uses of ``${VAR}`` (OpenAB substitutes them from its
    environment); ``token_placeholders`` the VARs used in token fields; ``secret_refs`` the
    ``[secrets.refs]`` table (key -> ``aws-sm://...`` / ``exec://...``) and
    ``secret_ref_uses`` the ``(path, KEY)`` uses of ``${secrets.KEY}``.
    """

    source: str
    data: dict[str, Any]
    config: OpenABConfig
    warnings: tuple[ConfigWarning, ...]
    placeholders: tuple[tuple[tuple[str | int, ...], str], ...]
    token_placeholders: frozenset[str]
    secret_refs: Mapping[str, str] = field(default_factory=dict)
    secret_ref_uses: tuple[tuple[tuple[str | int, ...], str], ...] = ()

    @property
    def placeholder_names(self) -> frozenset[str]:
        """Every ``${VAR}`` name the file needs at run time."""
        return frozenset(name for _path, name in self.placeholders)


def check_config_toml(text: str, *, source: str, strict: bool) -> ConfigCheck:
    """Check a verbatim config.toml (``configFrom``) against the model, without rewriting it.

    Raises :class:`ConfigTomlError` naming ``source`` (and the line, for TOML syntax errors) for:
    a file larger than :data:`MAX_CONFIG_TOML_BYTES` or nested deeper than the model can be; a
    TOML syntax error; a known key with a wrong type or value; a literal in a token field; a
    ``${secrets.KEY}`` without its ``[secrets.refs]`` entry; a ``spec.config`` shorthand
    (``agent.preset``...) that OpenAB would ignore; and, with ``strict``, any unknown key. What
    each ``${VAR}`` may refer to is the caller's check (it knows the manifest's secrets).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_TOML_BYTES:
        raise ConfigTomlError(
            source,
            [
                FieldIssue(
                    (),
                    f"config.toml is larger than {MAX_CONFIG_TOML_BYTES // 1024} KiB",
                    "keep data out of config.toml (use bootstrapFrom for files)",
                )
            ],
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_LINE_RE.search(message)
        line = int(found.group(1)) if found else None
        if line is None and "end of document" in message:
            line = max(1, len(text.splitlines()))  # tomllib names no line at the very end
        message = _TOML_LINE_RE.sub("", message).strip()
        if found:
            message += f" (column {found.group(2)})"
        raise ConfigTomlError(
            source,
            [FieldIssue((), f"not valid TOML: {message}", "fix the TOML syntax at that line")],
            line=line,
        ) from None
    except RecursionError:
        raise ConfigTomlError(
            source, [FieldIssue((), "not valid TOML: nested too deeply", None)]
        ) from None
    if _depth(data) > _MAX_DEPTH:
        raise ConfigTomlError(
            source, [FieldIssue((), f"tables and arrays nest deeper than {_MAX_DEPTH}", None)]
        )
    try:
        config = OpenABConfig.model_validate(data, context={"verbatim": True})
    except ValidationError as exc:
        raise ConfigTomlError(source, issues_from_validation_error(exc, data)) from None
    warnings = tuple(config_warnings(config))
    if strict and warnings:
        raise ConfigTomlError(
            source,
            [FieldIssue(w.path, f"{w.message} (refused by --strict)", w.hint) for w in warnings],
        )
    uses = tuple(placeholders_in(data))
    tokens = frozenset(
        name
        for path, name in uses
        if len(path) == 2 and (str(path[0]), str(path[1])) in TOKEN_FIELDS
    )
    return ConfigCheck(
        source=source,
        data=data,
        config=config,
        warnings=warnings,
        placeholders=uses,
        token_placeholders=tokens,
        secret_refs=config.secret_refs(),
        secret_ref_uses=tuple(_secret_ref_uses(data)),
    )


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
