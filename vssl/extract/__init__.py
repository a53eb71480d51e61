"""Stage one, ``vssl extract``: decode each video once, cut clips, embed them with a frozen backbone.

Modules, one job each: :mod:`.inputs` (folder / manifest → videos, labels, classes),
:mod:`.decode` (frame-accurate readers), :mod:`.view_kinds` (one module per view kind:
``random:K``, ``uniform:TxS``, ... and their clips' boxes; plugins by entry point),
:mod:`.samplers` (``--views`` parsing, the time base around a kind), :mod:`.transforms`
(crop/resize, normalize), :mod:`.clips` (one video → all views' clips), :mod:`.config` (every
setting, ``ExtractConfig``, and named recipes), :mod:`.embedding` (videos → clip features in
batches: the engine, and ``embed`` for files in no store), :mod:`.pipeline` (that engine plus the
feature store's writer, in named steps), :mod:`.backbones` (the frozen networks).

Python use mirrors the CLI::

    from vssl.extract import extract, embed
    summary = extract("UCF-101/", "ucf.zarr", backbone="tiny", views=["random:16", "uniform:5x3"])
    (query,) = embed("query.mp4", backbone="tiny", views="uniform:5x3")  # query.features["uniform5x3"]
"""

__all__ = ["extract", "ExtractSummary", "embed", "VideoEmbedding"]

_HOMES = {"extract": "pipeline", "ExtractSummary": "pipeline", "embed": "embedding", "VideoEmbedding": "embedding"}


def __getattr__(name: str):
    # Lazy: importing vssl.extract.backbones must not pull in the store and the pipeline.
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(name)
