"""MERL's six-set benchmark (PTB-XL super/sub/form/rhythm, CPSC2018, CSN: 106 classes) on a SuPreME checkpoint:
zero-shot macro AUROC on MERL's test splits, beside the published MERL and SuPreME averages.

Examples::

    python examples/benchmark.py --model runs/supreme --merl_split_dir MERL-ICML2024/finetune/data_split \\
        --ptbxl_dir /data/ptb-xl-1.0.3 --cpsc2018_dir /data/cpsc2018 --csn_dir /data/chapman-ningbo \\
        --output_dir eval/benchmark

    # MERL's CKEPE prompts (CKEPE_prompt.json next to the split folder) and the linear probe, on a GPU
    python examples/benchmark.py --model runs/supreme --merl_split_dir DIR --ptbxl_dir DIR \\
        --prompts ckepe --linear_probe --bf16 --device cuda --output_dir eval/benchmark

Every set whose corpus folder is given runs; records a split file lists but the folder lacks are counted
and reported. Writes benchmark.json, benchmark.md and roc_<set>.png into --output_dir (see
modeling_supreme.evaluation.benchmark for the protocol and the file contents).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from modeling_supreme.evaluation.cli import run_cli, set_num_threads  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from modeling_supreme.evaluation.merl import SET_NAMES

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (model + processor, from pretrain.py)")
    parser.add_argument("--merl_split_dir", required=True, help="MERL's data_split folder (ptbxl/, icbeb/, chapman/)")
    parser.add_argument("--ptbxl_dir", default=None, help="PTB-XL folder (with records500/): the four PTB-XL sets")
    parser.add_argument("--cpsc2018_dir", default=None, help="CPSC2018 records (original A*.mat or Challenge WFDB copies)")
    parser.add_argument("--csn_dir", default=None, help="Chapman-Shaoxing-Ningbo records (WFDBRecords/ or Challenge copies)")
    parser.add_argument("--output_dir", required=True, help="folder for benchmark.json, benchmark.md and roc_<set>.png")
    parser.add_argument("--prompts", default="bank", metavar="bank|ckepe|FILE.json",
                        help="class prompts: the concept vocabulary's bank (default), MERL's CKEPE_prompt.json from the "
                             "split folder's parent, or a JSON file {MERL code: prompt(s)}")
    parser.add_argument("--linear_probe", action="store_true",
                        help="also the linear probe: 1%%, 10%%, 100%% of MERL's train split, C chosen on its val split")
    parser.add_argument("--sets", default=None, help=f"comma-separated subset of {','.join(SET_NAMES)}")
    parser.add_argument("--cpsc2018_full_record", action="store_true",
                        help="whole CPSC2018 records instead of MERL's first 2,500 samples zero-padded to 5,000")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--device", default=None, help="torch device for the model (default: cpu)")
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward pass")
    parser.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--max_records", type=int, default=None, help="at most the first N records found per split (quick runs)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers preparing ECGs")
    parser.add_argument("--num_threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def run(args) -> dict:
    from modeling_supreme.evaluation.benchmark import BENCHMARK_JSON, BENCHMARK_MARKDOWN, run_benchmark

    set_num_threads(args.num_threads)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    result = run_benchmark(
        args.model, args.merl_split_dir, args.output_dir, ptbxl_dir=args.ptbxl_dir, cpsc2018_dir=args.cpsc2018_dir,
        csn_dir=args.csn_dir, sets=sets, prompts=args.prompts, linear_probe=args.linear_probe, bf16=args.bf16,
        device=args.device, cpsc2018_full_record=args.cpsc2018_full_record, batch_size=args.batch_size,
        n_bootstrap=args.n_bootstrap, num_workers=args.num_workers, max_records=args.max_records,
        progress=not args.no_progress,
    )
    print()
    for name, entry in result["sets"].items():
        value = "n/a" if entry["macro_auroc"] is None else f"{100 * entry['macro_auroc']:.2f}"
        print(f"{name:>13}: macro AUROC {value:>6} on {entry['records']['present']} of "
              f"{entry['records']['in_split_file']} test records ({entry['num_classes']} classes)")
    average = "n/a" if result["average"] is None else f"{100 * result['average']:.2f}"
    print(f"{'average':>13}: {average} over {len(result['average_over'])} sets "
          f"(published: MERL 75.2, SuPreME 77.20){'' if result['complete'] else '; NOT the full protocol'}")
    print(f"\nwritten: {os.path.join(args.output_dir, BENCHMARK_JSON)}, {os.path.join(args.output_dir, BENCHMARK_MARKDOWN)}")
    return result


def main(argv=None) -> int:
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
