"""The fast inference paths (fused QKV/KV products, oneDNN fused linear + GELU, absorbed cross-attention,
int8) give the results of the plain computation, keep checkpoint keys, and the int8 pipeline scores stay
within 0.06 of float32 on real records (the 0.01 target is not met on the test checkpoint)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import pipeline

import modeling_supreme  # noqa: F401  (registers the task)
from modeling_supreme import SuPreMEConfig, SuPreMEModel
from modeling_supreme.modeling_supreme import SuPreMEAttention, SuPreMEMLP

LABELS = ["atrial fibrillation", "sinus rhythm", "left bundle branch block", "ST elevation", "low QRS voltage"]


def plain_attention(module: SuPreMEAttention, x, context=None, key_mask=None):
    """Separate Q, K and V projections and softmax attention, written out."""
    context = x if context is None else context
    heads = lambda t: t.unflatten(-1, (module.num_heads, module.head_dim)).transpose(1, 2)  # noqa: E731
    q, k, v = heads(module.q_proj(x)), heads(module.k_proj(context)), heads(module.v_proj(context))
    scores = q @ k.transpose(-1, -2) / module.head_dim**0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return module.o_proj((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("queries", [5, 100])  # 5: absorbed cross-attention; 100: projected K and V
def test_cross_attention_paths_match_the_plain_computation(masked, queries):
    torch.manual_seed(0)
    module = SuPreMEAttention(256, 4, 0.1).eval()
    x, memory = torch.randn(3, queries, 256), torch.randn(3, 100, 256)
    key_mask = None
    if masked:
        key_mask = torch.ones(3, 100, dtype=torch.bool)
        key_mask[1, 60:] = False
    with torch.no_grad():
        torch.testing.assert_close(module(x, memory, key_mask), plain_attention(module, x, memory, key_mask),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_self_attention_and_mlp_match_the_plain_computation(grad):
    torch.manual_seed(0)
    attention, mlp = SuPreMEAttention(192, 3, 0.1).eval(), SuPreMEMLP(192, 768, 0.1).eval()
    x = torch.randn(4, 100, 192)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(attention(x), plain_attention(attention, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))), rtol=1e-5, atol=1e-5)


def test_model_inference_path_matches_the_autograd_path_and_keeps_checkpoint_keys():
    torch.manual_seed(0)
    model = SuPreMEModel(SuPreMEConfig(ecg_num_layers=2)).eval()
    keys = set(model.state_dict())
    assert {"ecg_encoder.layers.0.attention.q_proj.weight", "ecg_encoder.layers.0.attention.k_proj.weight",
            "ecg_encoder.layers.0.attention.v_proj.weight", "fusion_layers.0.cross_attention.k_proj.bias"} <= keys
    x, queries = torch.randn(3, 12, 5000), torch.randn(5, 384)
    attention_mask = torch.ones(3, 5000, dtype=torch.bool)
    attention_mask[2, 3000:] = False
    with torch.no_grad():  # oneDNN fused linear layers, absorbed cross-attention
        fast = model(x, attention_mask=attention_mask, query_embeds=queries).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_bf16 = model(x, attention_mask=attention_mask, query_embeds=queries).logits
    reference = model(x, attention_mask=attention_mask, query_embeds=queries).logits.detach()  # autograd: nn.Linear
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert (fast_bf16.sigmoid() - reference.sigmoid()).abs().max() < 0.01


def test_int8_pipeline_scores_stay_close_to_fp32_on_real_records(tiny_checkpoint, ptbxl_dir):
    classifier = pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))
    paths = [str(path.with_suffix("")) for path in sorted((ptbxl_dir / "records500").glob("*/*_hr.hea"))[:48]]
    fp32 = classifier(paths, candidate_labels=LABELS, batch_size=16)
    int8 = classifier(paths, candidate_labels=LABELS, batch_size=16, quantization="int8")
    gaps = [abs({r["label"]: r["score"] for r in a}[label] - {r["label"]: r["score"] for r in b}[label])
            for a, b in zip(fp32, int8) for label in LABELS]
    spread = max(r["score"] for res in fp32 for r in res) - min(r["score"] for res in fp32 for r in res)
    assert spread > 0.2, spread  # the scores move, so a gap could show
    # The issue asks for 0.01; on this untrained checkpoint (logit head x20) int8 reaches about 0.05,
    # reported as not met. The bound guards against a regression beyond that.
    assert max(gaps) < 0.06, max(gaps)
    assert max(gaps) > 0  # the int8 path really ran
    # the int8 copy is made once per pipeline and leaves the float model untouched
    assert isinstance(classifier.model.ecg_encoder.layers[0].mlp.fc1, torch.nn.Linear)
    quantized = classifier._quantized[1]
    classifier(paths[:2], candidate_labels=LABELS, quantization="int8")
    assert classifier._quantized[1] is quantized


def test_bad_quantization_is_refused(tiny_checkpoint):
    classifier = pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))
    with pytest.raises(ValueError, match="quantization must be one of"):
        classifier([[0.0] * 5000] * 12, sampling_rate=500, lead_names=["I"] * 12, candidate_labels=LABELS,
                   quantization="int4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs it there)")
def test_cuda_pipeline_scores_match_cpu(tiny_checkpoint, generated_records):
    paths = [str(path) for path in generated_records["hr"]]
    cpu = pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))
    cuda = pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint), device="cuda")
    expected = cpu(paths, candidate_labels=LABELS, batch_size=4)
    for extra in ({}, {"autocast_dtype": "bfloat16"}):
        got = cuda(paths, candidate_labels=LABELS, batch_size=4, **extra)
        gaps = [abs({r["label"]: r["score"] for r in a}[label] - {r["label"]: r["score"] for r in b}[label])
                for a, b in zip(expected, got) for label in LABELS]
        assert max(gaps) < (1e-3 if not extra else 0.02), (extra, max(gaps))
    with pytest.raises(ValueError, match="CPU only"):
        cuda(paths[:1], candidate_labels=LABELS, quantization="int8")


def test_bf16_inference_without_native_bf16_falls_back_to_plain_linear(monkeypatch):
    """oneDNN builds no bf16 inner-product primitive on CPUs without AVX-512 BF16/AMX (bf16 autocast then
    raised "could not create a primitive descriptor" on an AVX2-only EPYC): the fused path steps aside."""
    from modeling_supreme import modeling_supreme as modeling

    monkeypatch.setattr(modeling, "_HAS_ONEDNN_BF16", False)
    torch.manual_seed(0)
    model = SuPreMEModel(SuPreMEConfig(ecg_num_layers=2)).eval()
    x, queries = torch.randn(2, 12, 5000), torch.randn(3, 384)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert modeling._onednn_dtype(x) is None
        emulated = model(x, query_embeds=queries).logits
    with torch.no_grad():
        assert modeling._onednn_dtype(x) == torch.float32  # fp32 keeps the fused kernels
        reference = model(x, query_embeds=queries).logits
    assert (emulated.float().sigmoid() - reference.sigmoid()).abs().max() < 0.01
    assert modeling._HAS_ONEDNN_BF16 is False
    monkeypatch.undo()
    assert modeling._HAS_ONEDNN_BF16 == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _conv1d(conv, x):
    return F.conv1d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _batch_norm1d(norm, x):
    # The 1-D batch norm of the same parameters (training statistics are not updated here).
    return F.batch_norm(x, norm.running_mean.clone(), norm.running_var.clone(), norm.weight, norm.bias,
                        norm.training, norm.momentum, norm.eps)


def _resnet_1d(encoder, x):
    stem_conv, stem_norm, _, pool = encoder.stem
    h = F.max_pool1d(F.relu(_batch_norm1d(stem_norm, _conv1d(stem_conv, x))), 3, 2, 1)
    for block in encoder.stages:
        out = F.relu(_batch_norm1d(block.bn1, _conv1d(block.conv1, h)))
        out = _batch_norm1d(block.bn2, _conv1d(block.conv2, out))
        shortcut = h if block.shortcut is None else _batch_norm1d(block.shortcut[1], _conv1d(block.shortcut[0], h))
        h = F.relu(out + shortcut)
    return h


def _conv_stem_1d(stem, x):
    usable = x.shape[-1] - x.shape[-1] % stem.patch_size
    h = F.gelu(_batch_norm1d(stem.norm1, _conv1d(stem.conv1, x[..., :usable])))
    h = F.gelu(_batch_norm1d(stem.norm2, _conv1d(stem.conv2, h)))
    return _conv1d(stem.patchify, h)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("layout", ["conv", "linear", "resnet1d"])
def test_channels_last_convolutions_match_the_1d_computation(layout, training):
    """The encoders' convolutions run as 2-D channels-last kernels (`SuPreMEConv1d`, `_as_rows`); their
    outputs and gradients must be those of the plain 1-D convolutions and batch norms of the same
    parameters, so that checkpoints written before the change score the same."""
    from modeling_supreme.modeling_supreme import _as_rows

    kwargs = {"ecg_encoder_type": "resnet1d", "patch_size": 32} if layout == "resnet1d" else {"ecg_patch_embedding": layout}
    torch.manual_seed(0)
    encoder = SuPreMEModel(SuPreMEConfig(ecg_num_layers=1, **kwargs)).ecg_encoder
    for module in encoder.modules():  # running statistics other than 0/1, so that eval mode uses them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    encoder.train(training)

    def both(x):
        if layout == "resnet1d":
            return encoder.stages(encoder.stem(_as_rows(x))).squeeze(2), _resnet_1d(encoder, x)
        if layout == "conv":
            return encoder.patch_embedding(_as_rows(x)).squeeze(2), _conv_stem_1d(encoder.patch_embedding, x)
        return encoder.patch_embedding(_as_rows(x)).squeeze(2), _conv1d(encoder.patch_embedding, x)

    # Outputs in float32, through the oneDNN kernels that inference uses.
    x = torch.randn(3, 12, 4990)  # not a whole number of patches
    with torch.no_grad():
        ours, reference = both(x)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    # Gradients in float64: in float32, rounding differences flip a few ReLUs whose input is within
    # 1e-6 of 0, and the ResNet's later stages carry those flips back to the input.
    encoder.double()
    x = x.double().requires_grad_()
    weight = next(encoder.parameters())
    ours, reference = both(x)
    grad_ours = torch.autograd.grad(ours.square().sum(), (x, weight))
    grad_reference = torch.autograd.grad(reference.square().sum(), (x, weight))
    for a, b in zip(grad_ours, grad_reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_conv_stem_inference_folds_batch_norm_and_fuses_gelu(monkeypatch):
    """CPU inference runs the ViT stem with each batch norm folded into its convolution and conv + GELU as one
    oneDNN primitive (`SuPreMEConvStem._fused_inference`); it must give the training-mode graph's result in
    eval mode, in float32 and under bf16 autocast, and step aside under autograd and in training mode."""
    from modeling_supreme import modeling_supreme as modeling
    from modeling_supreme.modeling_supreme import SuPreMEConvStem, _as_rows

    if not modeling._HAS_ONEDNN_CONV:
        pytest.skip("this torch build has no oneDNN fused convolution; the stem runs F.conv2d")
    torch.manual_seed(0)
    stem = SuPreMEConvStem(SuPreMEConfig(ecg_num_layers=1)).eval()
    for norm in (stem.norm1, stem.norm2):  # statistics and affine parameters far from the defaults
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.3, 3.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.3, 0.3)
    calls = []
    fused = SuPreMEConvStem._fused_inference
    monkeypatch.setattr(SuPreMEConvStem, "_fused_inference", lambda self, *a: calls.append(a[1]) or fused(self, *a))
    rows = _as_rows(torch.randn(2, 12, 4990))

    reference = stem(rows).detach()  # grad enabled: the plain convolutions and batch norms
    assert calls == []
    with torch.no_grad():
        fast = stem(rows)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_bf16 = stem(rows)
    assert calls[0] == torch.float32
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    if modeling._HAS_ONEDNN_BF16:
        assert calls[1] == torch.bfloat16 and fast_bf16.dtype == torch.bfloat16
        relative = (fast_bf16.float() - reference).norm() / reference.norm()
        assert relative < 0.02, f"bf16 stem off by {relative:.4f} (relative L2)"
    stem.train()
    with torch.no_grad():
        stem(rows)
    assert len(calls) == (2 if modeling._HAS_ONEDNN_BF16 else 1)  # training mode: batch statistics, not folded


@pytest.mark.parametrize("amx", [False, True])
def test_bf16_self_attention_forms_agree(monkeypatch, amx):
    """bf16 CPU inference writes attention out as matmul-softmax-matmul without AMX and calls the fused kernel
    with AMX (each the faster one there); both must give the plain float32 attention up to bf16 rounding,
    with and without a key mask. Both branches run here whatever this CPU has."""
    from modeling_supreme import modeling_supreme as modeling

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bf16: bf16 inference is emulated and not timed or tested here")
    monkeypatch.setattr(modeling, "_CPU_HAS_AMX", amx)
    torch.manual_seed(0)
    attention = SuPreMEAttention(192, 3, 0.1).eval()
    x = torch.randn(4, 100, 192)
    key_mask = torch.ones(4, 100, dtype=torch.bool)
    key_mask[2, 70:] = False
    for mask in (None, key_mask):
        reference = plain_attention(attention, x, key_mask=mask)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            got = attention(x, key_mask=mask)
        assert got.dtype == torch.bfloat16
        relative = (got.float() - reference).norm() / reference.norm()
        assert relative < 0.02, f"amx={amx}, masked={mask is not None}: relative L2 error {relative:.4f}"


def test_int8_ceiling_benchmark_prints_its_figures_and_refuses_bad_arguments():
    """`benchmarks/bench_int8_ceiling.py` backs the README's statement of what int8 can reach on a CPU: it runs
    end to end at a tiny batch and prints every figure the README quotes; bad arguments stop it first."""
    import subprocess
    import sys
    from pathlib import Path

    from modeling_supreme.training import bf16_is_native

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_int8_ceiling.py"
    for argv, message in ((["--batch_size", "0"], "--batch_size must be at least 1"),
                          (["--repeats", "0"], "--repeats must be at least 1"),
                          (["--threads", "0"], "--threads must be at least 1")):
        done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr
    done = subprocess.run([sys.executable, str(script), "--batch_size", "2", "--repeats", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    if not bf16_is_native("cpu"):
        assert done.returncode != 0 and "no native bf16" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("matmul peak (2048^3, median)", "qkv", "mlp fc2", "all 48 products per forward",
                 "target, 2x MERL bf16", "projected int8 forward", "quantisation fused away", "bound with free Linear products"):
        assert line in done.stdout
    # int8 products agree with the float product to a few percent of its largest value (8-bit resolution).
    errors = [float(part.split(" of max")[0]) for part in done.stdout.split("int8 error ")[1:]]
    assert len(errors) == 4 and max(errors) < 0.05


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_inference_shortcuts_match_the_autograd_path():
    """CPU bf16 inference casts the signal once before the stem, skips the masking when nothing is padded, and casts
    the fusion memory once; the autograd path (plain modules, autocast's own casts) must give the same scores, with
    and without padding (padded samples must still be zeroed before the stem reaches across them)."""
    torch.manual_seed(0)
    model = SuPreMEModel(SuPreMEConfig(ecg_num_layers=2)).eval()
    x, queries = torch.randn(3, 12, 5000), torch.randn(4, 384)
    padded = torch.ones(3, 5000, dtype=torch.bool)
    padded[1, 3000:] = False
    x_noisy_padding = x.clone()
    x_noisy_padding[1, :, 3000:] = 50.0  # what a caller might leave in the padding
    for signal, mask in ((x, torch.ones(3, 5000, dtype=torch.bool)), (x_noisy_padding, padded)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                fast = model(signal, attention_mask=mask, query_embeds=queries).logits.float()
            reference = model(signal, attention_mask=mask, query_embeds=queries).logits.float().detach()
        assert (fast.sigmoid() - reference.sigmoid()).abs().max() < 0.01
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the padding's content does not matter
        clean = model(x * padded[:, None, :], attention_mask=padded, query_embeds=queries).logits.float()
        noisy = model(x_noisy_padding, attention_mask=padded, query_embeds=queries).logits.float()
    assert torch.equal(clean, noisy)


def test_training_benchmark_times_each_dropout_and_refuses_bad_rates():
    """`benchmarks/bench_training.py` backs the README's training-throughput rows, with and without dropout."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"
    done = subprocess.run([sys.executable, str(script), "--dropouts", "0.1", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--dropouts must be in [0, 1), got [1.0]" in done.stderr
    done = subprocess.run([sys.executable, str(script), "--encoders", "vit:tiny", "--dropouts", "0.1", "0", "--batch_size", "2",
                           "--steps", "1", "--records", "8", "--loader_batches", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| pre-training step")]
    assert [row.split("|")[1].split(", ")[-1].strip() for row in rows] == ["dropout 0.1", "dropout 0"]
    assert all(float(row.split("|")[2]) > 0 for row in rows) and "| data loader alone" in done.stdout
