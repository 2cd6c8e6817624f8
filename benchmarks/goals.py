"""One table of every benchmark goal, met or not, from `benchmarks/results/*.json`.

Each benchmark writes its result with a top-level ``"goals"`` list of
``{"id", "what", "value", "goal", "met"}``; `make bench` ends with this table, and
``--readme`` rewrites the README's goal table (between its two marker comments) from
the same files, with the date and machine of each figure.

    python benchmarks/goals.py            # print the table
    python benchmarks/goals.py --readme   # and regenerate README.md's table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- goals:start (benchmarks/goals.py --readme) -->", "<!-- goals:end -->"


def goal(gid: str, what: str, value: float | None, target: str) -> dict[str, Any]:
    """One goal; ``target`` is ``">= X"`` or ``"<= X"``. A goal with no value is not met."""
    op, bound = target.split()
    if op not in (">=", "<="):
        raise ValueError(f"goal {gid}: target must be '>= X' or '<= X', got {target!r}")
    met = value is not None and (value >= float(bound) if op == ">=" else value <= float(bound))
    return {"id": gid, "what": what, "value": None if value is None else round(value, 4), "goal": target, "met": met}


def rows() -> list[dict[str, Any]]:
    """Every goal of every results file, with the file's benchmark, date and machine."""
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        for g in result.get("goals", []):
            out.append({**g, "benchmark": path.stem, "date": str(result.get("date", ""))[:10],
                        "machine": result.get("machine", "")})  # fmt: skip
    return out


def missing() -> list[str]:
    """Results files that carry no goals list (a benchmark to fix)."""
    return [p.name for p in sorted(RESULTS.glob("*.json")) if "goals" not in json.loads(p.read_text())]


def _value(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def markdown(goals: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | goal id | what | value | goal | met | measured |", "|---|---|---|---|---|---|---|"]
    for g in goals:
        lines.append(f"| `{g['benchmark']}` | `{g['id']}` | {g['what']} | {_value(g['value'])} | {g['goal']} | "
                     f"{'yes' if g['met'] else '**no**'} | {g['date']}, {g['machine']} |")  # fmt: skip
    return "\n".join(lines)


def rewrite_readme(table: str) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no goal table markers ({START} ... {END})")
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", action="store_true", help="regenerate README.md's goal table")
    args = p.parse_args()
    goals = rows()
    out = Table("benchmark", "id", "value", "goal", "met", "measured", title="benchmark goals")
    for g in goals:
        out.add_row(g["benchmark"], g["id"], _value(g["value"]), g["goal"], "yes" if g["met"] else "NO", g["date"])
    Console().print(out)
    met = sum(g["met"] for g in goals)
    lacking = missing()
    print(f"{met} of {len(goals)} goals met" + (f"; no goals list in: {', '.join(lacking)}" if lacking else ""))
    if args.readme:
        rewrite_readme(markdown(goals))


if __name__ == "__main__":
    main()
