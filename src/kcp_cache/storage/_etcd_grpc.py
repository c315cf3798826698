"""grpc and etcd's protobufs, imported with grpc's fork handlers disabled.

grpcio's fork support (on by default on Linux) can leave a watch stream silent after the
process spawns a child (perf-anchors §3d: "Other threads are currently calling into
gRPC, skipping fork() handlers"). ``GRPC_ENABLE_FORK_SUPPORT`` is read when grpc is
first imported, so every etcd module imports grpc through here.

gRPC's C core also prints its own log lines to stderr (``E1124 … Corruption detected``
for a TLS mismatch) next to the engine's one-line error, which already carries gRPC's
status and details; ``GRPC_VERBOSITY=NONE`` keeps start-up errors readable. An explicit
setting of either variable in the environment wins (``GRPC_VERBOSITY=ERROR`` to debug).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
import grpc.aio
from aetcd import rpc

__all__ = ["grpc", "rpc"]
