"""Regenerates the gRPC stubs from proto/cmp.proto.

Run it after editing the .proto (``make stubs``); tests/test_proto_stubs.py fails when the
checked-in stubs differ from what this script produces.

    python proto/codegen.py            # rewrite proto/cmp_pb2*.py
    python proto/codegen.py --out DIR  # write them to DIR instead
"""

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = "proto/cmp.proto"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes cmp_pb2.py, cmp_pb2.pyi and cmp_pb2_grpc.py under out_dir/proto/ and returns them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The include root is the repository root, so the generated code imports `proto.cmp_pb2`.
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + PROTO)
    return sorted((out_dir / "proto").glob("cmp_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="root to write proto/ stubs under")
    files = generate(parser.parse_args().out)
    for f in files:
        print(f, file=sys.stderr)


if __name__ == "__main__":
    main()
