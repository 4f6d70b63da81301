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


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["pause", "web", "--for", "10 minutes"], "invalid duration '10 minutes'"),
        (["pause", "web", "--for", "0s"], "must be more than zero"),
        (["history", "--limit", "0"], "expected a whole number of 1 or more, not '0'"),
        (["history", "--limit", "ten"], "expected a whole number of 1 or more, not 'ten'"),
    ],
)
def test_bad_values_are_usage_errors_before_any_request(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--url", "http://127.0.0.1:9"])  # nothing listens: never reached
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
