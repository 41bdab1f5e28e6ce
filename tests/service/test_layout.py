"""Entity ids never become paths (issue 8, row 1): every id AML admits maps to its own safe directory."""

from __future__ import annotations

import itertools
import re

import pytest

from amlflow.service.layout import KIND_FOLDERS, entity_dir_name

#: Ids valid under AML's ``[a-zA-Z0-9_.-]+`` (1-64 chars) that mean something to a filesystem or to amlflow.
SPECIAL = [
    ".",
    "..",
    "...",
    "-",
    "_",
    "table",
    "TABLE",
    "Table",
    "model",
    "insights.json",
    "report.json",
    "state.db",
    "state.db-wal",
    "CON",
    "con",
    "NUL",
    "aux.txt",
    "COM1",
    "LPT1",
    ".git",
    "-rf",
    "a" * 64,
    "A" * 64,
    "x.",
    "x..",
    ".hidden",
    "ml-1-0123456789abcdef01234567",
]


@pytest.mark.parametrize("kind", sorted(KIND_FOLDERS))
def test_every_special_id_gets_a_distinct_safe_name(kind: str) -> None:
    names = [entity_dir_name(kind, i) for i in SPECIAL]
    folded = {n.lower() for n in names}
    assert len(folded) == len(SPECIAL), "two ids share a directory (case-insensitively)"
    for entity_id, name in zip(SPECIAL, names, strict=True):
        assert re.fullmatch(r"[a-z0-9_-]+-[0-9a-f]{24}", name), (entity_id, name)
        assert name not in (".", "..") and "/" not in name and "\\" not in name
        assert name != entity_id  # never the raw id
        assert len(name) <= 64


def test_kinds_do_not_share_names() -> None:
    for a, b in itertools.combinations(sorted(KIND_FOLDERS), 2):
        assert entity_dir_name(a, "x") != entity_dir_name(b, "x")


def test_a_name_is_stable() -> None:
    """Directories must be found again after a restart: the name depends on (kind, id) alone."""
    assert entity_dir_name("MLModel", "ml-1") == entity_dir_name("MLModel", "ml-1")
