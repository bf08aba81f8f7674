"""Resumable training states and final checkpoints, each written atomically.

A resumable state is written into ``checkpoints/.partial_step_N`` and renamed to ``step_N`` once it
is complete, so a kill during a save leaves the previous states intact; only the newest
``save_total_limit`` finished states are kept. ``save_pretrained_atomically`` does the same for a
``from_pretrained`` folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .errors import PretrainingError

STATE_FILE = "trainer_state.json"


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir) -> list:
    """Finished resumable states, oldest first (a state is finished once its folder has its final name)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator, output_dir, state: dict, limit: int):
    """Write a resumable state atomically: into a temporary folder, renamed when complete."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{state['global_step']:08d}"
    partial = root / f".partial_step_{state['global_step']:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(output_dir)[:-limit] if limit > 0 else []:
            _remove_checkpoint(old)
    accelerator.wait_for_everyone()
    return final


def _remove_checkpoint(folder: Path) -> None:
    """Delete a state so that a kill half-way never leaves a ``step_N`` folder that looks finished.

    The folder is first renamed to a hidden name (atomic), then deleted; a leftover hidden folder is
    ignored by :func:`complete_checkpoints` and removed by :func:`remove_unfinished_checkpoints`.
    """
    doomed = folder.with_name(f".deleting_{folder.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_unfinished_checkpoints(output_dir) -> list:
    """Delete what a killed run left half-written (``.partial_step_N``, ``.deleting_step_N``); returns their names."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    leftovers = sorted(p for p in root.iterdir() if p.name.startswith((".partial_", ".deleting_")))
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in leftovers]


def resolve_resume(output_dir, value) -> Optional[Path]:
    if not value:
        return None
    if value == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            raise PretrainingError(f"--resume_from_checkpoint latest: no finished checkpoint under {checkpoint_root(output_dir)}")
        return found[-1]
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise PretrainingError(f"{path} is not a finished checkpoint of this script (no {STATE_FILE})")
    return path


def save_pretrained_atomically(model, processor, folder: Path, extra_files: dict):
    partial = folder.with_name(f".partial_{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    for name, content in extra_files.items():
        (partial / name).write_text(content)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


def push_checkpoint_to_hub(folder: Path, repo_id: str, private: bool):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=["checkpoints/*", ".partial*", "best_model/*"],
                      commit_message="Upload SuPreME checkpoint")


def check_output_dir(train_args, resume):
    out = Path(train_args.output_dir)
    if out.exists() and any(out.iterdir()) and not resume and not train_args.overwrite_output_dir:
        raise PretrainingError(f"output_dir {out} is not empty; pass --resume_from_checkpoint latest to continue, "
                            "or --overwrite_output_dir to start over")
    config_file = out / "config.json"
    if resume and config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != "supreme":
            raise PretrainingError(f"{out} holds a checkpoint of another model (model_type {model_type!r}); use another output_dir")


__all__ = ["STATE_FILE", "check_output_dir", "checkpoint_root", "complete_checkpoints", "push_checkpoint_to_hub", "remove_unfinished_checkpoints", "resolve_resume", "save_checkpoint", "save_pretrained_atomically"]
