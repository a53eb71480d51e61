"""A package outside vssl, installed for the CLI subprocesses a test starts: one module and the
dist-info that declares its entry points, put first on ``PYTHONPATH`` (how vssl's plugin groups
``vssl.backbones``, ``vssl.view_kinds``, ``vssl.probes`` and ``vssl.loss_terms`` are found)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path


def install_plugin(root: Path, monkeypatch, module: str, source: str, group: str, entry: str) -> None:
    """Write ``root/<module>.py`` from ``source`` and a ``<module>-0.1.dist-info`` whose entry point
    ``entry`` (``name = module:attr``) is in ``group``; the test's subprocesses see it."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
