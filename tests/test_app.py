"""The Gradio demo app: its request handler on real and broken uploads, and the running app driven
through its HTTP API with gradio_client, as a user's script or the browser would."""

import re
import shutil
import socket
from pathlib import Path

import pytest

from conftest import load_example
from modeling_supreme.app import INDEPENDENT, SOFTMAX, ECGDemo, UploadError, parse_conditions

pytest.importorskip("gradio", reason="the demo app needs the 'app' extra: pip install -e '.[app]'")

CONDITIONS = "sinus rhythm\natrial fibrillation, left bundle branch block\n\nST elevation"
RECORD = "records100/00000/00001_lr"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tiny_checkpoint, tmp_path_factory):
    app_cli = load_example("app")
    demo = ECGDemo(str(tiny_checkpoint), temp_dir=str(tmp_path_factory.mktemp("app_temp")))
    demo.examples.update(app_cli.write_synthetic_examples(demo.temp_root / "examples", count=2))
    yield demo
    demo.close()


@pytest.fixture
def real_record(ptbxl_dir, tmp_path) -> Path:
    """A copy of a real PTB-XL record (100 Hz) to break in various ways."""
    for suffix in (".hea", ".dat"):
        shutil.copyfile(ptbxl_dir / (RECORD + suffix), tmp_path / ("00001_lr" + suffix))
    return tmp_path / "00001_lr"


def _files(base: Path, *suffixes):
    return [str(base.with_suffix(s)) for s in suffixes]


def _no_request_folders(demo):
    return not [p for p in demo.temp_root.iterdir() if p.name.startswith("request-")]


def test_parse_conditions():
    assert parse_conditions(CONDITIONS) == ["sinus rhythm", "atrial fibrillation", "left bundle branch block", "ST elevation"]
    assert parse_conditions("AF, AF\nAF") == ["AF"]
    with pytest.raises(UploadError, match="at least one condition"):
        parse_conditions(" ,\n ")


def test_a_real_record_is_scored_and_drawn(demo, real_record):
    image, rows, message = demo.analyse(_files(real_record, ".hea", ".dat"), None, CONDITIONS, INDEPENDENT)
    assert message.startswith("Scored 1 record(s) against 4 condition(s)")
    assert [row[1] for row in rows] and sorted(row[1] for row in rows) == sorted(parse_conditions(CONDITIONS))
    scores = [row[2] for row in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert sum(scores) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids
    assert image.size[0] > 800 and image.mode in ("RGBA", "RGB")
    _, softmax_rows, _ = demo.analyse(_files(real_record, ".hea", ".dat"), None, CONDITIONS, SOFTMAX)
    assert sum(row[2] for row in softmax_rows) == pytest.approx(1.0, abs=1e-3)
    assert [r[1] for r in softmax_rows] == [r[1] for r in rows]  # a softmax keeps the sigmoid's ranking
    assert _no_request_folders(demo)


def _break(record: Path, how: str) -> list:
    header = record.with_suffix(".hea")
    text = header.read_text()
    if how == "missing .dat":
        return _files(record, ".hea")
    if how == "truncated .dat":
        data = record.with_suffix(".dat")
        data.write_bytes(data.read_bytes()[:-1000])
    elif how == "unknown lead":
        header.write_text(re.sub(r" V6\s*$", " V7\n", text, flags=re.M))
    elif how == "wrong gain":
        header.write_text(text.replace("1000.0(0)/mV", "100000.0(0)/mV"))
    elif how == "no header":
        return _files(record, ".dat")
    elif how == "not WFDB":
        notes = record.with_name("notes.txt")
        notes.write_text("hello")
        return [*_files(record, ".hea", ".dat"), str(notes)]
    return _files(record, ".hea", ".dat")


@pytest.mark.parametrize("how, expected", [
    ("missing .dat", r"00001_lr: signal file 00001_lr\.dat not found"),
    ("truncated .dat", r"00001_lr: signal file 00001_lr\.dat holds 23000 bytes.*truncated signal file"),
    ("unknown lead", r"unknown lead name 'V7'"),
    ("no header", r"no \.hea header among the uploaded files \(00001_lr\.dat\)"),
    ("not WFDB", r"unsupported file\(s\) notes\.txt"),
])
def test_every_bad_upload_gets_a_clear_message(demo, real_record, how, expected):
    image, rows, message = demo.analyse(_break(real_record, how), None, CONDITIONS, INDEPENDENT)
    assert image is None and rows == []
    assert message.startswith("**Could not score the upload.**")
    assert re.search(expected, message), message
    assert str(demo.temp_root) not in message  # no temporary path shown
    assert _no_request_folders(demo)


def test_a_wrong_gain_is_scored_with_a_warning(demo, real_record):
    image, rows, message = demo.analyse(_break(real_record, "wrong gain"), None, CONDITIONS, INDEPENDENT)
    assert image is not None and len(rows) == 4
    assert re.search(r"warning: 00001_lr: implausible amplitude: median peak-to-peak 0\.0\d+ mV", message), message
    assert "check the ADC gain [100000.0] counts/mV" in message


def test_several_records_at_once_and_one_broken(demo, real_record, ptbxl_dir, tmp_path):
    other = ptbxl_dir / "records100/00000/00002_lr"
    broken = tmp_path / "00003_lr.hea"
    broken.write_text((ptbxl_dir / "records100/00000/00003_lr.hea").read_text())
    files = _files(real_record, ".hea", ".dat") + [str(other) + ".hea", str(other) + ".dat", str(broken)]
    image, rows, message = demo.analyse(files, None, "sinus rhythm, atrial fibrillation", INDEPENDENT)
    assert {row[0] for row in rows} == {"00001_lr", "00002_lr"} and len(rows) == 4
    assert "Scored 2 record(s)" in message and "the drawing shows 00001_lr" in message
    assert "not read: 00003_lr: signal file 00003_lr.dat not found" in message


def test_a_bundled_example_and_the_missing_choices(demo):
    name = sorted(demo.examples)[0]
    image, rows, message = demo.analyse(None, name, CONDITIONS, INDEPENDENT)
    assert image is not None and {row[0] for row in rows} == {"synthetic_00"}
    assert "synthetic" in name
    assert "upload a record" in demo.analyse(None, None, CONDITIONS, INDEPENDENT)[2]
    assert "unknown example 'nope'" in demo.analyse([], "nope", CONDITIONS, INDEPENDENT)[2]
    assert "at least one condition" in demo.analyse(None, name, "", INDEPENDENT)[2]


def test_the_temporary_root_is_removed_on_close(tiny_checkpoint, real_record, tmp_path, monkeypatch):
    demo = ECGDemo(str(tiny_checkpoint), temp_dir=str(tmp_path))
    seen = []
    original = shutil.copyfile

    def spy(source, target, *args, **kwargs):  # where the handler copies the uploads
        seen.append(Path(target))
        return original(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", spy)
    demo.analyse(_files(real_record, ".hea", ".dat"), None, "sinus rhythm", INDEPENDENT)
    demo.analyse(_break(real_record, "missing .dat"), None, "sinus rhythm", INDEPENDENT)
    monkeypatch.undo()
    assert seen and all(demo.temp_root in path.parents for path in seen)
    assert not any(path.exists() for path in seen)  # each request's copies are gone after it
    assert sorted(p.name for p in demo.temp_root.iterdir()) == ["gradio"]
    demo.close()
    assert not demo.temp_root.exists()


@pytest.fixture(scope="module")
def served(demo):
    """The app running on a free loopback port."""
    blocks = demo.build()
    port = free_port()
    demo.launch(blocks, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", blocks
    blocks.close()


def test_the_http_api_with_a_real_and_a_broken_record(served, demo, real_record):
    from gradio_client import Client, handle_file

    url, blocks = served
    client = Client(url, verbose=False)
    image, table, message = client.predict(
        [handle_file(p) for p in _files(real_record, ".hea", ".dat")], None, CONDITIONS, INDEPENDENT,
        api_name="/analyse",
    )
    assert message.startswith("Scored 1 record(s) against 4 condition(s)")
    assert table["headers"] == ["record", "condition", "score"]
    assert sorted(row[1] for row in table["data"]) == sorted(parse_conditions(CONDITIONS))
    from PIL import Image

    with Image.open(image) as drawing:
        assert drawing.size[0] > 800
    # the server kept the uploads in Gradio's cache inside the app's temporary root, nowhere else
    assert Path(blocks.server_app.uploaded_file_dir) == demo.upload_cache
    assert list(demo.upload_cache.rglob("00001_lr.hea"))
    assert _no_request_folders(demo)

    image, table, message = client.predict(
        [handle_file(p) for p in _break(real_record, "truncated .dat")], None, CONDITIONS, INDEPENDENT,
        api_name="/analyse",
    )
    assert image is None and not table["data"]
    assert "Could not score the upload" in message and "truncated signal file" in message


@pytest.mark.slow
def test_the_space_folder_runs_as_a_space(tiny_checkpoint, tmp_path, ptbxl_dir):
    """build_space.py writes app.py + requirements.txt + the package's source; `python app.py` serves it."""
    import os
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    space = tmp_path / "space"
    subprocess.run([sys.executable, "examples/build_space.py", "--model", str(tiny_checkpoint), "--output_dir",
                    str(space), "--num_examples", "2"], check=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert (space / "app.py").is_file() and (space / "model" / "config.json").is_file()
    requirements = (space / "requirements.txt").read_text().split()
    assert "gradio==6.31.0" in requirements and any(r.startswith("torch==") for r in requirements)
    assert all("==" in r for r in requirements)
    card = (space / "README.md").read_text()
    assert "sdk: gradio" in card and "app_file: app.py" in card
    assert sorted(p.name for p in (space / "examples").iterdir()) == [
        "synthetic_00.dat", "synthetic_00.hea", "synthetic_01.dat", "synthetic_01.hea"]
    assert not (space / "modeling_supreme" / "training").exists()
    with pytest.raises(subprocess.CalledProcessError):  # never over an existing Space folder
        subprocess.run([sys.executable, "examples/build_space.py", "--model", str(tiny_checkpoint), "--output_dir",
                        str(space)], check=True, cwd=Path(__file__).resolve().parents[1], capture_output=True)

    port = free_port()
    # As a Space runs it: from its own folder, this package taken from the folder's copy (PYTHONPATH
    # empty and the project's checkout not the working directory).
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": ""}
    code = "import runpy, sys; runpy.run_path('app.py', run_name='__main__')"
    probe = ("import modeling_supreme.app as m, processing; print(m.__file__); print(processing.__file__)")
    where = subprocess.run([sys.executable, "-c", probe], cwd=space, env=env, capture_output=True, text=True, timeout=300)
    assert where.stdout.split() == [str(space / "modeling_supreme" / "app.py"), str(space / "processing" / "__init__.py")]
    server = subprocess.Popen([sys.executable, "-c", code], cwd=space, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        for _ in range(240):
            if server.poll() is not None:
                raise AssertionError(server.stdout.read()[-3000:])
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                time.sleep(0.5)
        assert client is not None, "the Space app did not start"
        record = ptbxl_dir / RECORD
        _, table, message = client.predict([handle_file(str(record) + ".hea"), handle_file(str(record) + ".dat")],
                                           None, "sinus rhythm, atrial fibrillation", SOFTMAX, api_name="/analyse")
        assert message.startswith("Scored 1 record(s) against 2 condition(s)"), message
        assert sum(row[2] for row in table["data"]) == pytest.approx(1.0, abs=1e-3)
        _, table, message = client.predict(None, "synthetic_01", "sinus rhythm", INDEPENDENT, api_name="/analyse")
        assert [row[0] for row in table["data"]] == ["synthetic_01"], message
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_the_command_line_app_serves_its_examples_and_cleans_up(tiny_checkpoint, tmp_path):
    """`python examples/app.py --model CKPT --port P`: a bundled example through the API, then `kill`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from gradio_client import Client

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "examples/app.py", "--model", str(tiny_checkpoint), "--port", str(port), "--num_examples", "2"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        root = None
        for line in server.stdout:  # the app says where its temporary folder is, then serves
            match = re.search(r"are kept in (\S+) while it runs", line)
            if match:
                root = Path(match.group(1))
                break
        assert root is not None and root.is_dir()
        client = None
        for _ in range(240):
            assert server.poll() is None, "the app stopped"
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                time.sleep(0.5)
        assert client is not None
        api = client.view_api(return_format="dict", print_info=False)
        assert "/analyse" in api["named_endpoints"]
        _, table, message = client.predict(None, None, "sinus rhythm", INDEPENDENT, api_name="/analyse")
        assert "upload a record" in message
        assert sorted(p.stem for p in (root / "examples").glob("*.hea")) == ["synthetic_00", "synthetic_01"]
        # the dropdown's names (the same generator, the same seed) say the records are synthetic
        names = sorted(load_example("app").write_synthetic_examples(tmp_path, count=2))
        assert names[1].startswith("synthetic_01 (synthetic: ")
        image, table, message = client.predict(None, names[1], "sinus rhythm, atrial fibrillation", SOFTMAX,
                                               api_name="/analyse")
        assert image is not None and [row[0] for row in table["data"]] == ["synthetic_01"] * 2, message
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert not root.exists()


def test_a_real_challenge_record_in_mat_format(demo, cinc2021_dir):
    record = cinc2021_dir / "E07500"
    image, rows, message = demo.analyse([str(record) + ".hea", str(record) + ".mat"], None, CONDITIONS, SOFTMAX)
    assert message.startswith("Scored 1 record(s) against 4 condition(s)"), message
    assert {row[0] for row in rows} == {"E07500"} and image is not None
    _, _, message = demo.analyse([str(record) + ".hea"], None, CONDITIONS, SOFTMAX)
    assert "E07500: signal file E07500.mat not found" in message


def test_uploads_over_the_size_cap_are_refused(served, demo, tmp_path):
    import requests

    from modeling_supreme.app import MAX_UPLOAD_SIZE

    url, _ = served
    assert MAX_UPLOAD_SIZE == "25mb"
    big = tmp_path / "huge.dat"
    big.write_bytes(b"\0" * (26 * 2**20))
    with open(big, "rb") as handle:
        answer = requests.post(url + "gradio_api/upload", files={"files": ("huge.dat", handle)}, timeout=120)
    assert answer.status_code == 413 and "maximum" in answer.text.lower()
    assert not list(demo.upload_cache.rglob("huge.dat"))  # nothing of it kept
    small = tmp_path / "small.dat"
    small.write_bytes(b"\0" * 1024)
    with open(small, "rb") as handle:
        assert requests.post(url + "gradio_api/upload", files={"files": ("small.dat", handle)}, timeout=60).ok
