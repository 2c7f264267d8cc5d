"""NVIDIA hosts: driver version, CUDA version and GPU names from `nvidia-smi`.

    nvidia_fingerprint()   # {"driver": "550.54.15", "cuda": "12.4", "chip": "NVIDIA H100 80GB HBM3 x2"}
"""

from __future__ import annotations

import re
from collections import Counter

from capture_agent.platforms import run_tool


def parse_nvidia_smi(text: str) -> tuple[str, str]:
    """(driver version, CUDA version) from the header of plain `nvidia-smi`."""
    driver = re.search(r"Driver Version:\s*(\S+)", text)
    cuda = re.search(r"CUDA Version:\s*(\S+)", text)
    return (driver.group(1) if driver else "", cuda.group(1) if cuda else "")


def parse_gpu_query(text: str) -> list[tuple[str, str]]:
    """(name, driver) per GPU from `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            name, _, driver = line.rpartition(",")
            rows.append((name.strip(), driver.strip()))
    return rows


def nvidia_fingerprint(tool=run_tool) -> dict[str, str]:
    gpus = parse_gpu_query(tool(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]))
    if not gpus:
        return {"driver": "", "cuda": "", "chip": ""}
    driver, cuda = parse_nvidia_smi(tool(["nvidia-smi"]))
    return {
        "driver": driver or gpus[0][1],
        "cuda": cuda,
        "chip": ", ".join(f"{name} x{count}" for name, count in Counter(n for n, _ in gpus).items()),
    }
