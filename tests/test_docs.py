"""The documentation: every Python example runs as written, the API reference has an
entry for every public name, the command-line page shows every option, and the README
stays a front page.

Examples are the ```python blocks of README.md and docs/**/*.md. Each runs on its own
(a fresh namespace, in a temporary working directory). The line just before a block
may say how it runs (docs/development.md documents the markers):

- ``<!-- test: quick -->``: in the quick run as well (a few seconds at most);
- no marker: only with ``-m slow`` (each example compiles its own programs, ~3-10 s);
- ``<!-- test: skip, <why> -->``: never (what cannot run in a test process); give the
  reason. Shell commands belong in ```bash blocks, which are not run.
"""

import importlib.util
import pathlib
import re

import pytest
from test_api import PUBLIC_MODULES, public_names

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)]
MARKS = {"quick", "slow", "skip"}
# ```lang at the start of a line; what an example block may be written in.
FENCE = re.compile(r"^```(\w*)", re.M)
LANGUAGES = {"python", "bash", "text", "json", ""}
BLOCK = re.compile(r"^(?:<!-- test: (\w+)([^>]*)-->\n)?```python\n(.*?)^```", re.M | re.S)


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _examples():
    for page in PAGES:
        text = page.read_text()
        for index, m in enumerate(BLOCK.finditer(text)):
            mark, note, code = m.group(1) or "slow", (m.group(2) or "").strip(" ,"), m.group(3)
            yield _name(page), index, mark, note, code


EXAMPLES = list(_examples())


def _param(page, index, mark, note, code):
    marks = {"slow": [pytest.mark.slow], "skip": [pytest.mark.skip(reason=note)]}.get(mark, [])
    return pytest.param(code, id=f"{page}:{index}", marks=marks)


@pytest.mark.parametrize("code", [_param(*e) for e in EXAMPLES])
def test_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (rows.csv, ck.npz)
    exec(compile(code, "example", "exec"), {"__name__": "__docs_example__"})


def test_examples_are_marked_and_fenced():
    """Every marker is a known one, a skip says why, and no code block hides from the
    runner under another language tag (```py, ```pycon)."""
    assert len(EXAMPLES) >= 20
    for page, index, mark, note, _ in EXAMPLES:
        assert mark in MARKS, (page, index, mark)
        assert mark != "skip" or note, (page, index, "a skipped example says why")
    for page in PAGES:
        text = page.read_text()
        languages = set(FENCE.findall(text))
        assert languages <= LANGUAGES, (_name(page), languages - LANGUAGES)
        # a marker not right above a ```python fence would be silently ignored
        markers = len(re.findall(r"^<!-- test:", text, flags=re.M))
        attached = sum(1 for m in BLOCK.finditer(text) if m.group(1))
        assert markers == attached, (_name(page), "a test marker not right above a fence")


def _directives() -> set[str]:
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M))
    return found


def test_api_reference_covers_every_public_name():
    """Every name in __all__ of jaxgauss and of each public submodule has its own
    ``::: module.name`` entry in docs/api/ (as optax's docs/ext/coverage_check.py),
    and no entry documents anything else."""
    documented = _directives()
    public = set(public_names())
    assert not public - documented, f"missing from docs/api/: {sorted(public - documented)}"
    extra = documented - public - set(PUBLIC_MODULES)
    assert not extra, f"docs/api/ documents names that are not public: {sorted(extra)}"


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_page_shows_every_option():
    """docs/cli.md is generated from the parser when the site is built: every
    subcommand, every option string and every registry method are on it."""
    hooks = _hooks()
    page = (DOCS / "cli.md").read_text()
    assert hooks.METHODS_MARKER in page and hooks.REFERENCE_MARKER in page
    reference, table = hooks.cli_reference(), hooks.methods_table()
    from jaxgauss.cli import _parser
    from jaxgauss.methods import METHODS

    subcommands = hooks._subcommands(_parser())
    assert set(subcommands) >= {"demo", "fit", "sweep", "bench"}
    for name, sub in subcommands.items():
        assert f"## `jaxgauss {name}`" in reference
        for action in hooks.options(sub):
            for option in action.option_strings:
                assert f"`{option}`" in reference, (name, option)
    for method in METHODS.values():
        assert f"| `{method.name}` |" in table


def test_included_ranges_are_whole_blocks():
    """A ``--8<-- "file:start:end"`` include of a generated file (the demo's table, a
    benchmark table) starts and ends at a block's edge, so a regenerated file that
    moved its lines fails here rather than showing half a table."""
    for page in PAGES:
        for path, start, end in re.findall(
            r'^--8<-- "([^":]+):(\d+)(?::(\d+))?"', page.read_text(), flags=re.M
        ):
            lines = (ROOT / path).read_text().splitlines()
            first, last = int(start), int(end or len(lines))
            assert first == 1 or not lines[first - 2].strip(), (path, first)
            assert last == len(lines) or not lines[last].strip(), (path, last)


def test_readme_is_a_front_page():
    """At most 200 lines; the set-up commands CI runs (two, between the markers); a
    quick start of at most 20 lines; every relative link leads to a file."""
    text = README.read_text()
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    setup = text.split("<!-- setup:begin -->")[1].split("<!-- setup:end -->")[0]
    commands = [
        line for line in setup.splitlines() if re.match(r"(pip|python|jaxgauss|pytest)", line)
    ]
    assert len(commands) == 2, commands
    quick = [m for m in BLOCK.finditer(text) if m.group(1) == "quick"]
    assert quick and len(quick[0].group(3).splitlines()) <= 20
    for page in PAGES:
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            target = (page.parent / link).resolve()
            generated = link.startswith("benchmarks/results/") and page.parent == DOCS
            if generated:  # the site serves benchmarks/results/ under docs/
                target = ROOT / link
            assert target.exists(), (_name(page), link)


@pytest.mark.slow
def test_site_builds_with_every_public_name(tmp_path):
    """``mkdocs build --strict`` passes (broken links and anchors, pages left out of the
    nav and docstring warnings fail it), and the built API reference has an entry, an
    element with the name's id, for every public name. Skipped without the docs extra."""
    import os
    import subprocess
    import sys

    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    built = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    ids = set(re.findall(r'id="([\w.]+)"', built))
    assert not set(public_names()) - ids, sorted(set(public_names()) - ids)
