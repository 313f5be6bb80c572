"""Without an extra installed: the package still imports, and the integration says what to install.

Each case runs in a fresh interpreter whose import system refuses the framework packages (a
``sys.meta_path`` finder installed before anything else), so the real import machinery runs
as it would in a venv without ``taapit-async[starlette]`` or ``[fastapi]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

BLOCKER = """
import importlib, importlib.abc, json, sys

class Uninstalled(importlib.abc.MetaPathFinder):
    # Refuses whole packages, as if they had never been installed.
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED], "imported too early"
sys.meta_path.insert(0, Uninstalled(BLOCKED))
"""


def run_without(blocked: set[str], code: str, **names: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter without ``blocked``; return the JSON it prints.

    ``names`` become global strings of the script; ``BLOCKED`` is the set of blocked names.
    """
    given = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    script = f"BLOCKED = {blocked!r}\n{given}{BLOCKER}{textwrap.dedent(code)}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


IMPORT_AND_REPORT = """
try:
    importlib.import_module(MODULE)
except ImportError as exc:
    error = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps({**error, "cause": type(exc.__cause__).__name__}))
else:
    print(json.dumps({"error": None}))
"""


@pytest.mark.parametrize(
    ("module", "blocked", "install"),
    [
        ("taapit_async.integrations.fastapi", {"fastapi"}, "pip install 'taapit-async[fastapi]'"),
        (
            "taapit_async.integrations.fastapi",
            {"fastapi", "starlette"},
            "pip install 'taapit-async[fastapi]'",
        ),
        (
            "taapit_async.integrations.starlette",
            {"starlette"},
            "pip install 'taapit-async[starlette]'",
        ),
        (
            "taapit_async.integrations.starlette",
            {"starlette", "fastapi"},
            "pip install 'taapit-async[starlette]'",
        ),
    ],
)
def test_a_missing_extra_raises_import_error_with_the_install_line(
    module: str, blocked: set[str], install: str
) -> None:
    result = run_without(blocked, IMPORT_AND_REPORT, MODULE=module)

    assert result["error"] == "ImportError"
    assert install in result["message"]
    assert result["cause"] == "ModuleNotFoundError"  # chained: the real reason stays visible


def test_the_blocker_really_hides_the_frameworks() -> None:
    """Guards the other tests here against passing because nothing was blocked."""
    result = run_without({"starlette", "fastapi"}, IMPORT_AND_REPORT, MODULE="fastapi")

    assert result == {
        "error": "ModuleNotFoundError",
        "message": "No module named 'fastapi'",
        "cause": "NoneType",
    }


def test_the_package_and_the_plain_asgi_middleware_import_without_any_framework() -> None:
    code = """
    import taapit_async, taapit_async.integrations, taapit_async.integrations.asgi
    import taapit_async.testing, taapit_async.webhooks
    from taapit_async.integrations.asgi import TaapitMiddleware
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print(json.dumps({"loaded": loaded, "middleware": TaapitMiddleware.__name__}))
    """
    result = run_without({"starlette", "fastapi"}, code)

    assert result == {"loaded": [], "middleware": "TaapitMiddleware"}


def test_importing_the_package_with_the_frameworks_installed_loads_neither() -> None:
    code = """
    import taapit_async, taapit_async.integrations, taapit_async.integrations.asgi
    print(json.dumps({"loaded": sorted(m for m in sys.modules
                                       if m.partition(".")[0] in {"starlette", "fastapi"})}))
    """
    assert run_without(set(), code) == {"loaded": []}
