"""grpc and etcd's protobufs, imported with grpc's fork handlers disabled.

grpcio's fork support (on by default on Linux) can leave a watch stream silent after the
process spawns a child (perf-anchors §3d: "Other threads are currently calling into
gRPC, skipping fork() handlers"). ``GRPC_ENABLE_FORK_SUPPORT`` is read when grpc is
first imported, so every etcd module imports grpc through here. An explicit setting in
the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc
import grpc.aio
from aetcd import rpc

__all__ = ["grpc", "rpc"]
