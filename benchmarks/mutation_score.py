"""Summarise a mutmut run per function: killed, survived, not covered, and the score.

    mutmut run --max-children 1 "vssl.probe.knn.x_vote__*" ...   # docs/MUTATION.md: the scope
    python benchmarks/mutation_score.py [--survivors]

Reads mutmut's result files (``mutants/**/*.meta``); only mutants that were run are counted. The
score is killed / (killed + survived): mutants no test reaches are listed apart, as mutmut does.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

# mutmut's exit codes: 1 (a test failed), 33 (no test covers the function), 0 (every test passed)
KILLED, NOT_COVERED, SURVIVED = 1, 33, 0


def results(root: Path) -> dict[str, dict[str, int | None]]:
    """{mutated function: {mutant: exit code or None (not run)}}."""
    out: dict[str, dict[str, int | None]] = collections.defaultdict(dict)
    for meta in sorted(root.glob("**/*.meta")):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[mutant.rsplit("__mutmut_", 1)[0]][mutant] = code
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=Path, default=Path("mutants"))
    ap.add_argument("--survivors", action="store_true", help="list the surviving mutants' names")
    args = ap.parse_args()
    totals = collections.Counter()
    print(f"{'function':<62} {'killed':>6} {'survived':>8} {'no test':>7}")
    for function, mutants in sorted(results(args.mutants).items()):
        codes = collections.Counter(code for code in mutants.values() if code is not None)
        if not codes:
            continue
        killed = sum(n for code, n in codes.items() if code not in (SURVIVED, NOT_COVERED))
        totals.update(killed=killed, survived=codes[SURVIVED], uncovered=codes[NOT_COVERED])
        print(f"{function:<62} {killed:>6} {codes[SURVIVED]:>8} {codes[NOT_COVERED]:>7}")
        if args.survivors:
            for mutant, code in mutants.items():
                if code == SURVIVED:
                    print(f"    {mutant}")
    run = totals["killed"] + totals["survived"]
    print(f"\n{totals['killed']} killed, {totals['survived']} survived, {totals['uncovered']} not covered: "
          f"score {100 * totals['killed'] / max(run, 1):.1f}%")


if __name__ == "__main__":
    main()
