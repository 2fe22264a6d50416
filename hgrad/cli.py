"""The ``hgrad`` command: ``hgrad reproduce`` reruns the reproduction notebooks with papermill."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

from hgrad._provenance import notebook_source_digest
from hgrad.experiments import PRESETS

__all__ = ["main", "reproduce", "find_notebooks"]

ROOT = Path(__file__).resolve().parent.parent
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # Jupyter's own: figures become outputs


def find_notebooks(notebook_dir: Path, only: list[str] | None = None) -> list[Path]:
    """The notebooks to run, checked before anything runs: each exists and has a parameters cell."""
    import nbformat

    available = {p.stem: p for p in sorted(notebook_dir.glob("*.ipynb"))}
    if not available:
        raise SystemExit(f"hgrad reproduce: no notebooks in {notebook_dir}")
    names = only or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(
            f"hgrad reproduce: unknown notebook(s) {', '.join(unknown)}; "
            f"known: {', '.join(available)}"
        )
    paths = [available[n] for n in names]
    for path in paths:
        cells = nbformat.read(path, as_version=4).cells
        if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
            raise SystemExit(
                f"hgrad reproduce: {path} has no cell tagged 'parameters'; papermill cannot set its "
                "preset (tag the cell that defines `preset`)"
            )
    return paths


def _stamp(executed: Path, source: Path, preset: str) -> None:
    """Record in the executed notebook's metadata which code produced its outputs (the digest of
    the source notebook's code cells), so that a later edit of a cell shows as stale outputs."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    cells = nbformat.read(source, as_version=4).cells
    nb.metadata["hgrad"] = {"preset": preset, "source_sha256": notebook_source_digest(cells)}
    nbformat.write(nb, executed)


@contextlib.contextmanager
def _inline_figures():
    """The kernel started inside draws its figures into the notebook's outputs.

    Kernels inherit this process's environment, and with ``MPLBACKEND=Agg`` (as CI sets it for its
    own plotting) they would draw nowhere: the executed notebooks, committed ones included, would
    have no figures. The variable is restored afterwards."""
    previous = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MPLBACKEND"]
        else:
            os.environ["MPLBACKEND"] = previous


def reproduce(preset: str, only: list[str] | None, output_dir: Path, notebook_dir: Path,
              update_notebooks: bool = False) -> int:
    """Run the notebooks at ``preset``; keep going past failures; return the number that failed.

    With ``update_notebooks`` each notebook that ran without error replaces its source in
    ``notebook_dir`` (how the committed notebooks get their paper-preset outputs).
    """
    import papermill
    from tqdm.auto import tqdm

    if preset not in PRESETS:
        raise SystemExit(f"hgrad reproduce: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    paths = find_notebooks(notebook_dir, only)
    output_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    bar = tqdm(paths, desc=f"notebooks ({preset})", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.stem)
        out = output_dir / path.name
        start = time.time()
        try:
            with _inline_figures():
                papermill.execute_notebook(
                    str(path), str(out), parameters={"preset": preset}, kernel_name="python3", language="python",
                    cwd=str(notebook_dir), progress_bar=False,
                )
            _stamp(out, path, preset)
            if update_notebooks:
                shutil.copyfile(out, path)
            tqdm.write(f"  ok      {path.stem} ({time.time() - start:.0f} s)")
        except Exception as err:  # papermill raises PapermillExecutionError, kernel errors, ...
            failures.append((path.stem, out))
            tqdm.write(f"  FAILED  {path.stem}: {type(err).__name__}; its log is {out}")
    if failures:
        print(
            "hgrad reproduce: failed: "
            + ", ".join(f"{name} (see {out})" for name, out in failures),
            file=sys.stderr,
        )
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hgrad", description="hgrad: the paper companion's commands")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="rerun the reproduction notebooks with papermill")
    rep.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (by name)")
    rep.add_argument("--output-dir", type=Path, default=None,
                     help="where executed notebooks go (default: _build/executed/<preset>)")
    rep.add_argument("--notebook-dir", type=Path, default=ROOT / "notebooks")
    rep.add_argument("--update-notebooks", action="store_true",
                     help="copy each notebook that ran without error, with its outputs, over its source "
                          "(how the committed notebooks get their paper-preset outputs)")
    args = parser.parse_args(argv)
    output = args.output_dir or ROOT / "_build" / "executed" / args.preset
    os.environ.setdefault("HGRAD_RESULTS_DIR", str(ROOT / "results"))
    failed = reproduce(args.preset, args.only, output, args.notebook_dir, args.update_notebooks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
