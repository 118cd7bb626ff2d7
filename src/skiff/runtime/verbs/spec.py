"""``skiff-runc spec [--bundle DIR] [--rootless]``: write a default config.json into a bundle.

As runc does: the bundle defaults to the current directory, an existing config.json is never
overwritten, and the file is JSON indented with tabs, created with mode 0666 minus the umask.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    import json

    from skiff.oci.defaults import default_config
    from skiff.runtime.cli import RuntimeFailure
    from skiff.runtime.flags import Flag, parse

    values, _ = parse(args, [Flag("--bundle,-b", default=""), Flag("--rootless", "bool")],
                      positional_max=0)
    bundle = values["bundle"]
    path = os.path.join(bundle, "config.json") if bundle else "config.json"
    data = json.dumps(default_config(rootless=values["rootless"]), indent="\t").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise RuntimeFailure(f"File {path} exists. Remove it first") from None
    except OSError as e:
        raise RuntimeFailure(f"spec: create {path}: {e.strerror.lower() if e.strerror else e}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        os.close(fd)
        os.unlink(path)  # leave no truncated config.json behind
        raise RuntimeFailure(f"spec: write {path}: {e.strerror.lower() if e.strerror else e}") from None
    os.close(fd)
    return 0
