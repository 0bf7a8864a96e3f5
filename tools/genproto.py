"""Generate the Python bindings of every .proto under proto/.

    python tools/genproto.py            # write next to the .proto files
    python tools/genproto.py --out DIR  # write into DIR (the drift test uses this)

Messages (*_pb2.py), gRPC stubs (*_pb2_grpc.py) and type stubs (*.pyi) all come
from the pinned grpcio-tools and mypy-protobuf, so the output is byte-for-byte
reproducible for a given pyproject.toml.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[str]:
    # Only the contract itself: a wheel build leaves copies under proto/build/.
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "choo").rglob("*.proto"))


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=str(bin_dir)) or 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=str(bin_dir)) or 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *proto_files(),
    ]
    # protoc resolves the plugins through PATH; make the venv's own come first.
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
