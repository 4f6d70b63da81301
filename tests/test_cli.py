"""The command line's own contract: usage errors exit 2, version prints."""

import subprocess
import sys

import pytest

from failoverd import __version__
from failoverd.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"failoverd {__version__}"


def test_usage_error_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "failoverd", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
