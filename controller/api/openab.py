"""OpenAB's real ``config.toml``, modelled for ``spec.config``.

Design
    Each TOML table of OpenAB's config (``openab run -c PATH``) is one pydantic model whose keys
    are exactly OpenAB's snake_case names, because users copy them from config.toml files and
    OpenAB's docs. Unknown keys are errors here (OpenAB itself ignores unknown tables, which hides
    typos until a bot silently misbehaves). Only the handful of "record-style" keys from the
    design record are accepted under their camelCase/legacy names and mapped onto OpenAB
    (``agent.backend`` -> ``agent.preset``, ``discord.enabled``, ``discord.channelIds`` ->
    ``discord.allowed_channels``); keys with no OpenAB meaning (``agent.model``, ``discord.botId``,
    ``discord.guildId``, ``steering``, ``memory``, ``tools``) are rejected with a hint.

Invariants
    - ``[agent]`` with a command (given or from ``agent.preset``) and at least one of
      ``[discord]``, ``[slack]``, ``[gateway]`` are present.
    - Discord/Slack ids are strings. A YAML number where an id is expected is rejected with a hint
      to quote it: YAML turns long numbers into floats and silently loses digits.
    - Token fields (:data:`TOKEN_FIELDS`: ``discord.bot_token``, ``slack.bot_token``,
      ``slack.app_token``, ``gateway.token``, ``stt.api_key``) hold only a ``${VAR}``
      placeholder, never a secret. OpenAB substitutes placeholders from its environment in the
      file's text before parsing it; what each placeholder may refer to (secrets only in token
      fields, plain values only elsewhere and without characters that would rewrite the TOML) is
      checked one level up (``OABServiceSpec``), where ``spec.secrets`` and ``spec.env`` are
      known.
    - Every integer has a documented range well inside the Rust type OpenAB reads it into (TOML
      integers are i64; an out-of-range value would stop the agent at start-up).
    - Cron schedules and time zones are valid for OpenAB's cron crate and chrono-tz
      (``oab.controller.api.cronexpr``).
    - ``to_toml_dict`` is the single rendering entry point; the renderer feeds its result to
      tomli-w unchanged.

Errors raised from validators are ``PydanticCustomError`` whose context may carry ``hint`` (what
to write instead); ``oab.controller.api.issues`` turns them into field-path issues. Inputs are
hidden from pydantic's own error strings so a literal token typed into a manifest never reaches a
log.

There is no time in this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from oab.controller.api import cronexpr

__all__ = [
    "PLACEHOLDER_RE",
    "PRESETS",
    "TOKEN_FIELDS",
    "AgentConfig",
    "AgentPreset",
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
    "placeholders_in",
]

#: OpenAB's own substitution pattern (``\$\{(\w+)\}`` in its config loader), applied to the
#: file's *text* before it is parsed as TOML.
PLACEHOLDER_RE = re.compile(r"\$\{(\w+)\}")
#: The fields that hold a credential: each is a whole ``${VAR}`` placeholder, and only these may
#: name a secret of ``spec.secrets`` (any other field would print or pass the value on).
TOKEN_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("discord", "bot_token"),
        ("slack", "bot_token"),
        ("slack", "app_token"),
        ("gateway", "token"),
        ("stt", "api_key"),
    }
)
# Validation patterns are applied with ``fullmatch``: ``match`` with ``$`` also accepts a trailing
# newline, and ``${TOKEN}\n`` would put a newline into the substituted config.toml.
_WHOLE_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DISCORD_ID_RE = re.compile(r"[0-9]{17,20}")
# Slack ids: U/W (users), B (bots), C/G/D (channels); uppercase letters and digits.
_SLACK_ID_RE = re.compile(r"[A-Z][A-Z0-9]{2,}")

Preset = Literal["kiro", "claude", "codex", "gemini", "copilot", "opencode"]


class AgentPreset(BaseModel):
    """The command line a known agent backend needs (values of ``PRESETS``)."""

    model_config = ConfigDict(frozen=True)

    command: str
    args: tuple[str, ...]
    working_dir: str


#: Known backends. Commands are OpenAB's documented ACP entry points; working_dir is the image's
#: HOME (``/home/agent`` for Kiro-style images, ``/home/node`` for the node-based CLIs).
PRESETS: dict[str, AgentPreset] = {
    "kiro": AgentPreset(
        command="kiro-cli", args=("acp", "--trust-all-tools"), working_dir="/home/agent"
    ),
    "claude": AgentPreset(command="claude-agent-acp", args=(), working_dir="/home/node"),
    "codex": AgentPreset(command="codex", args=("--acp",), working_dir="/home/node"),
    "gemini": AgentPreset(command="gemini", args=("--acp",), working_dir="/home/node"),
    "copilot": AgentPreset(command="copilot", args=("--acp", "--stdio"), working_dir="/home/node"),
    "opencode": AgentPreset(command="opencode", args=("acp",), working_dir="/home/agent"),
}


def _error(kind: str, message: str, hint: str | None = None) -> PydanticCustomError:
    # Messages are passed through ctx so that braces in them (``${VAR}``) are never mistaken
    # for pydantic's template fields.
    ctx: dict[str, Any] = {"text": message}
    if hint:
        ctx["hint"] = hint
    return PydanticCustomError(kind, "{text}", ctx)


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


def _discord_id(value: str) -> str:
    if _DISCORD_ID_RE.fullmatch(value) is None:
        raise _error(
            "discord_id",
            f"{value!r} is not a Discord id",
            "Discord ids are 17-20 digit snowflakes; copy them with Developer Mode > Copy ID",
        )
    return value


def _slack_id(value: str) -> str:
    if _SLACK_ID_RE.fullmatch(value) is None:
        raise _error(
            "slack_id",
            f"{value!r} is not a Slack id",
            "Slack ids look like C0123ABCD (channels) or U0123ABCD (users); copy the member or "
            "channel id, not the display name",
        )
    return value


DiscordId = Annotated[StrictStr, BeforeValidator(_not_a_number), AfterValidator(_discord_id)]
SlackId = Annotated[StrictStr, BeforeValidator(_not_a_number), AfterValidator(_slack_id)]


def _token_placeholder(value: str) -> str:
    if _WHOLE_PLACEHOLDER_RE.fullmatch(value) is None:
        # Never echo the value: it may be a real token.
        raise _error(
            "literal_secret",
            "a token must be a ${VAR} placeholder, not a literal value",
            "put the token in SSM or Secrets Manager, declare it in spec.secrets "
            "(e.g. name: DISCORD_BOT_TOKEN) and write bot_token: ${DISCORD_BOT_TOKEN}",
        )
    return value


TokenPlaceholder = Annotated[StrictStr, AfterValidator(_token_placeholder)]


def _env_name(value: str) -> str:
    if _ENV_NAME_RE.fullmatch(value) is None:
        raise _error(
            "env_name",
            f"{value!r} is not an environment variable name",
            "use letters, digits and underscores, not starting with a digit",
        )
    return value


EnvName = Annotated[StrictStr, AfterValidator(_env_name)]


def _refuse(message: str, hint: str) -> BeforeValidator:
    """A validator that accepts nothing: the key exists only to explain what to write instead."""

    def refuse(value: object) -> object:
        raise _error("unsupported_key", message, hint)

    return BeforeValidator(refuse)


class _Table(BaseModel):
    """Base of every config.toml table: OpenAB's snake_case keys only, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, validate_default=False)


_Model = Annotated[
    SkipJsonSchema[Any],
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
    def _resolve_preset(self) -> AgentConfig:
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


AllowBotMessages = Annotated[Literal["off", "mentions", "all"], _yaml_bool_word("all")]
AllowUserMessages = Literal["involved", "mentions", "multibot-mentions"]
ProcessingMode = Literal["per-message", "per-thread", "per-lane"]


class _ChatTable(_Table):
    """Keys Discord and Slack share."""

    allow_all_channels: StrictBool | None = None
    allow_all_users: StrictBool | None = None
    allow_bot_messages: AllowBotMessages | None = None
    allow_user_messages: AllowUserMessages | None = None
    max_bot_turns: StrictInt | None = Field(default=None, ge=1, le=1000)
    message_processing_mode: ProcessingMode | None = None
    max_buffered_messages: StrictInt | None = Field(default=None, ge=1, le=10_000)
    max_batch_tokens: StrictInt | None = Field(default=None, ge=1, le=10_000_000)


_BotId = Annotated[
    SkipJsonSchema[Any],
    _refuse(
        "discord.botId has no meaning in OpenAB; the bot learns its own id from its token",
        "remove it; to accept messages from other bots use allow_bot_messages and trusted_bot_ids",
    ),
]
_GuildId = Annotated[
    SkipJsonSchema[Any],
    _refuse(
        "discord.guildId has no meaning in OpenAB; access is controlled per channel and user",
        "list the channels in allowed_channels (and users in allowed_users or roles in "
        "allowed_role_ids)",
    ),
]


class DiscordConfig(_ChatTable):
    """``[discord]``: one bot token, one gateway connection."""

    model_config = ConfigDict(populate_by_name=False)

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
    def _map_channel_ids(self) -> DiscordConfig:
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

    bot_token: TokenPlaceholder
    app_token: TokenPlaceholder
    allowed_channels: list[SlackId] | None = None
    allowed_users: list[SlackId] | None = None
    trusted_bot_ids: list[SlackId] | None = None


class GatewayConfig(_Table):
    """``[gateway]``: a custom WebSocket gateway (Telegram, LINE, ...)."""

    url: Annotated[StrictStr, Field(pattern=r"^wss?://[^\s/]+(/\S*)?$")]
    platform: StrictStr | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]*$")
    token: TokenPlaceholder | None = None
    bot_username: StrictStr | None = Field(default=None, min_length=1)
    allowed_channels: list[StrictStr] | None = None
    allowed_users: list[StrictStr] | None = None
    allow_all_channels: StrictBool | None = None
    allow_all_users: StrictBool | None = None
    streaming: StrictBool | None = None


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


class MarkdownConfig(_Table):
    """``[markdown]``: how Markdown tables are sent to chat platforms without tables."""

    tables: Annotated[Literal["code", "bullets", "off"], _yaml_bool_word(None)] | None = None


class SttConfig(_Table):
    """``[stt]``: speech-to-text for voice messages (OpenAI-compatible endpoint)."""

    enabled: StrictBool | None = None
    api_key: TokenPlaceholder | None = None
    model: StrictStr | None = None
    base_url: Annotated[StrictStr, Field(pattern=r"^https?://\S+$")] | None = None


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


class CronJob(_Table):
    """``[[cron.jobs]]``: a message sent to the agent on a schedule."""

    enabled: StrictBool | None = None
    schedule: Annotated[StrictStr, AfterValidator(_cron_schedule)]
    channel: Annotated[StrictStr, BeforeValidator(_not_a_number), Field(min_length=1)]
    message: StrictStr = Field(min_length=1)
    platform: Literal["discord", "slack", "gateway"] | None = None
    sender_name: StrictStr | None = None
    thread_id: Annotated[StrictStr, BeforeValidator(_not_a_number)] | None = None
    timezone: Annotated[StrictStr, AfterValidator(_timezone)] | None = Field(
        default=None, description="IANA time zone of the schedule (OpenAB's default: UTC)."
    )


class CronConfig(_Table):
    """``[cron]``: scheduled prompts."""

    jobs: list[CronJob] = Field(default_factory=list)


_Steering = Annotated[
    SkipJsonSchema[Any],
    _refuse(
        "steering has no meaning in OpenAB's config.toml",
        "ship steering files in the bootstrap archive (spec.bootstrapFrom) where the agent CLI "
        "reads them (e.g. ~/.kiro/steering)",
    ),
]
_Memory = Annotated[
    SkipJsonSchema[Any],
    _refuse(
        "memory has no meaning in OpenAB's config.toml; agent memory is files in HOME",
        "restore it at start with spec.bootstrapFrom (s3://bucket/key.tar.gz) and save it with "
        "oabctl snapshot",
    ),
]
_Tools = Annotated[
    SkipJsonSchema[Any],
    _refuse(
        "tools has no meaning in OpenAB's config.toml; tools belong to the agent CLI",
        "configure them through agent.args (e.g. kiro's --trust-all-tools) or the CLI's own "
        "config files in the bootstrap archive",
    ),
]


class OpenABConfig(_Table):
    """``spec.config``: the whole config.toml.

    Call ``to_toml_dict`` for the dict the renderer writes; ``placeholders()`` lists every
    ``${VAR}`` the file will need at run time.
    """

    agent: AgentConfig
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

    @model_validator(mode="before")
    @classmethod
    def _drop_disabled_discord(cls, data: Any) -> Any:
        # Record-style `discord: {enabled: false}` means "no Discord": drop the table before it
        # is validated, since a disabled table is usually incomplete (no bot_token).
        if isinstance(data, dict):
            discord = data.get("discord")
            if isinstance(discord, dict) and discord.get("enabled") is False:
                data = {k: v for k, v in data.items() if k != "discord"}
        return data

    @model_validator(mode="after")
    def _needs_a_chat(self) -> OpenABConfig:
        if self.discord is None and self.slack is None and self.gateway is None:
            raise _error(
                "missing_platform",
                "config needs at least one of discord, slack, gateway",
                "add a discord table with bot_token: ${DISCORD_BOT_TOKEN} (or slack/gateway)",
            )
        return self

    def placeholders(self) -> set[str]:
        """Every ``${VAR}`` name used anywhere in the rendered file."""
        return {name for _path, name in self.placeholder_uses()}

    def placeholder_uses(self) -> list[tuple[tuple[str | int, ...], str]]:
        """``(field path, VAR)`` for each placeholder occurrence, in document order."""
        return list(placeholders_in(self.model_dump(mode="json", exclude_none=True)))

    def to_toml_dict(self, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """The config.toml content as plain data for tomli-w.

        ``secret_names`` are the container variables injected for this agent (spec.secrets and
        plain spec.env names). Those not consumed by a ``${VAR}`` placeholder are for the agent
        CLI, whose environment OpenAB clears, so they are appended to ``[agent].inherit_env``;
        placeholder-only variables (bot tokens) are deliberately not passed to the agent, which
        runs arbitrary tools. List one in ``inherit_env`` yourself if the agent needs it too.
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
        out["agent"] = ordered
        return {k: out[k] for k in _TABLE_ORDER if k in out}


_AGENT_ORDER = ("command", "args", "working_dir", "env", "inherit_env")
_TABLE_ORDER = (
    "discord",
    "slack",
    "gateway",
    "agent",
    "pool",
    "reactions",
    "markdown",
    "stt",
    "cron",
)


def placeholders_in(
    data: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield ``(path, VAR)`` for every ``${VAR}`` inside strings (and mapping keys) of ``data``."""
    if isinstance(data, str):
        for match in PLACEHOLDER_RE.finditer(data):
            yield path, match.group(1)
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from placeholders_in(key, (*path, key))
            yield from placeholders_in(value, (*path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from placeholders_in(item, (*path, i))
