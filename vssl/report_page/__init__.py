"""One self-contained HTML page per experiment (``vssl report``, ``vssl probe --html``).

:mod:`.read` reads what the page shows (a probe's JSON report of a known format version, a SCALE
run's config and metrics); :mod:`.figures` draws the figures (shared with ``--confusion`` and the
demo); :mod:`.feature_map` places the test videos' features on a plane; :mod:`.page` writes the
HTML, every style and image inline, so the file opens anywhere without a network.
"""

from .page import write_page

__all__ = ["write_page"]
