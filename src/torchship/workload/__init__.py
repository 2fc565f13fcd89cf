"""The reference workload: a small decoder-only Transformer LM trained with DDP.

It proves an environment end to end (torch, the collective backend, AMP, torch.compile,
checkpoints on the file system) and measures it (tokens/s, step time, MFU on GPU). Run it
under torchrun::

    torchrun --nproc-per-node 2 -m torchship.workload --steps 60 --checkpoint-every 20

Importing this package does not import torch; `train.main` does.
"""

from torchship.workload.config import TrainConfig, parse_args

__all__ = ["TrainConfig", "parse_args"]
