"""Host readers on fixture trees and command outputs laid out as Ascend and NVIDIA write them
(tests/fixtures/hosts/README.md gives the public source of each)."""

import pathlib

import pytest

from capture_agent.platforms import run_tool
from capture_agent.platforms.ascend import (
    ascend_fingerprint, cann_version, driver_version, parse_npu_smi_board, parse_npu_smi_info, toolkit_home,
)
from capture_agent.platforms.nvidia import nvidia_fingerprint, parse_gpu_query, parse_nvidia_smi

HOSTS = pathlib.Path(__file__).parent / "fixtures" / "hosts"


@pytest.mark.parametrize("host, toolkit, version", [
    ("ascend-8.0.RC1", "ascend-toolkit/latest", "8.0.RC1"),
    ("ascend-8.1.RC1", "ascend-toolkit/latest", "8.1.RC1"),
    ("ascend-8.5.1", "ascend-toolkit/latest", "8.5.1"),
    ("ascend-8.5.1", "cann-8.5.1", "8.5.1"),
])
def test_the_cann_version_is_read_from_the_toolkit_install(host, toolkit, version):
    assert cann_version(HOSTS / host / toolkit) == version


def test_without_install_info_the_version_cfg_then_the_component_files_give_the_version(tmp_path):
    src = HOSTS / "ascend-8.0.RC1" / "ascend-toolkit" / "latest"
    (tmp_path / "version.cfg").write_text((src / "version.cfg").read_text())
    assert cann_version(tmp_path) == "8.0.RC1"
    only_components = tmp_path / "c"
    (only_components / "share" / "info" / "runtime").mkdir(parents=True)
    (only_components / "share" / "info" / "runtime" / "version.info").write_text(
        (HOSTS / "ascend-8.5.1" / "cann-8.5.1" / "share" / "info" / "runtime" / "version.info").read_text())
    assert cann_version(only_components) == "8.5.1"


def test_the_toolkit_home_follows_the_environment_of_set_env_sh():
    assert toolkit_home({}) == pathlib.Path("/usr/local/Ascend/ascend-toolkit/latest")
    assert toolkit_home({"ASCEND_TOOLKIT_HOME": "/opt/cann"}) == pathlib.Path("/opt/cann")


@pytest.mark.parametrize("host, version", [("ascend-8.0.RC1", "24.1.rc1"), ("ascend-8.1.RC1", "25.0.rc1.1"), ("ascend-8.5.1", "25.5.2")])
def test_the_driver_version_is_read_from_version_info(host, version):
    assert driver_version(HOSTS / host / "driver" / "version.info") == version


def test_npu_smi_info_gives_one_name_per_chip_on_a2_and_a3_hosts():
    version, names = parse_npu_smi_info((HOSTS / "ascend-8.0.RC1" / "npu-smi-info.txt").read_text())
    assert version == "24.1.rc1" and names == ["910B3"] * 8
    version, names = parse_npu_smi_info((HOSTS / "ascend-8.5.1" / "npu-smi-info.txt").read_text())
    assert version == "25.5.2" and names == ["Ascend910"] * 16


def test_the_board_query_names_the_soc_as_the_reports_do():
    assert parse_npu_smi_board((HOSTS / "ascend-8.0.RC1" / "npu-smi-info-t-board-i0-c0.txt").read_text()) == "Ascend910B3"
    assert parse_npu_smi_board((HOSTS / "ascend-8.5.1" / "npu-smi-info-t-board-i0-c0.txt").read_text()) == "Ascend910_9362"


def _tool_from(host: pathlib.Path):
    """Answers the npu-smi / nvidia-smi calls a host would, from its captured outputs."""
    outputs = {
        ("npu-smi", "info"): "npu-smi-info.txt",
        ("npu-smi", "info", "-t", "board", "-i", "0", "-c", "0"): "npu-smi-info-t-board-i0-c0.txt",
        ("nvidia-smi",): "nvidia-smi.txt",
        ("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"): "nvidia-smi-query.csv",
    }

    def tool(args):
        f = host / outputs.get(tuple(args), "-")
        return f.read_text() if f.is_file() else ""
    return tool


def test_an_a3_host_fingerprint_matches_the_pleias_reports_environment():
    host = HOSTS / "ascend-8.5.1"
    fp = ascend_fingerprint(env={"ASCEND_TOOLKIT_HOME": str(host / "ascend-toolkit" / "latest")},
                            driver_info=str(host / "driver" / "version.info"), tool=_tool_from(host))
    assert fp == {"cann": "8.5.1", "driver": "25.5.2", "chip": "Ascend910_9362 x16"}


def test_a_host_without_npu_smi_or_install_leaves_the_fields_empty(tmp_path):
    fp = ascend_fingerprint(env={"ASCEND_TOOLKIT_HOME": str(tmp_path)}, driver_info=str(tmp_path / "none"),
                            tool=lambda args: "")
    assert fp == {"cann": "", "driver": "", "chip": ""}
    assert run_tool(["npu-smi-does-not-exist", "info"]) == ""


def test_nvidia_smi_gives_driver_cuda_and_gpus():
    assert parse_nvidia_smi((HOSTS / "nvidia" / "nvidia-smi.txt").read_text()) == ("550.54.15", "12.4")
    assert parse_gpu_query((HOSTS / "nvidia" / "nvidia-smi-query-1gpu.csv").read_text()) == [("NVIDIA H100 80GB HBM3", "550.54.15")]
    fp = nvidia_fingerprint(tool=_tool_from(HOSTS / "nvidia"))
    assert fp == {"driver": "550.54.15", "cuda": "12.4", "chip": "NVIDIA H100 80GB HBM3 x2"}
    assert nvidia_fingerprint(tool=lambda args: "") == {"driver": "", "cuda": "", "chip": ""}
