"""Fingerprints of executed code (``hgrad._provenance``): what makes committed outputs stale, and what
does not."""

import importlib.util
import sys
import textwrap

import pytest

from hgrad._provenance import (
    CodeTracker,
    fingerprint,
    notebook_source_digest,
    stale_definitions,
)

MODULE = '''
"""A module."""
import math

SCALE = 2.0


def used(x):
    """Doubles."""
    return helper(x) * SCALE  # a comment


def helper(x):
    return x + 1


def unused(x):
    return x


class Config:
    """Fields count: a changed default changes the class's hash."""
    steps: int = 10

    def run(self):
        return self.steps
'''


def _load(package, source, name="mod"):
    path = package / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"_prov_test_{name}_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


@pytest.fixture
def package(tmp_path):
    (tmp_path / "pkg").mkdir()
    return tmp_path / "pkg"


def _recorded(package, module, call):
    tracker = CodeTracker(package).start()
    try:
        call(module)
    finally:
        tracker.stop()
    return fingerprint(tracker.calls, package)


def test_records_only_the_definitions_that_ran(package):
    _, module = _load(package, MODULE)
    record = _recorded(package, module, lambda m: (m.used(1.0), m.Config().run()))
    assert set(record) == {"pkg/mod.py"}
    assert set(record["pkg/mod.py"]) == {"<module>", "used", "helper", "Config"}


def test_docstrings_comments_and_formatting_do_not_make_outputs_stale(package):
    path, module = _load(package, MODULE)
    record = _recorded(package, module, lambda m: m.used(1.0))
    edited = MODULE.replace('"""Doubles."""', '"""Doubles its input, then some."""')
    edited = edited.replace("# a comment", "# another comment").replace("return helper(x) * SCALE",
                                                                        "return (helper(x)\n            * SCALE)")
    edited = edited.replace("return x\n", "return -x\n")  # a change in a definition that did not run
    path.write_text(edited)
    assert stale_definitions(record, package.parent) == []


@pytest.mark.parametrize("old, new, expected", [
    ("return x + 1", "return x + 2", "pkg/mod.py: helper (changed)"),
    ("SCALE = 2.0", "SCALE = 3.0", "pkg/mod.py: <module> (changed)"),
    ("def helper(x):", "def helper2(x):", "pkg/mod.py: helper (removed)"),
])
def test_code_changes_make_outputs_stale(package, old, new, expected):
    path, module = _load(package, MODULE)
    record = _recorded(package, module, lambda m: m.used(1.0))
    path.write_text(MODULE.replace(old, new))
    assert expected in stale_definitions(record, package.parent)


def test_a_class_field_default_counts(package):
    path, module = _load(package, MODULE)
    record = _recorded(package, module, lambda m: m.Config().run())
    path.write_text(MODULE.replace("steps: int = 10", "steps: int = 20"))
    assert stale_definitions(record, package.parent) == ["pkg/mod.py: Config (changed)"]


def test_a_removed_file_is_reported(package):
    path, module = _load(package, MODULE)
    record = _recorded(package, module, lambda m: m.used(1.0))
    path.unlink()
    assert any("file removed" in s for s in stale_definitions(record, package.parent))


def test_tracker_keeps_an_existing_trace_function_working(package):
    _, module = _load(package, MODULE)
    seen = []

    def previous(frame, event, arg):
        seen.append(frame.f_code.co_name)
        return None

    sys.settrace(previous)
    try:
        tracker = CodeTracker(package).start()
        module.helper(1)
        tracker.stop()
        assert sys.gettrace() is previous  # restored
    finally:
        sys.settrace(None)
    assert "helper" in seen
    assert fingerprint(tracker.calls, package)["pkg/mod.py"].keys() == {"<module>", "helper"}


def test_notebook_digest_ignores_injected_and_colab_cells_only():
    def code(source, *tags):
        return {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)}}

    cells = [{"cell_type": "markdown", "source": "# title", "metadata": {}},
             code("pip install", "colab-install"), code('preset = "smoke"', "parameters"), code("x = 1")]
    base = notebook_source_digest(cells)
    assert notebook_source_digest(cells + [code('preset = "paper"', "injected-parameters")]) == base
    assert notebook_source_digest([cells[0], code("pip install -U", "colab-install")] + cells[2:]) == base
    assert notebook_source_digest([{**cells[0], "source": "# new title"}] + cells[1:]) == base
    assert notebook_source_digest(cells[:3] + [code("x = 2")]) != base
