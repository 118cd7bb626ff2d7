"""``state``: print the OCI state of a container."""

from __future__ import annotations

from skiff import fastjson as json
from skiff.runtime.flags import UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state

    _, pos = parse(args, [], positional_max=1)
    if not pos:
        raise UsageError('"state" requires exactly 1 argument (the container id)')
    st = state.load(ctx.root, pos[0])
    doc = st.oci_state()
    doc["rootfs"] = st.rootfs
    doc["created"] = st.created
    doc["owner"] = st.owner
    print(json.dumps(doc, indent=2))
    return 0
