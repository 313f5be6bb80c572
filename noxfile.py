"""Developer tasks: `python3 -m nox -s <session>` (list them with `nox -l`)."""

from __future__ import annotations

import glob

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typing", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"


def install_groups(session: nox.Session, *groups: str, extras: str = "") -> None:
    """Install the project (editable) and the named dependency groups."""
    session.install("-e", f".{extras}", *nox.project.dependency_groups(PYPROJECT, *groups))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    install_groups(session, "typing")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite with branch coverage (fails under 95 %)."""
    install_groups(session, "test")
    session.run("coverage", "erase")
    # `coverage run` rather than pytest-cov: the package's pytest plugin is imported while
    # pytest starts, before pytest-cov would begin measuring.
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=95")


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The real-browser test: Playwright drives Debian's chromium (apt-get install chromium)."""
    install_groups(session, "test")
    session.run(
        "pytest", "tests/examples/test_browser.py", "-p", "no:cacheprovider", *session.posargs,
        env={"TAAPIT_REQUIRE_BROWSER": "1"},
    )  # fmt: skip


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The fault soak at full size: 10,000 events through 503s, drops and 429 bursts."""
    install_groups(session, "test")
    session.run(
        "pytest", "tests/test_soak.py", "-p", "no:cacheprovider", *session.posargs,
        env={"TAAPIT_SOAK_EVENTS": "10000"},
    )  # fmt: skip


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The one-command demo: the example shop and a fake Taapit on 127.0.0.1, one visitor.

    ``nox -s demo -- --keep-running`` leaves both servers up to click around.
    """
    # The shop is a FastAPI app (its extra brings python-multipart for the HTML forms);
    # the shop and the fake API both run under uvicorn.
    session.install("-e", ".[server,fastapi]")
    # On Ctrl-C nox interrupts the demo, then terminates it after interrupt_timeout: long
    # enough here for the demo to stop both servers and remove its temporary outbox.
    session.run("python", "examples/demo.py", *session.posargs, interrupt_timeout=10)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Throughput and CPU per event: the SDK on each transport, raw aiohttp/httpx, requests."""
    install_groups(session, "bench", "fast-server", extras="[aiohttp]")
    session.run("python", "benchmarks/bench_transport.py", *session.posargs)


@nox.session(python=PYTHON)
def bench_plot(session: nox.Session) -> None:
    """The transport benchmark, its figures as JSON, and their plot.

    Writes benchmarks/transport.json and benchmarks/transport.png (the README shows both);
    ``nox -s bench_plot -- --repeats 3`` passes options to the benchmark.
    """
    install_groups(session, "bench", "fast-server", "plot", extras="[aiohttp]")
    results = "benchmarks/transport.json"
    session.run("python", "benchmarks/bench_transport.py", "--json", results, *session.posargs)
    session.run("python", "benchmarks/plot_transport.py", results)


@nox.session(python=PYTHON)
def bench_middleware(session: nox.Session) -> None:
    """A bare Starlette app against the same app behind TaapitMiddleware, under uvicorn."""
    install_groups(session, "bench", extras="[starlette,server]")
    session.run("python", "benchmarks/bench_middleware.py", *session.posargs)


@nox.session(python=PYTHON)
def bench_delivery(session: nox.Session) -> None:
    """Background and outbox enqueue cost, outbox throughput and drain, memory."""
    install_groups(session, "bench", extras="[server,aiohttp]")
    session.run("python", "benchmarks/bench_delivery.py", *session.posargs)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build the sdist and wheel, then run the tests against the installed wheel."""
    out = session.create_tmp()
    session.install("build")
    session.run("python", "-m", "build", "--outdir", out)
    (wheel,) = glob.glob(f"{out}/taapit_async-*.whl")
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"))
    session.install("--force-reinstall", wheel)
    # Append mode puts the checkout after site-packages, so the tests import the wheel.
    session.run("pytest", "--import-mode=append", *session.posargs)
