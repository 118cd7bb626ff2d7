"""Entry point of ``skiff-shim`` (see ``skiff.shim`` and ``skiff.shim.config.USAGE``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help", "help"):
        from skiff.shim.config import USAGE

        sys.stdout.write(USAGE)
        return 0
    if args and args[0] in ("-v", "--version"):
        from skiff import __version__

        print(f"skiff-shim version {__version__}")
        return 0
    from skiff import fastjson
    from skiff.shim import daemon
    from skiff.shim.config import USAGE, ConfigError, ShimConfig, parse_flags

    try:
        if args and args[0] == "zygote":
            opts = parse_flags(args[1:], ("socket", "pid_file"), ("foreground",))
            sock = str(opts.get("socket") or "")
            pid_file = str(opts.get("pid_file") or "")
            if not sock.startswith("/"):
                raise ConfigError("zygote: --socket: an absolute path is required")

            def zbody(report):
                return daemon.run_zygote(sock, pid_file, report)

            body = zbody
        else:
            opts = parse_flags(args, ("id", "namespace", "bundle", "state_dir", "socket", "address"),
                               ("foreground",))
            fg = opts.pop("foreground", False)
            cfg = ShimConfig(**{k: str(v) for k, v in opts.items()}).validate()
            opts["foreground"] = fg

            def sbody(report):
                return daemon.run_shim(cfg, report)

            body = sbody
    except ConfigError as e:
        sys.stderr.write(f"skiff-shim: {e}\n{USAGE}")
        return 2
    if opts.get("foreground"):
        # for debugging: serve in this process, report on (the original) stdout
        import os

        out = os.dup(1)

        def report(msg: dict) -> None:
            os.write(out, (fastjson.dumps(msg) + "\n").encode())
            os.close(out)

        return body(report)
    msg = daemon.daemonize(body)
    if "error" in msg:
        err = msg["error"]
        sys.stderr.write(f"skiff-shim: {err.get('message')} ({err.get('code')})\n")
        return 1
    sys.stdout.write(fastjson.dumps(msg) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
