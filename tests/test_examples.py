"""The examples run: the README's demo command must keep working."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from taapit_async.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_the_demo_tracks_the_journey_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "demo.py"))
    assert namespace["main"]() == 0
    out = capsys.readouterr().out
    assert "OK: one lead and two sales, each recorded exactly once" in out
    assert "replayed the first reply" in out


def test_the_command_line_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--help"]) == 0
    assert "fake-server" in capsys.readouterr().out


def test_the_command_line_refuses_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert cli_main([]) == 2


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taapit_async", "fake-server", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--api-key" in done.stdout


def test_fake_server_command_is_dispatched(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["fake-server", "--help"])
    assert info.value.code == 0
    assert "--error-rate" in capsys.readouterr().out


def test_fake_server_without_uvicorn_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "taapit_async.testing._server", None)
    assert cli_main(["fake-server"]) == 2
    assert "taapit_async.testing._server" in capsys.readouterr().err
