"""Readers for the files in deploy/: Terraform (python-hcl2), YAML, the
Dockerfile, and the metric names a PromQL expression selects."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TERRAFORM = DEPLOY / "terraform"

_HCL_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


@cache
def terraform_file(name: str) -> dict[str, Any]:
    with (TERRAFORM / name).open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle, serialization_options=_HCL_OPTIONS)
    return parsed


def terraform_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in terraform_file("main.tf").get("locals", []):
        merged.update(block)
    return merged


def terraform_variables() -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for block in terraform_file("variables.tf")["variable"]
        for name, spec in block.items()
    }


def resources(kind: str) -> dict[str, dict[str, Any]]:
    """Every `resource "KIND" "NAME"` in main.tf, by NAME."""
    found: dict[str, dict[str, Any]] = {}
    for block in terraform_file("main.tf")["resource"]:
        for name, body in block.get(kind, {}).items():
            found[name] = body
    return found


def one(blocks: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """A nested block that appears once (hcl2 gives every block as a list)."""
    if isinstance(blocks, dict):
        return blocks
    assert len(blocks) == 1, blocks
    return blocks[0]


_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
_SAMPLE_ID = "sample-id-1"


def resolve(text: str, depth: int = 0) -> str:
    """A Terraform string with `var.X` (its default) and `local.X` (its
    value) substituted; any other reference (a resource attribute) becomes
    a plausible id, so the result has the shape the service will see."""
    assert depth < 10, f"reference loop in {text!r}"
    variables = terraform_variables()
    local_values = terraform_locals()

    def substitute(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        plain = re.fullmatch(r"tostring\((.*)\)", expression)
        if plain:
            expression = plain.group(1).strip()
        first_set = re.fullmatch(r"coalesce\((.*)\)", expression)
        if first_set:  # the first argument that is not empty, as Terraform does
            for argument in first_set.group(1).split(","):
                name = argument.strip()
                if name.startswith("var.") and variables[name[4:]].get("default") in (None, ""):
                    continue
                value = resolve("${" + name + "}", depth + 1)
                if value:
                    return value
            return ""
        if expression.startswith("var."):
            default = variables[expression[4:]].get("default")
            return _SAMPLE_ID if default in (None, "") else str(default)
        if expression.startswith("local."):
            value = local_values[expression[6:]]
            return resolve(str(value), depth + 1)
        kms_key = re.fullmatch(r"google_kms_crypto_key\.(\w+)\.id", expression)
        if kms_key:
            return _kms_crypto_key_id(kms_key.group(1), depth)
        return _SAMPLE_ID

    return _INTERPOLATION.sub(substitute, text)


def _kms_crypto_key_id(name: str, depth: int) -> str:
    """The id Terraform gives a KMS key: its full resource name."""
    key = resources("google_kms_crypto_key")[name]
    ring_ref = re.fullmatch(r"\$\{google_kms_key_ring\.(\w+)\.id\}", key["key_ring"])
    assert ring_ref, f"key {name}: key_ring is not a key ring's id ({key['key_ring']})"
    ring = resources("google_kms_key_ring")[ring_ref.group(1)]
    parts = [
        "projects/${var.project_id}",
        f"locations/{ring['location']}",
        f"keyRings/{ring['name']}",
        f"cryptoKeys/{key['name']}",
    ]
    return resolve("/".join(parts), depth + 1)


# --- YAML and JSON monitoring files ------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows included."""
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target["expr"]


# --- PromQL ----------------------------------------------------------------------

_KEYWORDS = frozenset(
    "and or unless bool offset by without on ignoring group_left group_right inf nan".split()
)
_SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)")


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Query:
    selectors: tuple[Selector, ...]
    grouping_labels: frozenset[str]


def parse_promql(expr: str) -> Query:
    """Metric selectors and grouping labels of a PromQL expression.

    Enough PromQL for dashboards and alert rules: strings, ranges, label
    matchers, grouping clauses, function calls and keywords are told apart
    from metric names; anything else that looks like a name is a metric."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values cannot hide names
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: [5m], [1h:1m]
    selectors: list[Selector] = []

    def take_selector(match: re.Match[str]) -> str:
        labels = frozenset(_MATCHER_LABEL.findall(match.group(2)))
        selectors.append(Selector(match.group(1), labels))
        return " "

    text = _SELECTOR.sub(take_selector, text)
    grouping: set[str] = set()

    def take_grouping(match: re.Match[str]) -> str:
        grouping.update(label.strip() for label in match.group(2).split(",") if label.strip())
        return " "

    text = _GROUPING.sub(take_grouping, text)
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        rest = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or rest.startswith("("):
            continue  # a keyword, or a function / aggregation call
        selectors.append(Selector(name, frozenset()))
    return Query(tuple(selectors), frozenset(grouping))


# --- Dockerfile ------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages() -> list[list[Instruction]]:
    """Instructions per build stage, line continuations joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[Instruction]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, arguments = line.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append(instruction)
    return stages


def env_assignments(arguments: str) -> dict[str, str]:
    """`ENV A=1 B=2` (the legacy `ENV A 1` form is refused: it is ambiguous)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(arguments):
        name, equals, value = word.partition("=")
        assert equals, f"ENV {arguments!r}: use the NAME=VALUE form"
        pairs[name] = value
    return pairs
