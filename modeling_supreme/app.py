"""An interactive zero-shot ECG demo (Gradio): upload a WFDB record, write conditions, get scores
and the record drawn on ECG paper with its top conditions.

``examples/app.py`` runs it locally; ``examples/build_space.py`` writes a Hugging Face Space folder
(``app.py`` + ``requirements.txt``) that runs the same :func:`build_app`. Gradio is imported only
when an app is built, so ``import modeling_supreme`` stays light.

Uploads: the files of one request (``.hea`` with ``.dat`` or ``.mat``; several records at once) are
copied under their own names into a fresh folder inside the app's temporary root, read there with
the package's WFDB reader and deleted when the request ends, whatever happens. Gradio's own upload
cache is placed inside the same root (``GRADIO_TEMP_DIR``) and the whole root is removed by
:meth:`ECGDemo.close` (also at interpreter exit). Every fault of an upload is reported in the
message box, with the reader's own message (missing ``.dat``, truncated file, unknown lead names,
...) and its warnings (implausible amplitude from a wrong ADC gain, missing samples, flat leads).
"""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from processing.ecg.ecg_paper import draw_ecg, ecg_image_bytes
from processing.ecg.wfdb_reader import ECGDataWarning, ECGRecord, RecordError, read_wfdb_record

# Conditions the demo proposes; they are names of the project's concept vocabulary, so a model
# pre-trained by `make demo` (synthetic corpus) or on PTB-XL reports has seen them.
DEFAULT_CONDITIONS = (
    "sinus rhythm",
    "sinus tachycardia",
    "sinus bradycardia",
    "atrial fibrillation",
    "first degree AV block",
    "left bundle branch block",
    "right bundle branch block",
    "ST elevation",
    "ST depression",
    "T wave inversion",
    "low QRS voltage",
    "left ventricular hypertrophy",
)
INDEPENDENT = "independent scores (sigmoid): several conditions can be present"
SOFTMAX = "softmax over the conditions: exactly one is present"
SCORING_CHOICES = (INDEPENDENT, SOFTMAX)
HEADER_SUFFIX = ".hea"
SIGNAL_SUFFIXES = (".dat", ".mat")
MAX_CONDITIONS = 64
# Per uploaded file. A 10 s 12-lead record at 500 Hz is 120 kB; 25 MB still takes a 24-hour Holter lead pair.
MAX_UPLOAD_SIZE = "25mb"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class UploadError(ValueError):
    """An upload that cannot be scored; the message says which file and what is wrong."""


def parse_conditions(text: str) -> List[str]:
    """Conditions from a text box: one per line or comma-separated; blanks dropped, duplicates kept once."""
    items = [item.strip() for line in (text or "").splitlines() for item in line.split(",")]
    unique = list(OrderedDict.fromkeys(item for item in items if item))
    if not unique:
        raise UploadError("write at least one condition (one per line or comma-separated)")
    if len(unique) > MAX_CONDITIONS:
        raise UploadError(f"{len(unique)} conditions given; the demo scores at most {MAX_CONDITIONS}")
    return unique


@dataclass
class ReadRecords:
    records: List[ECGRecord] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)  # records that could not be read
    warnings: List[str] = field(default_factory=list)  # records read with a warning


def read_uploaded_records(paths: Sequence[str | os.PathLike], work_dir: str | os.PathLike) -> ReadRecords:
    """Copy uploaded files into ``work_dir`` under their own names and read every record among them.

    A record is a ``.hea`` file; the signal file it names must be among the uploads (the reader says
    so when it is not). Raises :class:`UploadError` when nothing can be read at all (no header,
    unsupported files, clashing names); a record that fails is listed in ``problems`` with the
    reader's message while the others are still read.
    """
    work_dir = Path(work_dir)
    names: Dict[str, Path] = {}
    unsupported = []
    for path in paths:
        path = Path(path)
        name = path.name
        suffix = path.suffix.lower()
        if suffix not in (HEADER_SUFFIX, *SIGNAL_SUFFIXES):
            unsupported.append(name)
            continue
        if not _SAFE_NAME.match(name):
            raise UploadError(f"{name!r}: unsupported file name (letters, digits, '.', '_', '+', '-' only)")
        if name in names:
            raise UploadError(f"{name} was uploaded twice")
        names[name] = path
    if unsupported:
        raise UploadError(
            f"unsupported file(s) {', '.join(sorted(unsupported))}: upload WFDB records, each a .hea header "
            "with its .dat or .mat signal file"
        )
    headers = sorted(name for name in names if name.lower().endswith(HEADER_SUFFIX))
    if not headers:
        given = ", ".join(sorted(names)) or "nothing"
        raise UploadError(f"no .hea header among the uploaded files ({given}): a WFDB record needs its .hea file too")
    for name, source in names.items():
        shutil.copyfile(source, work_dir / name)
    result = ReadRecords()
    for header in headers:
        base = work_dir / header[: -len(HEADER_SUFFIX)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ECGDataWarning)  # they are in record.issues
                record = read_wfdb_record(base, warn=False)
        except RecordError as err:
            result.problems.append(_strip_folder(str(err), work_dir))
            continue
        record.path = header  # never show the temporary folder
        result.records.append(record)
        result.warnings.extend(f"{record.record_id}: {issue}" for issue in record.issues)
    return result


def _strip_folder(message: str, folder: Path) -> str:
    return message.replace(str(folder) + os.sep, "").replace(str(folder), "")


class ECGDemo:
    """The demo's state: the pipeline, the bundled examples and the temporary root for uploads.

    Args:
        model: a checkpoint folder (or Hub id) or a ready ``ZeroShotECGClassificationPipeline``.
        examples: bundled records, ``{display name: WFDB path}`` or a list of paths (named by stem).
        default_conditions: the text box's initial conditions.
        temp_dir: where the temporary root is created (default: the system's temporary folder).
        dpi: resolution of the drawing shown.
    """

    def __init__(self, model, examples=None, default_conditions: Sequence[str] = DEFAULT_CONDITIONS,
                 temp_dir: Optional[str] = None, dpi: int = 90):
        if isinstance(model, (str, os.PathLike)):
            from transformers import pipeline

            from .pipeline_supreme import TASK, register_pipeline

            register_pipeline()
            model = pipeline(TASK, model=str(model))
        self.classifier = model
        if examples is None:
            examples = {}
        elif not isinstance(examples, dict):
            examples = {Path(path).with_suffix("").name: path for path in examples}
        self.examples = {name: Path(path) for name, path in examples.items()}
        for name, path in self.examples.items():
            if not path.with_suffix(HEADER_SUFFIX).is_file():
                raise FileNotFoundError(f"bundled example {name!r}: no WFDB header {path.with_suffix(HEADER_SUFFIX)}")
        self.default_conditions = list(default_conditions)
        self.dpi = dpi
        self.temp_root = Path(tempfile.mkdtemp(prefix="supreme-ecg-app-", dir=temp_dir))
        self.upload_cache = self.temp_root / "gradio"
        self.upload_cache.mkdir()
        atexit.register(self.close)

    def close(self) -> None:
        """Remove the temporary root (uploads, Gradio's cache of this app)."""
        shutil.rmtree(self.temp_root, ignore_errors=True)

    # The one request handler: behind the button and the HTTP API (api_name "analyse").
    def analyse(self, files, example: Optional[str], conditions_text: str, scoring: str):
        """Returns ``(PIL image or None, table rows, message in Markdown)``."""
        try:
            conditions = parse_conditions(conditions_text)
            if scoring not in SCORING_CHOICES:
                raise UploadError(f"unknown scoring option {scoring!r}; choose one of {list(SCORING_CHOICES)}")
            paths = [_file_path(item) for item in (files or [])]
            with tempfile.TemporaryDirectory(prefix="request-", dir=self.temp_root) as work_dir:
                if paths:
                    read = read_uploaded_records(paths, work_dir)
                elif example:
                    if example not in self.examples:
                        raise UploadError(f"unknown example {example!r}; choose one of {sorted(self.examples)}")
                    read = read_uploaded_records(_record_files(self.examples[example]), work_dir)
                else:
                    raise UploadError("upload a record (.hea with its .dat or .mat) or choose a bundled example")
                if not read.records:
                    raise UploadError("no record could be read:\n" + "\n".join(f"- {p}" for p in read.problems))
                rows, first_scores = [], None
                for record in read.records:
                    scores = self.classifier(record, candidate_labels=conditions, multi_label=scoring == INDEPENDENT)
                    first_scores = first_scores or scores
                    rows.extend([record.record_id, item["label"], round(float(item["score"]), 4)] for item in scores)
                first = read.records[0]
                figure = draw_ecg(first, scores=first_scores, top_k=3)
                image = _as_image(ecg_image_bytes(figure, "png", dpi=self.dpi))
        except ValueError as err:  # UploadError, RecordError, and the feature extractor's checks (e.g. a too short record)
            return None, [], f"**Could not score the upload.** {_strip_folder(str(err), self.temp_root)}"
        lines = [f"Scored {len(read.records)} record(s) against {len(conditions)} condition(s)"
                 + ("" if len(read.records) == 1 else f"; the drawing shows {read.records[0].record_id}") + "."]
        lines += [f"- warning: {w}" for w in read.warnings]
        lines += [f"- not read: {p}" for p in read.problems]
        return image, rows, "\n".join(lines)

    def build(self):
        """The ``gradio.Blocks`` app. Sets ``GRADIO_TEMP_DIR`` to this demo's upload cache first: Gradio's
        components and server read it when they are created."""
        os.environ["GRADIO_TEMP_DIR"] = str(self.upload_cache)
        # No usage analytics sent from an app that handles ECGs (a user may still turn them on).
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        import gradio as gr

        with gr.Blocks(title="SuPreME zero-shot ECG classification", delete_cache=(600, 1800)) as blocks:
            gr.Markdown(
                "# SuPreME: zero-shot ECG classification\n"
                "Upload a WFDB record (its `.hea` header with its `.dat` or `.mat` signal file; several records "
                "at once) or choose a bundled example, write the conditions to score, and press **Score**. "
                "Scores come from the model's ECG and text encoders; they are not a diagnosis."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    files = gr.File(label="WFDB record files (.hea + .dat or .mat)", file_count="multiple",
                                    file_types=[HEADER_SUFFIX, *SIGNAL_SUFFIXES], elem_id="record-files")
                    example = gr.Dropdown(choices=sorted(self.examples), value=None, label="or a bundled example",
                                          elem_id="example")
                    conditions = gr.Textbox(value="\n".join(self.default_conditions), lines=8,
                                            label="Conditions (one per line or comma-separated)", elem_id="conditions")
                    scoring = gr.Radio(choices=list(SCORING_CHOICES), value=INDEPENDENT, label="Scores",
                                       elem_id="scoring")
                    button = gr.Button("Score", variant="primary", elem_id="score")
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="message")
                    # No label or buttons drawn over the picture: they would hide the paper's title line.
                    image = gr.Image(label="The record on ECG paper (25 mm/s, 10 mm/mV)", show_label=False,
                                     buttons=["download"], type="pil", elem_id="drawing", format="png")
                    table = gr.Dataframe(headers=["record", "condition", "score"], label="Scores",
                                         elem_id="scores", interactive=False)
            button.click(self.analyse, inputs=[files, example, conditions, scoring], outputs=[image, table, message],
                         api_name="analyse")
        return blocks

    def launch(self, blocks=None, **launch_args):
        """Build (unless given) and launch; Gradio's uploads go under the app's temporary root.

        Uploads are capped at ``MAX_UPLOAD_SIZE`` per file unless ``max_file_size`` is given: Gradio
        accepts any size by default, and a public Space would then store whatever it is sent.
        """
        blocks = blocks or self.build()
        launch_args.setdefault("max_file_size", MAX_UPLOAD_SIZE)
        return blocks.launch(**launch_args)


def build_app(model, examples=None, **demo_args) -> Tuple[object, ECGDemo]:
    """``(gradio.Blocks, ECGDemo)`` for a checkpoint; Gradio's upload cache goes under the demo's temporary root."""
    demo = ECGDemo(model, examples, **demo_args)
    return demo.build(), demo


def _file_path(item) -> str:
    # Gradio gives file paths (str) or objects with a .path / .name, depending on version and client.
    for attribute in ("path", "name"):
        if hasattr(item, attribute) and not isinstance(item, str):
            return str(getattr(item, attribute))
    if isinstance(item, dict) and "path" in item:
        return str(item["path"])
    return str(item)


def _record_files(base: Path) -> List[Path]:
    """The header of a bundled example and the signal files it names."""
    header = base.with_suffix(HEADER_SUFFIX)
    files = [header]
    for line in header.read_text(encoding="latin-1").splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            candidate = header.parent / line.split()[0]
            if candidate.is_file() and candidate not in files:
                files.append(candidate)
    return files


def _as_image(png: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image.load()
    return image


__all__ = ["ECGDemo", "build_app", "parse_conditions", "read_uploaded_records", "UploadError", "DEFAULT_CONDITIONS",
           "INDEPENDENT", "SOFTMAX", "SCORING_CHOICES"]
