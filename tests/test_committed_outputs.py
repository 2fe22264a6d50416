"""The committed notebooks carry the outputs of a paper-preset run of the code as it is now.

``hgrad reproduce --preset paper --update-notebooks`` writes each notebook back with its outputs, a
digest of its code cells in the metadata, and (glued by ``Results.save``) a fingerprint of every hgrad
definition the run executed. A notebook fails here when its cells were edited after the run, when a
library definition it executed has changed since (docstrings and comments aside), or when its results
file comes from another run.
"""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from hgrad._provenance import notebook_source_digest, stale_definitions
from hgrad.experiments import PROVENANCE_GLUE_KEY, _GLUE_PREFIX

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RERUN = "rerun it: hgrad reproduce --preset paper --only {name} --update-notebooks"


# {glue:text}`key`, {glue:text}`key:.2f`, {glue:text}`../notebooks/name.ipynb::key:.2f`
GLUE_ROLE = re.compile(r"\{glue:text\}`(?:[^`]*?([A-Za-z0-9_]+)\.ipynb::)?([A-Za-z0-9_]+)")


def glued(nb, key):
    """The ``text/plain`` that ``hgrad.experiments.glue`` stored under ``key``, as stored."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                return output["data"][_GLUE_PREFIX + "text/plain"]
    return None


def literal(raw):
    """``raw`` read as myst-nb reads it before pasting: a Python literal where it spells one."""
    try:
        return ast.literal_eval(raw)
    except (SyntaxError, ValueError):
        return raw


def glued_string(nb, key):
    """A glued string: stored as its ``repr``; outputs made before that change hold it bare."""
    raw = glued(nb, key)
    return raw if raw is None or not isinstance(literal(raw), str) else literal(raw)


def quoted_keys(name, nb):
    """The glued values that the notebook's own prose and the book's pages paste."""
    own = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    pages = "\n".join(p.read_text() for p in (ROOT / "book").rglob("*.md") if "_build" not in p.parts)
    return sorted({key for stem, key in GLUE_ROLE.findall(own) if stem in ("", name)}
                  | {key for stem, key in GLUE_ROLE.findall(pages) if stem == name})


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param.stem, nbformat.read(request.param, as_version=4)


def test_outputs_are_from_the_paper_preset(notebook):
    name, nb = notebook
    stamp = nb.metadata.get("hgrad", {})
    assert stamp.get("preset") == "paper", f"{name}: committed outputs are not from a paper-preset run; " + RERUN.format(name=name)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: committed outputs contain an error"


def test_cells_unchanged_since_the_run(notebook):
    name, nb = notebook
    recorded = nb.metadata.get("hgrad", {}).get("source_sha256")
    assert recorded == notebook_source_digest(nb.cells), (
        f"{name}: its code cells changed after the outputs were produced; " + RERUN.format(name=name))


def test_library_code_unchanged_since_the_run(notebook):
    name, nb = notebook
    provenance = glued_string(nb, PROVENANCE_GLUE_KEY)
    assert provenance, f"{name}: no provenance in its outputs; " + RERUN.format(name=name)
    provenance = json.loads(provenance)
    assert provenance["code"], f"{name}: the run recorded no hgrad code (was tracing displaced?)"
    stale = stale_definitions(provenance["code"], ROOT)
    assert not stale, (f"{name}: hgrad definitions it executed changed since its outputs were produced:\n  "
                       + "\n  ".join(stale) + "\n" + RERUN.format(name=name))


def test_results_file_is_from_the_same_run(notebook):
    name, nb = notebook
    provenance = json.loads(glued_string(nb, PROVENANCE_GLUE_KEY) or "{}")
    path = ROOT / "results" / f"{name}.paper.json"
    assert path.exists(), f"{name}: results/{path.name} is missing; " + RERUN.format(name=name)
    record = json.loads(path.read_text())["provenance"]
    assert (record["date"], record["git_commit"]) == (provenance.get("date"), provenance.get("git_commit")), (
        f"{name}: results/{path.name} and the notebook's outputs come from different runs")


def test_quoted_values_paste_as_stored(notebook):
    # myst-nb evaluates a glued text as a Python literal before pasting it: a string stored bare
    # that spells a tuple ("1,407") would be pasted as "(1, 407)"
    name, nb = notebook
    keys = quoted_keys(name, nb)
    assert keys, f"{name}: no glued value is quoted (is the role pattern out of date?)"
    missing = [key for key in keys if glued(nb, key) is None]
    assert not missing, f"{name}: the book quotes values its outputs do not glue: {missing}; " + RERUN.format(name=name)
    mangled = {key: glued(nb, key) for key in keys
               if not isinstance(literal(glued(nb, key)), (str, int, float, bool))}
    assert not mangled, (f"{name}: glued text that myst-nb would paste as another Python literal: {mangled}; "
                         + RERUN.format(name=name))
