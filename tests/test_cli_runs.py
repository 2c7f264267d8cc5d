"""`cmp runs` finds runs by model, device, dtype, label, status, dates and version conditions."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from conftest import embed_run

PROMPTS = ["one", "two", "three"]


@pytest.fixture
def fleet(client):
    v = np.random.default_rng(1).normal(size=(3, 8))
    return {
        "cpu": embed_run(client, v, PROMPTS, label="baseline"),
        "npu_old": embed_run(client, v, PROMPTS, device="npu:0", dtype="bfloat16", cann="8.0.RC2", vllm_ascend="0.9.2",
                             chip="Ascend910B3 x8", label="nightly"),
        "npu_mid": embed_run(client, v, PROMPTS, device="npu:1", dtype="bfloat16", cann="8.1.RC1", vllm_ascend="0.18.0rc1"),
        "npu_new": embed_run(client, v, PROMPTS, device="npu:0", dtype="bfloat16", cann="8.5.1", vllm_ascend="0.18.0",
                             chip="Ascend910_9362 x16"),
        "gpu": embed_run(client, v, PROMPTS, device="cuda:0", dtype="bfloat16", chip="NVIDIA H100 80GB HBM3 x2",
                         model_name="other"),
    }


def _ids(server, *args):
    result = CliRunner().invoke(cli, ["runs", "--server", server.address, "--json", *args])
    assert result.exit_code == 0, result.output
    return {r["id"] for r in json.loads(result.output)}


def test_filters_by_device_kind_device_and_chip_name(server, fleet):
    assert _ids(server, "--device", "npu") == {fleet["npu_old"], fleet["npu_mid"], fleet["npu_new"]}
    assert _ids(server, "--device", "npu:1") == {fleet["npu_mid"]}
    assert _ids(server, "--device", "910B3") == {fleet["npu_old"]}
    assert _ids(server, "--device", "H100") == {fleet["gpu"]}


def test_filters_by_model_dtype_label_and_status(server, fleet):
    assert _ids(server, "--model", "other") == {fleet["gpu"]}
    assert _ids(server, "--dtype", "float32") == {fleet["cpu"]}
    assert _ids(server, "--label", "night") == {fleet["npu_old"]}
    assert _ids(server, "--status", "complete") == set(fleet.values())
    assert _ids(server, "--status", "failed") == set()


def test_version_conditions_order_cann_and_pep_440_versions(server, fleet):
    assert _ids(server, "--where", "cann>=8.1.RC1") == {fleet["npu_mid"], fleet["npu_new"]}
    assert _ids(server, "--where", "cann<8.0.0") == {fleet["npu_old"]}
    assert _ids(server, "--where", "cann>=8.5", "--where", "vllm_ascend==0.18.0") == {fleet["npu_new"]}
    assert _ids(server, "--where", "vllm_ascend<0.18.0") == {fleet["npu_old"], fleet["npu_mid"]}


def test_dates_and_limit(server, fleet):
    assert _ids(server, "--since", "2000-01-01") == set(fleet.values())
    assert _ids(server, "--until", "2000-01-01") == set()
    assert len(_ids(server, "--device", "npu", "--limit", "2")) == 2


@pytest.mark.parametrize("args, message", [
    (["--where", "cann"], "expected FIELD OP VALUE"),
    (["--where", "label>=a"], "label is not a version"),
    (["--since", "yesterday"], "expected an ISO date"),
])
def test_bad_filters_exit_2_with_the_reason(server, fleet, args, message):
    result = CliRunner().invoke(cli, ["runs", "--server", server.address, *args])
    assert result.exit_code == 2 and message in result.output
