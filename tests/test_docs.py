"""The documentation matches the code: the generated command-line page agrees with ``--help``,
the API page lists every public name, every command in the README and the how-to pages names
a real command with real flags, and the Results page reads every committed result file.

None of this needs the docs extra: the pages' generators (``docs/hooks.py``,
``docs/gen_results.py``) import only steerlab and typer. ``scripts/docs.sh`` builds the site
itself with ``mkdocs build --strict``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

import steerlab
from steerlab.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DEFAULT = re.compile(r"\[default: ([^\]]*)\]")


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", DOCS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf command of the click tree, by its path (``("organism", "backdoor")``)."""
    if hasattr(cmd, "commands"):  # a group (typer may vendor its own click)
        out: dict[tuple[str, ...], Any] = {}
        for name, sub in cmd.commands.items():
            out |= _commands(sub, (*path, name))
        return out
    return {path: cmd}


ROOT_CMD = typer.main.get_command(app)
COMMANDS = _commands(ROOT_CMD)


# --- the command-line page against --help ------------------------------------------------


def _page_options(md: str) -> dict[tuple[str, ...], dict[str, str | None]]:
    """{command path: {long flag: default or None}} from typer's Markdown."""
    out: dict[tuple[str, ...], dict[str, str | None]] = {}
    current: dict[str, str | None] | None = None
    for line in md.splitlines():
        head = re.match(r"^#+ `steerlab ?(.*)`$", line)
        if head:
            current = out.setdefault(tuple(head.group(1).split()), {})
            continue
        item = re.match(r"^\* `([^`]+)`(.*)$", line)
        if item and current is not None and item.group(1).startswith("-"):
            names = re.sub(r"<[^>]*>", "", item.group(1))
            default = DEFAULT.search(item.group(2))
            value = default.group(1).split(";")[0].strip() if default else None
            for flag in re.split(r"[,/ ]+", names):
                if flag.startswith("--"):
                    current[flag] = value
    return out


def _help_options(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """{long flag: default or None} as ``steerlab PATH --help`` prints them."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)  # one row per option, no wrapping
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    out: dict[str, str | None] = {}
    flags: list[str] = []
    for row in res.output.splitlines():
        if not row.startswith("│"):
            continue
        tokens = row.strip("│ ").lstrip("* ").split()
        lead = []
        for t in tokens:
            if not t.startswith("-"):
                break
            lead.append(t)
        if lead:
            flags = [t for t in lead if t.startswith("--")]
            for f in flags:
                out[f] = None
        default = DEFAULT.search(row)
        if default and flags:
            for f in flags:
                out[f] = default.group(1).strip()
    return out


@pytest.fixture(scope="module")
def cli_page() -> dict[tuple[str, ...], dict[str, str | None]]:
    return _page_options(_load("hooks").cli_markdown())


def test_cli_page_lists_every_command(cli_page: dict) -> None:
    assert set(COMMANDS) <= set(cli_page), set(COMMANDS) - set(cli_page)
    assert ("sweep",) in cli_page and ("organism", "backdoor") in cli_page


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_cli_page_options_and_defaults_match_help(
    path: tuple[str, ...], cli_page: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _help_options(path, monkeypatch)
    params = {o for p in COMMANDS[path].params for o in (*p.opts, *p.secondary_opts)}
    assert {f for f in params if f.startswith("--")} <= set(shown) | {"--help"}
    assert cli_page[path] == shown


# --- the API page ------------------------------------------------------------------------


def test_api_page_documents_every_public_name() -> None:
    """Each ``::: path`` on the API page is a name of ``steerlab.__all__`` (by the path's last
    part), and the path leads to that very object (a longer path is used where a submodule of
    the same name would shadow it for the docs' static analysis, as ``directions.extract``)."""
    text = (DOCS / "reference" / "api.md").read_text()
    paths = re.findall(r"^::: (steerlab(?:\.\w+)+)$", text, flags=re.M)
    documented = [p.rsplit(".", 1)[1] for p in paths]
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert set(documented) == set(steerlab.__all__)
    for path in paths:
        owner, name = path.rsplit(".", 1)
        obj = getattr(importlib.import_module(owner), name)
        assert obj is getattr(steerlab, name), f"{path} is not steerlab.{name}"
        if callable(obj) and not (isinstance(obj, type) and issubclass(obj, BaseException)):
            inspect.signature(obj)  # the page shows a signature: there is one to show


# --- commands in the README and the pages ------------------------------------------------


def _shell_lines(text: str) -> list[str]:
    """The command lines of every ```bash block, continuations joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def _steerlab_flags(line: str) -> tuple[tuple[str, ...], list[str]] | None:
    """(command path, flags) of a ``steerlab ...`` line, or None for other programs."""
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words or Path(words[0]).name != "steerlab":
        return None
    cmd: Any = ROOT_CMD
    path: list[str] = []
    rest = words[1:]
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        assert rest[0] in cmd.commands, f"{line!r}: no command {rest[0]!r}"
        cmd = cmd.commands[rest[0]]
        path.append(rest.pop(0))
    flags = [w.split("=")[0] for w in rest if w.startswith("-") and not re.match(r"^-\d", w)]
    return tuple(path), flags


DOC_FILES = [ROOT / "README.md", *sorted((DOCS).rglob("*.md"))]


def test_docs_hold_commands_to_check() -> None:
    lines = [ln for f in DOC_FILES for ln in _shell_lines(f.read_text())]
    assert sum(_steerlab_flags(ln) is not None for ln in lines) >= 30


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_in_docs_use_real_flags(doc: Path) -> None:
    for line in _shell_lines(doc.read_text()):
        parsed = _steerlab_flags(line)
        if parsed is not None:
            path, flags = parsed
            assert path in COMMANDS, f"{doc.name}: {line!r} names no command"
            known = {o for p in COMMANDS[path].params for o in (*p.opts, *p.secondary_opts)}
            unknown = [f for f in flags if f not in known]
            assert not unknown, f"{doc.name}: {line!r}: steerlab {' '.join(path)} has no {unknown}"
            continue
        words = shlex.split(line)
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]
        if words[:1] in (["bash"], ["python"]) and len(words) > 1 and words[1] != "-m":
            script = ROOT / words[1]
            assert script.is_file(), f"{doc.name}: {line!r}: no {words[1]}"
            source = script.read_text()
            for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert f'"{flag}"' in source, f"{doc.name}: {line!r}: {words[1]} has no {flag}"


# flags of other programs that the pages mention (llama.cpp, hf, pip, mkdocs)
FOREIGN_FLAGS = {"--control-vector", "--local-dir", "--no-deps", "--strict", "--help"}
# benchmarks/reproduce.sh's own options, read from the script
FOREIGN_FLAGS |= set(re.findall(r"== (--[a-z-]+)", (ROOT / "benchmarks/reproduce.sh").read_text()))


def test_every_flag_named_in_prose_exists() -> None:
    known = {o for c in COMMANDS.values() for p in c.params for o in (*p.opts, *p.secondary_opts)}
    known |= {o for p in ROOT_CMD.params for o in p.opts}
    for doc in DOC_FILES:
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", doc.read_text()):
            assert flag in known | FOREIGN_FLAGS, f"{doc.name} names {flag}, which no command has"


def _steerlab_calls(code: str) -> list[tuple[str, Any]]:
    """(dotted name, call node) of every ``steerlab.X(...)`` / ``steerlab.X.y(...)`` call."""
    out = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.insert(0, f.attr)
                f = f.value
            if isinstance(f, ast.Name) and f.id == "steerlab" and parts:
                out.append((".".join(parts), node))
    return out


def test_python_in_docs_calls_the_api_as_it_is() -> None:
    """Every steerlab call in a Python block names a public object and binds to its signature
    (the examples, included from files, run in test_examples.py)."""
    checked = 0
    for doc in DOC_FILES:
        for code in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
            if "--8<--" in code:
                continue
            for name, call in _steerlab_calls(code):
                head = name.split(".")[0]
                assert head in steerlab.__all__ or head in ("refusal",), f"{doc.name}: {name}"
                obj: Any = steerlab
                for part in name.split("."):
                    obj = getattr(obj, part)
                if any(isinstance(a, ast.Starred) for a in call.args) or any(
                    k.arg is None for k in call.keywords
                ):
                    continue
                args = [None] * len(call.args)
                kwargs = {k.arg: None for k in call.keywords}
                try:
                    inspect.signature(obj).bind(*args, **kwargs)
                except TypeError as e:
                    raise AssertionError(f"{doc.name}: steerlab.{name}: {e}") from None
                checked += 1
    assert checked >= 30


def test_readme_is_short_and_links_what_it_names() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"
    # the command table names every top-level command
    for name in ROOT_CMD.commands:
        assert f"`steerlab {name}" in text, f"README's table lacks {name}"


def test_examples_are_included_in_the_docs() -> None:
    pages = (DOCS / "examples.md").read_text()
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f'--8<-- "examples/{script.name}"' in pages, script.name


# --- results page ------------------------------------------------------------------------


def test_results_page_renders_every_committed_file() -> None:
    gen = _load("gen_results")
    files = sorted(gen.RESULTS.glob("*.json"))
    assert files
    for name in gen.SOURCES:
        assert (gen.RESULTS / name).is_file(), f"gen_results.SOURCES names missing {name}"
    for path in files:
        section, ok = gen.render_file(path)
        assert ok, f"docs/gen_results.py cannot read {path.name} any more: update its renderer"
        assert path.name in section and "date:" in section
    page = gen.page()
    assert all(p.name in page for p in files)
    # a figure on the page is the file's own: each compare file's scores with their intervals
    for path in files:
        if gen.SOURCES.get(path.name, (None, None, None))[2] is gen.render_compare:
            for row in json.loads(path.read_text())["summary"]:
                assert gen._ci(row["score"], row["ci"]) in page, (path.name, row)


def test_results_renderer_reports_a_changed_format(tmp_path: Path) -> None:
    gen = _load("gen_results")
    path = tmp_path / "compare_default.json"
    path.write_text('{"machine": {"date": "2027-01-01"}, "renamed_summary": []}')
    section, ok = gen.render_file(path)
    assert not ok
    assert "format changed" in section and "summary" in section and "2027-01-01" in section


# --- figures quoted in prose are the result files' own -----------------------------------

FIGURE = re.compile(r"(?<![\d.])\d\.\d{3}(?!\d)")


def _numbers(value: Any) -> set[str]:
    """The summary numbers of a result file, as the prose writes them (three decimals); not
    the per-prompt lists, which would hold almost any figure by chance."""
    if isinstance(value, dict):
        return set().union(*(_numbers(v) for v in value.values()))
    if isinstance(value, list):
        if sum(isinstance(v, float) for v in value) > 4:
            return set()
        return set().union(*(_numbers(v) for v in value))
    if isinstance(value, float | int) and not isinstance(value, bool):
        return {f"{value:.3f}", f"{abs(value):.3f}"}
    return set()


def _cited_blocks() -> list[tuple[str, str, str]]:
    """(page, result name, paragraph) for each paragraph or bullet that names exactly one
    committed result file in backticks."""
    names = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    out = []
    history = DOCS / "results" / "reported-before.md"  # says it holds uncommitted figures
    for page in (p for p in DOC_FILES if p != history):
        for block in re.split(r"\n\s*\n|\n(?=\* )", page.read_text()):
            quoted = re.findall(r"`([\w./-]+)`", block)
            cited = {Path(n).name.removesuffix(".json") for n in quoted} & names
            if len(cited) == 1:
                out.append((str(page.relative_to(ROOT)), cited.pop(), block))
    return out


def test_figures_quoted_beside_a_result_file_are_in_that_file() -> None:
    blocks = _cited_blocks()
    assert any(FIGURE.search(b) for _, _, b in blocks), "no quoted figure found to check"
    for page, name, block in blocks:
        have = _numbers(json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text()))
        missing = [x for x in FIGURE.findall(block) if x not in have]
        assert not missing, f"{page} quotes {missing} beside `{name}`, which does not hold them"
