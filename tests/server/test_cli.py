"""The `amlflow` command: help, version, operations, argument errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amlflow import __version__
from amlflow.cli import main

pytestmark = pytest.mark.server


def test_serve_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--home",
        "--storage",
        "--storage-root",
        "--max-jobs",
        "--access-key-id",
        "--secret-access-key",
        "--log-level",
        "--shutdown-timeout",
    ):
        assert flag in out
    assert "127.0.0.1" in out and "AWS_ENDPOINT_URL_MACHINE_LEARNING" in out and "SIGTERM" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_operations_lists_all_28(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operations"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 28
    assert any(line.startswith("CreateDataSourceFromRedshift") and "not supported" in line for line in lines)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["serve", "--access-key-id", "AKID"], "give both or neither"),
        (["serve", "--port", "70000"], "--port: expected 0-65535"),
        (["serve", "--storage", "ftp"], "invalid choice: 'ftp'"),
        (["serve", "--max-jobs", "99"], "--max-jobs"),
    ],
)
def test_bad_arguments_name_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "amlflow.cli", "version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == __version__
