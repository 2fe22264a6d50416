"""Which library code a run executed, as fingerprints that outlive the run.

A reproduction notebook's committed outputs are only as current as the code that produced them. While a
run lasts, :class:`CodeTracker` records every hgrad function that starts executing (a ``sys.settrace``
hook that only looks at call events and never traces lines). :func:`fingerprint` then maps each such
function to the top-level definition that contains it (a function, or a whole class, so dataclass
fields and defaults count) and hashes that definition's syntax tree with docstrings removed: comments,
docstrings and formatting can change without making outputs stale; a changed expression cannot. Each
file's top-level statements other than definitions and imports (constants such as preset tables) are
hashed as ``"<module>"``. The modules that only record a run (this one, ``experiments``, ``cli``) are
not tracked.

:func:`stale_definitions` compares a recorded fingerprint with the code as it is now.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import threading
from pathlib import Path
from typing import Iterable

PACKAGE_DIR = Path(__file__).resolve().parent
MODULE_KEY = "<module>"
# Files that record a run rather than compute it: changing them does not make outputs stale.
RECORDING_FILES = ("_provenance.py", "experiments.py", "cli.py")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class CodeTracker:
    """Records ``(file, first line)`` of every hgrad code object called while it is active.

    Only ``call`` events are inspected and the hook returns ``None``, so no line events are
    generated; the cost is one Python call per Python function call (JAX tracing is the only
    Python-heavy part of a run; compiled computations are not affected). A trace function that was
    already installed (a debugger, coverage, another tracker) keeps working: the hook passes every
    event on to it and returns what it returns.
    """

    def __init__(self, package_dir: Path = PACKAGE_DIR):
        self._prefix = str(package_dir) + "/"
        self._skip = {str(package_dir / name) for name in RECORDING_FILES}
        self.calls: set[tuple[str, int]] = set()
        self._previous = None

    def _hook(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(self._prefix) and code.co_filename not in self._skip:
                self.calls.add((code.co_filename, code.co_firstlineno))
        previous = self._previous
        return previous(frame, event, arg) if previous is not None else None

    def start(self) -> "CodeTracker":
        self._previous = sys.gettrace()
        sys.settrace(self._hook)
        threading.settrace(self._hook)
        return self

    def stop(self) -> None:
        """Uninstall the hook (restoring the previous one) if it is still the active one."""
        if sys.gettrace() == self._hook:
            sys.settrace(self._previous)
            threading.settrace(self._previous)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        return sys.gettrace() == self._hook


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (*_DEFINITIONS, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _digest(nodes: Iterable[ast.AST]) -> str:
    text = "\n".join(ast.dump(_strip_docstrings(node), include_attributes=False) for node in nodes)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _top_level(path: Path) -> tuple[dict[str, ast.AST], list[tuple[int, int, str]]]:
    """A file's top-level definitions by name, and their line spans (decorators included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    definitions, spans = {}, []
    for node in tree.body:
        if isinstance(node, _DEFINITIONS):
            definitions[node.name] = node
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans.append((start, node.end_lineno, node.name))
    definitions[MODULE_KEY] = [
        node for node in tree.body
        if not isinstance(node, (*_DEFINITIONS, ast.Import, ast.ImportFrom))
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    return definitions, spans


def _hash_definition(definitions: dict, name: str) -> str | None:
    if name not in definitions:
        return None
    node = definitions[name]
    return _digest(node if isinstance(node, list) else [node])


def fingerprint(calls: Iterable[tuple[str, int]], package_dir: Path = PACKAGE_DIR) -> dict:
    """``{relative file: {top-level name: hash}}`` of the definitions that ``calls`` ran in."""
    by_file: dict[str, set[int]] = {}
    for filename, line in calls:
        by_file.setdefault(filename, set()).add(line)
    result = {}
    for filename, lines in sorted(by_file.items()):
        path = Path(filename)
        definitions, spans = _top_level(path)
        names = {MODULE_KEY}
        for line in lines:
            names.update(name for start, end, name in spans if start <= line <= end)
        rel = path.relative_to(package_dir.parent).as_posix()
        result[rel] = {name: _hash_definition(definitions, name) for name in sorted(names)}
    return result


def stale_definitions(recorded: dict, root: Path = PACKAGE_DIR.parent) -> list[str]:
    """The recorded definitions that are now different or gone, as ``"file: name"`` strings."""
    stale = []
    for rel, names in sorted(recorded.items()):
        path = root / rel
        if not path.exists():
            stale.extend(f"{rel}: {name} (file removed)" for name in names)
            continue
        definitions, _ = _top_level(path)
        for name, digest in sorted(names.items()):
            now = _hash_definition(definitions, name)
            if now is None:
                stale.append(f"{rel}: {name} (removed)")
            elif now != digest:
                stale.append(f"{rel}: {name} (changed)")
    return stale


def notebook_source_digest(cells: Iterable[dict]) -> str:
    """A hash of a notebook's code as written: its code cells' sources, in order, leaving out the
    cell papermill injects (tagged ``injected-parameters``), so a rerun at another preset does not
    change it while an edit to any cell does, and the Colab install cell (tagged ``colab-install``),
    which does nothing outside Colab."""
    sources = [
        cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for cell in cells
        if cell["cell_type"] == "code"
        and not {"injected-parameters", "colab-install"} & set(cell.get("metadata", {}).get("tags", []))
    ]
    return hashlib.sha256("\n\x00\n".join(sources).encode()).hexdigest()[:16]
