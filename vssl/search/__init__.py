"""Finding videos by their features: exact search with one tie rule (:mod:`.exact`), the vectors a
store's videos (or clips) are searched by, faiss indexes beside a store, and ``vssl search``."""
