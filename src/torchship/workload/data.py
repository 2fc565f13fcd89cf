"""Text for the workload: a bundled synthetic corpus, or a UTF-8 file; byte-level tokens.

The synthetic corpus is generated from a seed by a small grammar, so it needs no download,
is the same on every machine, and has structure a small model learns within a few dozen
steps (the loss falls visibly from ln 256 ≈ 5.5). Batches are a pure function of
(seed, step, rank): a resumed run reads exactly the batches the uninterrupted run would.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

VOCAB_SIZE = 256  # bytes

_SUBJECTS = ("the model", "a kernel", "the driver", "every rank", "the scheduler", "a tensor")
_VERBS = ("reads", "writes", "compiles", "reduces", "checks", "pins", "loads", "trains")
_OBJECTS = ("the lock", "a gradient", "the image", "each batch", "the checkpoint", "its weights")
_ENDS = ("on the GPU", "before the step", "with care", "again", "in order", "at once")


def synthetic_text(seed: int, sentences: int = 20_000) -> str:
    rng = random.Random(seed)
    words = []
    for _ in range(sentences):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        if rng.random() < 0.5:
            s += " " + rng.choice(_ENDS)
        words.append(s.capitalize() + ".")
    return " ".join(words)


def load_tokens(path: str | None, seed: int) -> torch.Tensor:
    import torch

    raw = synthetic_text(seed).encode() if path is None else Path(path).read_bytes()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.long)


def batch(
    tokens: torch.Tensor, seed: int, step: int, rank: int, batch_size: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-byte targets for (step, rank): random windows from a seeded generator."""
    import torch

    if tokens.numel() <= seq_len + 1:
        raise ValueError(f"the text has {tokens.numel()} bytes; need more than seq_len + 1")
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + rank)
    starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size,), generator=g)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    window = tokens[idx]
    return window[:, :-1], window[:, 1:]
