"""The test videos' features on a plane: the backbone's next to SCALE's, coloured by class.

Each video is its k-NN vector under the ``dino`` rule (the mean of its l2-normalised clips, or of
its l2-normalised [C_i ⊕ SET] on SCALE's features, :mod:`vssl.probe.knn`), so the two panels show
what a nearest-neighbour probe sees. The plane is scikit-learn's t-SNE (perplexity 30, or less on a
small test split; PCA initialisation, a fixed seed: the same page twice) or its PCA (``pca``: linear,
for thousands of videos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vssl.errors import VsslError

METHODS = ("tsne", "pca")
#: the most test videos a map places (t-SNE is quadratic in them): a larger split is sampled
MAP_VIDEOS = 2000


def map_sample(labels: np.ndarray, limit: int = MAP_VIDEOS, seed: int = 0) -> np.ndarray:
    """Positions of the videos the map shows: all of them, or ``limit`` drawn at random (a fixed seed:
    the same page twice), kept in their order."""
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def check_method(method: str) -> None:
    if method not in METHODS:
        raise VsslError(f"--map {method!r}: use one of {', '.join(METHODS)}")


def project(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """``[n, D]`` -> ``[n, 2]`` by ``method`` (t-SNE or PCA)."""
    check_method(method)
    if method == "pca" or len(x) < 5:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x) if len(x) > 2 else np.zeros((len(x), 2))
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed
                ).fit_transform(x)


def test_video_maps(report: dict[str, Any], store_path: str | Path, run: str | Path | None, method: str,
                    quiet: bool = True) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """``([(source, [n, 2]), ...], labels [n])`` of the report's test videos: the backbone's panel, and
    SCALE's when ``run`` (a run folder trained on this store) is given. Labels are class indices
    (a multi-label video takes its first class)."""
    from vssl.features_store import FeatureStore
    from vssl.probe.data import load_split
    from vssl.probe.knn import l2_normalize, video_embeddings
    from vssl.probe.retrieval import mean_tokens

    store = FeatureStore.open(store_path)
    split = load_split(store, report["view"], report["test_split"], "--test-split")
    split = mean_tokens(split.subset(map_sample(split.labels)))        # a token view: one vector per clip
    labels = np.asarray(split.labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    maps = [("backbone", project(video_embeddings(split.features), method))]
    if run is not None:
        from vssl.probe.scale import ScaleFeatures

        scale = ScaleFeatures.open(store, Path(run), report["view"], split.indices, quiet=quiet)
        maps.append(("SCALE", project(l2_normalize(scale.video_inputs(split, "clip_set", "dino")), method)))
    return maps, labels.astype(np.int64)
