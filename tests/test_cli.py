"""``hgrad reproduce``: clear errors before anything runs, and failures named with their logs."""

import nbformat
import pytest

from hgrad import cli
from hgrad.experiments import Results, preset_settings


def _notebook(path, source, tagged=True):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    if tagged:
        cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, path)


def test_unknown_preset(tmp_path):
    _notebook(tmp_path / "a.ipynb", 'preset = "paper"')
    with pytest.raises(SystemExit, match="unknown preset 'fast'"):
        cli.main(["reproduce", "--preset", "fast", "--notebook-dir", str(tmp_path)])


def test_unknown_notebook(tmp_path):
    _notebook(tmp_path / "a.ipynb", 'preset = "paper"')
    with pytest.raises(SystemExit, match="unknown notebook.*nope; known: a"):
        cli.main(["reproduce", "--only", "nope", "--notebook-dir", str(tmp_path)])


def test_notebook_without_parameters_cell(tmp_path):
    _notebook(tmp_path / "a.ipynb", 'preset = "paper"', tagged=False)
    with pytest.raises(SystemExit, match="no cell tagged 'parameters'"):
        cli.main(["reproduce", "--notebook-dir", str(tmp_path)])


def test_failing_notebook_is_named_and_the_rest_still_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HGRAD_RESULTS_DIR", str(tmp_path / "results"))
    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    _notebook(nbs / "a_fails.ipynb", 'preset = "paper"\nraise RuntimeError("boom")')
    _notebook(nbs / "b_works.ipynb", 'preset = "paper"\nx = 1')
    code = cli.main(["reproduce", "--notebook-dir", str(nbs), "--output-dir", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed: a_fails" in err and str(out / "a_fails.ipynb") in err
    assert (out / "b_works.ipynb").exists()
    executed = nbformat.read(out / "b_works.ipynb", as_version=4)
    assert any('preset = "smoke"' in c.source for c in executed.cells)  # papermill injected it


def test_preset_settings_and_results(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_settings("huge", {"smoke": {}, "paper": {}})
    assert preset_settings("smoke", {"smoke": {"T": 10}, "paper": {"T": 1000}}) == {"T": 10}
    monkeypatch.setenv("HGRAD_RESULTS_DIR", str(tmp_path))
    r = Results("demo", "smoke", paper="Someone 2020")
    r.metric("accuracy", 0.5)
    assert r.criterion("holds", True, "yes") and not r.criterion("fails", False, "no")
    assert not r.criterion("gap", False, "no", known_gap="smaller data")
    import json

    record = json.loads(r.save().read_text())
    assert record["all_criteria_hold"] is False
    assert [c.get("known_gap") for c in record["criteria"]] == [None, None, "smaller data"]
    assert record["provenance"]["git_commit"] and record["preset"] == "smoke"


def test_update_notebooks_writes_outputs_back_with_a_code_digest(tmp_path, monkeypatch):
    from hgrad._provenance import notebook_source_digest

    monkeypatch.setenv("HGRAD_RESULTS_DIR", str(tmp_path / "results"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "a.ipynb", 'preset = "smoke"')
    before = nbformat.read(nbs / "a.ipynb", as_version=4)
    before.cells.append(nbformat.v4.new_code_cell('print("ran at", preset)'))  # after papermill's cell
    nbformat.write(before, nbs / "a.ipynb")
    code = cli.main(["reproduce", "--preset", "paper", "--notebook-dir", str(nbs),
                     "--output-dir", str(tmp_path / "out"), "--update-notebooks"])
    assert code == 0
    after = nbformat.read(nbs / "a.ipynb", as_version=4)
    assert after.metadata["hgrad"] == {"preset": "paper", "source_sha256": notebook_source_digest(before.cells)}
    assert notebook_source_digest(after.cells) == notebook_source_digest(before.cells)  # injected cell ignored
    assert any("ran at paper" in o.get("text", "") for c in after.cells for o in c.get("outputs", []))


def test_without_update_notebooks_the_sources_are_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("HGRAD_RESULTS_DIR", str(tmp_path / "results"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "a.ipynb", 'preset = "smoke"')
    before = (nbs / "a.ipynb").read_text()
    assert cli.main(["reproduce", "--notebook-dir", str(nbs), "--output-dir", str(tmp_path / "out")]) == 0
    assert (nbs / "a.ipynb").read_text() == before
    assert nbformat.read(tmp_path / "out" / "a.ipynb", as_version=4).metadata["hgrad"]["preset"] == "smoke"


def test_figures_are_drawn_into_the_notebook_whatever_mplbackend_says(tmp_path, monkeypatch):
    # CI sets MPLBACKEND=Agg; a kernel started with it draws nowhere, and a committed notebook
    # rerun that way lost its figures (2026-12-07).
    monkeypatch.setenv("HGRAD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "a.ipynb", 'preset = "smoke"\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()')
    assert cli.main(["reproduce", "--notebook-dir", str(nbs), "--output-dir", str(tmp_path / "out")]) == 0
    executed = nbformat.read(tmp_path / "out" / "a.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    import os

    assert os.environ["MPLBACKEND"] == "Agg"  # restored for this process
