"""Ascend hosts: the CANN toolkit version, the driver version, and the NPU chips.

    ascend_fingerprint()   # {"cann": "8.5.1", "driver": "25.5.2", "chip": "Ascend910_9362 x16"}

Where the versions live (see tests/fixtures/hosts/ for real layouts):
- CANN: $ASCEND_TOOLKIT_HOME (else /usr/local/Ascend/ascend-toolkit/latest), in
  <arch>-linux/ascend_toolkit_install.info (version=), else version.cfg
  (runtime_running_version=[7.2.0.1.240:8.0.RC1]), else the components' version.info
  (version_dir=), under share/info/ from CANN 8.5 on.
- driver: /usr/local/Ascend/driver/version.info (package_version=, else Version=).
- chips: `npu-smi info` (one row per chip) and `npu-smi info -t board -i 0 -c 0` (the SoC name).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections import Counter

from capture_agent.platforms import run_tool

DEFAULT_TOOLKIT = "/usr/local/Ascend/ascend-toolkit/latest"
DEFAULT_DRIVER_INFO = "/usr/local/Ascend/driver/version.info"


def read_key_values(path: pathlib.Path) -> dict[str, str]:
    """key=value lines with lower-cased keys (Huawei writes both Version= and version=)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            out.setdefault(key.strip().lower(), value.strip())
    return out


def toolkit_home(env=os.environ) -> pathlib.Path:
    return pathlib.Path(env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH") or DEFAULT_TOOLKIT)


def cann_version(home: pathlib.Path) -> str:
    """The CANN version of the toolkit installed at home, e.g. "8.0.RC1"; "" when there is none."""
    for info in sorted(home.glob("*-linux/ascend_toolkit_install.info")):
        if version := read_key_values(info).get("version"):
            return version
    cfg = read_key_values(home / "version.cfg")
    for key in ("toolkit_running_version", "runtime_running_version", "compiler_running_version"):
        if match := re.match(r"\[[^:\]]*:([^\]]+)\]", cfg.get(key, "")):
            return match.group(1)
    for component in ("runtime", "compiler", "opp"):
        for info in (home / "share" / "info" / component / "version.info", home / component / "version.info"):
            if version := read_key_values(info).get("version_dir"):
                return version
    return ""


def driver_version(info: pathlib.Path) -> str:
    kv = read_key_values(info)
    return kv.get("package_version") or kv.get("version", "")


def parse_npu_smi_info(text: str) -> tuple[str, list[str]]:
    """(npu-smi version, the Name of every chip row) from `npu-smi info`."""
    version = ""
    if match := re.search(r"npu-smi\s+(\S+)", text):
        version = match.group(1)
    names = []
    for line in text.split("| NPU     Chip")[0].splitlines():
        # A chip's first row: "| <npu id>     <name>   | <health>   | ..."; the health column says OK/Warning/...
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d+\s+\S+", cells[0]) and cells[1] and not cells[1].startswith("0000:"):
            names.append(cells[0].split()[1])
    return version, names


def parse_npu_smi_board(text: str) -> str:
    """The SoC name from `npu-smi info -t board`: "Ascend910B3" (A2), "Ascend910_9362" (A3)."""
    kv = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip().lower()] = value.strip()
    chip, chip_type, npu_name = kv.get("chip name", ""), kv.get("chip type", ""), kv.get("npu name", "")
    if chip_type and chip and not chip.startswith(chip_type):
        return chip_type + chip
    if npu_name and chip:
        return f"{chip}_{npu_name}"
    return chip


def chip_summary(board_name: str, names: list[str]) -> str:
    """"Ascend910B3 x8": the SoC name (or the table's names) and how many chips."""
    if not names:
        return board_name
    if board_name:
        return f"{board_name} x{len(names)}"
    return ", ".join(f"{n} x{c}" for n, c in Counter(names).items())


def ascend_fingerprint(env=os.environ, driver_info: str = DEFAULT_DRIVER_INFO, tool=run_tool) -> dict[str, str]:
    """cann, driver and chip of this host; empty strings for whatever it does not have."""
    _, names = parse_npu_smi_info(tool(["npu-smi", "info"]))
    board = parse_npu_smi_board(tool(["npu-smi", "info", "-t", "board", "-i", "0", "-c", "0"])) if names else ""
    return {
        "cann": cann_version(toolkit_home(env)),
        "driver": driver_version(pathlib.Path(driver_info)),
        "chip": chip_summary(board, names),
    }
