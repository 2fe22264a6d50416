"""Generate book/scoreboard.md from results/*.json: every criterion and paper number, by paper.

Run before building the book (scripts/build does): ``python book/scoreboard.py``. The page is
generated, never edited by hand; it lists each notebook's results at the paper preset where that
run exists and at the smoke preset otherwise, with provenance.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    return str(value)


def _cell(value) -> str:
    """Text for a Markdown table cell: a literal ``|`` would end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def load_results(results_dir: Path) -> list[dict]:
    """One record per notebook: its paper-preset results if present, else its smoke results."""
    chosen: dict[str, dict] = {}
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        name = record["notebook"]
        if name not in chosen or record["preset"] == "paper":
            chosen[name] = record
    return list(chosen.values())


def render(records: list[dict]) -> str:
    by_paper = defaultdict(list)
    for r in records:
        by_paper[r.get("paper") or "(no paper)"].append(r)
    total = sum(len(r["criteria"]) for r in records)
    holding = sum(c["holds"] for r in records for c in r["criteria"])
    lines = [
        "# Scoreboard",
        "",
        "Every criterion each reproduction checks, with our number beside the paper's where the paper gives "
        "one, generated from `results/` (never typed by hand). "
        f"**{holding} of {total} criteria hold.** A notebook is shown at its `paper` preset where that run "
        "exists, else at `smoke`. A *known gap* is a finding of the paper that our reproduction does not "
        "show; the reason is given beside it.",
        "",
    ]
    for paper, recs in sorted(by_paper.items()):
        lines += [f"## {paper}", ""]
        for r in sorted(recs, key=lambda r: r["notebook"]):
            prov = r.get("provenance", {})
            lines += [
                f"### {r['notebook']} ({r['preset']} preset)",
                "",
                f"Commit `{prov.get('git_commit', '?')[:10]}`, {prov.get('device', '?')}, "
                f"jax {prov.get('jax_version', '?')}, {prov.get('wall_time_s', '?')} s, {prov.get('date', '?')}.",
                "",
                "| criterion | ours | paper | holds | detail |",
                "|---|---|---|---|---|",
            ]
            for c in r["criteria"]:
                mark = "✅ yes" if c["holds"] else "❌ no"
                if c.get("known_gap"):
                    mark += f" (known gap: {c['known_gap']})"
                ours = _fmt(c["ours"]) if "ours" in c else "–"
                paper = "–"
                if c.get("paper"):
                    pn = r["paper_numbers"][c["paper"]]
                    paper = f"{_fmt(pn['value'])} ({pn['source']})"
                lines.append(f"| {_cell(c['name'])} | {_cell(ours)} | {_cell(paper)} | {_cell(mark)} | {_cell(c['detail'])} |")
            lines.append("")
            if r.get("paper_numbers"):
                lines += ["| paper's number | value | source |", "|---|---|---|"]
                for name, pn in r["paper_numbers"].items():
                    lines.append(f"| {_cell(name)} | {_cell(_fmt(pn['value']))} | {_cell(pn['source'])} |")
                lines.append("")
            for note in r.get("notes", []):
                lines.append(f"- {note}")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results_dir = Path(argv[0]) if argv else ROOT / "results"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "book" / "scoreboard.md"
    records = load_results(results_dir)
    if not records:
        print(f"no results in {results_dir}; run `hgrad reproduce` first", file=sys.stderr)
        return 1
    out.write_text(render(records))
    print(f"wrote {out} ({len(records)} notebooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
