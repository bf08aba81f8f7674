"""SuPreME model: an ECG encoder, a frozen text encoder for cardiac queries, and the Cardiac Fusion
Network in which each query attends to the ECG tokens and yields one logit.

This file is copied next to every saved checkpoint as remote code: it may import only its siblings
`configuration_supreme` and `pipeline_supreme` (relatively) and installed libraries.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple

from .configuration_supreme import SuPreMEConfig

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


@dataclass
class SuPreMEOutput(ModelOutput):
    """
    Output of [`SuPreMEModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Multi-label loss (BCE or asymmetric) averaged over the labelled (ECG, query) pairs.
        logits (`torch.FloatTensor` of shape `(batch_size, num_queries)`):
            One independent logit per ECG and query; `sigmoid(logits)` is the probability that the
            condition of the query is present.
        ecg_embeds (`torch.FloatTensor` of shape `(batch_size, ecg_hidden_size)`):
            Masked mean of the ECG tokens: the global ECG representation (for linear probes).
        ecg_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, ecg_hidden_size)`):
            ECG tokens from the last encoder layer.
        ecg_token_mask (`torch.BoolTensor` of shape `(batch_size, num_tokens)`):
            Which ECG tokens cover real signal (False for padding).
        query_embeds (`torch.FloatTensor` of shape `(num_queries, text_hidden_size)`):
            Pooled text-encoder embeddings of the queries.
        fused_query_states (`torch.FloatTensor` of shape `(batch_size, num_queries, fusion_hidden_size)`):
            Query states after the fusion network, before the logit head.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ecg_embeds: torch.FloatTensor | None = None
    ecg_last_hidden_state: torch.FloatTensor | None = None
    ecg_token_mask: torch.BoolTensor | None = None
    query_embeds: torch.FloatTensor | None = None
    fused_query_states: torch.FloatTensor | None = None


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


# A private torch op: checked once, so a torch build without it (or a later release that drops it) falls
# back to `F.linear` instead of failing in a checkpoint's remote code.
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# The same for the fused convolution (+ GELU) of the ViT's convolutional stem; without it, `F.conv2d`.
_HAS_ONEDNN_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# With AMX tiles the fused CPU attention kernel wins in bf16 too: measured on a 2-core Xeon with AMX
# (2026-12-03, batch 64, 3 heads x 100 tokens x 64): 2.85 against 3.47 ms per layer for matmul-softmax-matmul,
# 1.03x for the whole bf16 forward. Without AMX the written-out form is the faster one (see SuPreMEAttention).
_CPU_HAS_AMX = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
# oneDNN creates no bf16 inner-product primitive on CPUs without native bf16 support (AVX-512 BF16 or
# AMX; seen on an AVX2-only AMD EPYC): there bf16 goes through `F.linear` as autocast would.
_HAS_ONEDNN_BF16 = _HAS_ONEDNN_LINEAR and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def _onednn_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype in which oneDNN's fused linear kernels may replace `nn.Linear` here, or None.

    Only for CPU inference (no autograd) in float32 or bfloat16 (given, or chosen by CPU autocast).
    """
    if x.device.type != "cpu" or torch.is_grad_enabled() or not _HAS_ONEDNN_LINEAR:
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    else:
        dtype = x.dtype if x.dtype in (torch.float32, torch.bfloat16) else None
    return None if dtype == torch.bfloat16 and not _HAS_ONEDNN_BF16 else dtype


def _onednn_linear(x, weight, bias, activation: str = "none"):
    """`activation(x @ weight.T + bias)` as one oneDNN primitive, in `_onednn_dtype(x)`.

    Measured on CPU at ECG sizes (6,400 tokens x 192 -> 768): `nn.Linear` first copies the bias into
    the output and then accumulates the product, and GELU is one more pass over the widest activation;
    the fused primitive adds the bias and applies GELU (erf) while writing the product. Bit-identical
    in float32 here and about half the time; in bf16 the same rounding as autocast.
    """
    dtype = _onednn_dtype(x)
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), activation, [], "none"
    )


class SuPreMEAttention(nn.Module):
    """Multi-head attention; self-attention when `context` is None.

    The checkpoint keeps separate `q_proj`, `k_proj` and `v_proj` weights, but the forward pass runs
    them as one matrix product (QKV for self-attention, KV for cross-attention): on CPU one wide GEMM
    is faster than three narrow ones, and concatenating the weights costs little next to the product.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, context_size: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(context_size or hidden_size, hidden_size)
        self.v_proj = nn.Linear(context_size or hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _project(self, hidden_states, context):
        if not isinstance(self.k_proj, nn.Linear):  # replaced, e.g. by an int8 quantised layer
            context = hidden_states if context is None else context
            q, k, v = self.q_proj(hidden_states), self.k_proj(context), self.v_proj(context)
        else:
            linear = _onednn_linear if _onednn_dtype(hidden_states) is not None else F.linear
            if context is None:
                weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
                bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
                q, k, v = linear(hidden_states, weight, bias).chunk(3, dim=-1)
            else:
                q = linear(hidden_states, self.q_proj.weight, self.q_proj.bias)
                weight = torch.cat([self.k_proj.weight, self.v_proj.weight])
                bias = torch.cat([self.k_proj.bias, self.v_proj.bias])
                k, v = linear(context, weight, bias).chunk(2, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def _absorbed_cross_attention(self, hidden_states, context, key_mask):
        """Cross-attention without projecting the context, for few queries against many tokens.

        Per head h, `q_h K_h^T = (q_h W_k,h) C^T + q_h b_k,h`, whose last term is the same for every key
        and drops out of the softmax, and `A_h V_h = (A_h C) W_v,h^T + b_v,h` because each row of the
        attention weights A_h sums to one. With 5 queries and 100 ECG tokens this replaces the K and V
        projections of every token by products the size of the queries. Same result up to rounding.
        """
        batch, num_queries, _ = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self._heads(self.q_proj(hidden_states))  # (batch, heads, queries, head_dim)
        key_weight = self.k_proj.weight.view(heads, head_dim, -1)  # (heads, head_dim, context)
        value_weight = self.v_proj.weight.view(heads, head_dim, -1)
        query_keys = torch.matmul(q, key_weight) * (head_dim**-0.5)  # (batch, heads, queries, context)
        # Heads and queries as one axis of a batched product with the shared context: broadcasting the
        # context over a heads axis instead materialised a copy of it per head (a profile of the bf16
        # forward at batch 64 put those copies at about 4% of the time).
        scores = torch.matmul(query_keys.flatten(1, 2), context.transpose(-1, -2)).view(batch, heads, num_queries, -1)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = scores.float().softmax(dim=-1).to(scores.dtype)
        pooled = torch.matmul(weights.flatten(1, 2), context).view(batch, heads, num_queries, -1)  # (.., context)
        out = torch.matmul(pooled, value_weight.transpose(-1, -2)) + self.v_proj.bias.view(heads, 1, head_dim)
        return self.o_proj(out.transpose(1, 2).flatten(2))

    def forward(self, hidden_states, context=None, key_mask=None):
        if (
            context is not None
            and isinstance(self.k_proj, nn.Linear)
            # Inference only: this form never uses k_proj.bias (it cancels in the softmax), so under autograd
            # that parameter would get no gradient at all and DDP would stop on an unused parameter.
            and not torch.is_grad_enabled()
            and hidden_states.shape[1] * self.num_heads < context.shape[-1]
        ):
            return self._absorbed_cross_attention(hidden_states, context, key_mask)
        q, k, v = self._project(hidden_states, context)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not (self.training and self.dropout > 0) \
                and not _CPU_HAS_AMX:
            # Measured on CPU at ECG lengths (about 100 tokens): on an AVX-512 BF16 CPU without AMX,
            # matmul-softmax-matmul in bf16 takes half the time of the fused CPU attention kernel (in fp32
            # the fused kernel is the faster one); softmax accumulates in fp32 internally.
            scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim**-0.5)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            out = torch.matmul(scores.softmax(dim=-1, dtype=torch.bfloat16), v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
            )
        out = out.transpose(1, 2).flatten(2)
        if isinstance(self.o_proj, nn.Linear) and _onednn_dtype(out) is not None:
            return _onednn_linear(out, self.o_proj.weight, self.o_proj.bias)
        return self.o_proj(out)


class SuPreMEMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        if isinstance(self.fc1, nn.Linear) and isinstance(self.fc2, nn.Linear) and _onednn_dtype(x) is not None:
            hidden = _onednn_linear(x, self.fc1.weight, self.fc1.bias, "gelu")
            return _onednn_linear(hidden, self.fc2.weight, self.fc2.bias)
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class SuPreMEViTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer over ECG tokens."""

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        size = config.ecg_hidden_size
        self.norm1 = nn.LayerNorm(size, eps=1e-6)
        self.attention = SuPreMEAttention(size, config.ecg_num_heads, config.ecg_dropout)
        self.norm2 = nn.LayerNorm(size, eps=1e-6)
        self.mlp = SuPreMEMLP(size, int(size * config.ecg_mlp_ratio), config.ecg_dropout)
        self.dropout = nn.Dropout(config.ecg_dropout)

    def forward(self, hidden_states, token_mask=None):
        hidden_states = hidden_states + self.dropout(self.attention(self.norm1(hidden_states), key_mask=token_mask))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class SuPreMELeadConditioning(nn.Module):
    """Learned positions plus an embedding of which leads are present.

    Missing leads arrive as zeros; without telling the encoder which leads are real, "lead absent"
    and "flat lead" would look the same. The lead-presence embedding is added to every token.
    """

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches, config.ecg_hidden_size))
        self.lead_presence = nn.Linear(len(config.lead_names), config.ecg_hidden_size, bias=False)

    def forward(self, tokens: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        num_tokens = tokens.shape[1]
        if num_tokens > self.position_embeddings.shape[1]:
            raise ValueError(
                f"got {num_tokens} ECG tokens but the model has positions for {self.position_embeddings.shape[1]}; "
                "pass signals of at most config.num_samples samples (the feature extractor crops them)"
            )
        presence = self.lead_presence(lead_mask.to(tokens.dtype))
        return tokens + self.position_embeddings[:, :num_tokens] + presence[:, None, :]


def _as_rows(signals: torch.Tensor) -> torch.Tensor:
    """(batch, channels, samples) as (batch, channels, 1, samples) in channels-last memory, the layout the
    convolutions below run in."""
    return signals.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class SuPreMEConv1d(nn.Conv1d):
    """A `nn.Conv1d` (same parameters, initialisation and checkpoint keys) that runs as a 2-D convolution
    over a (batch, channels, 1, samples) tensor in channels-last memory (see `_as_rows`).

    Why: oneDNN's CPU kernels for that layout beat its 1-D (batch, channels, samples) ones. Measured on a
    2-core Xeon with AMX (2026-12-03, torch 2.13, batch 64 of 12 x 5,000 samples, interleaved medians): the
    ViT's convolutional stem 61.7 -> 29.4 ms in bf16 inference, 132 -> 95 ms in fp32, and a training step
    of it (forward + backward) 166 -> 122 ms in bf16, 528 -> 299 ms in fp32; same results up to rounding.
    """

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return F.conv2d(rows, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), (0, self.padding[0]),
                        (1, self.dilation[0]), self.groups)


class SuPreMEConvStem(nn.Module):
    """Hybrid patch embedding (`ecg_patch_embedding="conv"`): local convolutions, then one token per patch.

    Two convolutions (kernels 7 and 5, batch norm, GELU) over all leads, the first with stride 2 when the
    patch size is even, then a strided convolution that emits one token per `patch_size` samples, so the
    token grid (and `token_mask`) is that of the linear patch embedding. Takes and returns row tensors
    (`_as_rows`); the batch norms are 2-D over that layout, with the 1-D ones' parameters and keys.
    """

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        channels, patch = config.ecg_stem_channels, config.patch_size
        self.patch_size = patch
        first_stride = 2 if patch % 2 == 0 else 1
        self.conv1 = SuPreMEConv1d(len(config.lead_names), channels, 7, stride=first_stride, padding=3, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = SuPreMEConv1d(channels, channels, 5, padding=2, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)
        self.patchify = SuPreMEConv1d(channels, config.ecg_hidden_size, kernel_size=patch // first_stride,
                                      stride=patch // first_stride)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        # Only whole patches become tokens (as with the linear embedding): crop first, so that the
        # strided convolutions cannot produce one token more than token_mask has.
        rows = rows[..., : rows.shape[-1] - rows.shape[-1] % self.patch_size]
        dtype = _onednn_dtype(rows) if _HAS_ONEDNN_CONV and not self.training else None
        if dtype is not None and self.norm1.running_mean is not None and self.norm2.running_mean is not None:
            return self._fused_inference(rows, dtype)
        hidden = F.gelu(self.norm1(self.conv1(rows)))
        hidden = F.gelu(self.norm2(self.conv2(hidden)))
        return self.patchify(hidden)

    def _fused_inference(self, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The same computation for CPU inference: each eval-mode batch norm folded into its convolution's
        weights and bias, and convolution + bias + GELU run as one oneDNN primitive.

        Measured on a 2-core Xeon with AMX (2026-12-03, batch 64 of 12 x 5,000 samples): a profile of the
        bf16 forward gave the stem's two batch norms 6.8 ms each and its GELUs 5 ms each of about 215 ms,
        and the fused conv + GELU alone took 6.8 against 14.3 ms (bf16) and 19.8 against 31.3 ms (fp32)
        for the first convolution. Same result up to rounding (tested against the 1-D computation).
        """

        def conv(x, module, norm=None, activation="none"):
            weight, bias = module.weight, module.bias
            if norm is not None:  # y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta, folded
                scale = norm.running_var.add(norm.eps).rsqrt()
                if norm.weight is not None:
                    scale = scale * norm.weight
                shift = -norm.running_mean * scale + (0.0 if norm.bias is None else norm.bias)
                weight = weight * scale[:, None, None]
                bias = shift if bias is None else bias * scale + shift
            return torch.ops.mkldnn._convolution_pointwise(
                x.to(dtype), weight.unsqueeze(2).to(dtype), None if bias is None else bias.to(dtype),
                [0, module.padding[0]], [1, module.stride[0]], [1, module.dilation[0]], module.groups,
                activation, [], "none",
            )

        hidden = conv(rows, self.conv1, self.norm1, "gelu")
        hidden = conv(hidden, self.conv2, self.norm2, "gelu")
        return conv(hidden, self.patchify)


class SuPreMEViTEncoder(nn.Module):
    """1-D ViT: non-overlapping patches of all leads become tokens (MERL's ViT-tiny layout), embedded
    linearly or through the convolutional stem (`config.ecg_patch_embedding`)."""

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        self.patch_size = config.patch_size
        if config.ecg_patch_embedding == "conv":
            self.patch_embedding = SuPreMEConvStem(config)
        else:
            self.patch_embedding = SuPreMEConv1d(
                len(config.lead_names), config.ecg_hidden_size, kernel_size=config.patch_size, stride=config.patch_size
            )
        self.conditioning = SuPreMELeadConditioning(config)
        self.dropout = nn.Dropout(config.ecg_dropout)
        self.layers = nn.ModuleList([SuPreMEViTLayer(config) for _ in range(config.ecg_num_layers)])
        self.norm = nn.LayerNorm(config.ecg_hidden_size, eps=1e-6)

    def token_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, samples = attention_mask.shape
        usable = samples - samples % self.patch_size
        return attention_mask[:, :usable].reshape(batch, -1, self.patch_size).any(-1)

    def forward(self, input_values, lead_mask, attention_mask):
        # CPU inference in bf16 through the convolutional stem: the signal is cast once, first, so that the masking
        # and the channels-last copy below move half the bytes (the stem's fused path casts it to bf16 anyway, so the
        # result is bit for bit the same). Measured on a 2-core AVX-512 BF16 EPYC without AMX (2026-12-08, batch 64,
        # 9 interleaved repeats): 191.3 -> 184.3 ms per encoder forward. The linear patch embedding was slower with
        # a bf16 input (222 -> 240 ms) and keeps autocast's own cast.
        dtype = _onednn_dtype(input_values)
        if isinstance(self.patch_embedding, SuPreMEConvStem) and dtype is not None and dtype != input_values.dtype \
                and not self.training:
            input_values = input_values.to(dtype)
        # Padding is zeroed first: the stem's kernels reach across patch edges, and masked samples must
        # not influence the tokens of real ones. Nothing to zero when every sample is real.
        if not bool(attention_mask.all()):
            input_values = input_values * attention_mask[:, None, :].to(input_values.dtype)
        # (batch, hidden, 1, tokens) in channels-last memory: the transpose below is then free.
        tokens = self.patch_embedding(_as_rows(input_values)).squeeze(2).transpose(1, 2)
        tokens = self.dropout(self.conditioning(tokens, lead_mask))
        token_mask = self.token_mask(attention_mask)
        # An all-valid mask is passed as None so that SDPA can take its fastest kernel.
        key_mask = None if bool(token_mask.all()) else token_mask
        for layer in self.layers:
            tokens = layer(tokens, key_mask)
        return self.norm(tokens), token_mask


class SuPreMEResidualBlock1d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = SuPreMEConv1d(in_channels, out_channels, 7, stride=stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = SuPreMEConv1d(out_channels, out_channels, 7, padding=3, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                SuPreMEConv1d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SuPreMEResNetEncoder(nn.Module):
    """1-D ResNet: stem (stride 4) and four stages (strides 1, 2, 2, 2); total stride 32 samples per token."""

    total_stride = 32

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        if config.patch_size != self.total_stride:
            raise ValueError(f"the resnet1d encoder has a fixed stride of {self.total_stride}; set patch_size=32")
        width = config.ecg_hidden_size
        channels = [max(width // 4, 16), max(width // 2, 32), width, width]
        self.stem = nn.Sequential(
            SuPreMEConv1d(len(config.lead_names), channels[0], 15, stride=2, padding=7, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
            nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1)),
        )
        stages, in_channels = [], channels[0]
        for stage, (out_channels, stride) in enumerate(zip(channels, (1, 2, 2, 2))):
            for block in range(config.ecg_num_layers):
                stages.append(SuPreMEResidualBlock1d(in_channels, out_channels, stride if block == 0 else 1))
                in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.conditioning = SuPreMELeadConditioning(config)
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, input_values, lead_mask, attention_mask):
        # Row tensors throughout (`_as_rows`: the layout oneDNN's convolutions run fastest in).
        tokens = self.stages(self.stem(_as_rows(input_values))).squeeze(2).transpose(1, 2)
        token_mask = F.max_pool1d(
            attention_mask[:, None].float(), self.total_stride, self.total_stride, ceil_mode=True
        )[:, 0].bool()[:, : tokens.shape[1]]
        return self.norm(self.conditioning(tokens, lead_mask)), token_mask


class SuPreMEFusionLayer(GradientCheckpointingLayer):
    """One layer of the Cardiac Fusion Network: [query self-attention], cross-attention to ECG tokens, MLP."""

    def __init__(self, config: SuPreMEConfig):
        super().__init__()
        size = config.fusion_hidden_size
        self.self_attention = None
        if config.fusion_query_self_attention:
            self.self_norm = nn.LayerNorm(size)
            self.self_attention = SuPreMEAttention(size, config.fusion_num_heads, config.fusion_dropout)
        self.cross_norm = nn.LayerNorm(size)
        self.cross_attention = SuPreMEAttention(size, config.fusion_num_heads, config.fusion_dropout)
        self.mlp_norm = nn.LayerNorm(size)
        self.mlp = SuPreMEMLP(size, config.fusion_intermediate_size, config.fusion_dropout)
        self.dropout = nn.Dropout(config.fusion_dropout)

    def forward(self, queries, ecg_memory, ecg_key_mask=None):
        if self.self_attention is not None:
            queries = queries + self.dropout(self.self_attention(self.self_norm(queries)))
        queries = queries + self.dropout(self.cross_attention(self.cross_norm(queries), ecg_memory, ecg_key_mask))
        return queries + self.mlp(self.mlp_norm(queries))


def asymmetric_loss(logits, targets, gamma_pos: float, gamma_neg: float, clip: float):
    """Element-wise asymmetric loss (Ridnik et al., ICCV 2021) for multi-label targets in {0, 1}."""
    prob = torch.sigmoid(logits)
    prob_neg = (1 - prob + clip).clamp(max=1) if clip > 0 else 1 - prob
    loss_pos = targets * torch.log(prob.clamp(min=1e-8)) * (1 - prob) ** gamma_pos
    loss_neg = (1 - targets) * torch.log(prob_neg.clamp(min=1e-8)) * (1 - prob_neg) ** gamma_neg
    return -(loss_pos + loss_neg)


class SuPreMEPreTrainedModel(PreTrainedModel):
    config_class = SuPreMEConfig
    base_model_prefix = "supreme"
    main_input_name = "input_values"
    input_modalities = ("time", "text")  # multi-lead ECG signals (like time-series models) and query texts
    supports_gradient_checkpointing = True
    _no_split_modules = ["SuPreMEViTLayer", "SuPreMEFusionLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, SuPreMELeadConditioning):
            init.trunc_normal_(module.position_embeddings, std=std)


class SuPreMEModel(SuPreMEPreTrainedModel):
    """SuPreME: scores ECGs against cardiac queries written as text.

    A new model (`SuPreMEModel(config)`) gets a randomly initialised ECG side and fusion network and
    the pretrained weights of `config.text_encoder_name_or_path`; `from_pretrained` restores all
    weights, the text encoder's included, from the checkpoint.
    """

    _query_cache_size = 32

    def __init__(self, config: SuPreMEConfig):
        super().__init__(config)
        if config.ecg_encoder_type == "vit":
            self.ecg_encoder = SuPreMEViTEncoder(config)
        else:
            self.ecg_encoder = SuPreMEResNetEncoder(config)
        self.text_encoder = AutoModel.from_config(config.text_config)
        text_size = config.text_config.hidden_size
        fusion_size = config.fusion_hidden_size
        self.ecg_projection = nn.Linear(config.ecg_hidden_size, fusion_size)
        self.ecg_projection_norm = nn.LayerNorm(fusion_size)
        self.query_projection = nn.Sequential(
            nn.Linear(text_size, fusion_size), nn.GELU(), nn.Linear(fusion_size, fusion_size)
        )
        self.fusion_layers = nn.ModuleList([SuPreMEFusionLayer(config) for _ in range(config.fusion_num_layers)])
        self.fusion_norm = nn.LayerNorm(fusion_size)
        self.logit_head = nn.Linear(fusion_size, 1)
        self._query_cache: OrderedDict = OrderedDict()
        self.post_init()
        if config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        # `from_pretrained` builds the model on the meta device and then loads every weight from the
        # checkpoint; only a model built directly needs the text encoder's pretrained weights here.
        if torch.empty(()).device.type != "meta":
            self._load_pretrained_text_encoder()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then the text encoder frozen again when the config says so.

        transformers loads every checkpoint tensor as a new `nn.Parameter` that requires grad, which
        would silently unfreeze the text encoder: its 25M weights would become trainable and, under DDP,
        the unused ones would break the second optimizer step.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.apply_text_encoder_freezing()
        return loaded

    def apply_text_encoder_freezing(self):
        """Make `requires_grad` of the text encoder follow `config.freeze_text_encoder` (and its mode: eval)."""
        frozen = bool(self.config.freeze_text_encoder)
        self.text_encoder.requires_grad_(not frozen)
        if frozen:
            self.text_encoder.eval()
        self.clear_query_cache()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; the config also names the checkpoint's pipeline.

        `config.custom_pipelines` is what `transformers.pipeline(task, model=folder, trust_remote_code=True)`
        reads to find the pipeline class among the remote-code files, so the task works where this
        package is not installed. The import below also makes transformers copy `pipeline_supreme.py`
        next to the weights (it copies the relative imports of this file).
        """
        from .pipeline_supreme import custom_pipelines_entry

        self.config.custom_pipelines = custom_pipelines_entry()
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _load_pretrained_text_encoder(self):
        source = self.config.resolved_text_encoder_path
        pretrained = AutoModel.from_pretrained(source, dtype=torch.float32)
        missing, unexpected = self.text_encoder.load_state_dict(pretrained.state_dict(), strict=False)
        missing = [key for key in missing if "pooler" not in key]
        if missing:
            raise ValueError(f"text encoder at {source} does not match config.text_config; missing weights {missing[:5]}")
        self.text_encoder.to(self.dtype)
        self.clear_query_cache()

    # -- modes and caches -------------------------------------------------------------------------

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_text_encoder:
            self.text_encoder.eval()  # a frozen encoder must not apply dropout to the queries
        return self

    def clear_query_cache(self):
        """Forget cached query embeddings (done automatically when weights, device or dtype change)."""
        self._query_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self.clear_query_cache()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self.clear_query_cache()
        return super().load_state_dict(*args, **kwargs)

    # -- the two modalities -----------------------------------------------------------------------

    def _encode_queries(self, input_ids, attention_mask):
        # Always float32: query embeddings are computed once and reused, so their precision is free.
        with torch.autocast(device_type=input_ids.device.type, enabled=False):
            hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = _masked_mean(hidden.float(), attention_mask)
        if self.config.normalize_query_embeddings:
            pooled = F.normalize(pooled, dim=-1)
        return pooled

    def get_query_embeddings(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None):
        """Mean-pooled text-encoder embeddings of query texts, shape `(num_queries, text_hidden_size)`.

        With a frozen text encoder the result is cached per distinct token batch, so a label set is
        embedded once and reused across batches, epochs and pipeline calls.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not self.config.freeze_text_encoder:
            return self._encode_queries(input_ids, attention_mask)
        key = (
            tuple(input_ids.shape),
            input_ids.detach().cpu().numpy().tobytes(),
            attention_mask.detach().cpu().numpy().tobytes(),
            str(input_ids.device),
        )
        cached = self._query_cache.get(key)
        if cached is not None:
            self._query_cache.move_to_end(key)
            return cached
        with torch.no_grad():
            embeds = self._encode_queries(input_ids, attention_mask)
        self._query_cache[key] = embeds
        while len(self._query_cache) > self._query_cache_size:
            self._query_cache.popitem(last=False)
        return embeds

    def _prepare_ecg_inputs(self, input_values, lead_mask, attention_mask):
        if input_values.dim() != 3 or input_values.shape[1] != len(self.config.lead_names):
            raise ValueError(
                f"input_values must have shape (batch, {len(self.config.lead_names)} leads, samples); "
                f"got {tuple(input_values.shape)}. Use ECGProcessor to prepare raw ECGs."
            )
        batch, _, samples = input_values.shape
        if lead_mask is None:
            lead_mask = torch.ones(batch, input_values.shape[1], dtype=torch.bool, device=input_values.device)
        if attention_mask is None:
            attention_mask = torch.ones(batch, samples, dtype=torch.bool, device=input_values.device)
        return input_values.to(self.ecg_projection.weight.dtype), lead_mask.bool(), attention_mask.bool()

    def encode_ecg(self, input_values, lead_mask=None, attention_mask=None):
        """ECG tokens `(batch, tokens, ecg_hidden_size)` and their validity mask `(batch, tokens)`."""
        input_values, lead_mask, attention_mask = self._prepare_ecg_inputs(input_values, lead_mask, attention_mask)
        return self.ecg_encoder(input_values, lead_mask, attention_mask)

    def get_ecg_features(self, input_values, lead_mask=None, attention_mask=None) -> torch.FloatTensor:
        """Global ECG representation `(batch, ecg_hidden_size)`: masked mean of the ECG tokens."""
        tokens, token_mask = self.encode_ecg(input_values, lead_mask, attention_mask)
        return _masked_mean(tokens, token_mask)

    # -- fusion -----------------------------------------------------------------------------------

    def fuse(self, ecg_tokens, ecg_token_mask, query_embeds):
        """Run the Cardiac Fusion Network: returns `(logits, fused_query_states)`.

        `query_embeds` is `(num_queries, text_hidden)` shared by the batch, or `(batch, num_queries, text_hidden)`.
        """
        # The projection of every ECG token as one oneDNN primitive and the memory cast once: the fusion step went
        # 24.4 -> 21.7 ms in fp32 and 12.7 -> 12.4 ms in bf16 (batch 64, 5 queries, 15 interleaved repeats on a
        # 2-core AVX-512 BF16 EPYC, 2026-12-08), the same logits bit for bit.
        projection = self.ecg_projection
        if isinstance(projection, nn.Linear) and _onednn_dtype(ecg_tokens) is not None:
            memory = self.ecg_projection_norm(_onednn_linear(ecg_tokens, projection.weight, projection.bias))
        else:
            memory = self.ecg_projection_norm(projection(ecg_tokens))
        if memory.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled():
            # Every product with the ECG memory below would cast this float32 layer-norm output to the autocast dtype
            # again (four times with two fusion layers): cast it once, to the same values.
            memory = memory.to(torch.get_autocast_dtype("cpu"))
        # Queries are few: project them in the weights' precision even under autocast, and keep their
        # residual stream there, so that bf16 rounding does not accumulate along the fusion layers.
        weight_dtype = self.logit_head.weight.dtype
        with torch.autocast(device_type=memory.device.type, enabled=False):
            queries = self.query_projection(query_embeds.to(weight_dtype))
        if queries.dim() == 2:
            queries = queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        key_mask = None if bool(ecg_token_mask.all()) else ecg_token_mask
        for layer in self.fusion_layers:
            queries = layer(queries, memory, key_mask)
        fused = self.fusion_norm(queries)
        # The logit head runs in the weights' precision even under autocast: a bf16 logit carries only
        # 8 bits of mantissa, which alone would move a sigmoid score by up to about 0.01.
        with torch.autocast(device_type=fused.device.type, enabled=False):
            logits = self.logit_head(fused.to(self.logit_head.weight.dtype))
        return logits.squeeze(-1), fused

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Multi-label loss over (ECG, query) pairs; entries equal to -100 are ignored."""
        if labels.shape != logits.shape:
            raise ValueError(f"labels must have shape {tuple(logits.shape)} (batch, num_queries), got {tuple(labels.shape)}")
        labels = labels.to(logits.device)
        valid = labels != IGNORE_INDEX
        targets = torch.where(valid, labels, torch.zeros_like(labels)).float()
        logits = logits.float()
        if self.config.loss_type == "asymmetric":
            per_pair = asymmetric_loss(
                logits, targets, self.config.asl_gamma_pos, self.config.asl_gamma_neg, self.config.asl_clip
            )
        else:
            per_pair = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (per_pair * valid).sum() / valid.sum().clamp_min(1)

    def zero_shot_logits(
        self,
        input_values: torch.FloatTensor,
        lead_mask: torch.BoolTensor | None = None,
        attention_mask: torch.BoolTensor | None = None,
        *,
        query_embeds: torch.FloatTensor,
        query_to_class: torch.LongTensor | None = None,
        num_classes: int | None = None,
    ) -> torch.FloatTensor:
        """Logits `(batch, num_classes)` of ECGs against classes written as text: the one zero-shot scoring path.

        The pipeline and the evaluation code both score through this method. A class is described by
        one or more queries (prompts); its logit is the mean of its queries' logits, which stays an
        ordinary logit (its sigmoid is a score in (0, 1)), unlike a mean of probabilities. Query logits are
        first mapped by the stored calibration (`config.zero_shot_logit_scale` and `zero_shot_logit_bias`).

        Args:
            input_values, lead_mask, attention_mask: the ECGs, as for `forward`.
            query_embeds (`torch.FloatTensor` of shape `(num_queries, text_hidden_size)`):
                From `get_query_embeddings` (cached for a frozen text encoder).
            query_to_class (`torch.LongTensor` of shape `(num_queries,)`, *optional*):
                The class index of each query; None means one query per class, in order.
            num_classes (`int`, *optional*): number of classes (default: `query_to_class.max() + 1`).
        """
        logits = self(
            input_values=input_values, lead_mask=lead_mask, attention_mask=attention_mask, query_embeds=query_embeds
        ).logits.float()
        # The calibration fitted on validation (identity unless pre-training stored one); positive scale: same ranking.
        scale, bias = float(self.config.zero_shot_logit_scale), float(self.config.zero_shot_logit_bias)
        if scale != 1.0 or bias != 0.0:
            logits = logits * scale + bias
        if query_to_class is None:
            return logits
        query_to_class = query_to_class.to(logits.device)
        if query_to_class.shape != (logits.shape[1],):
            raise ValueError(f"query_to_class must have one class index per query ({logits.shape[1]}), got {tuple(query_to_class.shape)}")
        num_classes = int(query_to_class.max()) + 1 if num_classes is None else int(num_classes)
        counts = torch.bincount(query_to_class, minlength=num_classes)
        if bool((counts == 0).any()):
            raise ValueError(f"every class needs at least one query; classes without one: {torch.nonzero(counts == 0).flatten().tolist()}")
        # Averaging as one float32 matrix product (batch, queries) @ (queries, classes), outside any autocast.
        averaging = torch.zeros(logits.shape[1], num_classes, dtype=logits.dtype, device=logits.device)
        averaging[torch.arange(logits.shape[1], device=logits.device), query_to_class] = 1.0
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return logits @ (averaging / counts.to(logits.dtype))

    @can_return_tuple
    def forward(
        self,
        input_values: torch.FloatTensor,
        lead_mask: torch.BoolTensor | None = None,
        attention_mask: torch.BoolTensor | None = None,
        query_input_ids: torch.LongTensor | None = None,
        query_attention_mask: torch.LongTensor | None = None,
        query_embeds: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        **kwargs,
    ) -> SuPreMEOutput:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_leads, num_samples)`):
                ECGs prepared by [`ECGFeatureExtractor`]: leads in `config.lead_names` order, resampled to
                `config.sampling_rate`.
            lead_mask (`torch.BoolTensor` of shape `(batch_size, num_leads)`, *optional*):
                True for leads that were recorded; missing leads are zeros in `input_values`.
            attention_mask (`torch.BoolTensor` of shape `(batch_size, num_samples)`, *optional*):
                True for real samples, False for padding.
            query_input_ids (`torch.LongTensor` of shape `(num_queries, text_length)`, *optional*):
                Tokenized query texts (one per condition), shared by the batch.
            query_attention_mask (`torch.LongTensor` of shape `(num_queries, text_length)`, *optional*):
                Attention mask of `query_input_ids`.
            query_embeds (`torch.FloatTensor` of shape `(num_queries, text_hidden_size)`, *optional*):
                Precomputed query embeddings (from `get_query_embeddings`), instead of `query_input_ids`.
            labels (`torch.FloatTensor` of shape `(batch_size, num_queries)`, *optional*):
                Multi-label targets in {0, 1}; -100 marks pairs to ignore (for example uncertain mentions).
        """
        if query_embeds is None:
            if query_input_ids is None:
                raise ValueError(
                    "SuPreMEModel needs cardiac queries: pass query_input_ids (from ECGProcessor(text=...)) "
                    "or query_embeds (from get_query_embeddings)"
                )
            query_embeds = self.get_query_embeddings(query_input_ids, query_attention_mask)
        ecg_tokens, token_mask = self.encode_ecg(input_values, lead_mask, attention_mask)
        logits, fused = self.fuse(ecg_tokens, token_mask, query_embeds)
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return SuPreMEOutput(
            loss=loss,
            logits=logits,
            ecg_embeds=_masked_mean(ecg_tokens, token_mask),
            ecg_last_hidden_state=ecg_tokens,
            ecg_token_mask=token_mask,
            query_embeds=query_embeds,
            fused_query_states=fused,
        )


__all__ = ["SuPreMEModel", "SuPreMEPreTrainedModel", "SuPreMEOutput"]
