"""The pre-training dataset, its epoch-seeded sampler and the signal augmentations (lead subset,
random time crop, per-lead amplitude scaling, gaussian noise, baseline wander).

Every random choice (data order, which leads a record is shown with) depends only on the seed, the
epoch and the record, never on worker processes or on where a run was resumed, so a resumed run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class SignalAugmentation:
    """Random signal transforms for small corpora, applied to one ECG (leads x samples, millivolts).

    ``crop_seconds``: train on a random window of this length (the whole record when it is shorter;
    None: no crop); the model sees the window from its first sample on, the rest is padding under
    ``attention_mask``. ``amplitude_scale``: each lead multiplied by a log-uniform factor in
    [1/s, s] (1: off). ``noise_std``: gaussian noise in mV. ``baseline_wander``: peak amplitude in mV
    of a random sinusoid of 0.05-0.5 Hz added to every lead with its own phase.
    """

    crop_seconds: float | None = None
    amplitude_scale: float = 1.0
    noise_std: float = 0.0
    baseline_wander: float = 0.0

    def __post_init__(self):
        if self.crop_seconds is not None and self.crop_seconds <= 0:
            raise ValueError(f"crop_seconds must be positive or None, got {self.crop_seconds}")
        if self.amplitude_scale < 1.0:
            raise ValueError(f"amplitude_scale must be at least 1 (1: off), got {self.amplitude_scale}")
        if self.noise_std < 0 or self.baseline_wander < 0:
            raise ValueError(f"noise_std and baseline_wander must be non-negative, got {self.noise_std}, {self.baseline_wander}")

    @property
    def active(self) -> bool:
        return self.crop_seconds is not None or self.amplitude_scale > 1.0 or self.noise_std > 0 or self.baseline_wander > 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, rng: np.random.Generator, signal: np.ndarray, sampling_rate: int, length: int | None = None) -> np.ndarray:
        """The augmented copy of ``signal[:, :length]`` (its valid samples); may be shorter (the crop)."""
        signal = np.asarray(signal, dtype=np.float32)[:, : signal.shape[-1] if length is None else length]
        if self.crop_seconds is not None:
            window = int(round(self.crop_seconds * sampling_rate))
            if 0 < window < signal.shape[-1]:
                start = int(rng.integers(signal.shape[-1] - window + 1))
                signal = signal[:, start : start + window]
        signal = signal.copy()
        if self.amplitude_scale > 1.0:
            bound = np.log(self.amplitude_scale)
            signal *= np.exp(rng.uniform(-bound, bound, size=(signal.shape[0], 1))).astype(np.float32)
        if self.baseline_wander > 0:
            t = np.arange(signal.shape[-1], dtype=np.float32) / sampling_rate
            freq = rng.uniform(0.05, 0.5)
            phase = rng.uniform(0, 2 * np.pi, size=(signal.shape[0], 1))
            amp = rng.uniform(0, self.baseline_wander)
            signal += (amp * np.sin(2 * np.pi * freq * t[None, :] + phase)).astype(np.float32)
        if self.noise_std > 0:
            signal += rng.normal(0.0, self.noise_std, size=signal.shape).astype(np.float32)
        return signal


NO_AUGMENTATION = SignalAugmentation()


class PretrainingDataset(torch.utils.data.Dataset):
    """Training rows with their targets, as rows of the data contract for :class:`ECGDataCollator`.

    Item ``i`` is the ``rows[i]``-th record of ``split`` (``signal`` in mV, either storage) with its
    target vector under ``targets``, shown with a random lead subset with probability
    ``lead_subset_prob`` and transformed by ``augmentation`` (a :class:`SignalAugmentation`).
    ``__getitems__`` reads a whole batch from the Arrow table at once; the
    collator (``ECGDataCollator(processor, label_column="targets")``) then prepares it, in the
    DataLoader's workers when there are any. Augmentation randomness depends only on (seed, epoch,
    record), never on worker or resume state, so a resumed run sees exactly the batches an
    uninterrupted run would have seen.
    """

    def __init__(self, split, rows, targets, seed, lead_subset_prob, augmentation: SignalAugmentation = NO_AUGMENTATION):
        self.split, self.rows, self.targets = split, rows, targets
        self.seed, self.lead_subset_prob, self.augmentation = seed, lead_subset_prob, augmentation
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
            if self.augmentation.active:
                # Its own stream, so that turning it on leaves the lead subsets of a run unchanged.
                signal = self.augmentation(np.random.default_rng([self.seed, self.epoch, int(i), 1]), signal,
                                           int(row["sampling_rate"]))
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


__all__ = ["NO_AUGMENTATION", "EpochSampler", "PretrainingDataset", "SignalAugmentation", "random_lead_subset"]
