"""Generate the Go bindings of the proto files for the interop client.

    python tools/gengo.py            # write into interop/gen/
    python tools/gengo.py --out DIR  # write into DIR (the drift test uses this)

protoc is the pinned grpcio-tools' own; the plugins are protoc-gen-go and
protoc-gen-go-grpc at the versions the Makefile pins, installed into
interop/bin/ by `make interop-tools`. The Go import paths are this module's
(the wire contract's go_package names choo's own repository).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genproto import PROTO_ROOT, ROOT, proto_files

MODULE = "choo-interop"
PLUGIN_DIR = ROOT / "interop" / "bin"
DEFAULT_OUT = ROOT / "interop" / "gen"
PACKAGES = {
    "choo/v1/daemon.proto": "gen/choo/v1;apiv1",
    "choo/conformance/v1/control.proto": "gen/choo/conformance/v1;conformancev1",
}


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    files = proto_files()
    if sorted(PACKAGES) != files:
        raise SystemExit(f"tools/gengo.py: give every proto file a Go package: {files}")
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    mappings = [f"M{name}={MODULE}/{package}" for name, package in PACKAGES.items()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-go={PLUGIN_DIR / 'protoc-gen-go'}",
        f"--plugin=protoc-gen-go-grpc={PLUGIN_DIR / 'protoc-gen-go-grpc'}",
        # Paths relative to the module root: gen/choo/v1/daemon.pb.go, ...
        f"--go_out={out}",
        f"--go_opt=module={MODULE}/gen",
        f"--go-grpc_out={out}",
        f"--go-grpc_opt=module={MODULE}/gen",
        *(f"--go_opt={m}" for m in mappings),
        *(f"--go-grpc_opt={m}" for m in mappings),
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
