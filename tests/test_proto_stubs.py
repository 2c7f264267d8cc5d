"""The checked-in gRPC stubs are exactly what proto/codegen.py makes from proto/cmp.proto."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _codegen():
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "proto" / "codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_match_a_fresh_codegen(tmp_path):
    fresh = _codegen().generate(tmp_path)
    assert [f.name for f in fresh] == ["cmp_pb2.py", "cmp_pb2.pyi", "cmp_pb2_grpc.py"]
    for f in fresh:
        checked_in = ROOT / "proto" / f.name
        assert checked_in.read_bytes() == f.read_bytes(), f"{f.name} is stale: run `make stubs` and commit"


def test_every_rpc_and_field_in_the_proto_has_a_comment():
    lines = (ROOT / "proto" / "cmp.proto").read_text().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("rpc "):
            assert lines[i - 1].strip().startswith("//"), f"rpc without a comment: {s}"
        elif s and s[0].isalpha() and "=" in s and s.endswith(";") and not s.startswith(("syntax", "package")):
            commented = "//" in s or lines[i - 1].strip().startswith("//")
            assert commented, f"field without a comment: {s}"
