"""The layer rules of docs/architecture.md, checked on the source's import statements.

An arrow means "may import": server → service → {engine, storage}; tasks → amlflow.client,
amlflow.storage, boto3, prefect; flows → tasks, prefect. The engine imports no HTTP, Prefect, boto3 or
storage code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "amlflow"

# (folder, forbidden module prefixes)
RULES: list[tuple[Path, tuple[str, ...]]] = [
    (
        SRC / "engine",
        (
            "amlflow.service",
            "amlflow.server",
            "amlflow.storage",
            "amlflow.client",
            "prefect",
            "boto3",
            "botocore",
            "starlette",
            "uvicorn",
            "httpx",
            "requests",
            "flows",
            "tasks",
        ),
    ),
    (SRC / "storage", ("amlflow.engine", "amlflow.service", "amlflow.server", "prefect")),
    (SRC / "service", ("amlflow.server", "prefect", "starlette", "uvicorn", "flows", "tasks")),
    (SRC / "server", ("prefect", "flows", "tasks", "amlflow.engine")),
    # the datasource reader process: the engine and the storage only (a worker imports no service code)
    (
        SRC / "reader_worker.py",
        ("amlflow.service", "amlflow.server", "amlflow.client", "prefect", "flows", "tasks"),
    ),
    (REPO / "tasks", ("amlflow.engine", "amlflow.service", "amlflow.server", "flows")),
    (REPO / "flows", ("amlflow.engine", "amlflow.service", "amlflow.server", "amlflow.storage", "boto3")),
]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    base = REPO if folder.is_relative_to(REPO) else folder
    for path in [folder] if folder.is_file() else sorted(folder.rglob("*.py")):
        for lineno, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(base)}:{lineno} imports {module}")
    return out


@pytest.mark.parametrize(("folder", "forbidden"), RULES, ids=[str(r[0].relative_to(REPO)) for r in RULES])
def test_layer_rule(folder: Path, forbidden: tuple[str, ...]) -> None:
    assert folder.exists(), f"{folder} is missing"
    assert _violations(folder, forbidden) == []


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself must be able to fail."""
    (tmp_path / "bad.py").write_text("import prefect\nfrom amlflow.service import backend\n")
    assert len(_violations(tmp_path, ("prefect", "amlflow.service"))) == 2
