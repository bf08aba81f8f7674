"""Quality of the lexicon extractor on real PTB-XL reports, against the cardiologists' SCP codes.

For every record of ``ptbxl_database.csv`` the report is run through the lexicon backend; the SCP code
of each extracted concept with status *present* or *uncertain* is a predicted statement. The reference
is the record's ``scp_codes``: a code counts as positive whatever its likelihood (PTB-XL gives rhythm
and form statements likelihood 0 and marks uncertain diagnoses with 15-50, and uncertain extractions
are counted as positive for the same reason). Absent (negated) extractions predict nothing.

Scored statements (the primary number): the SCP statements that occur in the reference of at least
one of the evaluated records. Predictions of other statements are listed separately.

PTB-XL reports sometimes end with an annotator's note ("Edit: INJIN, IRBBB, ...") that names SCP
codes; that note is label metadata, not report text, and is removed before extraction (``--keep-edit``
keeps it).

Run: ``python benchmarks/lexicon_quality_ptbxl.py [--ptbxl_dir DIR] [--show-errors N]``
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from processing.concepts.vocabulary import load_concept_vocabulary
from processing.reports.lexicon import LexiconExtractor

EDIT_NOTE = re.compile(r"\bedit:.*$", re.IGNORECASE | re.DOTALL)


def default_ptbxl_dir() -> Path:
    shared = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "ptbxl"


def load_records(ptbxl_dir: Path, keep_edit: bool):
    path = ptbxl_dir / "ptbxl_database.csv"
    if not path.is_file():
        raise SystemExit(f"PTB-XL metadata not found: {path} (pass --ptbxl_dir or set SUPREME_SHARED_DATA)")
    records = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            report = row["report"] or ""
            if not keep_edit:
                report = EDIT_NOTE.sub("", report)
            records.append((row["ecg_id"], report, set(ast.literal_eval(row["scp_codes"]))))
    return records


def evaluate(records, extractor, vocab):
    predictions = []
    for record_id, report, gold in records:
        predicted = set()
        for entity in extractor.extract(report):
            if entity["status"] == "absent":
                continue
            code = vocab.get(entity["concept"]).scp_code
            if code:
                predicted.add(code)
        predictions.append((record_id, report, gold, predicted))
    return predictions


def scores(predictions, scored_codes):
    tp, fp, fn = Counter(), Counter(), Counter()
    for _, _, gold, predicted in predictions:
        for code in scored_codes:
            g, p = code in gold, code in predicted
            tp[code] += g and p
            fp[code] += p and not g
            fn[code] += g and not p
    return tp, fp, fn


def f1(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl_dir", type=Path, default=default_ptbxl_dir())
    parser.add_argument("--keep-edit", action="store_true", help="do not strip the annotators' 'Edit:' notes")
    parser.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N records with errors")
    args = parser.parse_args(argv)

    vocab = load_concept_vocabulary()
    extractor = LexiconExtractor(vocab)
    records = load_records(args.ptbxl_dir, args.keep_edit)
    predictions = evaluate(records, extractor, vocab)
    scored = sorted({code for _, _, gold, _ in predictions for code in gold})
    tp, fp, fn = scores(predictions, scored)

    print(f"PTB-XL records: {len(records)}   scored SCP statements: {len(scored)}   vocabulary {vocab.version}")
    print(f"{'code':8s} {'concept':48s} {'support':>7s} {'tp':>4s} {'fp':>4s} {'fn':>4s} {'prec':>6s} {'recall':>6s} {'f1':>6s}")
    rows = []
    for code in scored:
        p, r, f = f1(tp[code], fp[code], fn[code])
        rows.append((code, tp[code] + fn[code], p, r, f))
        print(f"{code:8s} {vocab.by_scp_code(code).name[:48]:48s} {tp[code] + fn[code]:7d} {tp[code]:4d} {fp[code]:4d} "
              f"{fn[code]:4d} {p:6.3f} {r:6.3f} {f:6.3f}")
    micro_p, micro_r, micro_f = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    macro_f = sum(r[4] for r in rows) / len(rows)
    print(f"\nmicro precision {micro_p:.3f}  micro recall {micro_r:.3f}  micro-F1 {micro_f:.3f}   macro-F1 {macro_f:.3f}")

    rest = [c for c in scored if c not in ("SR", "NORM")]
    _, _, rest_f = f1(sum(tp[c] for c in rest), sum(fp[c] for c in rest), sum(fn[c] for c in rest))
    print(f"micro-F1 without SR and NORM (which carry {tp['SR'] + fn['SR'] + tp['NORM'] + fn['NORM']} of "
          f"{sum(tp.values()) + sum(fn.values())} reference labels): {rest_f:.3f}")

    outside = Counter(code for _, _, gold, predicted in predictions for code in predicted if code not in scored)
    if outside:
        print("predicted statements that no evaluated record carries (false positives outside the scored set): "
              + ", ".join(f"{c} x{n}" for c, n in outside.most_common()))
        all_fp = sum(fp.values()) + sum(outside.values())
        _, _, f_all = f1(sum(tp.values()), all_fp, sum(fn.values()))
        print(f"micro-F1 counting those too: {f_all:.3f}")

    # Gap: reference statements of records whose report names no finding at all.
    silent = [(rid, rep) for rid, rep, gold, _ in predictions if not extractor.extract(rep)]
    silent_labels = sum(len(gold) for rid, rep, gold, _ in predictions if not extractor.extract(rep))
    print(f"records whose text yields no concept: {len(silent)} ({silent_labels} reference statements), e.g. "
          + "; ".join(repr(rep[:40]) for _, rep in silent[:3]))
    weakest = sorted((r for r in rows if r[1] >= 3), key=lambda r: r[4])[:6]
    print("weakest statements (support >= 3): " + ", ".join(f"{c} F1={f:.2f} (n={n})" for c, n, _, _, f in weakest))

    if args.show_errors:
        shown = 0
        for record_id, report, gold, predicted in predictions:
            missed, extra = (gold - predicted), (predicted - gold)
            if missed or extra:
                print(f"\n#{record_id}: {report}\n   missed {sorted(missed)}  extra {sorted(extra)}")
                shown += 1
                if shown >= args.show_errors:
                    break
    return {"micro_f1": micro_f, "micro_precision": micro_p, "micro_recall": micro_r, "macro_f1": macro_f,
            "micro_f1_without_sr_norm": rest_f}


if __name__ == "__main__":
    main()
