"""environment.yml and pyproject.toml agree: the same packages with the same version bounds."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_IN_ENVIRONMENT = ("test", "notebooks", "book")


def _normalize(requirements):
    out = {}
    for line in requirements:
        req = Requirement(line)
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS_IN_ENVIRONMENT:
        wanted += project["optional-dependencies"][extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = [p for p in pip_section if not p.startswith("-e")]
    assert "-e ." in pip_section, "environment.yml must install hgrad itself (-e .)"
    assert _normalize(listed) == _normalize(wanted)


def test_python_version_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.removeprefix("python") == project["requires-python"]


def _colab_install_list(nb_path):
    """The package list of a notebook's Colab install cell (the list literal passed to pip)."""
    import ast

    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    cells = [c for c in nb.cells if "colab-install" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{nb_path.name}: expected one cell tagged colab-install, found {len(cells)}"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells[0] is cells[0], f"{nb_path.name}: the Colab install cell must be the first code cell"
    tree = ast.parse(cells[0].source)
    lists = [n for n in ast.walk(tree) if isinstance(n, ast.List)]
    assert lists, f"{nb_path.name}: no package list in the Colab install cell"
    items = [ast.literal_eval(e) for e in lists[0].elts if isinstance(e, ast.Constant)]
    return items[items.index("install") + 1:]  # after [sys.executable, "-m", "pip", "install"


def test_colab_install_cells_use_the_pins_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = _normalize(project["dependencies"] + project["optional-dependencies"]["notebooks"])
    required = _normalize(project["dependencies"])
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        items = _colab_install_list(path)
        assert f"hgrad @ git+{repository}" in items, f"{path.name}: does not install hgrad from {repository}"
        pins = _normalize(i for i in items if not i.startswith(("hgrad ", "-")))
        assert required.items() <= pins.items(), f"{path.name}: Colab cell lacks or changes a requirement"
        assert pins.items() <= allowed.items(), f"{path.name}: Colab cell pins differ from pyproject.toml"
