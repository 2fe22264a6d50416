"""Write (or check) the Colab install cell at the top of every notebook in notebooks/.

The cell installs hgrad from the repository named in _config.yml and the library's own requirements,
pinned exactly as in pyproject.toml (which environment.yml mirrors), plus matplotlib for the figures.
It does nothing outside Colab, and it carries the tag ``colab-install``, so it is not part of the code
whose digest marks a notebook's outputs stale.

    python scripts/colab_cell.py          # rewrite the cell in every notebook (outputs untouched)
    python scripts/colab_cell.py --check  # exit 1 if any notebook's cell differs
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
TAG = "colab-install"


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plotting = [r for r in project["optional-dependencies"]["notebooks"] if r.startswith("matplotlib")]
    return list(project["dependencies"]) + plotting


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def cell_source() -> str:
    packages = [f"hgrad @ git+{repository_url()}"] + requirements()
    listed = "".join(f"\n        {p!r}," for p in packages)
    return (
        "# On Colab: install hgrad and its requirements with the pins of pyproject.toml (elsewhere: nothing).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",'
        f"{listed}\n"
        "    ], check=True)"
    )


def install_cell(nb) -> nbformat.NotebookNode | None:
    return next((c for c in nb.cells if TAG in c.get("metadata", {}).get("tags", [])), None)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    source, stale = cell_source(), []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = install_cell(nb)
        if cell is not None and cell.source == source:
            continue
        stale.append(path.name)
        if check:
            continue
        if cell is None:
            cell = nbformat.v4.new_code_cell(source, metadata={"tags": [TAG]})
            first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
            nb.cells.insert(first_code, cell)
        cell.source, cell.outputs, cell.execution_count = source, [], None
        nbformat.write(nb, path)
    if check and stale:
        print("Colab install cell missing or out of date in: " + ", ".join(stale)
              + " (run python scripts/colab_cell.py)", file=sys.stderr)
        return 1
    print("updated: " + (", ".join(stale) if stale else "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
