"""Run an extraction that SIGKILLs itself right after its second chunk write (resume test).

Arguments: VIDEOS STORE [VIEWS] [TOKENS] (default random:3,uniform:2x2; no token views).
"""

import os
import signal
import sys

from vssl.extract import pipeline
from vssl.features_store import FeatureStore

calls = {"n": 0}
original = FeatureStore.write_videos


def write_then_die(self, *args, **kwargs):
    original(self, *args, **kwargs)
    calls["n"] += 1
    if calls["n"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)


FeatureStore.write_videos = write_then_die
src, out = sys.argv[1], sys.argv[2]
views = sys.argv[3] if len(sys.argv) > 3 else "random:3,uniform:2x2"
tokens = sys.argv[4] if len(sys.argv) > 4 else None
pipeline.extract(src, out, views=views, chunk_videos=2, batch_size=5, frames=4, size=32, tokens=tokens,
                 progress=False)
