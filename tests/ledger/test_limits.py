"""ledger.limits: every bound is named with its unit, and set there only.

How the limits fit together is checked at import (ledger/limits.py) and, for
the ones settings can change, at start-up: tests/gateway/test_settings_limits.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

from ledger import limits

_ROOT = Path(__file__).resolve().parents[2]


def test_limits_are_positive_integers_named_with_their_unit() -> None:
    public = {name: value for name, value in vars(limits).items() if not name.startswith("_")}
    bounds = {
        name: value
        for name, value in public.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    assert bounds
    for name, value in bounds.items():
        assert value > 0, name
        assert name.endswith(("_max", "_ms", "_s", "_per_cpu")), name



# Bounds set outside ledger/limits.py (issue 21: "gather them"). A name ending
# in `_max` (any case) given a value with a number in it, as a module or class
# constant, a variable or a parameter's default, sets a bound; one that only
# passes a limit along (`batch_max: int = limits.admin_batch_max`, `= None`)
# does not. A protocol's or an API's fixed fact stays where it is used, with
# `# fixed: <whose fact>` on its line.
_SCANNED_PACKAGES = ("actors", "gateway", "ledger")
_LIMITS_MODULE = "ledger/limits.py"
_FIXED = re.compile(r"#\s*fixed:\s*\S")


class Bound(NamedTuple):
    path: str  # relative to the root, with "/"
    line: int
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name}"


def _has_number(value: ast.expr | None) -> bool:
    return value is not None and any(
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        for node in ast.walk(value)
    )


def _named_values(node: ast.AST) -> list[tuple[str, ast.expr | None]]:
    """(name, value) of what this node binds: assignments and parameter defaults."""
    if isinstance(node, ast.Assign):
        return [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        with_default = positional[len(positional) - len(args.defaults):]
        return [
            *((a.arg, d) for a, d in zip(with_default, args.defaults, strict=True)),
            *((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)),
        ]
    return []


def bounds_set_outside_limits(root: Path, packages: tuple[str, ...]) -> list[Bound]:
    """Every `*_max` given a number below root's packages, except in the
    limits module and on lines that say `# fixed:`."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative == _LIMITS_MODULE:
                continue
            text = path.read_text(encoding="utf-8")
            source = text.splitlines()
            for node in ast.walk(ast.parse(text, filename=str(path))):
                for name, value in _named_values(node):
                    if not name.lower().endswith("_max") or not _has_number(value):
                        continue
                    assert value is not None and value.end_lineno is not None
                    lines = source[value.lineno - 1 : value.end_lineno]
                    if not any(_FIXED.search(line) for line in lines):
                        found.append(Bound(relative, value.lineno, name))
    return found


def test_every_bound_is_set_in_the_limits_module() -> None:
    scattered = bounds_set_outside_limits(_ROOT, _SCANNED_PACKAGES)
    assert not scattered, (
        "bounds named *_max set outside ledger/limits.py: move them there (with their"
        " unit and why), or mark a protocol's fixed fact `# fixed: <whose>`:\n"
        + "\n".join(map(str, scattered))
    )


def test_the_scan_names_a_bound_set_outside_the_limits_module(tmp_path: Path) -> None:
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "limits.py").write_text("batch_max = 5\n")
    (tmp_path / "ledger" / "store.py").write_text(
        "from ledger import limits\n"
        "PAGE_MAX = 1_000  # fixed: the API lists at most 1,000 a page\n"
        "_ROWS_MAX = limits.batch_max * 16\n"
        "def read(limit_max: int = limits.batch_max, n: int = 3) -> None: ...\n"
        "class Relay:\n"
        "    retries_max: int = 8\n"
        "    def run(self, *, batch_max: int = 2_000, wait_max=None) -> None:\n"
        "        key_max = limits.batch_max - 1\n"
    )
    assert [(b.line, b.name) for b in bounds_set_outside_limits(tmp_path, ("ledger",))] == [
        (3, "_ROWS_MAX"), (6, "retries_max"), (7, "batch_max"), (8, "key_max"),
    ]
