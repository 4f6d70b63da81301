"""The corpus of broken policies: each file in tests/policies/ ends with the exact lines
check-config must print for it (``# expect: LINE: key.path: message``), in order.

Every file goes through the real command line in-process; a sample of them also through
``python -m failoverd check-config`` as a subprocess, as systemd's ExecStartPre runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from failoverd.cli import main

CORPUS = Path(__file__).parent / "policies"
FILES = sorted(CORPUS.glob("*.yaml"))
# Values of the credentials planted in the secret-* files: they must never be echoed.
PLANTED_SECRETS = ("not-echoed", "hunter2")


def expected_lines(path: Path, shown_as: str) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"{shown_as}:{line[len(prefix) :]}" for line in lines if line.startswith(prefix)]


def test_the_corpus_is_big_enough() -> None:
    assert len(FILES) >= 40
    for path in FILES:
        assert expected_lines(path, "x"), f"{path.name} has no '# expect:' lines"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_policy_reports_exact_lines(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(path)]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == expected_lines(path, str(path))
    assert "Traceback" not in err
    for secret in PLANTED_SECRETS:
        assert secret not in err


SAMPLE = FILES[::12]  # a few processes: each costs an interpreter start


@pytest.mark.parametrize("path", SAMPLE, ids=[p.stem for p in SAMPLE])
def test_broken_policy_through_a_real_process(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "failoverd", "check-config", "-c", path.name],
        cwd=CORPUS,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 78
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == expected_lines(path, path.name)
    assert "Traceback" not in proc.stderr
