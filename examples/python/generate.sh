#!/bin/sh
# generate.sh writes the Python code of the opengms contract (contract/) into a folder, default
# examples/python/gen: messages (*_pb2.py) and gRPC stubs (*_pb2_grpc.py). It needs protoc and gRPC's
# Python plugin: Debian's protobuf-compiler and protobuf-compiler-grpc (apt install); any protoc
# 3.15 or later with grpcio-tools' or grpc's plugin does as well. The well-known types come with
# the protobuf runtime: no code is generated for google/protobuf.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
contract="$here/../../contract"
out=${1:-"$here/gen"}
mkdir -p "$out"
cd "$contract"
protoc -I . --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  gms/v1/*.proto buf/validate/validate.proto google/rpc/status.proto google/rpc/error_details.proto
echo "generated into $out"
