"""The supported-versions matrix and the release checks, as nox sessions.

``nox -s tests`` runs the suite on every supported Python/Django pair (Django 6.x needs
Python 3.12+); ``nox -s lint typecheck docs build`` run the other checks CI runs. CI
(``.ci/run``) runs those four and the oldest and newest pairs; ``nox -s tests`` is the full
matrix. Interpreters come from ``PATH`` or, failing that, from pyenv's installed versions,
so nothing is downloaded. With ``DATABASE_URL`` / ``REDIS_URL`` set, the tests use the real
PostgreSQL and Redis, as in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

#: Every supported (Python, Django) pair; the classifiers in pyproject.toml say the same.
MATRIX: list[tuple[str, str]] = [
    ("3.11", "5.2"),
    ("3.12", "5.2"),
    ("3.12", "6.0"),
    ("3.12", "6.1"),
    ("3.13", "5.2"),
    ("3.13", "6.0"),
    ("3.13", "6.1"),
]
OLDEST, NEWEST = MATRIX[0], MATRIX[-1]
LINT_PYTHON = "3.11"

nox.options.sessions = ["lint", "typecheck", "docs", "build", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
# Under build/ (gitignored) so the virtualenvs never show up as untracked files.
nox.options.envdir = str(ROOT / "build" / "nox")


def _add_pyenv_interpreters() -> None:
    """Put pyenv's installed ``pythonX.Y`` on PATH when no real one is there."""
    try:
        root = subprocess.run(
            ["pyenv", "root"],  # noqa: S607 - pyenv from PATH, as a developer runs it
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    versions = Path(root) / "versions"
    extra = []
    for minor in sorted({python for python, _ in MATRIX}):
        found_on_path = shutil.which(f"python{minor}")
        if found_on_path and "/shims/" not in found_on_path:
            continue  # a real interpreter (pyenv's shims fail for versions not selected)
        found = sorted(versions.glob(f"{minor}.*/bin/python{minor}"))
        if found:
            extra.append(str(found[-1].parent))
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_add_pyenv_interpreters()


def _install(session: nox.Session, *args: str) -> None:
    # pip 25.1 is the first to read [dependency-groups] (--group).
    session.install("pip>=25.1")
    session.install(*args)


@nox.session(python=LINT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    _install(session, "--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=LINT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy with django-stubs over the package."""
    _install(session, "-e", ".[api,tasks,pydantic]", "--group", "lint", "--group", "test")
    session.run("mypy")


@nox.session(python=LINT_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors (``mkdocs build --strict``)."""
    _install(session, "-e", ".[api,tasks,pydantic]", "--group", "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "build" / "site"))


@nox.session(python=LINT_PYTHON)
def build(session: nox.Session) -> None:
    """sdist + wheel, ``twine check``, and the sdist carries what its README refers to."""
    _install(session, "--group", "release")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    files = sorted(str(p) for p in dist.iterdir())
    session.run("twine", "check", "--strict", *files)
    _check_sdist(session, next(p for p in files if p.endswith(".tar.gz")))
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    if workflows:
        # The schema ships inside check-jsonschema, so this needs no network.
        session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    if not any(name.endswith(".whl") for name in files):
        session.error("no wheel was built")
    with zipfile.ZipFile(next(p for p in files if p.endswith(".whl"))) as wheel:
        if not any(n.endswith("openai_batches/py.typed") for n in wheel.namelist()):
            session.error("the wheel lacks py.typed")


def _check_sdist(session: nox.Session, sdist: str) -> None:
    """The sdist holds every file of this checkout that its README (the PyPI description)
    links to or names in backticks, so the description never points at a missing file."""
    import re
    import tarfile

    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?:|#|mailto:)[^)#\s]+)", readme)
    mentioned = re.findall(r"`([\w.-]+(?:/[\w.-]+)+/?|[\w-]+\.(?:md|py|toml|yml))`", readme)
    targets = {t.rstrip("/") for t in [*links, *mentioned] if (ROOT / t.rstrip("/")).exists()}
    missing = sorted(
        t for t in targets if t not in names and not any(n.startswith(t + "/") for n in names)
    )
    if missing:
        session.error(f"the README names files the sdist lacks: {', '.join(missing)}")
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "openai_batches/py.typed"):
        if needed not in names:
            session.error(f"the sdist lacks {needed}")
    session.log(f"sdist: {len(names)} files, holding all {len(targets)} the README names")


@nox.session
@nox.parametrize(("python", "django"), MATRIX, ids=[f"{p}-django{d}" for p, d in MATRIX])
def tests(session: nox.Session, django: str) -> None:
    """The whole suite on one Python/Django pair. Extra arguments go to pytest."""
    _install(
        session,
        "-e",
        ".[api,tasks,pydantic]",
        "--group",
        "test",
        f"django~={django}.0",
    )
    session.run("python", "-c", "import django; print('Django', django.get_version())")
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """Print the supported pairs (the README's table is made from this list)."""
    for python, django in MATRIX:
        session.log(f"Python {python} + Django {django}: nox -s 'tests-{python}-django{django}'")
