"""The six-set benchmark of MERL and SuPreME: zero-shot macro AUROC (and optionally the linear probe) of a
checkpoint on MERL's test splits, with the published figures beside it.

:func:`run_benchmark` is the importable entry point; ``examples/benchmark.py`` is its command line. It
evaluates every set whose corpus folder is given, on MERL's test split, with classes in MERL's column
order (see :mod:`.merl` for the protocol and its quirks), and writes into the output folder:

- ``benchmark.json``: ``{"sets": {name: {"macro_auroc", "macro_auroc_ci95", "num_records",
  "num_classes", "per_class": {code: {...}}, ...}}, "average": ..., ...}`` (AUROC as fractions in
  [0, 1]; the published figures as the papers print them, in percent);
- ``benchmark.md``: the table with the published MERL and SuPreME averages beside ours, how many
  records each set had on disk, the protocol notes, per-class tables, the linear probe;
- ``roc_<set>.png``: one ROC grid per evaluated set.

Prompts (``prompts=``): ``"bank"`` (the vocabulary's prompt bank through each class's concept in
``merl_protocol.json``), ``"ckepe"`` (MERL's ``CKEPE_prompt.json`` from the split folder's parent;
the user supplies it, the package carries none of its sentences), or a JSON file
``{"MERL code": "prompt" | ["prompt", ...]}`` covering every evaluated class (a path to a CKEPE
file works too).

Published figures: MERL's six-set average zero-shot AUROC, 75.2 (Liu et al., ICML 2024, as SuPreME's
paper quotes it), and SuPreME's, 77.20 (Cai et al., arXiv 2502.19668). Per-set published numbers are
not reproduced here: we could not check them against the papers, so only the averages are shown.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from processing.atomic_files import atomic_write_text

from .errors import EvaluationError
from .linear_probe import DEFAULT_C_GRID, DEFAULT_FRACTIONS, run_linear_probe
from .merl import (
    SET_NAMES, RecordLocator, load_protocol, present_rows, read_split_file, split_dataset, substring_derived_positives,
)
from .prompts import concept_prompts, load_prompt_file

BENCHMARK_JSON = "benchmark.json"
BENCHMARK_MARKDOWN = "benchmark.md"
CKEPE_FILE = "CKEPE_prompt.json"
PUBLISHED = {
    "MERL": {"average": 75.2, "source": "Liu et al., ICML 2024 (MERL), six-set zero-shot macro AUROC average, in percent"},
    "SuPreME": {"average": 77.20, "source": "Cai et al., arXiv 2502.19668 (SuPreME), six-set zero-shot macro AUROC average, in percent"},
}
PUBLISHED_NOTE = ("Published per-set figures are not shown: only the six-set averages could be checked; they are "
                  "comparable with ours only when all six sets ran on their full test splits.")
PROTOCOL_NOTES = (
    "PTB-XL: records500, first 5,000 samples (10 s). CPSC2018: first 2,500 samples at 500 Hz (5 s), zero-padded to "
    "5,000, as MERL's loader reads it{cpsc}. CSN: first 5,000 samples; MERL's 38 label columns kept as its CSV defines "
    "them, including labels its notebook derived by substring matching on the diagnosis acronyms (counted below). "
    "Then the checkpoint's own processor (lead matching by name, resampling, normalisation as in training) instead of "
    "MERL's min-max scaling and MIMIC lead order, which are MERL's model input, not the protocol."
)


def benchmark_prompts(protocol_sets: Mapping, prompts: str = "bank", merl_split_dir=None, vocab=None):
    """``({set: {code: [prompt, ...]}}, description)`` for the given sets.

    Raises:
        EvaluationError: a class without prompts (all of them listed, per set), a missing or bad file.
    """
    if prompts == "bank":
        if vocab is None:
            from processing.concepts.vocabulary import load_concept_vocabulary

            vocab = load_concept_vocabulary()
        out, missing = {}, []
        for name, merl_set in protocol_sets.items():
            out[name] = {}
            for merl_class in merl_set.classes:
                if merl_class.concept not in vocab:
                    missing.append(f"{name}/{merl_class.code} -> {merl_class.concept!r}")
                    continue
                out[name][merl_class.code] = concept_prompts(vocab.get(merl_class.concept))
        if missing:
            raise EvaluationError(f"merl_protocol.json maps classes to concepts the vocabulary lacks: {missing}")
        return out, f"prompt bank of the concept vocabulary {vocab.version} (per class: the concept's description, then its name)"
    if prompts == "ckepe":
        if merl_split_dir is None:
            raise EvaluationError("--prompts ckepe needs --merl_split_dir (CKEPE_prompt.json is read from its parent folder)")
        path = Path(merl_split_dir).resolve().parent / CKEPE_FILE
        if not path.is_file():
            raise EvaluationError(
                f"--prompts ckepe: {path} not found; put MERL's {CKEPE_FILE} next to the split folder or pass its path "
                f"as --prompts PATH"
            )
        description = f"MERL's CKEPE prompts ({path})"
    else:
        path = Path(prompts)
        description = f"prompt file {path}"
    from_file = load_prompt_file(path)
    out, missing = {}, {}
    for name, merl_set in protocol_sets.items():
        lost = [code for code in merl_set.codes if code not in from_file]
        if lost:
            missing[name] = lost
        out[name] = {code: list(from_file[code]) for code in merl_set.codes if code in from_file}
    if missing:
        raise EvaluationError(f"prompt file {path} has no prompts for these MERL class codes: {missing}")
    return out, description


def _per_class(report: Mapping, merl_set, substring_counts: Mapping[str, int]) -> Dict[str, dict]:
    concepts = {c.code: c.concept for c in merl_set.classes}
    out = {}
    for entry in report["classes"]:
        item = {
            "concept": concepts[entry["name"]], "auroc": entry["auroc"], "auroc_ci95": entry["auroc_ci95"],
            "positives": entry["positives"], "negatives": entry["negatives"], "evaluated": entry["evaluated"],
            "excluded_reason": entry["excluded_reason"],
        }
        if entry["name"] in substring_counts:
            item["substring_derived_positives"] = substring_counts[entry["name"]]
        out[entry["name"]] = item
    return out


def _probe_summary(results: Sequence[Mapping]) -> list:
    return [
        {
            "fraction": entry["fraction"], "train_records": entry["train_records"], "C": entry["C"],
            "C_selection": entry["C_selection"], "validation_macro_auroc": entry["validation_macro_auroc"],
            "macro_auroc": entry["test"]["macro_auroc"], "macro_auroc_ci95": entry["test"]["macro_auroc_ci95"],
            "num_classes_evaluated": entry["test"]["num_classes_evaluated"],
        }
        for entry in results
    ]


def run_benchmark(
    model,
    merl_split_dir,
    output_dir,
    ptbxl_dir=None,
    cpsc2018_dir=None,
    csn_dir=None,
    sets: Optional[Sequence[str]] = None,
    prompts: str = "bank",
    linear_probe: bool = False,
    bf16: bool = False,
    device: Optional[str] = None,
    cpsc2018_full_record: bool = False,
    batch_size: int = 64,
    n_bootstrap: int = 1000,
    num_workers: int = 0,
    max_records: Optional[int] = None,
    probe_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    probe_c_grid: Sequence[float] = DEFAULT_C_GRID,
    progress: bool = True,
) -> dict:
    """Run MERL's protocol on a checkpoint and write ``benchmark.json``, ``benchmark.md`` and the ROC grids.

    Args:
        model: a checkpoint folder (model + processor), or a ``(SuPreMEModel, ECGProcessor)`` pair.
        merl_split_dir: MERL's ``data_split`` folder.
        output_dir: where the outputs go (created).
        ptbxl_dir, cpsc2018_dir, csn_dir: the corpus folders; a set runs when its corpus folder is given.
        sets: restrict to these set names (default: every set whose corpus is given).
        prompts: ``"bank"``, ``"ckepe"`` or a JSON prompt file (see the module docstring).
        linear_probe: also fit the linear probe (train fractions ``probe_fractions`` of MERL's train split,
            C chosen on MERL's val split) on the frozen ECG features.
        bf16: bfloat16 autocast for the model. device: where the model runs (``"cuda"``, ``"cpu"``, ...).
        cpsc2018_full_record: give the model whole CPSC2018 records instead of MERL's first 5 s.
        max_records: use at most the first N records found on disk per split (quick runs; reported).

    Returns the ``benchmark.json`` content. Records missing on disk are counted per set, not errors; a
    set with none of its test records present is reported with ``macro_auroc`` None.
    """
    from .data import load_checkpoint
    from .metrics import auroc_report
    from .plots import plot_roc
    from .reports import to_json
    from .scoring import extract_ecg_features, zero_shot_scores

    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    if max_records is not None and max_records < 1:
        raise EvaluationError(f"max_records must be at least 1, got {max_records}")
    if n_bootstrap < 0:
        raise EvaluationError(f"n_bootstrap must be 0 or more, got {n_bootstrap}")
    split_dir = Path(merl_split_dir)
    if not split_dir.is_dir():
        raise EvaluationError(f"MERL split folder {split_dir} does not exist (MERL's finetune/data_split)")
    corpus_dirs = {"ptbxl": ptbxl_dir, "cpsc2018": cpsc2018_dir, "csn": csn_dir}
    protocol = load_protocol()
    if sets is not None:
        unknown = [s for s in sets if s not in protocol]
        if unknown:
            raise EvaluationError(f"unknown set(s) {unknown}; the sets are {list(SET_NAMES)}")
        without_dir = [s for s in sets if corpus_dirs[protocol[s].corpus] is None]
        if without_dir:
            raise EvaluationError(f"set(s) {without_dir} need their corpus folder (--{protocol[without_dir[0]].corpus}_dir)")
    chosen = {name: s for name, s in protocol.items()
              if corpus_dirs[s.corpus] is not None and (sets is None or name in sets)}
    if not chosen:
        raise EvaluationError("no set to evaluate: give at least one of --ptbxl_dir, --cpsc2018_dir, --csn_dir")
    locators = {corpus: RecordLocator(corpus, path) for corpus, path in corpus_dirs.items() if path is not None}
    splits_needed = ("train", "validation", "test") if linear_probe else ("test",)
    split_rows = {name: {split: read_split_file(s, split_dir, split) for split in splits_needed} for name, s in chosen.items()}
    set_prompts, prompt_source = benchmark_prompts(chosen, prompts, merl_split_dir=split_dir)

    if isinstance(model, (tuple, list)):
        model_obj, processor = model
        model_name = type(model_obj).__name__
        if device is not None:
            model_obj.to(device)
    else:
        model_obj, processor = load_checkpoint(model, device=device)
        model_name = str(Path(model).resolve())

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result_sets: Dict[str, dict] = {}
    probe_features: Dict[tuple, np.ndarray] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="merl_benchmark_") as cache_dir:
        for name, merl_set in chosen.items():
            locator = locators[merl_set.corpus]
            rows = split_rows[name]["test"]
            found, coverage = present_rows(rows, locator, max_records)
            entry = {
                "title": merl_set.title, "corpus": merl_set.corpus, "split_file": str(rows.path),
                "macro_auroc": None, "macro_auroc_ci95": None, "num_records": len(found),
                "num_classes": len(merl_set.codes), "num_classes_evaluated": 0, "classes": merl_set.codes,
                "records": coverage.to_dict(), "per_class": {}, "prompts": set_prompts[name],
            }
            if found:
                read_start = time.perf_counter()
                dataset = split_dataset(merl_set, rows, found, cache_dir, cpsc2018_full_record, progress)
                read_seconds = time.perf_counter() - read_start
                score_start = time.perf_counter()
                scores, targets, _ = zero_shot_scores(
                    model_obj, processor, dataset, merl_set.codes, set_prompts[name], batch_size=batch_size,
                    bf16=bf16, progress=progress, num_workers=num_workers,
                )
                score_seconds = time.perf_counter() - score_start
                report = auroc_report(scores, targets, merl_set.codes, n_bootstrap=n_bootstrap)
                report["run"] = {"title": f"{merl_set.title} (MERL test split, {len(found)} records)"}
                substring = substring_derived_positives(rows, merl_set.codes, [i for i, _, _ in found])
                plot_path = output_dir / f"roc_{name}.png"
                plot_roc(report, scores, targets, plot_path)
                entry.update({
                    "macro_auroc": report["macro_auroc"], "macro_auroc_ci95": report["macro_auroc_ci95"],
                    "num_classes_evaluated": report["num_classes_evaluated"],
                    "per_class": _per_class(report, merl_set, substring), "roc_plot": plot_path.name,
                    "read_seconds": round(read_seconds, 3), "scoring_seconds": round(score_seconds, 3),
                    "ecg_per_second": round(len(found) / score_seconds, 1) if score_seconds > 0 else None,
                })
            else:
                entry["not_evaluated"] = "none of the test split's records were found in the corpus folder"
            if linear_probe:
                entry["linear_probe"] = _linear_probe(
                    merl_set, split_rows[name], locator, cache_dir, probe_features, model_obj, processor,
                    extract_ecg_features, max_records, cpsc2018_full_record, batch_size, bf16, progress, num_workers,
                    probe_fractions, probe_c_grid, n_bootstrap,
                )
            result_sets[name] = entry

    evaluated = [name for name, e in result_sets.items() if e["macro_auroc"] is not None]
    average = float(np.mean([result_sets[n]["macro_auroc"] for n in evaluated])) if evaluated else None
    result = {
        "sets": result_sets,
        "average": average,
        "average_over": evaluated,
        "complete": len(evaluated) == len(SET_NAMES) and all(
            result_sets[n]["records"]["missing"] == 0 for n in evaluated) and max_records is None,
        "published": PUBLISHED,
        "run": {
            "model": model_name, "merl_split_dir": str(split_dir.resolve()),
            "corpus_dirs": {k: (str(Path(v).resolve()) if v else None) for k, v in corpus_dirs.items()},
            "prompt_source": prompt_source, "bf16": bool(bf16), "device": str(next(model_obj.parameters()).device),
            "cpsc2018_full_record": bool(cpsc2018_full_record), "batch_size": batch_size, "max_records": max_records,
            "n_bootstrap": n_bootstrap, "linear_probe": bool(linear_probe), "seconds": round(time.perf_counter() - started, 1),
            "protocol": PROTOCOL_NOTES.format(cpsc=" (here: whole records, --cpsc2018_full_record)" if cpsc2018_full_record else ""),
        },
    }
    atomic_write_text(output_dir / BENCHMARK_MARKDOWN, benchmark_markdown(result))
    atomic_write_text(output_dir / BENCHMARK_JSON, to_json(result))
    return result


def _linear_probe(merl_set, rows_by_split, locator, cache_dir, feature_cache, model, processor, extract, max_records,
                  full_record, batch_size, bf16, progress, num_workers, fractions, c_grid, n_bootstrap) -> dict:
    """The probe of one set on features extracted once per record (shared by the sets of a corpus)."""
    features, targets, coverage = {}, {}, {}
    for split, rows in rows_by_split.items():
        found, cover = present_rows(rows, locator, max_records)
        coverage[split] = cover.to_dict()
        if not found:
            continue
        keys = [(merl_set.corpus, str(path)) for _, _, path in found]
        todo = [item for item, key in zip(found, keys) if key not in feature_cache]
        if todo:
            dataset = split_dataset(merl_set, rows, todo, cache_dir, full_record, progress)
            vectors, _ = extract(model, processor, dataset, batch_size=batch_size, bf16=bf16, progress=progress,
                                 num_workers=num_workers)
            for (_, _, path), vector in zip(todo, vectors):
                feature_cache[(merl_set.corpus, str(path))] = vector
        features[split] = np.stack([feature_cache[key] for key in keys])
        targets[split] = rows.targets[[i for i, _, _ in found]]
    out = {"records": coverage}
    if "train" not in features or "test" not in features:
        out["not_evaluated"] = "the train or test split has no records on disk"
        return out
    out["fractions"] = _probe_summary(run_linear_probe(
        features, targets, merl_set.codes, fractions=fractions, c_grid=c_grid, n_bootstrap=n_bootstrap))
    return out


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _percent_ci(ci) -> str:
    return "n/a" if not ci else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}"


def benchmark_markdown(result: Mapping) -> str:
    """The benchmark table (ours beside the published averages), notes, per-class tables, linear probe."""
    run = result["run"]
    lines = [
        "# MERL six-set zero-shot benchmark", "",
        f"- model: {run['model']}",
        f"- prompts: {run['prompt_source']}",
        f"- device: {run['device']}, bf16: {run['bf16']}, batch size {run['batch_size']}"
        + (f", at most {run['max_records']} records per split" if run["max_records"] else ""),
        "",
        "Zero-shot macro AUROC (%) on MERL's test splits, 95% bootstrap interval. 'records' is how many of the "
        "split file's records were found on disk.",
        "",
        "| set | classes (evaluated) | records (of split file) | ours | 95% CI | MERL (published) | SuPreME (published) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, entry in result["sets"].items():
        records = entry["records"]
        lines.append(
            f"| {entry['title']} | {entry['num_classes']} ({entry['num_classes_evaluated']}) | "
            f"{records['present']} ({records['in_split_file']}) | {_percent(entry['macro_auroc'])} | "
            f"{_percent_ci(entry['macro_auroc_ci95'])} | n/r | n/r |"
        )
    over = result["average_over"]
    lines.append(
        f"| **average** ({len(over)} of 6 sets) | | | **{_percent(result['average'])}** | | "
        f"**{PUBLISHED['MERL']['average']:.1f}** | **{PUBLISHED['SuPreME']['average']:.2f}** |"
    )
    lines += ["", f"n/r: not reported here. {PUBLISHED_NOTE}"]
    if not result["complete"]:
        lines.append("")
        lines.append("This run is NOT the full protocol (sets or records missing, or --max_records): its average is "
                     "not comparable with the published ones.")
    lines += ["", "## Protocol", "", run["protocol"], ""]
    missing = [(e["title"], e["records"]) for e in result["sets"].values() if e["records"]["missing"]]
    if missing:
        lines += ["Records in the split file but not on disk (counted, not scored):", ""]
        lines += [f"- {title}: {r['missing']} of {r['in_split_file']} missing (e.g. {', '.join(r['missing_examples'][:5])})"
                  for title, r in missing]
        lines.append("")
    for name, entry in result["sets"].items():
        lines += [f"## {entry['title']}", ""]
        if entry["macro_auroc"] is None and not entry["per_class"]:
            lines += [f"Not evaluated: {entry.get('not_evaluated', 'no records')}.", ""]
        else:
            substring = any("substring_derived_positives" in c for c in entry["per_class"].values())
            head = "| code | concept | positives | AUROC | 95% CI |" + (" substring-derived positives |" if substring else "")
            lines += [head, "| --- | --- | ---: | ---: | --- |" + (" ---: |" if substring else "")]
            for code, c in entry["per_class"].items():
                row = (f"| {code} | {c['concept']} | {c['positives']} | {_percent(c['auroc'])} | {_percent_ci(c['auroc_ci95'])} |")
                if substring:
                    row += f" {c.get('substring_derived_positives', 0)} |"
                lines.append(row)
            not_evaluated = [code for code, c in entry["per_class"].items() if not c["evaluated"]]
            lines.append("")
            if not_evaluated:
                lines += [f"Not in the macro average (no positives or no negatives among these records): "
                          f"{', '.join(not_evaluated)}.", ""]
            if substring:
                lines += ["Substring-derived positives: records MERL's CSV marks for the class although their diagnosis "
                          "acronyms do not contain the code (e.g. AF set for AFIB records); kept, as MERL scored them.", ""]
            lines += [f"ROC curves: {entry.get('roc_plot')}. Scoring: {entry.get('ecg_per_second')} ECG/s.", ""]
        probe = entry.get("linear_probe")
        if probe:
            if "fractions" not in probe:
                lines += [f"Linear probe not run: {probe['not_evaluated']}.", ""]
            else:
                lines += ["Linear probe (MERL's train split fractions, C chosen on MERL's val split):", "",
                          "| train fraction | train records | C | val macro AUROC | test macro AUROC | 95% CI |",
                          "| ---: | ---: | ---: | ---: | ---: | --- |"]
                for f in probe["fractions"]:
                    lines.append(f"| {f['fraction']:g} | {f['train_records']} | {f['C']:g} | "
                                 f"{_percent(f['validation_macro_auroc'])} | {_percent(f['macro_auroc'])} | "
                                 f"{_percent_ci(f['macro_auroc_ci95'])} |")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["BENCHMARK_JSON", "BENCHMARK_MARKDOWN", "PUBLISHED", "benchmark_markdown", "benchmark_prompts", "run_benchmark"]
