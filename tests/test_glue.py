"""``hgrad.experiments.glue`` stores values so that myst-nb's ``{glue:text}`` role pastes them as given.

myst-nb (``myst_nb.core.variables.format_plain_text``) reads a glued ``text/plain`` back with
``ast.literal_eval`` and then applies the role's format spec; these tests run that function on what
``glue`` stored inside an IPython shell.
"""

import numpy as np
import pytest

pytest.importorskip("IPython")
variables = pytest.importorskip("myst_nb.core.variables")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from hgrad.experiments import _GLUE_PREFIX, glue  # noqa: E402


def stored(name, value):
    InteractiveShell.instance()
    with capture_output() as captured:
        glue(name, value)
    [output] = captured.outputs
    assert output.metadata == {"scrapbook": {"name": name, "mime_prefix": _GLUE_PREFIX}}
    return output.data[_GLUE_PREFIX + "text/plain"]


@pytest.mark.parametrize("text", [
    "1,407",                 # a tuple literal if stored bare: pasted as "(1, 407)"
    "100, 1,000, 10,000",
    "{0.9, 0.5, 0.98}",      # a set literal
    "[3]", "None", "True", "12", "-0.5",
    "cpu: cpu", "6 of 8", "it's \"quoted\"", "",
])
def test_strings_paste_as_written(text):
    assert variables.format_plain_text(stored("s", text), "") == text


@pytest.mark.parametrize("value, spec, pasted", [
    (1407, ",d", "1,407"),
    (np.int64(1407), "", "1407"),
    (0.123456, ".3f", "0.123"),
    (np.float32(0.25), ".2f", "0.25"),
    (3e-7, ".0e", "3e-07"),
    (float("inf"), "", "inf"),
    (True, "", "True"),
])
def test_numbers_paste_with_the_roles_format(value, spec, pasted):
    assert variables.format_plain_text(stored("x", value), spec) == pasted


def test_outside_a_kernel_nothing_is_stored(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    with capture_output() as captured:
        glue("x", 1.0)
    assert captured.outputs == []
