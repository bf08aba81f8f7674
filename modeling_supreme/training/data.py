"""The pre-training dataset, its epoch-seeded sampler and the lead-subset augmentation.

Every random choice (data order, which leads a record is shown with) depends only on the seed, the
epoch and the record, never on worker processes or on where a run was resumed, so a resumed run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from processing.ecg.data_collator import row_signal, rows_from_batch


def random_lead_subset(rng: np.random.Generator, leads: list) -> list:
    """Which leads to keep: lead I alone, the six limb leads, or a random non-empty subset."""
    choice = rng.integers(3)
    if choice == 0 and "I" in leads:
        return ["I"]
    if choice == 1:
        limb = [lead for lead in leads if lead in ("I", "II", "III", "aVR", "aVL", "aVF")]
        if limb:
            return limb
    keep = [lead for lead in leads if rng.random() < 0.5]
    return keep or [leads[int(rng.integers(len(leads)))]]


class PretrainingDataset(torch.utils.data.Dataset):
    """Training rows with their targets, as rows of the data contract for :class:`ECGDataCollator`.

    Item ``i`` is the ``rows[i]``-th record of ``split`` (``signal`` in mV, either storage) with its
    target vector under ``targets``, shown with a random lead subset with probability
    ``lead_subset_prob``. ``__getitems__`` reads a whole batch from the Arrow table at once; the
    collator (``ECGDataCollator(processor, label_column="targets")``) then prepares it, in the
    DataLoader's workers when there are any. Augmentation randomness depends only on (seed, epoch,
    record), never on worker or resume state, so a resumed run sees exactly the batches an
    uninterrupted run would have seen.
    """

    def __init__(self, split, rows, targets, seed, lead_subset_prob):
        self.split, self.rows, self.targets = split, rows, targets
        self.seed, self.lead_subset_prob = seed, lead_subset_prob
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices):
        batch = self.split[[int(self.rows[i]) for i in indices]]
        out = []
        for k, (i, row) in enumerate(zip(indices, rows_from_batch(batch))):
            signal, leads = row_signal(row), list(row["lead_names"])
            missing = [] if row.get("missing_leads") is None else [str(lead) for lead in row["missing_leads"]]
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            if self.lead_subset_prob > 0 and rng.random() < self.lead_subset_prob:
                keep = random_lead_subset(rng, leads)
                signal = signal[[leads.index(lead) for lead in keep]]
                leads = keep
                missing = [lead for lead in missing if lead in keep]
                if len(missing) == len(leads):  # only unrecorded leads drawn: show the record's recorded ones
                    signal, leads, missing = row_signal(row), list(row["lead_names"]), [str(x) for x in row["missing_leads"]]
            out.append({"signal": signal, "sampling_rate": int(row["sampling_rate"]), "lead_names": leads,
                        "missing_leads": missing, "record_id": row["record_id"], "targets": self.targets[i]})
        return out


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of the rows that depends only on (seed, epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self):
        return self.size


__all__ = ["EpochSampler", "PretrainingDataset", "random_lead_subset"]
