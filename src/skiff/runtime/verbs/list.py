"""``list``: the containers under ``--root``."""

from __future__ import annotations

from skiff import fastjson as json
from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cli import RuntimeFailure

    opts, pos = parse(args, [Flag("--format,-f", default="table"), Flag("--quiet,-q", "bool")],
                      positional_max=0)
    rows = []
    for cid in state.list_ids(ctx.root):
        try:
            st = state.load(ctx.root, cid)
        except RuntimeFailure:
            continue  # removed while we listed
        status = st.status()
        rows.append({"ociVersion": st.config.get("ociVersion", ""), "id": cid,
                     "pid": st.pid if status != "stopped" else 0, "status": status,
                     "bundle": st.bundle, "rootfs": st.rootfs, "created": st.created,
                     "owner": st.owner, "annotations": st.annotations})
    if opts["quiet"]:
        for r in rows:
            print(r["id"])
    elif opts["format"] == "json":
        print(json.dumps(rows))
    elif opts["format"] == "table":
        table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        table += [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        for row in table:
            print("".join(c.ljust(w + 4) for c, w in zip(row, widths, strict=False)) + row[5])
    else:
        raise UsageError(f"invalid format option {opts['format']!r} (table or json)")
    return 0
