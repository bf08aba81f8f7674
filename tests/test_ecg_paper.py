"""The drawing on ECG paper: the grid's real size in output pixels, the mV and time scales of the
traces, the layouts, absent leads, every input form, PNG and SVG, and the errors."""

import io
import re

import numpy as np
import pytest

from datasets_scripts.testing import example_signal
from processing.ecg import ECGRecord, read_wfdb_record
from processing.ecg.ecg_paper import (
    MAJOR_GRID_COLOR,
    MINOR_GRID_COLOR,
    MM_PER_INCH,
    draw_ecg,
    ecg_image_bytes,
    save_ecg,
)
from processing.ecg.ecg_leads import STANDARD_12_LEADS


def _hex_rgb(color):
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def _line_centres(mask_1d: np.ndarray) -> np.ndarray:
    """Centres of runs of True (one run per drawn grid line, antialiasing may spread it over 2 px)."""
    index = np.flatnonzero(mask_1d)
    runs = np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)
    return np.array([run.mean() for run in runs if run.size])


def _grid_lines(pixels: np.ndarray, color: str, axis: int) -> np.ndarray:
    """Pixel positions of the grid lines of one colour: columns (axis=0) or rows (axis=1) where most pixels have it."""
    close = np.abs(pixels - _hex_rgb(color)).max(axis=2) < 40
    return _line_centres(close.mean(axis=axis) > 0.5)


@pytest.fixture(scope="module")
def signal():
    return example_signal(3, seed=5, fs=500).astype(np.float32)


@pytest.mark.parametrize("dpi", [254, 300])  # 10 px per mm, and a non-integer 11.8
def test_grid_spacing_in_output_pixels(signal, dpi):
    figure = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS)
    pixels = _pixels(ecg_image_bytes(figure, "png", dpi=dpi))
    px_per_mm = dpi / MM_PER_INCH
    width_mm, height_mm = figure.get_size_inches() * MM_PER_INCH
    # the paper's size in pixels (matplotlib rounds a fractional pixel down)
    assert abs(pixels.shape[1] - width_mm * px_per_mm) < 1 and abs(pixels.shape[0] - height_mm * px_per_mm) < 1
    # the grid lies between the 14 mm header band and the 5 mm footer band
    grid_rows = pixels[int(14 * px_per_mm) - 1:int(pixels.shape[0] - 5 * px_per_mm) + 2]
    for axis, extent in ((0, width_mm), (1, height_mm - 14 - 5)):
        major = _grid_lines(grid_rows, MAJOR_GRID_COLOR, axis)
        minor = _grid_lines(grid_rows, MINOR_GRID_COLOR, axis)
        both = np.sort(np.concatenate([major, minor]))
        # one line per millimetre, every fifth one major
        assert len(both) in (int(extent), int(extent) + 1), (axis, len(both), extent)
        # every line within a pixel of where 1 mm = dpi / 25.4 px puts it (lines snap to whole pixels;
        # the first and last lie on the image border, half cut off)
        inner = both[1:-1]
        ideal = np.arange(len(inner)) * px_per_mm
        ideal += np.mean(inner - ideal)
        assert np.abs(inner - ideal).max() <= 1.0, (axis, np.abs(inner - ideal).max())
        slope = np.polyfit(np.arange(len(both)), both, 1)[0]
        assert slope == pytest.approx(px_per_mm, rel=0.003)
        assert np.allclose(np.diff(major)[1:-1], 5 * px_per_mm, atol=1.0)
        assert len(minor) == pytest.approx(4 * len(major), abs=4)


def _lines(figure, label):
    return [line for line in figure.axes[0].lines if line.get_label() == label]


def test_traces_are_drawn_at_25_mm_per_s_and_10_mm_per_mv():
    rate = 500
    t = np.arange(10 * rate) / rate
    signal = np.zeros((12, t.size), dtype=np.float32)
    signal[1] = np.where((t % 1.0) < 0.5, 1.0, 0.0)  # lead II: a 1 mV square wave, 1 s period
    figure = draw_ecg(signal, sampling_rate=rate, lead_names=STANDARD_12_LEADS)
    lead_two = _lines(figure, "lead II")
    assert len(lead_two) == 2  # its 3x4 segment (first 2.5 s) and the rhythm strip
    strip = max(lead_two, key=lambda line: np.ptp(line.get_xdata()))
    x, y = strip.get_xdata(), strip.get_ydata()
    assert np.ptp(y) == pytest.approx(10.0)  # 1 mV = 10 mm
    assert np.ptp(x) == pytest.approx(25.0 * (t.size - 1) / rate)  # 10 s = 250 mm
    rises = x[1:][np.diff(y) > 5]
    assert np.allclose(np.diff(rises), 25.0)  # one rising edge per second = every 25 mm
    pulses = _lines(figure, "calibration")
    assert len(pulses) == 4  # one per row: 3 rows + the rhythm strip
    for pulse in pulses:
        px, py = pulse.get_xdata(), pulse.get_ydata()
        assert np.ptp(py) == pytest.approx(10.0)  # 1 mV
        top = px[py == py.max()]
        assert np.ptp(top) == pytest.approx(5.0)  # 200 ms


def test_speed_and_gain_options_scale_the_paper(signal):
    figure = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, speed=50, gain=20, layout="6x2")
    pulse = _lines(figure, "calibration")[0]
    assert np.ptp(pulse.get_ydata()) == pytest.approx(20.0)
    assert figure.get_size_inches()[0] * MM_PER_INCH == pytest.approx(10 + 50 * 10)
    assert len(_lines(figure, "calibration")) == 6  # 6 rows, no rhythm strip


def test_layouts_place_every_lead(signal):
    for layout, rows in (("3x4", 4), ("6x2", 6)):
        figure = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, layout=layout)
        drawn = {line.get_label()[5:] for line in figure.axes[0].lines if line.get_label().startswith("lead ")}
        assert drawn == set(STANDARD_12_LEADS)
        assert figure.get_size_inches()[1] * MM_PER_INCH == pytest.approx(rows * 30 + 14 + 5)
    no_strip = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, rhythm_lead=None)
    assert len(_lines(no_strip, "lead II")) == 1


def test_missing_leads_are_drawn_as_absent_not_flat(signal):
    leads = ["I", "II", "V1"]
    figure = draw_ecg(signal[[0, 1, 6]], sampling_rate=500, lead_names=leads)
    drawn = {line.get_label()[5:] for line in figure.axes[0].lines if line.get_label().startswith("lead ")}
    assert drawn == set(leads)
    texts = [text.get_text() for text in figure.axes[0].texts]
    for lead in set(STANDARD_12_LEADS) - set(leads):
        assert f"{lead}: not recorded" in texts
    # the rhythm strip lead can be absent too
    only_v = draw_ecg(signal[6:], sampling_rate=500, lead_names=STANDARD_12_LEADS[6:])
    assert not _lines(only_v, "lead II") and "II: not recorded" in [t.get_text() for t in only_v.axes[0].texts]


def test_a_lead_with_no_finite_sample_is_absent_and_an_all_nan_signal_an_error(signal):
    gappy = signal.copy()
    gappy[STANDARD_12_LEADS.index("aVL")] = np.nan  # never recorded
    gappy[STANDARD_12_LEADS.index("V2"), 100:200] = np.nan  # a gap inside a recorded lead
    figure = draw_ecg(gappy, sampling_rate=500, lead_names=STANDARD_12_LEADS)
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert "aVL: not recorded" in texts and not _lines(figure, "lead aVL")
    v2 = _lines(figure, "lead V2")
    assert v2 and "V2: not recorded" not in texts
    assert np.isfinite(np.concatenate([line.get_ydata() for line in v2])).mean() > 0.9  # only the gap is blank
    with pytest.raises(ValueError, match="no lead has a finite sample"):
        draw_ecg(np.full_like(signal, np.nan), sampling_rate=500, lead_names=STANDARD_12_LEADS)


def test_title_with_top_scores(signal):
    scores = [{"label": "sinus rhythm", "score": 0.2}, {"label": "atrial fibrillation", "score": 0.9},
              {"label": "LBBB", "score": 0.5}, {"label": "RBBB", "score": 0.1}]
    figure = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, title="rec 7", scores=scores, top_k=2)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert "rec 7" in texts and "top scores: atrial fibrillation 0.90, LBBB 0.50" in texts
    assert "25 mm/s   10 mm/mV   500 Hz   10 s recorded" in texts
    mapping = draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, scores={"a": 0.1, "b": 0.7}, top_k=1)
    assert "top scores: b 0.70" in [t.get_text() for t in mapping.axes[0].texts]


def _trace_data(figure):
    return {line.get_label(): np.asarray(line.get_ydata()) for line in figure.axes[0].lines}


def test_every_input_form_gives_the_same_drawing(generated_records):
    path = generated_records["hr"][0]
    record = read_wfdb_record(path)
    reference = _trace_data(draw_ecg(path))
    as_record = _trace_data(draw_ecg(record))
    row = {"record_id": record.record_id, "signal": record.signal.tolist(), "lead_names": record.lead_names,
           "sampling_rate": record.sampling_rate}
    as_row = _trace_data(draw_ecg(row))
    gain = np.full(12, 1000.0)
    compact = {"record_id": "x", "signal_int16": np.rint(record.signal * 1000).astype(np.int16), "signal_gain": gain,
               "lead_names": record.lead_names, "sampling_rate": record.sampling_rate}
    as_compact = _trace_data(draw_ecg(compact))
    import torch

    as_tensor = _trace_data(draw_ecg(torch.from_numpy(record.signal), sampling_rate=500, lead_names=record.lead_names))
    # PTB-XL's spelling AVR is canonicalised, so labels match the standard names
    assert "lead aVR" in reference
    for other in (as_record, as_row, as_compact, as_tensor):
        assert other.keys() == reference.keys()
        for key in reference:
            np.testing.assert_allclose(other[key], reference[key], atol=1e-4)


def test_png_and_svg_files(tmp_path, signal):
    png = save_ecg(signal, tmp_path / "ecg.png", sampling_rate=500, lead_names=STANDARD_12_LEADS, dpi=50)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_ecg(signal, tmp_path / "ecg.svg", sampling_rate=500, lead_names=STANDARD_12_LEADS)
    text = svg.read_text()
    width_pt = float(re.search(r'<svg[^>]* width="([0-9.]+)pt"', text).group(1))
    assert width_pt == pytest.approx((10 + 250) / MM_PER_INCH * 72, abs=0.01)  # the paper's real size
    assert MAJOR_GRID_COLOR in text.lower() and MINOR_GRID_COLOR in text.lower()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        save_ecg(signal, tmp_path / "ecg.jpg", sampling_rate=500, lead_names=STANDARD_12_LEADS)


def test_wrong_inputs_are_errors(signal):
    with pytest.raises(ValueError, match="sampling_rate= and lead_names="):
        draw_ecg(signal)
    with pytest.raises(ValueError, match="lacks lead_names"):
        draw_ecg({"record_id": "r1", "signal": signal, "sampling_rate": 500})
    with pytest.raises(ValueError, match="transpose"):
        draw_ecg(signal.T, sampling_rate=500, lead_names=STANDARD_12_LEADS)
    with pytest.raises(ValueError, match="unknown lead name 'V7'"):
        draw_ecg(signal[:2], sampling_rate=500, lead_names=["I", "V7"])
    with pytest.raises(ValueError, match="layout must be one of"):
        draw_ecg(signal, sampling_rate=500, lead_names=STANDARD_12_LEADS, layout="4x3")
    with pytest.raises(ValueError, match="sampling_rate must be positive"):
        draw_ecg(signal, sampling_rate=0, lead_names=STANDARD_12_LEADS)


def test_a_real_ptbxl_record(ptbxl_dir, tmp_path):
    path = ptbxl_dir / "records100" / "00000" / "00001_lr"
    out = save_ecg(path, tmp_path / "real.png", dpi=80)
    pixels = _pixels(out.read_bytes())
    assert (pixels.max(axis=2) < 60).mean() > 0.002  # black trace pixels are there
    figure = draw_ecg(path)
    assert {line.get_label() for line in figure.axes[0].lines} >= {f"lead {lead}" for lead in STANDARD_12_LEADS}


def test_rows_of_a_built_dataset_in_every_format(tmp_path):
    from datasets_scripts import load_ecg_dataset

    split = load_ecg_dataset("synthetic", num_records=20, seed=0, sampling_rate=100, cache_dir=str(tmp_path))["test"]
    reference = _trace_data(draw_ecg(split[0]))
    assert {f"lead {lead}" for lead in STANDARD_12_LEADS} <= reference.keys()
    for kind in ("numpy", "torch"):
        row = split.with_format(kind)[0]
        other = _trace_data(draw_ecg(row))
        for key in reference:
            np.testing.assert_allclose(other[key], reference[key], atol=1e-5)
    # as examples/demo.py draws it: true labels in the title, the pipeline's top scores after them
    figure = draw_ecg(split[0], title=f"{split[0]['record_id']}: true labels: x", scores=[{"label": "y", "score": 0.5}])
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert f"{split[0]['record_id']}: true labels: x" in texts and "top scores: y 0.50" in texts
