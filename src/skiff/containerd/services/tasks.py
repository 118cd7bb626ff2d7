"""containerd.services.tasks.v1.Tasks: not there yet.

Tasks need the shim (issue 5, in progress). Until it lands, every method answers
UNIMPLEMENTED with one clear message, so a client (``ctr run``, ``ctr tasks ls``) fails at once
and says why instead of hanging or pretending.
"""

from __future__ import annotations

from typing import Any

from skiff.containerd.rpc import handler, unimplemented
from skiff.containerd.services import Service

MESSAGE = "tasks are not implemented yet (issue 5, shim work in progress)"


def _unimplemented(method: str) -> Any:
    def rpc(self: Any, request: Any, context: Any) -> Any:
        raise unimplemented(f"{method}: {MESSAGE}")
    rpc.__name__ = method
    rpc.__qualname__ = f"TasksService.{method}"
    return handler(rpc)


class TasksService(Service):
    Create = _unimplemented("Create")
    Start = _unimplemented("Start")
    Delete = _unimplemented("Delete")
    DeleteProcess = _unimplemented("DeleteProcess")
    Get = _unimplemented("Get")
    List = _unimplemented("List")
    Kill = _unimplemented("Kill")
    Exec = _unimplemented("Exec")
    ResizePty = _unimplemented("ResizePty")
    CloseIO = _unimplemented("CloseIO")
    Pause = _unimplemented("Pause")
    Resume = _unimplemented("Resume")
    ListPids = _unimplemented("ListPids")
    Checkpoint = _unimplemented("Checkpoint")
    Update = _unimplemented("Update")
    Metrics = _unimplemented("Metrics")
    Wait = _unimplemented("Wait")
