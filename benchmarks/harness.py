"""Tiny benchmark harness: time a callable, print a table, update a section of docs/PERFORMANCE.md.

Benchmarks are scripts, not tests: they report ratios measured side by side in one run
(absolute times on a shared 2-core machine move too much to assert on).
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

PERF_DOC = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"python {platform.python_version()}, torch {torch.__version__}")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path = PERF_DOC) -> None:
    """Replace (or append) the section between ``<!-- bench:name -->`` markers in ``doc`` (PERFORMANCE.md)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(text)
