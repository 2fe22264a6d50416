"""The project's Python sources compile without warnings."""

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("folder", ["hgrad", "tests", "benchmarks", "book"])
def test_sources_compile_without_warnings(folder):
    # An invalid escape in a docstring ("\alpha" outside a raw string) compiles with a warning
    # only, and the docstring then holds other characters than were written.
    paths = [p for p in sorted((ROOT / folder).rglob("*.py")) if "_build" not in p.parts]
    assert paths, folder
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(), str(path), "exec")
