"""Hostile manifests, generated deterministically from a seed (the corpus of ``make fuzz``).

``cases(seed=S, count=N)`` yields N :class:`Case` objects (a shape name and the file's bytes).
Case ``i`` depends only on ``(S, i)``, so any case can be regenerated alone
(``python fuzz/manifest_fuzz.py --seed S --only i``). Shapes take turns, so every shape appears
in any run of a few hundred cases; each draws its variations from its own random stream.

The shapes are what a hostile tenant or a careless operator would write: alias bombs of several
forms (lists, mappings, strings, merge keys) placed in several fields, recursive aliases, deep
nesting (flow and block), huge scalars and keys, raw and escaped control characters, surrogates,
bad UTF-8 and UTF-16/32 byte order marks, YAML tags (``!!python/object``, ``!!binary``, ...),
merge keys, duplicate keys, a wrong type at every field of the example manifests, integers at
and past 64 bits, names with trailing newlines and look-alike characters, malformed timestamps,
multi-document streams and directives, fleets that expand too far, secret-shaped literals, and
byte- and token-level mutations of ``examples/``. Most are refused; some are valid on purpose
(the runner checks those further).

Not a module of the product: no time, no I/O but reading ``examples/`` once.
"""

from __future__ import annotations

import codecs
import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    """One generated input: which shape made it, its index and the file's bytes."""

    index: int
    shape: str
    data: bytes


@cache
def examples() -> tuple[str, ...]:
    """The example manifests' text (each file one entry; fleet.yaml holds one fleet)."""
    return tuple(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml")))


@cache
def example_docs() -> tuple[dict[str, Any], ...]:
    """Every example document as data."""
    docs: list[dict[str, Any]] = []
    for text in examples():
        docs.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    return tuple(docs)


def agent(name: str = "fuzz", namespace: str = "fuzz") -> str:
    """A small valid OABService (Kiro on Discord) as YAML text."""
    return (
        "apiVersion: oab.dev/v1\n"
        "kind: OABService\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n"
        "  cpu: 256\n"
        "  memory: 512\n"
        "  taskDefinition: {image: ghcr.io/openabdev/openab:stable-kiro}\n"
        "  secrets:\n"
        "    - {name: DISCORD_BOT_TOKEN, source: ssm, "
        f"path: /oab/{namespace}/{name}/discord-token}}\n"
        "  config:\n"
        "    agent: {preset: kiro}\n"
        '    discord: {bot_token: "${DISCORD_BOT_TOKEN}", '
        'allowed_channels: ["123456789012345678"]}\n'
    )


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1_000_000)


# --------------------------------------------------------------------------------- shapes

Shape = Callable[[random.Random], bytes]
_SHAPES: dict[str, Shape] = {}


def shape(name: str) -> Callable[[Shape], Shape]:
    def register(fn: Shape) -> Shape:
        _SHAPES[name] = fn
        return fn

    return register


def _text(rng: random.Random, text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


_BOMB_FIELDS = (
    ("  platform:\n    k8s:\n", "      "),
    ("  config:\n    agent: {preset: kiro}\n    extra:\n", "      "),
    ("  env:\n    BOMB:\n", "      "),
)


@shape("alias-bomb-list")
def _bomb_list(rng: random.Random) -> bytes:
    width, levels = rng.randint(2, 12), rng.randint(4, 12)
    head, indent = rng.choice(_BOMB_FIELDS)
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    base = agent().split("  config:\n")[0] if "config" in head else agent()
    return _text(rng, base + head + "".join(f"{indent}{line}\n" for line in lines))


@shape("alias-bomb-map")
def _bomb_map(rng: random.Random) -> bytes:
    width, levels = rng.randint(2, 10), rng.randint(4, 12)
    lines = ["m0: &m0 {a: lol, b: lol}"]
    for i in range(1, levels):
        inner = ", ".join(f"k{j}: *m{i - 1}" for j in range(width))
        lines.append(f"m{i}: &m{i} {{{inner}}}")
    return _text(rng, agent() + "  platform:\n    k8s:\n" + "".join(f"      {x}\n" for x in lines))


@shape("alias-bomb-string")
def _bomb_string(rng: random.Random) -> bytes:
    size = rng.choice([1_000, 10_000, 100_000, 400_000])
    copies = rng.randint(2, 2_000)
    body = f'      s: &s "{"x" * size}"\n      t: [{", ".join(["*s"] * copies)}]\n'
    return _text(rng, agent() + "  platform:\n    k8s:\n" + body)


@shape("alias-bomb-merge")
def _bomb_merge(rng: random.Random) -> bytes:
    levels = rng.randint(3, 14)
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(rng.randint(2, 50))) + "}"]
    for i in range(1, levels):
        lines.append(
            f"m{i}: &m{i} {{<<: [*m{i - 1}], x{i}: [*m{i - 1}, *m{i - 1}, *m{i - 1}, *m{i - 1}]}}"
        )
    return _text(rng, agent() + "  platform:\n    k8s:\n" + "".join(f"      {x}\n" for x in lines))


@shape("alias-recursive")
def _recursive(rng: random.Random) -> bytes:
    body = rng.choice(
        [
            "x: &a [*a]",
            "x: &a {y: *a}",
            "x: &a {<<: *a}",
            "x: &a [1, [2, {z: *a}]]",
            "x: &a {y: [*a, *a]}",
            "x: &a !!set {? *a}",
        ]
    )
    return _text(rng, agent() + "  platform:\n    k8s:\n      " + body + "\n")


@shape("alias-undefined-or-duplicate")
def _alias_errors(rng: random.Random) -> bytes:
    body = rng.choice(["x: *nope", "x: &a 1\n      y: &a 2\n      z: *a", "x: [&a 1, *a, &a 2]"])
    return _text(rng, agent() + "  platform:\n    k8s:\n      " + body + "\n")


@shape("deep-nesting")
def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([58, 59, 60, 61, 62, 63, 64, 65, 100, 400, 999, 1_001, 5_000, 100_000])
    form = rng.choice(["flow-list", "flow-map", "block-map", "block-list"])
    if form == "flow-list":
        body = "[" * depth + "]" * depth
    elif form == "flow-map":
        body = "{a: " * depth + "x" + "}" * depth
    elif form == "block-map":
        body = "\n" + "".join("  " * (i + 4) + "a:\n" for i in range(min(depth, 2_000)))
    else:
        body = "\n" + "".join("  " * (i + 4) + "-\n" for i in range(min(depth, 2_000)))
    return _text(rng, agent() + "  platform:\n    k8s: " + body + "\n")


@shape("huge-scalar")
def _huge_scalar(rng: random.Random) -> bytes:
    size = rng.choice([MIB // 4, MIB // 2, MIB - 2_000, MIB - 600, MIB, MIB + 1])
    style = rng.choice(["plain", "double", "single", "literal", "folded", "key"])
    filler = "y" * size
    if style == "plain":
        extra = f"  platform: {{k8s: {{a: {filler}}}}}\n"
    elif style == "double":
        extra = f'  platform: {{k8s: {{a: "{filler}"}}}}\n'
    elif style == "single":
        extra = f"  platform: {{k8s: {{a: '{filler}'}}}}\n"
    elif style in ("literal", "folded"):
        mark = "|" if style == "literal" else ">"
        lines = "".join("      " + filler[i : i + 100] + "\n" for i in range(0, size, 100))
        extra = f"  platform:\n    k8s:\n      a: {mark}\n" + lines.replace("      ", "        ")
    else:
        extra = f"  platform: {{k8s: {{{filler}: x}}}}\n"
    return _text(rng, (agent() + extra)[: rng.choice([MIB * 2, MIB - 1, MIB + 1, MIB * 4])])


@shape("many-nodes")
def _many_nodes(rng: random.Random) -> bytes:
    n = rng.choice([10_000, 50_000, 99_000, 100_500, 200_000, 400_000])
    form = rng.choice(["flow", "block", "map", "env"])
    if form == "flow":
        extra = "  platform: {k8s: [" + ",".join(["1"] * n) + "]}\n"
    elif form == "block":
        extra = "  platform:\n    k8s:\n" + "".join("      - 1\n" for _ in range(n))
    elif form == "map":
        extra = "  platform:\n    k8s:\n" + "".join(f"      k{i}: 1\n" for i in range(n // 2))
    else:
        extra = "  env:\n" + "".join(f"    V{i}: x\n" for i in range(n // 2))
    return _text(rng, agent() + extra)


_CONTROLS = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0)]


@shape("control-raw")
def _control_raw(rng: random.Random) -> bytes:
    text = rng.choice(examples())
    char = chr(rng.choice(_CONTROLS))
    pos = rng.randrange(len(text))
    return text[:pos].encode() + char.encode("utf-8") + text[pos:].encode()


@shape("control-escaped")
def _control_escaped(rng: random.Random) -> bytes:
    code = rng.choice([*_CONTROLS, 0x09, 0x0A, 0x0D, 0x2028, 0xFEFF, 0xFFFE])
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    where = rng.choice(["name", "env", "label", "k8s", "key", "message"])
    value = f'"bot{escape}"'
    if where == "name":
        return _text(rng, agent().replace("name: fuzz,", f"name: {value},"))
    if where == "env":
        return _text(rng, agent() + f"  env: {{A: {value}}}\n")
    if where == "label":
        return _text(rng, agent().replace("metadata: {", f"metadata: {{labels: {{a: {value}}}, "))
    if where == "key":
        return _text(rng, agent() + f"  platform: {{k8s: {{{value}: 1}}}}\n")
    if where == "message":
        return _text(
            rng, agent() + f"    cron: {{jobs: [{{schedule: '* * * * *', message: {value}}}]}}\n"
        )
    return _text(rng, agent() + f"  platform: {{k8s: {{a: {value}}}}}\n")


@shape("surrogates")
def _surrogates(rng: random.Random) -> bytes:
    form = rng.choice(["escape-lone", "escape-pair", "escape-low", "raw-utf8", "raw-cesu", "key"])
    if form == "escape-lone":
        return _text(rng, agent() + '  env: {A: "\\ud800"}\n')
    if form == "escape-pair":
        return _text(rng, agent() + '  platform: {k8s: {a: "\\ud83d\\ude00"}}\n')
    if form == "escape-low":
        return _text(rng, agent().replace("name: fuzz,", 'name: "fuzz\\udfff",'))
    if form == "raw-utf8":  # a surrogate encoded as UTF-8 (invalid): ED A0 80
        return agent().encode() + b"  env: {A: \xed\xa0\x80}\n"
    if form == "raw-cesu":  # CESU-8 encoded pair
        return agent().encode() + b"  env: {A: \xed\xa0\xbd\xed\xb8\x80}\n"
    return _text(rng, agent() + '  platform: {k8s: {"\\udc00": 1}}\n')


@shape("encoding")
def _encoding(rng: random.Random) -> bytes:
    text = rng.choice(examples())
    form = rng.choice(
        [
            "utf16le-bom", "utf16be-bom", "utf16le-nobom", "utf32-bom", "utf8-bom",
            "bom-mid", "invalid-byte", "truncated-multibyte", "overlong", "latin1",
            "utf16-odd", "utf16-lone-surrogate", "double-bom",
        ]
    )  # fmt: skip
    if form == "utf16le-bom":
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    if form == "utf16be-bom":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    if form == "utf16le-nobom":
        return text.encode("utf-16-le")
    if form == "utf32-bom":
        return text.encode("utf-32")
    if form == "utf8-bom":
        return codecs.BOM_UTF8 + text.encode()
    if form == "bom-mid":
        pos = rng.randrange(len(text))
        return text[:pos].encode() + codecs.BOM_UTF8 + text[pos:].encode()
    if form == "invalid-byte":
        data = bytearray(text.encode())
        data[rng.randrange(len(data))] = rng.choice([0xFF, 0xFE, 0xC0, 0xC1, 0xF5, 0x80])
        return bytes(data)
    if form == "truncated-multibyte":
        return text.encode() + "  env: {A: é}\n".encode()[:-3] + b"\n"
    if form == "overlong":
        return text.encode() + b"  env: {A: \xc0\xaf}\n"
    if form == "latin1":
        return (text + "  env: {A: café}\n").encode("latin-1", "replace")
    if form == "utf16-odd":
        return (codecs.BOM_UTF16_LE + text.encode("utf-16-le"))[:-1]
    if form == "utf16-lone-surrogate":
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le") + b"\x00\xd8\n\x00"
    return codecs.BOM_UTF8 + codecs.BOM_UTF8 + text.encode()


@shape("tags")
def _tags(rng: random.Random) -> bytes:
    value = rng.choice(
        [
            "!!python/object/apply:os.system ['true']",
            "!!python/name:os.system",
            "!!python/tuple [1, 2]",
            "!!binary aGVsbG8=",
            "!!binary '!!!'",
            "!!set {a, b}",
            "!!omap [{a: 1}, {b: 2}]",
            "!!pairs [{a: 1}, {a: 2}]",
            "!!timestamp 2024-01-01",
            "!!timestamp not-a-date",
            "!!int 12",
            "!!int twelve",
            "!!float abc",
            "!!bool maybe",
            "!!null x",
            "!!str [a, b]",
            "!!map [a]",
            "!!seq {a: 1}",
            "!custom x",
            "!<tag:example.com,2000:x> y",
            "!!merge x",
            "!!value x",
        ]
    )
    target = rng.choice(["k8s", "env", "cpu", "name"])
    if target == "k8s":
        return _text(rng, agent() + f"  platform: {{k8s: {{a: {value}}}}}\n")
    if target == "env":
        return _text(rng, agent() + f"  env: {{A: {value}}}\n")
    if target == "cpu":
        return _text(rng, agent().replace("cpu: 256", f"cpu: {value}"))
    return _text(rng, agent().replace("name: fuzz,", f"name: {value},"))


@shape("directives")
def _directives(rng: random.Random) -> bytes:
    head = rng.choice(
        [
            "%YAML 1.1\n---\n",
            "%YAML 1.2\n---\n",
            "%YAML 2.0\n---\n",
            "%TAG !e! tag:example.com,2000:\n---\n",
            "%TAG !! tag:evil.com,2000:\n---\n",
            "%FOO bar\n---\n",
            "--- !!map\n",
            "--- &root\n",
            "...\n",
        ]
    )
    return _text(rng, head + agent())


@shape("merge-keys")
def _merge(rng: random.Random) -> bytes:
    body = rng.choice(
        [
            "  platform:\n    k8s:\n      base: &b {x: 1}\n      over: {<<: *b, y: 2}\n",
            "  platform:\n    k8s:\n      base: &b [1, 2]\n      over: {<<: *b}\n",
            "  platform:\n    k8s:\n      over: {<<: 5}\n",
            "  platform:\n    k8s:\n      over: {<<: [5, 6]}\n",
            "  platform:\n    k8s:\n      a: &a {x: 1}\n      b: {<<: [*a, *a, *a]}\n",
            "  networking: &n {subnets: [subnet-1]}\n  platform: {ecs: {networking: {<<: *n}}}\n",
            "  env: &e {A: x}\n  platform: {k8s: {<<: *e, <<: *e}}\n",
        ]
    )
    return _text(rng, agent() + body)


@shape("duplicate-keys")
def _duplicates(rng: random.Random) -> bytes:
    text = agent()
    form = rng.choice(["top", "spec", "nested", "flow", "quoted"])
    if form == "top":
        return _text(rng, text + "kind: OABFleet\n")
    if form == "spec":
        return _text(rng, text.replace("  cpu: 256\n", "  cpu: 256\n  cpu: 512\n"))
    if form == "nested":
        return _text(rng, text + "  env: {A: x, B: y, A: z}\n")
    if form == "flow":
        return _text(rng, text.replace("{name: fuzz,", "{name: fuzz, name: other,"))
    return _text(rng, text + '  env: {A: x, "A": y}\n')


_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 255, 256, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**100,
    0.5, -0.0, float("inf"), float("nan"), 1e308, "", " ", "x", "bot\n", "bot ", " bot",
    "BOT", "b" * 64, "b" * 300, "${X}", "${DISCORD_BOT_TOKEN}", "é", "\u200b", "\u202e",
    "a" * 10_000, [], [None], [1, "a"], {}, {"a": 1}, {"": None}, [[[[]]]],
    "2024-13-45", "yes", "off", "~", "null", "0x10", "1e5", "123456789012345678",
)  # fmt: skip


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


@shape("wrong-type")
def _wrong_type(rng: random.Random) -> bytes:
    doc = copy.deepcopy(rng.choice(example_docs()))
    path = rng.choice(_paths(doc)[1:])
    _set(doc, path, copy.deepcopy(rng.choice(_VALUES)))
    return _text(rng, dump(doc))


@shape("integers")
def _integers(rng: random.Random) -> bytes:
    doc = copy.deepcopy(rng.choice(example_docs()))
    ints = [p for p in _paths(doc)[1:] if _get(doc, p).__class__ is int]
    literal = rng.choice(
        [
            "9223372036854775807", "9223372036854775808", "-9223372036854775808",
            "-9223372036854775809", "18446744073709551616", "1" + "0" * 400, "9" * 5_000,
            "0x7fffffffffffffff", "0x8000000000000000", "0b" + "1" * 64, "0o777", "0777",
            "1_000", "0b_", "0x_", "+_1", "1:30:00", "1" + ":59" * 2_000, "-0", "+0",
            "1e3", ".inf", "-.inf", ".nan", "1_0.5_", "._",
        ]
    )  # fmt: skip
    if not ints:
        return _text(rng, agent() + f"  platform: {{k8s: {{n: {literal}}}}}\n")
    _set(doc, rng.choice(ints), "@@INT@@")
    return _text(rng, dump(doc).replace("'@@INT@@'", literal).replace("@@INT@@", literal))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@shape("names")
def _names(rng: random.Random) -> bytes:
    value = rng.choice(
        [
            '"bot\\n"', '"bot\\r\\n"', '"bot "', '" bot"', '"bot\\t"', "bot-", "-bot",
            "Bot", "b" * 63, "b" * 64, '"b\\u043et"', '"bot\\u200b"', '"bot\\u00a0"',
            '"bo\\u0301t"',
            '"a.b"', '"a/b"', '"a_b"', '"../x"', '""', "123", "1e3", "true", '"bot\\u2028"',
            "|\n    bot\n", ">-\n    bot\n",
        ]
    )  # fmt: skip
    target = rng.choice(["name", "namespace"])
    text = agent()
    if target == "name":
        return _text(rng, text.replace("name: fuzz,", f"name: {value},", 1))
    return _text(rng, text.replace("namespace: fuzz}", f"namespace: {value}}}", 1))


@shape("timestamps")
def _timestamps(rng: random.Random) -> bytes:
    stamp = rng.choice(
        [
            "2024-01-01", "2024-13-45", "0000-00-00", "9999-12-31T23:59:59Z",
            "2024-02-30T25:61:61Z", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.1 +99:99",
            "2001-12-14T21:59:43." + "9" * 1_000 + "Z", "1970-01-01T00:00:00+24:00",
        ]
    )  # fmt: skip
    where = rng.choice(["creation", "annotation", "k8s", "env", "cron"])
    if where == "creation":
        return _text(
            rng, agent().replace("metadata: {", f"metadata: {{creationTimestamp: {stamp}, ")
        )
    if where == "annotation":
        return _text(
            rng, agent().replace("metadata: {", f"metadata: {{annotations: {{a: {stamp}}}, ")
        )
    if where == "env":
        return _text(rng, agent() + f"  env: {{WHEN: {stamp}}}\n")
    if where == "cron":
        return _text(rng, agent() + f"    cron: {{jobs: [{{schedule: {stamp}, message: hi}}]}}\n")
    return _text(rng, agent() + f"  platform: {{k8s: {{at: {stamp}}}}}\n")


@shape("multi-document")
def _multi(rng: random.Random) -> bytes:
    form = rng.choice(["many", "empty", "ends", "mixed", "same", "scalar-docs"])
    if form == "many":
        n = rng.choice([2, 10, 50])  # each accepted agent is applied, diffed, rendered
        return _text(rng, "---\n".join(agent(f"a{i}") for i in range(n)))
    if form == "empty":
        return _text(rng, "---\n" * rng.randint(1, 2_000))
    if form == "ends":
        return _text(rng, agent("a") + "...\n---\n" + agent("b") + "...\n")
    if form == "mixed":
        bad = agent("b").replace("cpu: 256", "cpu: lots")
        return _text(rng, agent("a") + "---\n" + bad + "---\n" + agent("c"))
    if form == "same":
        return _text(rng, agent("a") + "---\n" + agent("a"))
    return _text(rng, agent("a") + "---\n- a\n---\n42\n---\n'text'\n")


@shape("fleet")
def _fleet(rng: random.Random) -> bytes:
    doc = copy.deepcopy(next(d for d in example_docs() if d.get("kind") == "OABFleet"))
    n = rng.choice([0, 1, 2, 50, 3_000, 10_000])  # over ~2,000: refused (fleet cost)
    form = rng.choice(["many", "dup-names", "big-defaults", "child-clash"])
    if form == "many":
        doc["spec"]["agents"] = [{"name": f"a{i}"} for i in range(n)]
    elif form == "dup-names":
        doc["spec"]["agents"] = [{"name": "same"}, {"name": "same"}]
    elif form == "big-defaults":
        doc["spec"]["defaults"]["env"] = {f"V{i}": "x" * 50 for i in range(rng.choice([10, 500]))}
        doc["spec"]["agents"] = [{"name": f"a{i}"} for i in range(min(n, 50))]
    else:
        return _text(rng, dump(doc) + "---\n" + agent("kiro-1", "team-a"))
    return _text(rng, dump(doc))


@shape("secret-literals")
def _secrets(rng: random.Random) -> bytes:
    literal = rng.choice(
        [
            "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz012345",
            "xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx",
            "xapp-1-A0123456789-1234567890123-" + "a" * 64,
            "sk-ant-api03-" + "a" * 90,
            "sk-proj-" + "b" * 48,
            "ghp_" + "c" * 36,
            "AIza" + "d" * 35,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ]
    )  # fmt: skip
    where = rng.choice(["token", "env", "agent-env", "args", "cron", "k8s"])
    text = agent()
    if where == "token":
        return _text(rng, text.replace('"${DISCORD_BOT_TOKEN}"', f'"{literal}"'))
    if where == "env":
        return _text(rng, text + f'  env: {{TOKEN: "{literal}"}}\n')
    if where == "agent-env":
        return _text(
            rng,
            text.replace(
                "agent: {preset: kiro}", f'agent: {{preset: kiro, env: {{K: "{literal}"}}}}'
            ),
        )
    if where == "args":
        return _text(
            rng,
            text.replace("agent: {preset: kiro}", f'agent: {{preset: kiro, args: ["{literal}"]}}'),
        )
    if where == "cron":
        return _text(
            rng, text + f"    cron: {{jobs: [{{schedule: '0 9 * * *', message: \"{literal}\"}}]}}\n"
        )
    return _text(rng, text + f'  platform: {{k8s: {{t: "{literal}"}}}}\n')


@shape("mutate-bytes")
def _mutate_bytes(rng: random.Random) -> bytes:
    data = bytearray(rng.choice(examples()).encode())
    for _ in range(rng.randint(1, 8)):
        op = rng.choice(["flip", "insert", "delete", "dup-line", "truncate", "swap"])
        pos = rng.randrange(max(1, len(data)))
        if op == "flip":
            data[pos] = rng.randrange(256)
        elif op == "insert":
            data[pos:pos] = bytes([rng.choice(b":-[]{}&*!|>'\"#%@`,? \n\t")])
        elif op == "delete":
            del data[pos : pos + rng.randint(1, 20)]
        elif op == "dup-line":
            lines = bytes(data).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@shape("mutate-tree")
def _mutate_tree(rng: random.Random) -> bytes:
    doc = copy.deepcopy(rng.choice(example_docs()))
    for _ in range(rng.randint(1, 4)):
        paths = _paths(doc)[1:]
        path = rng.choice(paths)
        op = rng.choice(["delete", "add", "replace", "rename"])
        try:
            parent = _get(doc, path[:-1])
            if op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif op == "add" and isinstance(parent, dict):
                parent[rng.choice(["extra", "Cpu", "cpu ", "", "spec", "apiVersion"])] = rng.choice(
                    _VALUES[:20]
                )
            elif op == "rename" and isinstance(parent, dict) and path[-1] in parent:
                parent[str(path[-1]).upper()] = parent.pop(path[-1])
            else:
                _set(doc, path, copy.deepcopy(rng.choice(_VALUES)))
        except (KeyError, IndexError, TypeError):
            continue
    return _text(rng, dump(doc))


@shape("valid")
def _valid(rng: random.Random) -> bytes:
    """Valid inputs on purpose: the accepted path must work end to end too."""
    form = rng.choice(["example", "agent", "unicode", "flow", "anchors"])
    if form == "example":
        return rng.choice(examples()).encode()
    if form == "agent":
        return _text(rng, agent(f"v{rng.randrange(1000)}"))
    if form == "unicode":
        return _text(rng, agent() + '  env: {GREETING: "héllo wörld ✓ 🙂"}\n')
    if form == "flow":
        return _text(rng, yaml.safe_dump(yaml.safe_load(agent()), default_flow_style=True))
    return _text(
        rng,
        agent() + "  platform:\n    k8s:\n      base: &b {a: 1}\n      x: *b\n      y: *b\n",
    )


# ---------------------------------------------------------------------------------- corpus


def shapes() -> tuple[str, ...]:
    """Every shape name, in the order they take turns."""
    return tuple(_SHAPES)


def case(seed: int, index: int) -> Case:
    """Case ``index`` of the corpus for ``seed`` (independent of every other case)."""
    names = shapes()
    name = names[index % len(names)]
    rng = random.Random(f"{seed}:{index}")
    return Case(index=index, shape=name, data=_SHAPES[name](rng))


def cases(*, seed: int, count: int) -> Iterator[Case]:
    """``count`` cases for ``seed``, shapes in turn."""
    for index in range(count):
        yield case(seed, index)
