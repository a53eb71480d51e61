"""Stage one, ``vssl extract``: decode each video once, cut clips, embed them with a frozen backbone.

Modules, one job each: :mod:`.inputs` (folder / manifest → videos, labels, classes),
:mod:`.decode` (frame-accurate readers), :mod:`.samplers` (the view-kind registry:
``random:K``, ``uniform:TxS``, ... and their clips' boxes), :mod:`.transforms` (crop/resize,
normalize), :mod:`.clips` (one video → all views' clips), :mod:`.config` (every setting,
``ExtractConfig``, and named recipes), :mod:`.pipeline` (batched inference into the feature
store, in named steps), :mod:`.backbones` (the frozen networks).

Python use mirrors the CLI::

    from vssl.extract import extract
    summary = extract("UCF-101/", "ucf.zarr", backbone="tiny", views=["random:16", "uniform:5x3"])
"""

__all__ = ["extract", "ExtractSummary"]


def __getattr__(name: str):
    # Lazy: importing vssl.extract.backbones must not pull in the store and the pipeline.
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
