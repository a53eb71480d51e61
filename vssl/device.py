"""Device and precision choice shared by every stage: ``auto`` takes what the hardware does best.

CUDA: bf16 autocast where the GPU supports it (Ampere and later), else fp16 with loss
scaling. CPU: bf16 autocast when the CPU has native bf16 matmul (AVX512-BF16 / AMX, where
oneDNN runs bf16 GEMMs several times faster than fp32), else fp32.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager, Iterator

from vssl.errors import VsslError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: configs read PRECISION_CHOICES, and `vssl --help`
# must not pay for importing torch.
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": None}
#: what every ``--precision`` flag accepts: ``auto`` or a concrete precision (see resolve_precision)
PRECISION_CHOICES = ("auto", *_DTYPES)


def autocast_dtype(precision: str) -> "torch.dtype | None":
    """The autocast dtype of a resolved precision (None for fp32)."""
    import torch

    name = _DTYPES[precision]
    return None if name is None else getattr(torch, name)


def resolve_device(device: str) -> "torch.device":
    """``auto`` -> CUDA when present, else CPU; anything else must name an available device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VsslError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VsslError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN reports native bf16 support on this CPU."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: "torch.device") -> str:
    """Map ``auto`` to bf16/fp16/fp32 for ``device``; reject fp16 on CPU (no fast kernels there)."""
    import torch

    if precision == "auto":
        if device.type == "cuda":
            # the device asked for, not the current one; is_bf16_supported() is also true where bf16
            # is only emulated (pre-Ampere, torch >= 2.3): native bf16 needs compute capability 8.0
            return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision not in _DTYPES:
        raise VsslError(f"unknown precision '{precision}'; use auto, bf16, fp16 or fp32")
    if precision == "fp16" and device.type != "cuda":
        raise VsslError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    return precision


def autocast(device: "torch.device", precision: str) -> ContextManager:
    """Autocast context for the resolved ``precision`` (a no-op for fp32)."""
    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def matmul_numerics(tf32: bool, bf16_reduced_reduction: bool | None = None) -> Iterator[None]:
    """Set how float32 and bf16 matrix products may round for one block, and restore the caller's after.

    These are process-wide torch flags: a library that sets them and leaves them set changes the
    numerics of its caller's later code (and of the next stage in the same process), so every
    stage scopes them. ``tf32``: float32 products (and cuDNN convolutions) may use TF32 on CUDA;
    False is torch's "highest" float32 precision, which also keeps oneDNN from using bf16 for
    float32 products on CPU. ``bf16_reduced_reduction``: cuBLAS may accumulate bf16 products in
    bf16 (None: left as it is). Restored even when the block raises.
    """
    import torch

    matmul = torch.backends.cuda.matmul
    # the float32 precision string alone determines cuBLAS's TF32 switch (allow_tf32 reads it), so it is
    # saved and restored as the string: writing allow_tf32 back would turn a caller's "medium" into "high"
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
             matmul.allow_bf16_reduced_precision_reduction)
    try:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
        if bf16_reduced_reduction is not None:
            matmul.allow_bf16_reduced_precision_reduction = bf16_reduced_reduction
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]
        matmul.allow_bf16_reduced_precision_reduction = saved[2]


@contextlib.contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """Let cuDNN time its convolution algorithms for the shapes of one block (``cudnn.benchmark``).

    Worth it where the same conv shapes repeat for a whole run (a frozen conv backbone's batches);
    process-wide like the flags above, so it is restored after. A no-op when not ``enabled``.
    """
    import torch

    saved = torch.backends.cudnn.benchmark
    try:
        if enabled:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
