"""docs/operations.md is generated from botocore's model and must not go stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from amlflow.server.compat import OPERATIONS
from amlflow.server.protocol import service_model

REPO = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_operations", REPO / "scripts" / "gen_operations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_operations", module)
    spec.loader.exec_module(module)
    return module


def test_compat_table_covers_exactly_the_model() -> None:
    assert set(OPERATIONS) == set(service_model().operation_names)
    assert {s.support for s in OPERATIONS.values()} <= {"supported", "not supported"}


def test_operations_doc_is_current() -> None:
    """Fails when docs/operations.md differs from what scripts/gen_operations.py writes (run `make gen`)."""
    text = _generator().render()
    assert (REPO / "docs" / "operations.md").read_text(encoding="utf-8") == text


def test_operations_doc_lists_every_operation_waiter_and_paginator() -> None:
    text = _generator().render()
    for name in service_model().operation_names:
        assert f"| `{name}` |" in text
    for waiter in (
        "DataSourceAvailable",
        "MLModelAvailable",
        "EvaluationAvailable",
        "BatchPredictionAvailable",
    ):
        assert f"| `{waiter}` |" in text
    assert text.count("| `Describe") >= 8  # 4 operations + 4 paginators


def test_readme_table_is_current() -> None:
    """The README's compact table (between the compat markers) is what the generator writes."""
    gen = _generator()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert gen.readme_with_summary(readme) == readme
    for name in service_model().operation_names:
        assert f"| `{name}` |" in readme


def test_check_mode_detects_staleness(tmp_path: Path) -> None:
    gen = _generator()
    out = tmp_path / "operations.md"
    readme = tmp_path / "README.md"
    out.write_text("old\n", encoding="utf-8")
    readme.write_text(f"intro\n{gen.BEGIN}\nold table\n{gen.END}\nrest\n", encoding="utf-8")
    assert gen.main(["--check", "--output", str(out), "--readme", str(readme)]) == 1
    assert gen.main(["--output", str(out), "--readme", str(readme)]) == 0
    assert gen.main(["--check", "--output", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old table" not in text
    assert gen.main(["--check", "--output", str(out)]) == 0
