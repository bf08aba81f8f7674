"""Shared fixtures.

Real records come from ``$SUPREME_SHARED_DATA`` (default ``../shared/data``); tests that use them are
marked ``real_data`` automatically and skip with the reason when the folder is absent. Everything
else runs on generated fixtures: ``generated_records`` (WFDB files written here from the synthetic
beat model, in PTB-XL's and the Challenge's layouts) and ``tiny_checkpoint`` (a small saved model).
``hub_stand_in`` serves a loopback stand-in of the Hub's upload API (:class:`HubStandIn`).
"""

import base64
import hashlib
import importlib.util
import json
import os
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SUPREME_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real ECG records not found at {path} (set SUPREME_SHARED_DATA to the shared data folder)")
    return path


REAL_DATA_FIXTURES = {"shared_data", "ptbxl_dir", "cinc2021_dir", "snomed_dir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require("")


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    return _require("ptbxl")


@pytest.fixture(scope="session")
def cinc2021_dir() -> Path:
    return _require("cinc2021")


@pytest.fixture(scope="session")
def snomed_dir() -> Path:
    return _require("snomed")


# The first lines of a script run in a clean interpreter: importing any package of this project fails
# there, as where only a checkpoint's or a dataset's files are at hand.
REFUSE_PROJECT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    PROJECT = ("modeling_supreme", "processing", "datasets_scripts")

    class RefuseProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in PROJECT:
                raise ImportError(f"the project package {name} must not be needed")

    sys.meta_path.insert(0, RefuseProject())
    """
)


def load_example(name: str):
    """An ``examples/`` script as a module (its functions callable), loaded from its file path."""
    return _load_script("examples", name)


def load_benchmark(name: str):
    """A ``benchmarks/`` script as a module, loaded from its file path."""
    return _load_script("benchmarks", name)


def _load_script(folder: str, name: str):
    path = REPO_ROOT / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


# The generated records: 8 ECGs of the synthetic beat model (different rhythms and findings), written
# the way PTB-XL writes them (format-16 .dat, leads I..V6 spelled AVR/AVL/AVF) at 500 Hz and, resampled,
# at 100 Hz; plus 2 Challenge-style records (MATLAB v4 .mat, 500 Hz).
PTBXL_LEAD_SPELLING = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
GENERATED_COUNT = 8


@pytest.fixture(scope="session")
def generated_records(tmp_path_factory) -> dict:
    """``{"hr": [8 paths at 500 Hz], "lr": [the same 8 at 100 Hz], "mat": [2 .mat paths], "signals": [...]}``."""
    from scipy.signal import resample_poly

    from datasets_scripts.testing import example_signal, write_wfdb_dat, write_wfdb_mat

    root = tmp_path_factory.mktemp("generated_records")
    out = {"hr": [], "lr": [], "mat": [], "signals": []}
    for index in range(GENERATED_COUNT):
        signal = example_signal(index, seed=11)
        out["signals"].append(signal)
        out["hr"].append(write_wfdb_dat(root / "records500", f"{index:05d}_hr", signal, lead_names=PTBXL_LEAD_SPELLING))
        low = resample_poly(signal, 1, 5, axis=1)
        out["lr"].append(write_wfdb_dat(root / "records100", f"{index:05d}_lr", low, fs=100, lead_names=PTBXL_LEAD_SPELLING))
    for index in range(2):
        out["mat"].append(write_wfdb_mat(root / "challenge", f"E{index:05d}", example_signal(100 + index, seed=11)))
    return out


TINY_LABELS = ("atrial fibrillation", "sinus rhythm", "left bundle branch block", "ST elevation", "low QRS voltage")


@pytest.fixture(scope="session")
def synthetic_pretraining_corpus(tmp_path_factory) -> dict:
    """Entities for a 160-record synthetic corpus (lexicon, as a user would extract them) and a cache folder."""
    from datasets_scripts import iter_reports
    from processing.reports.entities_file import run_extraction
    from processing.reports.extraction import create_backend

    folder = tmp_path_factory.mktemp("pretraining_corpus")
    entities = folder / "entities.jsonl"
    run_extraction(iter_reports("synthetic", num_records=160, seed=1), entities, create_backend("lexicon"), progress=False)
    return {"entities": str(entities), "cache": str(folder / "cache")}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, generated_records) -> Path:
    """A saved 12-lead 500 Hz model (4 ViT layers) whose scores spread around 0.5.

    A new model's logit head starts near zero, so every score would be about 0.5. Scaling the head and
    centring its bias on the generated records spreads this untrained model's scores, so that tests
    comparing scores can fail.
    """
    import torch

    from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_num_layers=4)
    model = SuPreMEModel(config).eval()
    processor = ECGProcessor.from_config(config)
    inputs = processor(ecg=[str(path) for path in generated_records["hr"]], text=list(TINY_LABELS), return_tensors="pt")
    with torch.no_grad():
        model.logit_head.weight.mul_(20.0)
        model.logit_head.bias.sub_(model(**inputs).logits.mean())
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class HubStandIn(BaseHTTPRequestHandler):
    """A loopback stand-in for the Hub's upload API: what create_repo, upload_folder (with
    delete_patterns) and a card's YAML check call, recording what it receives.

    It answers ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST .../preupload/<rev>``
    (every file "regular", so bodies come inline in the commit), ``POST .../commit/<rev>`` (NDJSON:
    added files base64, deleted files) and ``GET .../tree/<rev>`` (the files committed so far); for
    downloads (``snapshot_download``, ``from_pretrained`` of a Hub id) ``GET /api/models/<repo>/revision/<rev>``
    and ``HEAD``/``GET /<repo>/resolve/<rev>/<path>`` serve the files committed so far. It
    does not exercise the large-file (LFS/Xet) transfer path. The class attributes hold the state;
    :func:`hub_stand_in` gives each test a fresh copy.
    """

    received = {}  # path -> bytes of every file committed (the latest version)
    deleted = []  # paths deleted by commits
    created = []  # create_repo requests
    commits = []  # per commit: {"added": [...], "deleted": [...]}
    card_metadata = None

    def log_message(self, *args):
        pass

    def _reply(self, payload, status=200):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if "/tree/" in self.path:
            cls = type(self)
            return self._reply([{"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                                for path, data in sorted(cls.received.items())])
        if self.path.startswith("/api/models/"):  # repo_info, as snapshot_download asks it: the files held
            repo = self.path.split("?")[0][len("/api/models/"):].split("/revision/")[0]
            return self._reply({"id": repo, "sha": self.COMMIT, "private": False,
                                "siblings": [{"rfilename": path} for path in sorted(type(self).received)]})
        if "/resolve/" in self.path:
            return self._serve_file(body=True)
        return self._reply({"error": f"unexpected GET {self.path}"}, status=404)

    COMMIT = "1" * 40

    def do_HEAD(self):
        if "/resolve/" in self.path:
            return self._serve_file(body=False)
        self.send_response(404)
        self.end_headers()

    def _serve_file(self, body: bool):
        """``/<repo>/resolve/<rev>/<path>``: a committed file, with the headers hf_hub_download checks."""
        path = self.path.split("?")[0].split("/resolve/", 1)[1].split("/", 1)[1]
        data = type(self).received.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_POST(self):
        cls = type(self)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/api/repos/create":
            request = json.loads(body)
            cls.created.append(request)
            repo = f"{request.get('organization')}/{request['name']}"
            return self._reply({"url": f"http://{self.headers['Host']}/{repo}", "name": request["name"]})
        if self.path == "/api/validate-yaml":  # a card's front matter must be valid YAML
            import yaml

            content = json.loads(body)["content"]
            try:
                cls.card_metadata = yaml.safe_load(content.split("---")[1])
            except (yaml.YAMLError, IndexError) as error:
                return self._reply({"errors": [{"message": str(error)}]}, status=400)
            return self._reply({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in self.path:
            commit = {"added": [], "deleted": []}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    cls.received[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    commit["added"].append(item["value"]["path"])
                elif item.get("key") == "deletedFile":
                    cls.received.pop(item["value"]["path"], None)
                    cls.deleted.append(item["value"]["path"])
                    commit["deleted"].append(item["value"]["path"])
            cls.commits.append(commit)
            repo = self.path.split("/api/", 1)[1].split("/", 1)[1].rsplit("/commit/", 1)[0]
            return self._reply({"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{'0' * 40}",
                                "commitOid": "0" * 40, "pullRequestUrl": None})
        return self._reply({"error": f"unexpected {self.path}"}, status=404)


@pytest.fixture
def hub_stand_in():
    """``(endpoint URL, handler class)`` of a fresh :class:`HubStandIn` serving on a loopback port."""
    handler = type("HubStandInForTest", (HubStandIn,), {"received": {}, "deleted": [], "created": [], "commits": [],
                                                         "card_metadata": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
