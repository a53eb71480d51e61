"""The repository holds the product only: no absolute paths of someone's machine, no working notes.

A path into someone's home folder, a work area or a named file in the temporary folder is true on
one machine only (a test that reads it passes there and fails everywhere else; a doc that names it
points nowhere), and a line that says it is not to be committed was never meant to land. This test reads every
file git tracks, so CI (``.ci/run`` runs pytest) fails on either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# An absolute path into a machine's own folders: the work area, a home folder, root's home, macOS
# users, or a named entry under /tmp. Not preceded by a name character, a dot or a tilde, so
# relative paths and the paths of URLs do not count (examples below); a bare "/tmp" (the folder
# named generically) does not count either.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work/|root/|home/[A-Za-z_]|Users/[A-Za-z_]|tmp/[\w.$-])")
# Notes to oneself that say they are not part of the product ("[ ]" so this file does not match itself).
WORKING_NOTE = re.compile(r"\b(?:LEAD[ ]NOTE|do[ ]not[ ]commit|do[ ]not[ ]merge|note[ ]to[ ]self)\b", re.I)


def offending(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` for each line with a machine path or a working note."""
    return [(n, line.strip()[:160]) for n, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATH.search(line) or WORKING_NOTE.search(line)]


def tracked_text_files() -> list[Path]:
    """Every file git tracks that reads as text (binary files carry no paths a reader sees)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if name and path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:
                files.append(path)
    return files


def test_no_tracked_file_holds_a_machine_path_or_a_working_note():
    hits = [f"{path.relative_to(REPO)}:{n}: {line}" for path in tracked_text_files()
            for n, line in offending(path.read_text(errors="replace"))]
    assert not hits, "machine paths or working notes in tracked files:\n" + "\n".join(hits)


@pytest.mark.parametrize("line", [
    "<!-- LEAD " "NOTE: read this first -->",
    "x = 1  # do " "not commit",
    "data = '/wo" "rk/shared/data/videos'",
    "see /ho" "me/alice/runs/3",
    "cp out.txt /ro" "ot/",
    "open('/Us" "ers/bob/Desktop/a.mp4')",
    "log: /tm" "p/wtload/bench.txt",
    "file:///ho" "me/carol/x.pt",
])
def test_a_machine_path_or_note_is_found(line):
    assert offending(f"fine\n{line}\n") == [(2, line)]


@pytest.mark.parametrize("line", [
    "with tempfile.TemporaryDirectory() as tmp: out = Path(tmp) / 'a.zarr'",
    "Scratch space defaults to `/tmp` (or $TMPDIR).",
    "see https://example.org/ho" "me/docs and https://github.com/o/r/tree/main/wo" "rk/x",
    "relative: data/wo" "rk/videos, ../ho" "me/notes, runs/ro" "ot/x",
    "home = os.path.join(os.environ.get('XDG_CACHE_HOME', '~/.cache'), 'huggingface')",
    "zarr writes a temporary file beside the target (not under /tmp/ ) and renames it",
    "a video turns done only after its data is committed to the store",
])
def test_ordinary_lines_are_not_flagged(line):
    assert offending(line) == []
