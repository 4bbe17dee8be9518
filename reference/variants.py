"""Named conventions that differ from the contract: each a small delta on one equation.

Most real deviations are not random bugs but a convention another library follows (the
positional encoding as [sin | cos] halves, a finite mask value, the unbiased variance, ...).
``CATALOGUE`` names them; ``active(*ids)`` evaluates the reference under some of them, which
is how the gate's diagnosis (conformance/tolerance/diagnosis.py) tells a failing backend which
convention it follows. The list with sources: conformance/tolerance/VARIANTS.md.

How the deltas are composed into the reference: at each equation where a choice is made,
reference/layers.py and reference/model.py call the hook of this module *only when a variant
is active* (``if variants.ACTIVE: ...``). ``ACTIVE`` is a module-level frozenset, empty except
inside ``active(...)``, so the float64 default path reads one empty set and computes exactly
what it computes without this module.

Choices: a variant that holds a value in float32 (``*-float32``) rounds the float64 value to
float32 storage; it is only tried on float64 backends.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from reference.precision import DTYPES, rounded


@dataclass(frozen=True)
class Variant:
    """One convention: ``id``, the equation it changes, the lowest contract ops whose results
    it changes (``ops``), what it does, who follows it and where that is documented, and the
    dtypes at which it can differ from the contract. ``numerical``: it changes rounding only
    (a float64 value within a few ulps of the contract's), so the diagnosis always measures it."""

    id: str
    equation: str
    ops: tuple[str, ...]
    description: str
    libraries: str
    links: tuple[str, ...]
    dtypes: tuple[str, ...] = DTYPES
    numerical: bool = False

    def describe(self) -> str:
        """``pe-sin-cos-halves`` (PE as [sin | cos] halves: fairseq, tensor2tensor, allennlp)."""
        return f"`{self.id}` ({self.description}: {self.libraries})"


ATTENTION = ("attention_weights",)
STACKS = ("encode", "decode")

_VARIANTS = (
    Variant("pe-sin-cos-halves", "positional encoding (sec. 3.5)", ("positional_encoding",),
            "PE as [sin | cos] halves instead of interleaved sin/cos", "fairseq, tensor2tensor, allennlp",
            ("https://github.com/facebookresearch/fairseq/issues/4648",
             "https://github.com/tensorflow/tensor2tensor/issues/1925",
             "https://github.com/allenai/allennlp/issues/2993")),
    Variant("pe-table-float32", "positional encoding (sec. 3.5)", ("positional_encoding",),
            "the sinusoid table held in float32 inside a float64 model",
            "models that keep the table as a float32 buffer or constant",
            ("https://github.com/facebookresearch/fairseq/blob/main/fairseq/modules/sinusoidal_positional_embedding.py",),
            dtypes=("float64",), numerical=True),
    Variant("mask-finfo-min", "masked scores (eq. 1)", ATTENTION,
            "masked scores filled with the dtype's finfo.min instead of -inf: a fully masked row averages V",
            "Flax (big_neg), Hugging Face models",
            ("https://github.com/google/flax/blob/main/flax/linen/attention.py",
             "https://github.com/huggingface/transformers/issues/38690",
             "https://github.com/pytorch/pytorch/issues/110213")),
    Variant("mask-fill-1e9", "masked scores (eq. 1)", ATTENTION,
            "masked scores filled with -1e9 instead of -inf: a fully masked row averages V",
            "the Annotated Transformer",
            ("https://github.com/harvardnlp/annotated-transformer/blob/master/the_annotated_transformer.py",)),
    Variant("mask-add-1e4", "masked scores (eq. 1)", ATTENTION,
            "-10000 added to masked scores: a fully masked row attends as if unmasked",
            "BERT, older Hugging Face models",
            ("https://github.com/google-research/bert/blob/master/modeling.py",)),
    Variant("softmax-nan-all-masked", "softmax", ("softmax",),
            "softmax of a row that is all -inf is NaN instead of zeros",
            "torch.softmax, jax.nn.softmax, ONNX Softmax, nn.MultiheadAttention",
            ("https://github.com/pytorch/pytorch/issues/41508", "https://github.com/jax-ml/jax/issues/21495",
             "https://onnx.ai/onnx/operators/onnx__Softmax.html")),
    Variant("layer-norm-eps-outside-sqrt", "layer norm", ("layer_norm",),
            "layer norm divides by std + eps instead of sqrt(var + eps)", "the Annotated Transformer, BERT-pytorch",
            ("https://github.com/codertimo/BERT-pytorch/issues/30",
             "https://github.com/harvardnlp/annotated-transformer/blob/master/the_annotated_transformer.py")),
    Variant("layer-norm-unbiased-variance", "layer norm", ("layer_norm",),
            "layer norm uses the unbiased variance (divides by d - 1)",
            "the Annotated Transformer (x.std()), BERT-pytorch, torch.var's default",
            ("https://github.com/codertimo/BERT-pytorch/issues/30",
             "https://pytorch.org/docs/stable/generated/torch.var.html")),
    Variant("layer-norm-fast-variance", "layer norm", ("layer_norm",),
            "variance as E[x^2] - E[x]^2 (clamped at 0), which cancels for rows with a large mean",
            "Flax LayerNorm (use_fast_variance=True, the default)",
            ("https://flax.readthedocs.io/en/latest/api_reference/flax.linen/layers.html#flax.linen.LayerNorm",),
            numerical=True),
    Variant("layer-norm-eps-float32", "layer norm", ("layer_norm",),
            "eps held in float32 inside a float64 model", "ONNX LayerNormalization (a FLOAT attribute)",
            ("https://onnx.ai/onnx/operators/onnx__LayerNormalization.html",),
            dtypes=("float64",), numerical=True),
    Variant("gelu-tanh", "feed-forward (eq. 2)", ("feed_forward",),
            "GELU as the tanh approximation instead of the exact erf form",
            "BERT, GPT-2, ONNX Runtime's FastGelu fusion",
            ("https://github.com/openai/gpt-2/blob/master/src/model.py",
             "https://github.com/microsoft/onnxruntime/pull/2270")),
    Variant("embedding-unscaled", "embedding (sec. 3.4)", STACKS,
            "embeddings not multiplied by sqrt(d_model) although scale_embedding is true",
            "BART (scale_embedding=False), T5, GPT-2",
            ("https://huggingface.co/docs/transformers/model_doc/bart",)),
    Variant("embedding-always-scaled", "embedding (sec. 3.4)", STACKS,
            "embeddings multiplied by sqrt(d_model) although scale_embedding is false",
            "the Annotated Transformer (unconditional)",
            ("https://github.com/harvardnlp/annotated-transformer/blob/master/the_annotated_transformer.py",)),
    Variant("heads-interleaved", "multi-head attention (sec. 3.2.2)", ("multi_head_attention",),
            "head i reads and writes the strided columns i::h instead of a contiguous block",
            "checkpoint converters that mix up fused-projection layouts (GPT-NeoX, Megatron-LM)",
            ("https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py",)),
    Variant("attention-scale-sqrt-d-model", "scaled dot product (eq. 1)", ("multi_head_attention",),
            "multi-head attention scales the scores by 1/sqrt(d_model) instead of 1/sqrt(d_k)",
            "attention-is-all-you-need-pytorch (before 1929a50), ViT-CIFAR",
            ("https://github.com/jadore801120/attention-is-all-you-need-pytorch/issues/42",
             "https://github.com/omihub777/ViT-CIFAR/pull/11")),
    Variant("attention-unscaled", "scaled dot product (eq. 1)", ATTENTION,
            "scores Q K^T without the 1/sqrt(d_k) factor", "T5 (folded into the initialisation)",
            ("https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py",)),
    Variant("attention-scale-float32", "scaled dot product (eq. 1)", ATTENTION,
            "scores multiplied by 1/sqrt(d_k) held in float32 inside a float64 model",
            "kernels that take the softmax scale as a C float (FlashAttention's softmax_scale)",
            ("https://github.com/Dao-AILab/flash-attention/blob/main/csrc/flash_attn/flash_api.cpp",),
            dtypes=("float64",), numerical=True),
    Variant("causal-mask-hides-diagonal", "decoder self-attention mask (sec. 3.2.3)", ("decode",),
            "the causal mask is strictly lower triangular: a position cannot attend to itself",
            "triu(offset=0) slips (pbloem/former's post, GPT-SoVITS)",
            ("https://github.com/pbloem/former/issues/10", "https://github.com/RVC-Boss/GPT-SoVITS/issues/965")),
    Variant("pre-post-ln-swapped", "residual sub-layer (sec. 5.4)", ("encoder_layer", "decoder_layer"),
            "sub-layers pre-LN where the config says post-LN and post-LN where it says pre-LN",
            "norm_first read inverted (pre-LN: GPT-2, T5, tensor2tensor v2; post-LN: the paper, nn.Transformer)",
            ("https://arxiv.org/abs/2002.04745",
             "https://pytorch.org/docs/stable/generated/torch.nn.TransformerEncoderLayer.html")),
    Variant("final-norm-missing", "encoder and decoder stacks (sec. 3.1)", STACKS,
            "the stacks skip their final layer norm although final_norm is true",
            "nn.TransformerEncoder/Decoder built with norm=None (the default)",
            ("https://pytorch.org/docs/stable/generated/torch.nn.TransformerEncoder.html",)),
    Variant("key-padding-as-lengths", "key padding mask (sec. 3.1)", STACKS,
            "the padding mask turned into a per-row key count: keys j < count attend (right only for right padding)",
            "length-based kernels and masks (sockeye's lengths, trailing-pad stripping)",
            ("https://github.com/awslabs/sockeye/pull/282", "https://github.com/NVIDIA-NeMo/Automodel/pull/3704")),
)

CATALOGUE: dict[str, Variant] = {v.id: v for v in _VARIANTS}
"""id -> Variant, in the order the diagnosis tries them."""

ACTIVE: frozenset[str] = frozenset()
"""The variants the reference evaluates under; empty outside ``active(...)``."""


@contextlib.contextmanager
def active(*ids: str) -> Iterator[None]:
    """Within the block, the reference follows the variants ``ids`` (each a CATALOGUE id)."""
    global ACTIVE
    unknown = [i for i in ids if i not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(CATALOGUE)}")
    before, ACTIVE = ACTIVE, frozenset(ids)
    try:
        yield
    finally:
        ACTIVE = before


def on(variant_id: str) -> bool:
    """Whether ``variant_id`` is active."""
    return variant_id in ACTIVE


# --- the deltas, one per equation (called by the reference only when ACTIVE is non-empty) -----

def positional_encoding(angle: np.ndarray, pe: np.ndarray, dtype: str) -> np.ndarray:
    """The (S, d_model) table under the active PE variants (``pe``: the contract's)."""
    if on("pe-sin-cos-halves"):
        pe = np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)       # (S, d_model)
    if on("pe-table-float32") and dtype == "float64":
        pe = pe.astype(np.float32).astype(np.float64)
    return pe


def masked_scores(scores: np.ndarray, mask: np.ndarray, dtype: str) -> np.ndarray:
    """Scores with the masked entries set as the active mask variant does (-inf: the contract)."""
    if on("mask-add-1e4"):
        return scores + np.where(mask, 0.0, -1e4).astype(scores.dtype)
    if on("mask-finfo-min"):
        return np.where(mask, scores, np.finfo(rounded(np.zeros(()), dtype).dtype).min)
    if on("mask-fill-1e9"):
        return np.where(mask, scores, np.asarray(-1e9).astype(scores.dtype))
    return np.where(mask, scores, -np.inf)


def softmax_of_masked_rows(out: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """NaN in the slices of ``x`` that are all -inf, under ``softmax-nan-all-masked``."""
    if not on("softmax-nan-all-masked"):
        return out
    return np.where(np.isneginf(x).all(axis=axis, keepdims=True), np.nan, out)


def scaled_scores(scores: np.ndarray, d_k: int, d_model: int | None) -> np.ndarray:
    """Q K^T (``scores``) scaled as the active scale variant does (/ sqrt(d_k): the contract).
    ``d_model`` is known inside multi-head attention only."""
    if on("attention-unscaled"):
        return scores
    if on("attention-scale-sqrt-d-model") and d_model is not None:
        return scores / math.sqrt(d_model)
    if on("attention-scale-float32"):
        return scores * float(np.float32(1.0 / math.sqrt(d_k)))
    return scores / math.sqrt(d_k)


def x_hat(x: np.ndarray, mean: np.ndarray, eps: float, dtype: str) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) under the active layer-norm variants: the variance as
    E[x^2] - E[x]^2 (clamped at 0, as Flax does), unbiased (d - 1; NaN for d = 1, as
    torch.var), eps held in float32, eps outside the square root.
    Shapes: x (..., d), mean (..., 1) -> (..., d)."""
    if on("layer-norm-fast-variance"):
        var = np.maximum(rounded(np.mean(x * x, axis=-1, keepdims=True), dtype) - mean * mean, 0.0)
    else:
        var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
    if on("layer-norm-unbiased-variance"):
        d = x.shape[-1]
        var = var * d / (d - 1) if d > 1 else np.full_like(var, np.nan)
    var = rounded(var, dtype)
    if on("layer-norm-eps-float32") and dtype == "float64":
        eps = float(np.float32(eps))
    if on("layer-norm-eps-outside-sqrt"):
        return rounded((x - mean) / (np.sqrt(var) + eps), dtype)
    return rounded((x - mean) / np.sqrt(var + eps), dtype)


def gelu_tanh(x: np.ndarray, dtype: str) -> np.ndarray:
    """GELU(x) ~ x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh approximation."""
    inner = rounded(np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)), dtype)
    return rounded(0.5 * x * (1.0 + inner), dtype)


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray | None:
    """(B, S, h * d_k) -> (B, h, S, d_k) with head i = columns i::h under ``heads-interleaved``;
    None when the contract's contiguous split applies."""
    if not on("heads-interleaved"):
        return None
    B, S, d_model = x.shape
    return x.reshape(B, S, d_model // num_heads, num_heads).transpose(0, 3, 1, 2)


def merge_heads(x: np.ndarray) -> np.ndarray | None:
    """(B, h, S, d_k) -> (B, S, h * d_k), head i written to columns i::h (the inverse of
    ``split_heads``); None when the contract's concatenation applies."""
    if not on("heads-interleaved"):
        return None
    B, h, S, d_k = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, S, d_k * h)


def scale_embedding(scale: bool) -> bool:
    """Whether embeddings are multiplied by sqrt(d_model) (``scale``: the config's)."""
    if on("embedding-unscaled"):
        return False
    return True if on("embedding-always-scaled") else scale


def causal_diagonal() -> int:
    """The diagonal offset of the causal mask's lower triangle: 0 (the contract), -1 under
    ``causal-mask-hides-diagonal``."""
    return -1 if on("causal-mask-hides-diagonal") else 0


def norm_first(norm_first: bool) -> bool:
    """Pre-LN or post-LN, inverted under ``pre-post-ln-swapped``."""
    return not norm_first if on("pre-post-ln-swapped") else norm_first


def final_norm(final_norm: bool) -> bool:
    """Whether the stacks end with a norm (never under ``final-norm-missing``)."""
    return final_norm and not on("final-norm-missing")


def key_padding(pad_mask: np.ndarray) -> np.ndarray:
    """The (B, Sk) padding mask as the stacks use it: under ``key-padding-as-lengths``, the
    first ``pad_mask.sum(-1)`` keys of each row."""
    if not on("key-padding-as-lengths"):
        return pad_mask
    return np.arange(pad_mask.shape[-1]) < pad_mask.sum(axis=-1, keepdims=True)
