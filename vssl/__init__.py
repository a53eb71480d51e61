"""vssl: frozen-feature video representation learning (SCALE-style clip aggregation)."""

__version__ = "0.1.0"
