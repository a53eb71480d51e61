"""Multi-process runs: who this process is, how work is split, how negatives are shared.

Used by ``vssl extract`` and ``vssl aggregate`` when launched by ``torchrun``, and by
``--shard i/n`` (SLURM job arrays: no process group, each task plans the same split alone).
Everything is a no-op for a single process. One job per module:

- :mod:`~vssl.distributed.ranks`: rank/world discovery, process-group setup/teardown and the
  small object collectives (:func:`rank_env`, :func:`process_group`, :func:`barrier`, ...);
- :mod:`~vssl.distributed.planning`: splitting a store's chunks between ranks with balanced
  work (:func:`video_weights`, :func:`balance_chunks`);
- :mod:`~vssl.distributed.claims`: claim files with owner host/pid/job, taken over from dead
  owners, so processes that never talk share work (chunks of a store, its creation);
- :mod:`~vssl.distributed.negatives`: the differentiable all-gather of InfoNCE keys
  (:func:`all_gather_keys`), which the training loop passes to the losses as an argument.

The names are re-exported here, so ``from vssl.distributed import ...`` works as before.
"""

from vssl.distributed.negatives import Gather, all_gather_keys, key_gather
from vssl.distributed.planning import balance_chunks, file_sizes, size_weights, video_weights
from vssl.distributed.ranks import (DEFAULT_TIMEOUT_S, TIMEOUT_ENV, RankEnv, active_world, barrier,
                                    broadcast_object, gather_objects, process_group, rank_env,
                                    refuse_undivided_work, refuse_unjoined_rank)

__all__ = ["RankEnv", "rank_env", "process_group", "active_world", "barrier", "broadcast_object",
           "gather_objects", "refuse_unjoined_rank", "refuse_undivided_work", "DEFAULT_TIMEOUT_S",
           "TIMEOUT_ENV", "video_weights", "file_sizes", "size_weights", "balance_chunks", "Gather", "all_gather_keys", "key_gather"]
