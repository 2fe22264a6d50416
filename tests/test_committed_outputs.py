"""The committed notebooks carry the outputs of a paper-preset run of the code as it is now.

``hgrad reproduce --preset paper --update-notebooks`` writes each notebook back with its outputs, a
digest of its code cells in the metadata, and (glued by ``Results.save``) a fingerprint of every hgrad
definition the run executed. A notebook fails here when its cells were edited after the run, when a
library definition it executed has changed since (docstrings and comments aside), or when its results
file comes from another run.
"""

import json
from pathlib import Path

import nbformat
import pytest

from hgrad._provenance import notebook_source_digest, stale_definitions
from hgrad.experiments import PROVENANCE_GLUE_KEY, _GLUE_PREFIX

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RERUN = "rerun it: hgrad reproduce --preset paper --only {name} --update-notebooks"


def glued(nb, key):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                return output["data"][_GLUE_PREFIX + "text/plain"]
    return None


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
    provenance = glued(nb, PROVENANCE_GLUE_KEY)
    assert provenance, f"{name}: no provenance in its outputs; " + RERUN.format(name=name)
    provenance = json.loads(provenance)
    assert provenance["code"], f"{name}: the run recorded no hgrad code (was tracing displaced?)"
    stale = stale_definitions(provenance["code"], ROOT)
    assert not stale, (f"{name}: hgrad definitions it executed changed since its outputs were produced:\n  "
                       + "\n  ".join(stale) + "\n" + RERUN.format(name=name))


def test_results_file_is_from_the_same_run(notebook):
    name, nb = notebook
    provenance = json.loads(glued(nb, PROVENANCE_GLUE_KEY) or "{}")
    path = ROOT / "results" / f"{name}.paper.json"
    assert path.exists(), f"{name}: results/{path.name} is missing; " + RERUN.format(name=name)
    record = json.loads(path.read_text())["provenance"]
    assert (record["date"], record["git_commit"]) == (provenance.get("date"), provenance.get("git_commit")), (
        f"{name}: results/{path.name} and the notebook's outputs come from different runs")
