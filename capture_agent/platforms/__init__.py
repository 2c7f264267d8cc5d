"""What the accelerator host runs: Ascend (CANN, driver, npu-smi) and NVIDIA (driver, CUDA).

Each reader takes the paths and a command runner as arguments, so it is tested on fixture files
laid out exactly as the real products write them. A missing file or tool gives empty fields.
"""

from __future__ import annotations

import shutil
import subprocess


def run_tool(args: list[str], timeout: float = 10.0) -> str:
    """stdout of a host tool, or "" when it is absent, fails or hangs: never an exception."""
    if shutil.which(args[0]) is None:
        return ""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""
