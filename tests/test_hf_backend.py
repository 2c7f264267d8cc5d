"""Backend `hf`: pooling read from sentence-transformers files, and devices that are not there
give a one-line error that says what to install."""

import json

import pytest

from capture_agent.backends import BackendError, make_backend
from capture_agent.backends.hf import sentence_transformers_pooling


def _st_folder(path, pooling_flags, normalize):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (path / "1_Pooling").mkdir(parents=True)
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_flags))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    return path


def test_minilm_reads_as_mean_pooling_with_normalisation(minilm_path):
    import pathlib

    assert sentence_transformers_pooling(pathlib.Path(minilm_path)) == ("mean", True, 256)


def test_an_llm_embedder_style_folder_reads_as_cls_pooling(tmp_path):
    folder = _st_folder(tmp_path / "llm-embedder", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, True)
    assert sentence_transformers_pooling(folder) == ("cls", True, 512)


def test_last_token_pooling_without_normalisation(tmp_path):
    folder = _st_folder(tmp_path / "m", {"pooling_mode_lasttoken": True}, False)
    assert sentence_transformers_pooling(folder) == ("last", False, 512)


def test_a_plain_model_folder_says_nothing_about_pooling(tmp_path):
    assert sentence_transformers_pooling(tmp_path) == (None, None, None)


@pytest.mark.parametrize("device, message", [
    ("npu:0", "needs torch_npu: install the torch_npu release that matches torch 2."),
    ("tpu", "unknown device 'tpu': use cpu, cuda[:N] or npu[:N]"),
    ("cuda:x", "unknown device"),
])
def test_devices_that_cannot_be_used_say_what_to_do(minilm_path, device, message):
    with pytest.raises(BackendError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_backend("hf", model_path=minilm_path, device=device, dtype="float32", mode="embed")


def test_cuda_without_a_gpu_says_so(minilm_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU: the error path cannot be reached")
    with pytest.raises(BackendError, match="sees no CUDA GPU"):
        make_backend("hf", model_path=minilm_path, device="cuda", dtype="float32", mode="embed")


def test_a_missing_model_path_is_a_clear_error():
    with pytest.raises(BackendError, match="neither a model folder nor a .gguf file"):
        make_backend("hf", model_path="/no/such/model", device="cpu", dtype="float32", mode="embed")


def test_an_unknown_backend_lists_the_known_ones(minilm_path):
    with pytest.raises(BackendError, match="unknown backend 'onnx': choose one of hf"):
        make_backend("onnx", model_path=minilm_path)


def test_embedding_on_cuda_matches_the_cpu(minilm_path):
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this host: the cuda capture path is proven on the device machine")
    texts = ["Hello world", "机器学习是人工智能的一个重要分支。"]
    cpu = [r["embedding"] for r in make_backend("hf", model_path=minilm_path, device="cpu", dtype="float32", mode="embed").records(texts)]
    gpu = [r["embedding"] for r in make_backend("hf", model_path=minilm_path, device="cuda", dtype="float32", mode="embed").records(texts)]
    for a, b in zip(cpu, gpu):
        assert float(np.dot(a, b)) > 0.9999
