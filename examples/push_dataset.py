"""Publish a corpus configuration as a Hub dataset: Parquet shards + a dataset card, in one commit.

Examples::

    # PTB-XL's superclasses at 100 Hz to a private repository (token from HF_TOKEN or `hf auth login`)
    python examples/push_dataset.py --repo_id my-org/ptbxl-super-100hz --private \\
        --dataset ptbxl --dataset_config super --data_dir /data/ptb-xl --sampling_rate 100

    # write the folder only (README.md + <config>/<split>-*.parquet), push nothing
    python examples/push_dataset.py --output_dir ptbxl-super --dataset ptbxl --dataset_config super --data_dir /data/ptb-xl

    # MIMIC-IV-ECG in the compact int16 storage
    python examples/push_dataset.py --repo_id my-org/mimic-iv-ecg --private --dataset mimic_iv_ecg \\
        --data_dir /data/mimic-iv-ecg --dataset_arg signal_storage=int16 --num_proc 8

The pushed dataset loads with plain ``datasets`` (``load_dataset("my-org/ptbxl-super-100hz")``), no
package of this project needed; the card states the licence, citation, columns, class names, splits
and the source fingerprint of the build. Library functions: ``datasets_scripts.export_ecg_dataset``
and ``datasets_scripts.push_ecg_dataset``.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, help="corpus: ptbxl, cpsc2018, csn, physionet2021, mimic_iv_ecg, synthetic")
    parser.add_argument("--dataset_config", default=None, help="corpus configuration (ptbxl: super, sub, form, rhythm, all, reports)")
    parser.add_argument("--data_dir", default=None, help="the corpus folder as downloaded (not for synthetic)")
    parser.add_argument("--sampling_rate", type=int, default=None, help="rate to store the records at (ptbxl: 100 or 500)")
    parser.add_argument("--dataset_arg", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further builder arguments, e.g. num_records=2000 signal_storage=int16 on_error=skip")
    parser.add_argument("--split_file", default=None, help="CSV record_id,split replacing the corpus's split")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder")
    parser.add_argument("--num_proc", type=int, default=None, help="processes building the cache")
    parser.add_argument("--max_shard_size", default="500MB", help="largest Parquet shard (default 500MB)")
    parser.add_argument("--repo_id", default=None, help="Hub dataset repository, namespace/name (omit with --output_dir to push nothing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--output_dir", default=None, help="keep the exported folder here (without --repo_id: export only)")
    parser.add_argument("--commit_message", default=None)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from datasets_scripts import RecordError, export_ecg_dataset, parse_corpus_args, push_ecg_dataset

    if not args.repo_id and not args.output_dir:
        raise SystemExit("push_dataset.py: give --repo_id to push, or --output_dir to export without pushing")
    try:
        kwargs = dict(parse_corpus_args(args.dataset_arg))
        kwargs.update(sampling_rate=args.sampling_rate, cache_dir=args.cache_dir, num_proc=args.num_proc,
                      split_file=args.split_file, max_shard_size=args.max_shard_size)
        if args.repo_id:
            commit = push_ecg_dataset(args.repo_id, args.dataset, args.dataset_config, args.data_dir, private=args.private,
                                      commit_message=args.commit_message, export_dir=args.output_dir, **kwargs)
            print(f"pushed {args.dataset} to {args.repo_id}: {commit.commit_url}")
        else:
            folder = export_ecg_dataset(args.dataset, args.dataset_config, args.data_dir, args.output_dir, **kwargs)
            print(f"exported {args.dataset} to {folder}")
    except (ValueError, RecordError) as error:  # input the user must fix: one line, no traceback
        raise SystemExit(f"push_dataset.py: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
