"""Every Python example in README.md runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


# The quick run executes the quick start (example 0); each example compiles its own
# programs (~3-8 s), so the rest run with -m slow (.ci/run runs them all, as written).
@pytest.mark.parametrize(
    "index", [pytest.param(i, marks=[pytest.mark.slow] if i else []) for i in range(len(BLOCKS))]
)
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})
