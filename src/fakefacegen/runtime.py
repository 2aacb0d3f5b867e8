"""Where and how to run: device choice, precision and memory format picked from the hardware.

The fast path is chosen at run time from what the processor reports, never guessed:
on CPU, bf16 autocast only where the CPU has native bf16 (AVX512-BF16 or AMX; on others it is
emulated and many times slower than fp32) and channels_last (faster for these convolutions with
oneDNN); on CUDA, bf16 autocast where supported, else fp16 with a gradient scaler, and the whole step
captured as a CUDA graph where it can be (one process, no gradient scaler, no torch.compile).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

import torch

from .cpus import available_cores
from .gemm_conv import MAX_PIXELS, MIN_PIXELS


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_capability() -> str:
    """ATen's vector ISA level for this CPU, e.g. 'AVX2', 'AVX512', 'DEFAULT'."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        return "unknown"


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls/convolutions run natively (AVX512-BF16 or AMX), not emulated."""
    if "AVX512" not in cpu_capability():
        return False
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA (this process's local rank), else Apple MPS, else CPU.

    Any other name must be one of the documented forms (cpu, cuda, cuda:N, mps) that this torch and
    machine have; else a one-line ValueError naming --device, before anything is loaded onto it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d{1,3})?", str(name)):
        raise ValueError(f"--device must be one of auto, cpu, cuda, cuda:N or mps (got {str(name)[:40]!r})")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"--device {name}: CUDA is not available on this machine ({why})")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (0..)")
    return dev


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@dataclass
class FastPath:
    device: torch.device
    autocast_dtype: torch.dtype | None
    """None = fp32."""
    channels_last: bool
    grad_scaler: bool
    threads: int
    gemm_max_pixels: int = 0
    """Convolutions whose small side has at most this many pixels run as matrix multiplies (0 = none)."""
    cuda_graphs: str = "off"
    """'on': the step is captured as a CUDA graph; 'static': its static buffers run eagerly; 'off': the plain step."""

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self, cache: bool = True):
        """The precision context. ``cache=False``: no cache of casted weights (a CUDA graph capture needs that;
        the numbers are the same)."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=cache)

    def describe(self) -> str:
        where = (
            cpu_name()
            if self.device.type == "cpu"
            else (torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type)
        )
        extra = f", cpu capability {cpu_capability()}, {self.threads} threads" if self.device.type == "cpu" else ""
        gemm = f"; convs on {MIN_PIXELS}..{self.gemm_max_pixels} px maps as GEMM" if self.gemm_max_pixels else ""
        graphs = f"; CUDA graphs {self.cuda_graphs}" if self.device.type == "cuda" or self.cuda_graphs != "off" else ""
        return (
            f"device {self.device} ({where}{extra}); precision {self.precision}; "
            f"channels_last {'on' if self.channels_last else 'off'}{gemm}{graphs}"
        )


def choose_fast_path(
    device: torch.device,
    precision: str = "auto",
    channels_last: str = "auto",
    threads: int = 0,
    gemm_convs: str = "auto",
    cuda_graphs: str = "off",
    *,
    processes: int = 1,
    compiled: bool = False,
) -> FastPath:
    """Resolve 'auto' settings for ``device`` from what the hardware has (``processes``: under torchrun;
    ``compiled``: train.compile is on). A setting this device or run cannot honour is a one-line ValueError."""
    if device.type == "cpu":
        n = threads or available_cores()
        torch.set_num_threads(n)
    else:
        n = torch.get_num_threads()
    if precision == "auto":
        if device.type == "cpu":
            dtype = torch.bfloat16 if cpu_has_native_bf16() else None
        elif device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = None  # MPS: fp32 is the safe default for BatchNorm-heavy GANs
    else:
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if dtype is torch.float16 and device.type == "cpu":
            raise ValueError("train.precision fp16 is for CUDA/MPS; on CPU use bf16 or fp32")
    if channels_last == "auto":
        cl = device.type in ("cpu", "cuda")
    else:
        cl = channels_last == "on"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The matrix-multiply route only acts under CPU bf16 autocast (gemm_conv.py).
    gemm_ok = device.type == "cpu" and dtype is torch.bfloat16
    gemm = gemm_ok and (gemm_convs == "on" or (gemm_convs == "auto" and cpu_has_native_bf16()))
    scaler = dtype is torch.float16 and device.type == "cuda"
    return FastPath(
        device,
        dtype,
        cl,
        grad_scaler=scaler,
        threads=n,
        gemm_max_pixels=MAX_PIXELS if gemm else 0,
        cuda_graphs=resolve_cuda_graphs(
            cuda_graphs, device, grad_scaler=scaler, processes=processes, compiled=compiled
        ),
    )


def resolve_cuda_graphs(
    setting: str, device: torch.device, *, grad_scaler: bool = False, processes: int = 1, compiled: bool = False
) -> str:
    """train.cuda_graphs -> 'on', 'static' or 'off'. auto is on where a capture can work: CUDA, one process,
    no fp16 gradient scaler (its step reads the GPU from the host), no torch.compile (it has its own graphs)."""
    if setting in ("off", "static"):
        return setting
    why_not = (
        f"it needs a CUDA device and this run is on {device.type}"
        if device.type != "cuda"
        else "fp16's gradient scaler syncs with the host in every step (use train.precision=bf16 or fp32)"
        if grad_scaler
        else f"it is for one process and this run has {processes}"
        if processes > 1
        else "train.compile=true makes its own graphs"
        if compiled
        else None
    )
    if setting == "auto":
        return "off" if why_not else "on"
    if why_not:
        raise ValueError(f"train.cuda_graphs=on cannot be used here: {why_not}; use auto or off")
    return "on"
