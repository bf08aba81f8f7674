"""A saved checkpoint loads with trust_remote_code=True in an interpreter where this project is absent."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import modeling_supreme  # noqa: F401
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

from conftest import REFUSE_PROJECT

CHILD = REFUSE_PROJECT + textwrap.dedent(
    """

    import numpy as np, torch
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    signal = np.load(sys.argv[2])
    inputs = processor(ecg=signal, sampling_rate=100, lead_names=["i", "II", "iii", "AVR", "AVL", "AVF",
                       "V1", "V2", "V3", "V4", "V5", "V6"], text=["sinus rhythm", "atrial fibrillation"],
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    loaded = [m for m in sys.modules if m.split(".")[0] in PROJECT]
    print(json.dumps({"logits": logits.tolist(), "model": type(model).__module__, "processor": type(processor).__name__,
                      "extractor": type(extractor).__name__, "config": type(config).__name__, "project_modules": loaded}))
    """
)


@pytest.mark.slow
def test_checkpoint_loads_as_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_num_layers=2, fusion_num_layers=1, sampling_rate=250, num_samples=2500)
    model = SuPreMEModel(config).eval()
    processor = ECGProcessor.from_config(config)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_supreme.SuPreMEConfig",
                                 "AutoModel": "modeling_supreme.SuPreMEModel"}
    for name in ("configuration_supreme.py", "modeling_supreme.py", "processing_supreme.py",
                 "feature_extraction_supreme.py", "ecg_leads.py", "wfdb_reader.py"):
        assert (tmp_path / "ckpt" / name).is_file(), name

    signal = np.random.default_rng(0).standard_normal((12, 1000)).astype(np.float32)
    np.save(tmp_path / "signal.npy", signal)
    inputs = processor(ecg=signal, sampling_rate=100, lead_names=config.lead_names,
                       text=["sinus rhythm", "atrial fibrillation"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    script = f"REPO = {repo!r}\n" + CHILD
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ckpt"), str(tmp_path / "signal.npy")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["project_modules"] == []
    assert result["model"].startswith("transformers_modules.")
    assert (result["processor"], result["extractor"], result["config"]) == ("ECGProcessor", "ECGFeatureExtractor", "SuPreMEConfig")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-5)
