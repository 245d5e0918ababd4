"""Dependency arrows point one way (STYLE.md): checked by parsing imports, so a wrong arrow fails fast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


RULES = [
    # (package, forbidden import prefixes, why)
    (
        "realtime/protocol",
        (
            "asyncio",
            "starlette",
            "uvicorn",
            "websockets",
            "httpx",
            "time",
            "realtime.stages",
            "realtime.session",
            "realtime.server",
        ),
        "the protocol is sans-I/O",
    ),
    (
        "realtime/stages",
        ("realtime.protocol", "realtime.session", "realtime.server", "starlette"),
        "stages know nothing of the wire or the session",
    ),
    (
        "realtime/local_ollama",
        ("realtime.protocol", "realtime.session", "realtime.server", "realtime.stages", "realtime.config"),
        "the embedded LLM endpoint is a separate service",
    ),
    (
        "realtime/research",
        ("realtime.protocol", "realtime.session", "realtime.server", "starlette"),
        "research is a stage: it knows nothing of the wire or the session",
    ),
    ("db", ("realtime",), "db/ imports nothing from realtime/"),
]


@pytest.mark.parametrize(("package", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_dependency_direction(package: str, forbidden: tuple[str, ...], why: str) -> None:
    """No module of the package imports what its layer must not see."""
    bad = []
    for path in _files(package):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, f"{why}: " + "; ".join(bad)


def test_rules_cover_existing_files() -> None:
    """The checked packages exist and hold modules (a renamed package would silently pass)."""
    for package, _, _ in RULES:
        assert (ROOT / package).is_dir()
    assert _files("realtime/protocol") and _files("realtime/stages")
