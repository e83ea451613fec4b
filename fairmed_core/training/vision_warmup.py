"""Vision warm-up of the tiny FairMedGemma: the SigLIP tower learns to see the finding before the SFT warm start.

MedGemma-4B's vision encoder arrives pretrained (MedSigLIP); the tiny model's starts from random weights, and
trained only through the language-model loss it never learns to see the chest X-ray opacity: the decision is
one token of a twenty-token completion, and predicting the majority answer costs little (measured: recall 0.00
on chest X-rays after 12 SFT epochs at 64 or 32 pixels, 3,000 or 12,000 cases). This stage stands in for that
pretraining: the tower, with a temporary linear head per data source on its mean- plus max-pooled patch
features, is fitted to the manifest answer by binary cross-entropy; the head is then discarded and SFT trains
the whole model as before. A plain loop (AdamW, constant learning rate): no text, a few seconds per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["warm_up_vision"]


def warm_up_vision(vision_tower: torch.nn.Module, pixel_values: torch.Tensor, labels: Sequence[bool],
                   sources: Sequence[str], *, epochs: int, learning_rate: float, batch_size: int, seed: int,
                   log: Callable[[dict], None] | None = None) -> list[dict]:
    """Fit ``vision_tower`` (in place) to detect the finding in ``pixel_values`` (one image per case, as the
    processor made them); one logistic head per source. Returns one record per epoch (mean loss, time)."""
    names = sorted(set(sources))
    hidden = vision_tower.config.hidden_size
    head = torch.nn.Linear(hidden, len(names))
    target = torch.tensor([bool(label) for label in labels], dtype=torch.float32)
    column = torch.tensor([names.index(source) for source in sources])
    optimizer = torch.optim.AdamW([*vision_tower.parameters(), *head.parameters()], lr=learning_rate,
                                  weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    n = len(target)
    records = []
    started = time.perf_counter()
    vision_tower.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            features = vision_tower(pixel_values=pixel_values[rows]).last_hidden_state
            # Mean and max over patches: a small finding lights up few patches, which a mean alone dilutes.
            logits = head(features.mean(dim=1) + features.max(dim=1).values)
            logit = logits.gather(1, column[rows, None]).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        record = {"stage": "vision_warmup", "epoch": epoch, "loss": round(total / batches, 5),
                  "elapsed_s": round(time.perf_counter() - started, 3)}
        records.append(record)
        if log is not None:
            log(record)
    return records
