"""neonize's generated protobuf classes, reached without loading its Go library.

Trap: importing anything under the `neonize` package runs its `__init__`, which imports
`neonize._binder`, which loads the 18 MB Go library (`neonize-linux-amd64.so`) as a side
effect of the import. The generated modules need none of that: they import one another as
top-level modules from neonize/proto/ (neonize's own `proto/__init__.py` puts that folder on
sys.path). Doing the same here gives the very classes neonize uses, since both go through
protobuf's one default descriptor pool (`neonize.proto.Neonize_pb2.JID is pb.JID`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _proto_folder() -> str:
    spec = importlib.util.find_spec("neonize")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("neonize is not installed")
    return str(Path(spec.submodule_search_locations[0]) / "proto")


_FOLDER = _proto_folder()
if _FOLDER not in sys.path:
    sys.path.insert(0, _FOLDER)

# goneonize's own schema: events, JIDs, the parameters and results of its exported functions.
import Neonize_pb2 as pb  # noqa: E402

# How the linked device presents itself to the phone.
from waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps  # noqa: E402

# WhatsApp's end-to-end messages (what a Message event carries, what a send takes).
from waE2E import WAWebProtobufsE2E_pb2 as e2e  # noqa: E402

__all__ = ["DeviceProps", "e2e", "pb"]
