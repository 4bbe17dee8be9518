"""The ``torch-sdpa`` backend: attention through ``torch.nn.functional.scaled_dot_product_attention``.

An adapter, not an implementation: ``attention`` hands Q, K, V and the mask to PyTorch's SDPA
(on CUDA it picks a fused kernel: FlashAttention, memory-efficient or cuDNN, when the inputs
allow; on CPU a fused C++ kernel or the math fallback). Multi-head attention, the layers and
the stacks are the ``torch`` backend's, so every attention in the model goes through SDPA and
nothing else changes: a failure that this backend shows and ``torch`` does not is SDPA's.

Choices:
- The contract's boolean mask (True = may attend) is SDPA's own convention, so it is passed
  as is; no additive -inf mask is built here.
- ``scale`` is left at SDPA's default, 1/sqrt(d_k), the contract's; ``dropout_p=0``.
- ``attention_weights`` raises NotImplementedError (reported "not implemented"): SDPA returns
  no weights, and answering with the ``torch`` backend's own softmax would credit SDPA with
  math it did not do.

Fully masked query rows: SDPA's CPU kernels return zeros there (the contract's value) in torch
2.13; what the CUDA kernels return is for the gate to find on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backends.contract import supports_from
from backends.torch_backend import TorchBackend

Tensor = torch.Tensor


class TorchSDPABackend(TorchBackend):
    """The ``torch`` backend with ``attention`` replaced by ``F.scaled_dot_product_attention``."""

    name = "torch-sdpa"
    supports = staticmethod(supports_from({"attention_weights": False}))  # declared: no example is drawn for it

    @torch.no_grad()
    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """Not offered by SDPA (it never materialises the weights)."""
        raise NotImplementedError("scaled_dot_product_attention returns no attention weights")

    @torch.no_grad()
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, computed by SDPA.

        Shapes: (..., Sq, d_k), (..., Sk, d_k), (..., Sk, d_v), mask -> (..., Sq, Sk)
        -> (..., Sq, d_v).
        """
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)


def factory(*, dtype: str = "float32", device: str = "cpu") -> TorchSDPABackend:
    """The ``torch-sdpa`` backend; ValueError (= unsupported) for an unknown dtype or absent
    device (``cuda`` without a GPU)."""
    return TorchSDPABackend(dtype=dtype, device=device)
