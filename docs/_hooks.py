"""MkDocs hooks: fill the reference pages from the code at build time, so they cannot drift.

A page asks for a generated part with a marker line, ``<!-- generated:NAME -->``:

- ``settings``: every ``OPENAI_BATCHES`` key of ``openai_batches/conf.py`` with its default,
  explained by the README's settings table, else by the comment above it in ``conf.py``;
- ``checks``: every system check id in ``openai_batches/checks.py`` with its message;
- ``commands``: each management command's ``--help``;
- ``rest-api``: every operation of the OpenAPI schema drf-spectacular generates;
- ``versions``: the supported Python/Django pairs from ``noxfile.py``.

Django is configured here with a minimal in-memory project (no database is touched), only
to import the commands and generate the schema. A marker with no generator is an error.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- generated:([a-z-]+) -->$", re.MULTILINE)
API_PREFIX = "/api/batches/"


def _setup_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    urls = types.ModuleType("openai_batches_docs_urls")
    sys.modules[urls.__name__] = urls
    settings.configure(
        SECRET_KEY="docs-build-only",  # noqa: S106 - never used to sign anything
        USE_TZ=True,
        ROOT_URLCONF=urls.__name__,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_rq",
            "rest_framework",
            "drf_spectacular",
            "openai_batches",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        RQ_QUEUES={"default": {"URL": "redis://127.0.0.1:6379/0"}},
    )
    django.setup()
    from django.urls import include, path

    urls.urlpatterns = [  # type: ignore[attr-defined]
        path(API_PREFIX.strip("/") + "/", include("openai_batches.api.urls")),
    ]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _conf_comments() -> dict[str, str]:
    """The comment block above each key of DEFAULTS; consecutive keys share their block."""
    from openai_batches.conf import DEFAULTS

    comments: dict[str, str] = {}
    block: list[str] = []
    current = ""
    for line in (ROOT / "openai_batches" / "conf.py").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        if block:
            current, block = " ".join(block), []
        if not stripped:
            current = ""
        match = re.match(r'"([A-Z_]+)":', stripped)
        if match and match.group(1) in DEFAULTS:
            comments.setdefault(match.group(1), current)
    return comments


def _readme_meanings() -> dict[str, str]:
    """Meaning column of the README's settings table, where the README has one."""
    readme = (ROOT / "README.md").read_text()
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| `([A-Z_]+)` \| [^|]* \| (.*) \|$", readme, re.MULTILINE)
    }


def settings_table() -> str:
    from openai_batches.conf import DEFAULTS

    comments, meanings = _conf_comments(), _readme_meanings()
    rows = ["| Key | Default | Meaning |", "| --- | --- | --- |"]
    for key, default in DEFAULTS.items():
        meaning = meanings.get(key) or _cell(comments.get(key, ""))
        rows.append(f"| `{key}` | `{default!r}` | {meaning} |")
    return "\n".join(rows)


def _source_text(node: ast.expr | None) -> str:
    """A message as its author wrote it: a literal as is, an f-string with its {fields}."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _source_text(node.left) + _source_text(node.right)
    return ""  # computed at run time (e.g. str(err)): the hint says what it is about


def checks_table() -> str:
    tree = ast.parse((ROOT / "openai_batches" / "checks.py").read_text())
    seen: dict[str, tuple[str, str, str]] = {}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):  # first use wins
        if not isinstance(node.func, ast.Name) or node.func.id not in ("Error", "Warning"):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        check_id = keywords.get("id")
        if not isinstance(check_id, ast.Constant):
            continue
        message = _source_text(node.args[0] if node.args else None)
        hint = _source_text(keywords.get("hint"))
        seen.setdefault(str(check_id.value), (node.func.id, message, hint))
    rows = [
        "| Id | Level | Message | Hint |",
        "| --- | --- | --- | --- |",
    ]
    for check_id in sorted(seen):
        level, message, hint = seen[check_id]
        shown = f"`{_cell(message)}`" if message else "(the configuration error itself)"
        rows.append(f"| `{check_id}` | {level} | {shown} | `{_cell(hint)}` |")
    return "\n".join(rows)


def commands_help() -> str:
    _setup_django()
    from django.core.management import load_command_class

    parts = []
    folder = ROOT / "openai_batches" / "management" / "commands"
    for module in sorted(folder.glob("*.py")):
        if module.name.startswith("_"):
            continue
        name = module.stem
        command = load_command_class("openai_batches", name)
        parser = command.create_parser("manage.py", name)
        parser.prog = f"python manage.py {name}"
        parts.append(f"### `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```")
    return "\n\n".join(parts)


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"] if v is not None)
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind or "object")


def rest_api() -> str:
    _setup_django()
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    from openai_batches.api.schema import DESCRIPTION, TITLE

    generator = SchemaGenerator(title=TITLE, description=DESCRIPTION)
    schema = json.loads(OpenApiJsonRenderer().render(generator.get_schema(public=True)))
    out = [
        f"Generated from the OpenAPI {schema['openapi']} document "
        f"(`{schema['info']['title']}` {schema['info']['version']}), with the API included "
        f"under `{API_PREFIX}`.",
        "",
    ]
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            out.append(f"### `{method.upper()} {path}`\n")
            description = op.get("description") or op.get("summary") or ""
            if description:
                out.append(description.strip() + "\n")
            params = op.get("parameters", [])
            if params:
                out.append("| Parameter | In | Type | Required | Description |")
                out.append("| --- | --- | --- | --- | --- |")
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {_cell(_schema_type(p.get('schema', {})))} "
                        f"| {'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
                    )
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                kinds = ", ".join(
                    f"`{ctype}` ({_schema_type(c.get('schema', {}))})" for ctype, c in body.items()
                )
                out.append(f"**Request body**: {kinds}\n")
            responses = op.get("responses", {})
            if responses:
                out.append("| Status | Meaning |")
                out.append("| --- | --- |")
                for status, response in responses.items():
                    content = response.get("content", {})
                    shape = ", ".join(
                        f"`{ctype}` {_schema_type(c.get('schema', {}))}"
                        for ctype, c in content.items()
                    )
                    text = _cell(response.get("description", ""))
                    out.append(f"| {status} | {text}{' — ' + shape if shape else ''} |")
                out.append("")
    components = schema.get("components", {}).get("schemas", {})
    if components:
        out.append("## Schemas\n")
        for name, component in components.items():
            out.append(f"### {name}\n")
            props = component.get("properties", {})
            required = set(component.get("required", []))
            if "enum" in component:
                out.append("One of: " + ", ".join(f"`{v}`" for v in component["enum"]) + "\n")
            if props:
                out.append("| Field | Type | Required | Read-only | Description |")
                out.append("| --- | --- | --- | --- | --- |")
                for field, spec in props.items():
                    out.append(
                        f"| `{field}` | {_cell(_schema_type(spec))} | "
                        f"{'yes' if field in required else 'no'} | "
                        f"{'yes' if spec.get('readOnly') else 'no'} | "
                        f"{_cell(spec.get('description', ''))} |"
                    )
                out.append("")
    return "\n".join(out)


def versions_table() -> str:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    matrix: list[tuple[str, str]] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "MATRIX" for t in targets):
                assert node.value is not None
                matrix = ast.literal_eval(node.value)
    if not matrix:
        raise RuntimeError("noxfile.py has no MATRIX")
    djangos = sorted({d for _, d in matrix}, key=lambda v: tuple(map(int, v.split("."))))
    pythons = sorted({p for p, _ in matrix}, key=lambda v: tuple(map(int, v.split("."))))
    rows = ["| Python | " + " | ".join(f"Django {d}" for d in djangos) + " |"]
    rows.append("| --- |" + " --- |" * len(djangos))
    for python in pythons:
        cells = ["tested" if (python, d) in matrix else "—" for d in djangos]
        rows.append(f"| {python} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "checks": checks_table,
    "commands": commands_help,
    "rest-api": rest_api,
    "versions": versions_table,
}


def on_config(config: Any) -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: no generator for marker {name!r}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)
