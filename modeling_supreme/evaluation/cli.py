"""Command-line pieces shared by the evaluation scripts (``examples/zero_shot.py``, ``examples/linear_probe.py``)."""

from __future__ import annotations

from typing import Optional

from .errors import EvaluationError


def add_common_arguments(parser, outputs: str) -> None:
    """The corpus, model and run flags shared by `zero_shot.py` and `linear_probe.py`."""
    parser.add_argument("--model_name_or_path", "--model", dest="model_name_or_path", required=True,
                        help="checkpoint folder (model + processor, from pretrain.py) or a Hub model id")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (default: the GPU when there is one, else the CPU)")
    parser.add_argument("--dataset", required=True, help="corpus: ptbxl, cpsc2018, csn, physionet2021, synthetic, ...")
    parser.add_argument("--dataset_config", default=None, help="corpus configuration, e.g. super/sub/form/rhythm for ptbxl")
    parser.add_argument("--data_dir", default=None, help="the corpus folder as downloaded (not for synthetic)")
    parser.add_argument("--sampling_rate", type=int, default=None, help="rate the corpus is read at (ptbxl: 100 or 500)")
    parser.add_argument("--output_dir", required=True, help=f"folder for {outputs}")
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward pass")
    parser.add_argument("--bf16", action="store_true", help="run the model under bfloat16 autocast")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder")
    parser.add_argument("--max_records", type=int, default=None, help="use at most this many records per split (seeded sample)")
    parser.add_argument("--num_records", type=int, default=None, help="synthetic corpus: number of records")
    parser.add_argument("--seed", type=int, default=None, help="synthetic corpus: generator seed")
    parser.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers preparing ECGs (0: main process)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 can be faster on a CPU shared with other jobs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def resolve_device(name: str) -> str:
    """`--device` as a torch device string: `auto` is cuda when a GPU is visible, else cpu."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise EvaluationError(f"--device {name}: no CUDA GPU is visible to torch (use --device cpu or auto)")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise EvaluationError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return name
    raise EvaluationError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")


def model_label(name_or_path: str) -> str:
    """How metrics.json names the model: the absolute folder, or the Hub id as given."""
    from pathlib import Path

    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else str(name_or_path)


def set_num_threads(num_threads: Optional[int]) -> None:
    """Apply `--num_threads` (None keeps torch's choice)."""
    if num_threads is None:
        return
    if num_threads < 1:
        raise EvaluationError(f"--num_threads must be at least 1, got {num_threads}")
    import torch

    torch.set_num_threads(num_threads)


def run_cli(parser, run, argv=None) -> int:
    """Parse, run, and turn input errors into a one-line message with exit code 2."""
    from processing.ecg.wfdb_reader import RecordError

    args = parser.parse_args(argv)
    try:
        run(args)
    except (EvaluationError, RecordError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


__all__ = ["add_common_arguments", "model_label", "resolve_device", "run_cli", "set_num_threads"]
