"""Drawing a 12-lead ECG on standard ECG paper (PNG or SVG), with matplotlib's Agg backend.

The drawing is laid out in millimetres of paper: the axes fill the figure and their data units are
millimetres, so at ``dpi`` dots per inch one paper millimetre is exactly ``dpi / 25.4`` pixels.

- Paper speed 25 mm/s and gain 10 mm/mV by default, so a 1 mm minor square is 40 ms x 0.1 mV and a
  5 mm major square is 200 ms x 0.5 mV; both grids are drawn in the usual red (light for minor lines).
- Layouts: ``"3x4"`` (rows I/aVR/V1/V4, II/aVL/V2/V5, III/aVF/V3/V6, each column a consecutive quarter
  of the strip, plus a full-length rhythm strip, lead II by default) and ``"6x2"`` (limb leads in the
  first half of the strip on the left, chest leads in the second half on the right).
- Each row starts with a calibration pulse: 1 mV high for 200 ms at the chosen speed and gain.
- A lead that the record does not have is drawn as absent: its label says "not recorded" and no
  trace is drawn (a flat line would read as asystole in that lead).
- Each lead is centred on its row by subtracting its median, which removes the DC offset of the
  recording without filtering the waveform.

Inputs are what the rest of the package takes: a WFDB record path, an :class:`ECGRecord`, a dataset
row (``signal`` in mV leads x samples, or the compact ``signal_int16`` + ``signal_gain``, with
``lead_names`` and ``sampling_rate``), or a 2-D array (leads x samples, mV) with ``sampling_rate=``
and ``lead_names=``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..atomic_files import atomic_write_bytes
from .data_collator import row_signal
from .ecg_leads import STANDARD_12_LEADS, canonical_lead_names
from .wfdb_reader import ECGRecord, read_wfdb_record

MM_PER_INCH = 25.4
DEFAULT_SPEED = 25.0  # mm/s
DEFAULT_GAIN = 10.0  # mm/mV
MINOR_GRID_COLOR = "#f5c2c2"
MAJOR_GRID_COLOR = "#e05a5a"
TRACE_COLOR = "black"
LAYOUTS = ("3x4", "6x2")
# Rows of leads for each layout, in reading order (columns left to right).
_LAYOUT_ROWS = {
    "3x4": (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    "6x2": (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
}
_CALIBRATION_WIDTH_MM = 10.0  # room at the start of each row for the calibration pulse
_HEADER_MM = 14.0  # blank band above the grid: the title line, then the top scores
_FOOTER_MM = 5.0  # blank band below the grid: speed, gain, sampling rate


@dataclass
class ECGPaperRecord:
    """The signal to draw: float32 mV (leads x samples) with canonical lead names."""

    signal: np.ndarray
    lead_names: list
    sampling_rate: float
    record_id: str = ""


def as_paper_record(ecg: Any, sampling_rate: Optional[float] = None, lead_names: Optional[Sequence[str]] = None,
                    record_id: Optional[str] = None) -> ECGPaperRecord:
    """Turn any accepted input into an :class:`ECGPaperRecord`; raise ``ValueError`` naming what is wrong."""
    if isinstance(ecg, (str, os.PathLike)):
        record = read_wfdb_record(ecg)
        signal, leads, rate, rid = record.signal, record.lead_names, record.sampling_rate, record.record_id
    elif isinstance(ecg, ECGRecord):
        signal, leads, rate, rid = ecg.signal, ecg.lead_names, ecg.sampling_rate, ecg.record_id
    elif isinstance(ecg, Mapping):
        rid = str(ecg.get("record_id", "") or "")
        where = f"record {rid!r}" if rid else "the dataset row"
        missing = [name for name in ("lead_names", "sampling_rate") if name not in ecg or ecg[name] is None]
        if missing:
            raise ValueError(f"{where} lacks {' and '.join(missing)}: an ECG row needs 'signal' (mV, leads x samples), "
                             f"'lead_names' and 'sampling_rate'; got columns {sorted(ecg)}")
        signal, leads, rate = row_signal(ecg, where), list(ecg["lead_names"]), ecg["sampling_rate"]
    else:
        if sampling_rate is None or lead_names is None:
            raise ValueError("an ECG array needs sampling_rate= and lead_names= (the array is leads x samples, in mV)")
        signal, leads, rate, rid = ecg, list(lead_names), sampling_rate, ""
    if type(signal).__module__.startswith("torch"):
        signal = signal.detach().cpu().numpy()
    signal = np.asarray(signal, dtype=np.float32)
    where = f"record {record_id or rid!r}" if (record_id or rid) else "the ECG"
    if signal.ndim != 2:
        raise ValueError(f"{where}: the signal must be 2-D (leads x samples), got shape {signal.shape}")
    if signal.shape[0] != len(leads):
        hint = " (transpose it: the signal is expected leads x samples)" if signal.shape[1] == len(leads) else ""
        raise ValueError(f"{where}: the signal has {signal.shape[0]} rows but {len(leads)} lead names {leads}{hint}")
    if signal.shape[1] == 0:
        raise ValueError(f"{where}: the signal has no samples")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: sampling_rate must be a number, got {rate!r}") from None
    if not rate > 0:
        raise ValueError(f"{where}: sampling_rate must be positive, got {rate!r}")
    try:
        leads = canonical_lead_names(leads)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    # A lead without a single finite sample was not recorded (the reader's and the feature extractor's
    # rule): it is drawn as absent, not as a labelled blank trace. NaN gaps inside a lead stay gaps.
    recorded = np.isfinite(signal).any(axis=1)
    if not recorded.any():
        raise ValueError(f"{where}: no lead has a finite sample (all NaN/inf): nothing to draw")
    if not recorded.all():
        signal = signal[recorded]
        leads = [lead for lead, keep in zip(leads, recorded) if keep]
    return ECGPaperRecord(signal=signal, lead_names=leads, sampling_rate=rate, record_id=record_id or rid)


def _scores_text(scores, top_k: int) -> str:
    if isinstance(scores, Mapping):
        pairs = list(scores.items())
    else:
        pairs = [(item["label"], item["score"]) for item in scores]
    pairs = sorted(pairs, key=lambda pair: -float(pair[1]))[:top_k]
    return ", ".join(f"{label} {float(score):.2f}" for label, score in pairs)


def draw_ecg(
    ecg: Any,
    *,
    sampling_rate: Optional[float] = None,
    lead_names: Optional[Sequence[str]] = None,
    layout: str = "3x4",
    rhythm_lead: Optional[str] = "II",
    speed: float = DEFAULT_SPEED,
    gain: float = DEFAULT_GAIN,
    duration: float = 10.0,
    row_height_mm: float = 30.0,
    title: Optional[str] = None,
    scores: Union[Sequence[Mapping[str, Any]], Mapping[str, float], None] = None,
    top_k: int = 3,
    record_id: Optional[str] = None,
):
    """Draw an ECG on paper; returns a matplotlib ``Figure`` (save it with :func:`save_ecg`).

    Args:
        ecg: a WFDB path, an ``ECGRecord``, a dataset row, or an array (leads x samples, mV).
        sampling_rate, lead_names: for an array input.
        layout: ``"3x4"`` (with a rhythm strip) or ``"6x2"``.
        rhythm_lead: the lead of the full-length strip under the ``3x4`` layout (``None``: no strip).
        speed: paper speed in mm/s; gain: mm per mV.
        duration: seconds of the record on the strip (from its start); shorter records leave the
            rest of the row blank.
        row_height_mm: height of each row of the grid.
        title: a line above the grid (default: the record id); ``scores`` (the pipeline's
            ``[{"label", "score"}]`` or a ``{label: score}`` mapping) adds its ``top_k`` entries.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not (speed > 0 and gain > 0 and duration > 0 and row_height_mm > 0):
        raise ValueError(f"speed, gain, duration and row_height_mm must be positive, got {speed}, {gain}, {duration}, {row_height_mm}")
    record = as_paper_record(ecg, sampling_rate, lead_names, record_id)
    rows = [list(row) for row in _LAYOUT_ROWS[layout]]
    strip = None
    if layout == "3x4" and rhythm_lead is not None:
        strip = canonical_lead_names([rhythm_lead])[0]
    columns = len(rows[0])
    column_seconds = duration / columns
    width = _CALIBRATION_WIDTH_MM + duration * speed
    n_rows = len(rows) + (strip is not None)
    grid_height = n_rows * row_height_mm
    paper_height = _FOOTER_MM + grid_height + _HEADER_MM
    bottom = _FOOTER_MM  # the grid's lower edge (a whole number of mm, so grid lines stay on paper mm)

    figure = Figure(figsize=(width / MM_PER_INCH, paper_height / MM_PER_INCH))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, width)
    axis.set_ylim(0, paper_height)
    axis.set_axis_off()
    axis.add_patch(Rectangle((0, 0), width, paper_height, color="white", zorder=0))

    # Grid: 1 mm minor, every fifth line major, over the grid area only (header and footer stay white).
    top = int(np.floor(grid_height))
    columns_mm = np.arange(0, int(np.floor(width)) + 1)
    rows_mm = np.arange(0, top + 1)
    for major, width_pt, color, order in ((False, 0.4, MINOR_GRID_COLOR, 0.5), (True, 0.6, MAJOR_GRID_COLOR, 1)):
        axis.vlines(columns_mm[(columns_mm % 5 == 0) == major], bottom, bottom + top, colors=color, linewidth=width_pt,
                    zorder=order)
        axis.hlines(bottom + rows_mm[(rows_mm % 5 == 0) == major], 0, width, colors=color, linewidth=width_pt,
                    zorder=order)

    index = {lead: i for i, lead in enumerate(record.lead_names)}
    rate = record.sampling_rate
    centred = record.signal - np.nanmedian(record.signal, axis=1, keepdims=True)  # a NaN gap must not blank its lead
    label_size = 9

    def row_baseline(row: int) -> float:
        # Rows from the top; the baseline sits a little below the middle so that R waves have room.
        return bottom + grid_height - (row + 0.6) * row_height_mm

    # Traces are labelled "lead <name>" and pulses "calibration" (not shown; they let callers find them).
    def draw_segment(lead: str, row: int, start_s: float, seconds: float, x0: float) -> None:
        baseline = row_baseline(row)
        label_y = baseline + 0.4 * row_height_mm
        if lead not in index:
            axis.text(x0 + 1.5, label_y, f"{lead}: not recorded", fontsize=label_size, color="#777777",
                      style="italic", zorder=4)
            return
        first = int(round(start_s * rate))
        last = min(int(round((start_s + seconds) * rate)), centred.shape[1])
        if last > first:
            values = centred[index[lead], first:last]
            x = x0 + (np.arange(last - first) / rate) * speed
            axis.plot(x, baseline + values * gain, color=TRACE_COLOR, linewidth=0.6, zorder=3, label=f"lead {lead}")
        axis.text(x0 + 1.5, label_y, lead, fontsize=label_size, fontweight="bold", zorder=4)

    def draw_calibration(row: int) -> None:
        baseline = row_baseline(row)
        pulse = 0.2 * speed  # 200 ms
        x = _CALIBRATION_WIDTH_MM / 2 - pulse / 2 + np.array([-2.0, 0.0, 0.0, pulse, pulse, pulse + 2.0])
        y = baseline + np.array([0.0, 0.0, gain, gain, 0.0, 0.0])  # 1 mV
        axis.plot(x, y, color=TRACE_COLOR, linewidth=0.8, zorder=3, label="calibration")

    for row, leads in enumerate(rows):
        draw_calibration(row)
        for column, lead in enumerate(leads):
            start = column * column_seconds
            x0 = _CALIBRATION_WIDTH_MM + start * speed
            draw_segment(lead, row, start, column_seconds, x0)
            if column:  # the usual short separator between leads sharing a row
                baseline = row_baseline(row)
                axis.vlines(x0, baseline - 2.5, baseline + 2.5, colors=TRACE_COLOR, linewidth=0.8, zorder=3)
    if strip is not None:
        draw_calibration(len(rows))
        draw_segment(strip, len(rows), 0.0, duration, _CALIBRATION_WIDTH_MM)

    heading = title if title is not None else (record.record_id or "ECG")
    header = bottom + grid_height
    axis.text(2, header + _HEADER_MM * 0.68, heading, fontsize=10, va="center", zorder=4)
    if scores is not None:
        axis.text(2, header + _HEADER_MM * 0.26, f"top scores: {_scores_text(scores, top_k)}", fontsize=9,
                  va="center", zorder=4)
    seconds = record.signal.shape[1] / rate
    axis.text(2, bottom / 2, f"{speed:g} mm/s   {gain:g} mm/mV   {rate:g} Hz   {seconds:g} s recorded",
              fontsize=7, va="center", color="#444444", zorder=4)
    return figure


def ecg_image_bytes(figure, format: str = "png", dpi: float = 100) -> bytes:
    """The figure encoded as PNG or SVG."""
    if format not in ("png", "svg"):
        raise ValueError(f"format must be 'png' or 'svg', got {format!r}")
    buffer = io.BytesIO()
    # No bbox_inches="tight": it would crop the paper and break the mm-to-pixel scale.
    figure.savefig(buffer, format=format, dpi=dpi)
    return buffer.getvalue()


def save_ecg(ecg: Any, path: Union[str, os.PathLike], *, dpi: float = 100, **draw_args) -> Path:
    """Draw ``ecg`` (see :func:`draw_ecg` for ``draw_args``) and write it to ``path`` (``.png`` or ``.svg``), atomically."""
    path = Path(path)
    format = path.suffix.lower().lstrip(".")
    if format not in ("png", "svg"):
        raise ValueError(f"{path}: the drawing is written as .png or .svg, got suffix {path.suffix!r}")
    figure = ecg if hasattr(ecg, "savefig") else draw_ecg(ecg, **draw_args)
    atomic_write_bytes(path, ecg_image_bytes(figure, format, dpi))
    return path


__all__ = ["draw_ecg", "save_ecg", "ecg_image_bytes", "as_paper_record", "ECGPaperRecord", "LAYOUTS",
           "STANDARD_12_LEADS"]
