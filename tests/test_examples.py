"""The examples run: the README's demo command must keep working."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from taapit_async.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.py"
TID = "rLnWe1uz9t282v7g"  # the demo's default tracking id
TIMEOUT = 60.0  # seconds; the demo takes a few


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo as the README's command does: its own process, output to a pipe."""
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def recorded_rows(out: str) -> list[list[str]]:
    """The rows of the demo's table of what the fake Taapit API recorded, split in cells."""
    return [line.split() for line in out.splitlines() if line.split()[:1] in (["lead"], ["sale"])]


@pytest.mark.server
def test_the_demo_walks_a_visitor_to_an_attributed_lead_and_sale() -> None:
    done = run_demo()
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"OK: one lead and one sale, both attributed to ta_tid={TID}." in out
    (lead, sale) = recorded_rows(out)
    assert lead[:2] == ["lead", TID]
    assert lead[-1] == "1"  # attempts
    # The sale: the same customer, EUR 29.00 (2900 cents at Stripe), keyed by its order id,
    # and two attempts: the fake answered the first one 503 and the outbox retried it.
    assert sale[:3] == ["sale", TID, lead[2]]
    assert sale[3:5] == ["29.00", "EUR"]
    assert sale[5].startswith("ord_")
    assert sale[-1] == "2"
    assert "the fake Taapit API answered 503, then 200." in out
    assert re.search(rf"example shop: +http://127\.0\.0\.1:\d+/\?ta_tid={TID}\n", out)
    assert re.search(r"fake Taapit API: +http://127\.0\.0\.1:\d+/_fake/", out)
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal


@pytest.mark.server
def test_the_demo_exits_non_zero_when_the_visitor_is_not_attributed() -> None:
    done = run_demo("--tracking-id", "")  # a visitor who did not come through a Taapit link
    assert done.returncode == 1
    assert "FAILED: the journey was not attributed:" in done.stderr
    assert "the fake Taapit API recorded 0 leads, not one" in done.stderr
    assert "OK:" not in done.stdout
    assert recorded_rows(done.stdout) == []


@pytest.mark.server
def test_the_demo_keeps_both_servers_up_until_ctrl_c() -> None:
    with subprocess.Popen(
        [sys.executable, str(DEMO), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        watchdog = threading.Timer(TIMEOUT, demo.kill)  # a hung demo fails the test
        watchdog.start()
        try:
            assert demo.stdout is not None
            out = ""
            for line in demo.stdout:  # up to the prompt, where the demo waits for Ctrl-C
                out += line
                if "Press Ctrl-C" in line:
                    break
            _, found, urls = out.partition("Both servers keep running")
            assert found, out
            (shop,) = re.findall(r"example shop: +(http://\S+)", urls)
            (fake,) = re.findall(r"fake Taapit API: +(http://\S+)", urls)
            assert "Taapit Shop" in httpx.get(shop).text
            assert TID in httpx.get(fake).text  # the fake's page lists the recorded events

            demo.send_signal(signal.SIGINT)
            rest, err = demo.communicate(timeout=TIMEOUT)
        finally:
            watchdog.cancel()
            demo.kill()  # a no-op once it exited; Popen's exit then reaps it
    assert demo.returncode == 0, err
    assert "Stopped." in rest


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
