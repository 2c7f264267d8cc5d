"""Device strings: cpu, cuda[:N], npu[:N]. An NPU is torch plus `import torch_npu`, nothing else."""

from __future__ import annotations

import platform

from capture_agent.backends import BackendError


def device_kind(device: str) -> str:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "npu") or (index and not index.isdigit()):
        raise BackendError(f"unknown device {device!r}: use cpu, cuda[:N] or npu[:N]")
    return kind


def import_torch_for(device: str):
    """Imports torch (and torch_npu for an NPU) and checks the device is there; returns torch."""
    kind = device_kind(device)
    import torch

    if kind == "npu":
        try:
            import torch_npu  # noqa: F401  registers the "npu" device with torch
        except ImportError:
            raise BackendError(
                f"device {device} needs torch_npu: install the torch_npu release that matches torch {torch.__version__}"
            ) from None
        if not torch.npu.is_available():
            raise BackendError(f"device {device}: torch_npu sees no NPU; check the driver with `npu-smi info`")
    elif kind == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device}: torch {torch.__version__} sees no CUDA GPU; install a CUDA build of torch")
    return torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(torch, device: str) -> str:
    """Human name of the device: the CPU model, or what CUDA / torch_npu call the accelerator."""
    kind = device_kind(device)
    index = int(device.partition(":")[2] or 0)
    if kind == "cuda":
        return torch.cuda.get_device_name(index)
    if kind == "npu":
        return torch.npu.get_device_name(index)
    return _cpu_model()
