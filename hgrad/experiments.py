"""What a reproduction notebook needs besides the library: presets and a results file.

Each notebook in ``notebooks/`` picks its settings with :func:`preset_settings` and records what
it measured in a :class:`Results`, saved as ``results/<notebook>.<preset>.json``: the metrics, the
paper's numbers (with their source) where known, and each acceptance criterion with whether it
holds. The book's scoreboard and the tests read these files.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from hgrad._provenance import CodeTracker, fingerprint

__all__ = ["PRESETS", "preset_settings", "Results", "results_dir", "glue", "PROVENANCE_GLUE_KEY"]

PROVENANCE_GLUE_KEY = "hgrad_provenance"
_GLUE_PREFIX = "application/papermill.record/"  # myst-nb's mime prefix for glued, undisplayed values

PRESETS = ("smoke", "paper")


def preset_settings(preset: str, settings: Mapping[str, Mapping[str, Any]]) -> dict:
    """The settings of ``preset``, with a clear error for an unknown one.

    Args:
      preset: ``"smoke"`` (minutes on two CPU cores) or ``"paper"`` (the paper's scale).
      settings: ``{"smoke": {...}, "paper": {...}}``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    missing = [p for p in PRESETS if p not in settings]
    if missing:
        raise ValueError(f"settings lack the preset(s) {missing}")
    return dict(settings[preset])


def results_dir() -> Path:
    """``$HGRAD_RESULTS_DIR`` or ``results/`` at the repository root."""
    env = os.environ.get("HGRAD_RESULTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def _plain(x: Any) -> Any:
    """Convert NumPy/JAX scalars and arrays to JSON-serializable Python values."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _plain(np.asarray(x).tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _git_commit() -> str:
    """The commit the code was run from, with ``+dirty`` when hgrad/ or notebooks/ had
    uncommitted changes (the results then do not belong to any commit exactly)."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--", "hgrad", "notebooks"):
        commit += "+dirty"
    return commit


def glue(name: str, value: Any) -> None:
    """Store ``value`` in the running notebook's outputs under ``name`` for the book to paste.

    The book's pages quote it with myst-nb's ``{glue:text}`` role (``notebook.ipynb::name:.2f`` from
    another page), so a number in prose is always the one the notebook computed. The value is stored,
    not shown, in myst-nb's glue format (a display output whose metadata names it); outside a
    notebook kernel this does nothing.

    Every value is stored as its ``repr``, strings included: myst-nb reads the stored text back with
    ``ast.literal_eval`` before pasting it, so a string stored bare would be pasted as whatever
    Python literal it spells (``"1,407"`` as ``(1, 407)``); its ``repr`` evaluates back to itself.
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    display({_GLUE_PREFIX + "text/plain": repr(_plain(value))}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": _GLUE_PREFIX}})


_glue = glue  # Results.metric's keyword shadows the name


class Results:
    """Metrics, paper numbers and criteria of one notebook run, written as JSON.

    Example:
      >>> r = Results("hyper_cleaning", "smoke", paper="Franceschi et al. 2017")
      >>> r.metric("test_accuracy", 0.91)
      >>> r.criterion("beats_baseline", 0.91 > 0.85, "cleaned 91.0% > baseline 85.0%")
      True
    """

    def __init__(self, notebook: str, preset: str, *, paper: str = ""):
        preset_settings(preset, {p: {} for p in PRESETS})
        self.notebook, self.preset, self.paper = notebook, preset, paper
        self.metrics: dict[str, Any] = {}
        self.paper_numbers: dict[str, Any] = {}
        self.criteria: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.settings: dict[str, Any] = {}
        self._start = time.time()
        self._commit = _git_commit()  # when the run starts: the code it actually ran
        self._tracker = CodeTracker().start()  # which hgrad code the run executes, until save()

    def metric(self, name: str, value: Any, *, glue: bool = False) -> None:
        """Record a measured value; with ``glue=True`` also store it for the book's prose
        (see :func:`glue`; the key is the metric's name with ``/`` replaced by ``_``)."""
        self.metrics[name] = _plain(value)
        if glue:
            _glue(name.replace("/", "_"), value)

    def paper_number(self, name: str, value: Any, source: str) -> None:
        """A number quoted from the paper, with where it is printed (table, figure, page)."""
        self.paper_numbers[name] = {"value": _plain(value), "source": source}

    def criterion(self, name: str, holds: Any, detail: str, *, ours: Any = None,
                  paper: str | None = None, known_gap: str | None = None) -> bool:
        """An acceptance criterion and whether it holds.

        Args:
          name: what is checked, e.g. ``"cleaned beats baseline (R=400)"``.
          holds: the outcome.
          detail: the numbers behind it, in words.
          ours: the reproduced number the criterion is about, shown on the scoreboard.
          paper: the name of a :meth:`paper_number` this criterion compares ``ours`` with; the
            scoreboard sets the two side by side.
          known_gap: for a finding of the paper that this reproduction does not show, why (what
            differs, by how much). The criterion is still evaluated and recorded as failing; the
            scoreboard marks it as a known gap, and the notebook tests require it to keep failing
            (a gap that closes must be noticed and the declaration removed).
        """
        if paper is not None and paper not in self.paper_numbers:
            raise ValueError(f"criterion {name!r} names paper number {paper!r}, which was not recorded "
                             "with Results.paper_number")
        holds = bool(holds)
        entry = {"name": name, "holds": holds, "detail": detail}
        if ours is not None:
            entry["ours"] = _plain(ours)
        if paper is not None:
            entry["paper"] = paper
        if known_gap is not None:
            entry["known_gap"] = known_gap
        self.criteria.append(entry)
        return holds

    def note(self, text: str) -> None:
        """A difference from the paper's setting (data, scale, seeds) and its size."""
        self.notes.append(text)

    @property
    def path(self) -> Path:
        return results_dir() / f"{self.notebook}.{self.preset}.json"

    def save(self) -> Path:
        """Write the results file and, in a notebook, glue its provenance into the outputs.

        The provenance includes a fingerprint of every hgrad definition the run executed (see
        ``hgrad._provenance``): the test suite compares the fingerprint stored in each committed
        notebook with the current code and flags notebooks whose outputs are stale.
        """
        self._tracker.stop()
        record = {
            "notebook": self.notebook,
            "preset": self.preset,
            "paper": self.paper,
            "settings": _plain(self.settings),
            "metrics": self.metrics,
            "paper_numbers": self.paper_numbers,
            "criteria": self.criteria,
            "all_criteria_hold": all(c["holds"] for c in self.criteria),
            "notes": self.notes,
            "provenance": {
                "git_commit": self._commit,
                "jax_version": jax.__version__,
                "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
                "python": platform.python_version(),
                "wall_time_s": round(time.time() - self._start, 2),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "code": fingerprint(self._tracker.calls),
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=2) + "\n")
        glue(PROVENANCE_GLUE_KEY, json.dumps({"preset": self.preset, **record["provenance"]}))
        for key, value in [("preset", self.preset), ("device", record["provenance"]["device"]),
                           ("wall_time_minutes", record["provenance"]["wall_time_s"] / 60),
                           ("criteria_held", f"{sum(c['holds'] for c in self.criteria)} of {len(self.criteria)}")]:
            glue(key, value)
        return self.path
