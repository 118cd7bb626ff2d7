"""Entry point of `skiff`, the docker-compatible command-line client (issue 9).

The hot path (``ps``, ``inspect``, ``images``) imports only this module, ``http``, ``flags``,
``fastjson`` and the command module it runs; threads, termios, ssl and the template engine are
imported by the commands that need them.
"""

from __future__ import annotations

import os
import sys

from skiff.cli.flags import HelpRequested, Spec, parse
from skiff.cli.http import Client, CLIError

GLOBAL = Spec("H|host=", "D|debug", "l|log-level:", "config:", "c|context:", "tls", "tlsverify",
              "tlscacert:", "tlscert:", "tlskey:", "v|version", "help")

# command -> (module, function)
CONTAINER = {
    "run": "run", "create": "create", "start": "start", "stop": "stop", "restart": "restart",
    "kill": "kill", "rm": "rm", "ps": "ps", "ls": "ps", "list": "ps", "logs": "logs",
    "exec": "exec_", "attach": "attach", "inspect": "inspect", "top": "top", "stats": "stats",
    "wait": "wait", "pause": "pause", "unpause": "unpause", "rename": "rename", "update": "update",
    "remove": "rm", "port": "port", "commit": "commit", "diff": "diff", "cp": "cp", "export": "export",
}
IMAGE = {
    "images": "images", "pull": "pull", "tag": "tag", "rmi": "rmi", "save": "save", "load": "load",
    "history": "history", "push": "push", "import": "import_",
}
SYSTEM = {"version": "version", "info": "info", "events": "events", "login": "login", "logout": "logout"}
IMAGE_SUB = {"ls": "images", "list": "images", "rm": "rmi", "remove": "rmi", "pull": "pull",
             "tag": "tag", "save": "save", "load": "load", "history": "history", "inspect": "inspect",
             "push": "push", "import": "import_"}
SYSTEM_SUB = {"info": "info", "events": "events", "df": "df", "prune": "system_prune"}
BUILDER_SUB = {"build": "build", "prune": "prune"}

MANAGEMENT = ("builder", "container", "image", "network", "system", "volume")


def _usage(group: str | None = None) -> int:
    from skiff.cli import help as h

    sys.stdout.write(h.management_help(group) if group else h.main_help(h.global_rows(GLOBAL)))
    return 0


def _resolve(args: list[str]) -> tuple[str, str, list[str]] | None:
    if not args:
        return None
    cmd, rest = args[0], args[1:]
    if cmd == "build":
        return "build", "build", rest
    if cmd in ("container", "image", "system", "builder") :
        if not rest:
            return None
        sub, rest = rest[0], rest[1:]
        if (cmd == "image" and sub == "build") or (cmd == "builder" and sub in BUILDER_SUB):
            return "build", BUILDER_SUB[sub], rest
        if sub == "prune" and cmd in ("container", "image"):
            return "system", f"{cmd}_prune", rest
        if cmd == "container":
            if sub == "inspect":
                return "container", "inspect", ["--type", "container", *rest]
            if sub in CONTAINER:
                return "container", CONTAINER[sub], rest
        elif cmd == "image":
            if sub == "inspect":
                return "container", "inspect", ["--type", "image", *rest]
            if sub in IMAGE_SUB:
                return "image", IMAGE_SUB[sub], rest
        elif sub in SYSTEM_SUB:
            return "system", SYSTEM_SUB[sub], rest
        raise CLIError(f"skiff: '{cmd} {sub}' is not a skiff command.\nSee 'skiff {cmd} --help'", 1)
    if cmd in ("network", "volume"):
        return "objects", cmd, rest
    if cmd in ("ls", "list", "remove"):
        raise CLIError(f"skiff: '{cmd}' is not a skiff command.\nSee 'skiff --help'", 1)
    if cmd in CONTAINER:
        return "container", CONTAINER[cmd], rest
    if cmd in IMAGE:
        return "image", IMAGE[cmd], rest
    if cmd in SYSTEM:
        return "system", SYSTEM[cmd], rest
    raise CLIError(f"skiff: '{cmd}' is not a skiff command.\nSee 'skiff --help'", 1)


def _split_global(argv: list[str]) -> tuple[dict, list[str]]:
    """Global options come before the command."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name = a.lstrip("-").split("=", 1)[0]
        ent = GLOBAL.by_name.get(name)
        if ent is None or a == "-":
            break
        i += 1
        if ent[1] and "=" not in a and not (len(a) > 2 and a[1] != "-"):
            i += 1
    opts, _ = parse(GLOBAL, argv[:i], True, "")
    return opts, argv[i:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        gopts, args = _split_global(argv)
        if gopts["version"]:
            from skiff.cli.system import CLIENT_VERSION

            print(f"Skiff version {CLIENT_VERSION} (docker-compatible CLI)")
            return 0
        if gopts["help"] or not args or args[0] in ("help", "--help"):
            return _usage()
        if args[0] in MANAGEMENT and (len(args) == 1 or args[1] in ("--help", "help")):
            return _usage(args[0])
        if gopts["config"]:
            os.environ["DOCKER_CONFIG"] = gopts["config"]
        if gopts["context"] and gopts["context"] != "default":
            raise CLIError(f"context \"{gopts['context']}\" is not supported: skiff talks to -H/DOCKER_HOST only")
        host = gopts["host"][-1] if gopts["host"] else None
        tls = None
        if gopts["tls"] or gopts["tlsverify"]:
            tls = {"verify": bool(gopts["tlsverify"]), "ca": gopts["tlscacert"],
                   "cert": gopts["tlscert"], "key": gopts["tlskey"]}
        res = _resolve(args)
        if res is None:
            return _usage()
        modname, fn, rest = res
        cli = Client(host, tls)
        if modname == "container":
            from skiff.cli import container as mod
        elif modname == "image":
            from skiff.cli import image as mod  # type: ignore[no-redef]
        elif modname == "objects":
            from skiff.cli import objects as mod  # type: ignore[no-redef]
        elif modname == "build":
            from skiff.cli import build as mod  # type: ignore[no-redef]
        else:
            from skiff.cli import system as mod  # type: ignore[no-redef]
        return int(getattr(mod, fn)(cli, rest) or 0)
    except HelpRequested as e:
        from skiff.cli.help import command_help

        sys.stdout.write(command_help(e.spec, e.cmd))
        return 0
    except CLIError as e:
        sys.stdout.flush()
        print(e.msg, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`skiff ps | head -1`): drop what is still buffered quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


if __name__ == "__main__":
    sys.exit(main())
