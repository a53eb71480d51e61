"""Which embedded clips a store must not take: features that are not finite, or not storable.

fp16 autocast overflows to inf (and inf - inf to NaN) on activations that fp32 and bf16 hold, and a
finite fp32 value beyond float16's range becomes inf when written to a float16 view. Either would
be written as "done" and poison every later stage (only ``vssl verify`` would notice), so every
batch is checked on its host copy and the videos it belongs to fail with this module's reason.
"""

from __future__ import annotations

import numpy as np


def unusable_rows(features: np.ndarray, store_dtype: str | np.dtype) -> np.ndarray:
    """Boolean ``[n]`` over the rows of ``features [n, D]`` (float32 host copy): not finite, or beyond
    what ``store_dtype`` (the view's dtype) can hold."""
    limit = np.finfo(np.dtype(store_dtype)).max
    with np.errstate(invalid="ignore"):  # NaN compares False below; isfinite catches it
        return ~np.isfinite(features).all(axis=1) | (np.abs(features) > limit).any(axis=1)


def unusable_reason(features: np.ndarray, view: str, clip: int, precision: str, store_dtype: str | np.dtype) -> str:
    """The one-line failure reason of a video whose clip ``clip`` of ``view`` has the row ``features [D]``."""
    if np.isfinite(features).all():
        return (f"features of clip {clip} of view '{view}' exceed {np.dtype(store_dtype).name}'s range "
                f"(max |x| {float(np.abs(features).max()):.3g}); extract with --dtype float32")
    kinds = "/".join(k for k, bad in (("NaN", np.isnan(features).any()), ("inf", np.isinf(features).any())) if bad)
    hint = "fp16 overflows where bf16 and fp32 do not; use --precision bf16 or fp32" if precision == "fp16" else \
        "the backbone produced them; check its checkpoint and input normalisation"
    return f"{kinds} features in clip {clip} of view '{view}' under {precision} ({hint})"
