"""`--help` texts, generated from the commands' flag specs (``skiff.cli.flags.Spec``).

Imported only when help is asked for, so the hot path does not pay for these tables.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.cli.flags import Spec

# command -> (arguments after [OPTIONS], one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("IMAGE [COMMAND] [ARG...]", "Create and run a new container from an image"),
    "create": ("IMAGE [COMMAND] [ARG...]", "Create a new container without starting it"),
    "start": ("CONTAINER [CONTAINER...]", "Start one or more stopped containers"),
    "stop": ("CONTAINER [CONTAINER...]", "Stop one or more running containers"),
    "restart": ("CONTAINER [CONTAINER...]", "Restart one or more containers"),
    "kill": ("CONTAINER [CONTAINER...]", "Kill one or more running containers"),
    "rm": ("CONTAINER [CONTAINER...]", "Remove one or more containers"),
    "ps": ("", "List containers"),
    "logs": ("CONTAINER", "Fetch the logs of a container"),
    "exec": ("CONTAINER COMMAND [ARG...]", "Execute a command in a running container"),
    "attach": ("CONTAINER", "Attach local standard input, output, and error streams to a running container"),
    "inspect": ("NAME|ID [NAME|ID...]", "Return low-level information on Docker objects"),
    "top": ("CONTAINER [ps OPTIONS]", "Display the running processes of a container"),
    "stats": ("[CONTAINER...]", "Display a live stream of container(s) resource usage statistics"),
    "wait": ("CONTAINER [CONTAINER...]", "Block until one or more containers stop, then print their exit codes"),
    "pause": ("CONTAINER [CONTAINER...]", "Pause all processes within one or more containers"),
    "unpause": ("CONTAINER [CONTAINER...]", "Unpause all processes within one or more containers"),
    "rename": ("CONTAINER NEW_NAME", "Rename a container"),
    "update": ("CONTAINER [CONTAINER...]", "Update configuration of one or more containers"),
    "port": ("CONTAINER [PRIVATE_PORT[/PROTO]]", "List port mappings or a specific mapping for the container"),
    "commit": ("CONTAINER [REPOSITORY[:TAG]]", "Create a new image from a container's changes"),
    "diff": ("CONTAINER", "Inspect changes to files or directories on a container's filesystem"),
    "cp": ("CONTAINER:SRC_PATH DEST_PATH|-\n\tskiff cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
           "Copy files/folders between a container and the local filesystem"),
    "export": ("CONTAINER", "Export a container's filesystem as a tar archive"),
    "images": ("[REPOSITORY[:TAG]]", "List images"),
    "pull": ("NAME[:TAG|@DIGEST]", "Download an image from a registry"),
    "push": ("NAME[:TAG]", "Upload an image to a registry"),
    "tag": ("SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "rmi": ("IMAGE [IMAGE...]", "Remove one or more images"),
    "save": ("IMAGE [IMAGE...]", "Save one or more images to a tar archive (streamed to STDOUT by default)"),
    "load": ("", "Load an image from a tar archive or STDIN"),
    "import": ("file|URL|- [REPOSITORY[:TAG]]", "Import the contents from a tarball to create a filesystem image"),
    "history": ("IMAGE", "Show the history of an image"),
    "build": ("PATH | URL | -", "Build an image from a Dockerfile"),
    "builder prune": ("", "Remove build cache"),
    "login": ("[SERVER]", "Log in to a registry"),
    "logout": ("[SERVER]", "Log out from a registry"),
    "version": ("", "Show the Docker version information"),
    "info": ("", "Display system-wide information"),
    "events": ("", "Get real time events from the server"),
    "system df": ("", "Show docker disk usage"),
    "system prune": ("", "Remove unused data"),
    "container prune": ("", "Remove all stopped containers"),
    "image prune": ("", "Remove unused images"),
    "network create": ("NETWORK", "Create a network"),
    "network ls": ("", "List networks"),
    "network rm": ("NETWORK [NETWORK...]", "Remove one or more networks"),
    "network inspect": ("NETWORK [NETWORK...]", "Display detailed information on one or more networks"),
    "network connect": ("NETWORK CONTAINER", "Connect a container to a network"),
    "network disconnect": ("NETWORK CONTAINER", "Disconnect a container from a network"),
    "network prune": ("", "Remove all unused networks"),
    "volume create": ("[VOLUME]", "Create a volume"),
    "volume ls": ("", "List volumes"),
    "volume rm": ("VOLUME [VOLUME...]", "Remove one or more volumes"),
    "volume inspect": ("VOLUME [VOLUME...]", "Display detailed information on one or more volumes"),
    "volume prune": ("", "Remove unused local volumes"),
}

# flag (long name) -> description; "command:flag" overrides for one command
FLAGS: dict[str, str] = {
    "all": "Show all (default shows just running)",
    "quiet": "Only display IDs",
    "no-trunc": "Don't truncate output",
    "format": "Format output using a custom template: 'table', 'table TEMPLATE', 'json' or a Go template",
    "filter": "Filter output based on conditions provided",
    "force": "Do not prompt for confirmation",
    "detach": "Run container in background and print container ID",
    "interactive": "Keep STDIN open even if not attached",
    "tty": "Allocate a pseudo-TTY",
    "env": "Set environment variables",
    "env-file": "Read in a file of environment variables",
    "workdir": "Working directory inside the container",
    "user": "Username or UID (format: <name|uid>[:<group|gid>])",
    "name": "Assign a name to the container",
    "rm": "Automatically remove the container and its anonymous volumes when it exits",
    "entrypoint": "Overwrite the default ENTRYPOINT of the image",
    "memory": "Memory limit",
    "cpus": "Number of CPUs",
    "volume": "Bind mount a volume",
    "mount": "Attach a filesystem mount to the container",
    "publish": "Publish a container's port(s) to the host",
    "publish-all": "Publish all exposed ports to random ports",
    "network": "Connect a container to a network",
    "hostname": "Container host name",
    "label": "Set meta data on a container",
    "restart": "Restart policy to apply when a container exits",
    "privileged": "Give extended privileges to this container",
    "init": "Run an init inside the container that forwards signals and reaps processes",
    "cap-add": "Add Linux capabilities",
    "cap-drop": "Drop Linux capabilities",
    "read-only": "Mount the container's root filesystem as read only",
    "tmpfs": "Mount a tmpfs directory",
    "detach-keys": "Override the key sequence for detaching a container",
    "sig-proxy": "Proxy received signals to the process",
    "attach": "Attach to STDIN, STDOUT or STDERR",
    "pull": 'Pull image before running ("always", "missing", "never")',
    "platform": "Set platform if server is multi-platform capable",
    "signal": "Signal to send to the container",
    "time": "Seconds to wait before killing the container",
    "timeout": "Seconds to wait before killing the container (same as --time)",
    "volumes": "Remove anonymous volumes associated with the container",
    "follow": "Follow log output",
    "timestamps": "Show timestamps",
    "tail": 'Number of lines to show from the end of the logs (default "all")',
    "since": "Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)",
    "until": "Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)",
    "details": "Show extra details provided to logs",
    "no-stream": "Disable streaming stats and only pull the first result",
    "size": "Display total file sizes",
    "last": "Show n last created containers (includes all states)",
    "latest": "Show the latest created container (includes all states)",
    "type": "Return JSON for specified type",
    "digests": "Show digests",
    "output": "Write to a file, instead of STDOUT",
    "input": "Read from tar archive file, instead of STDIN",
    "all-tags": "Download all tagged images in the repository",
    "change": "Apply Dockerfile instruction to the created image",
    "message": "Commit message",
    "author": 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")',
    "pause": "Pause container during commit",
    "archive": "Archive mode (copy all uid/gid information)",
    "follow-link": "Always follow symbol link in SRC_PATH",
    "no-prune": "Do not delete untagged parents",
    "human": "Print sizes and dates in human readable format",
    "username": "Username",
    "password": "Password",
    "password-stdin": "Take the password from stdin",
    "driver": "Driver to manage the Network",
    "opt": "Set driver specific options",
    "verbose": "Show detailed information on space usage",
    "no-stdin": "Do not attach STDIN",
    "disable-content-trust": "Skip image verification (accepted; skiff does no content trust)",
    "ps:all": "Show all containers (default shows just running)",
    "ps:filter": "Filter output based on conditions provided",
    "images:all": "Show all images (default hides intermediate images)",
    "images:quiet": "Only show image IDs",
    "history:quiet": "Only show image IDs",
    "load:quiet": "Suppress the load output",
    "pull:quiet": "Suppress verbose output",
    "push:quiet": "Suppress verbose output",
    "push:all-tags": "Push all tags of an image to the repository",
    "cp:quiet": "Suppress progress output during copy",
    "stats:all": "Show all containers (default shows just running)",
    "exec:detach": "Detached mode: run command in the background",
    "exec:env": "Set environment variables",
    "exec:privileged": "Give extended privileges to the command",
    "start:attach": "Attach STDOUT/STDERR and forward signals",
    "start:interactive": "Attach container's STDIN",
    "kill:signal": 'Signal to send to the container (default "KILL")',
    "export:output": "Write to a file, instead of STDOUT",
    "system prune:all": "Remove all unused images not just dangling ones",
    "system prune:volumes": "Prune anonymous volumes",
    "image prune:all": "Remove all unused images, not just dangling ones",
    "volume create:driver": 'Specify volume driver name (default "local")',
    "volume create:label": "Set metadata for a volume",
    "volume create:name": "Specify volume name",
    "volume ls:quiet": "Only display volume names",
    "network ls:quiet": "Only display network IDs",
    "update:memory": "Memory limit",
    "build:tag": 'Name and optionally a tag in the "name:tag" format',
    "build:file": 'Name of the Dockerfile (Default is "PATH/Dockerfile"; "-" reads it from stdin)',
    "build:build-arg": "Set build-time variables (K=V, or K to take its value from the environment)",
    "build:target": "Set the target build stage to build",
    "build:no-cache": "Do not use cache when building the image",
    "build:pull": "Always attempt to pull a newer version of the image",
    "build:quiet": "Suppress the build output and print image ID on success",
    "build:network": "Set the networking mode for the RUN instructions during build",
    "build:add-host": 'Add a custom host-to-IP mapping ("host:ip")',
    "build:label": "Set metadata for an image",
    "build:rm": "Remove intermediate containers after a successful build (default true)",
    "build:force-rm": "Always remove intermediate containers",
    "build:memory": "Memory limit for RUN",
    "build:memory-swap": "Swap limit equal to memory plus swap: -1 to enable unlimited swap",
    "build:cpu-shares": "CPU shares (relative weight)",
    "build:cpuset-cpus": "CPUs in which to allow execution (0-3, 0,1)",
    "build:cpuset-mems": "MEMs in which to allow execution (0-3, 0,1)",
    "build:cpu-period": "Limit the CPU CFS (Completely Fair Scheduler) period",
    "build:cpu-quota": "Limit the CPU CFS (Completely Fair Scheduler) quota",
    "build:shm-size": 'Size of "/dev/shm"',
    "build:cache-from": "Images to consider as cache sources",
    "build:iidfile": "Write the image ID to the file",
    "build:compress": "Compress the build context using gzip",
    "build:cgroup-parent": 'Set the parent cgroup for the "RUN" instructions during build',
    "build:ulimit": "Ulimit options",
    "build:security-opt": "Security options",
    "build:isolation": "Container isolation technology",
    "build:squash": "Squash newly built layers into a single new layer",
    "builder prune:all": "Remove all unused build cache, not just dangling ones",
    "builder prune:keep-storage": "Amount of disk space to keep for cache",
}

_KIND = {"": "", ":": "string", "=": "list", "#": "int"}

MANAGEMENT = {
    "builder": "Manage builds",
    "container": "Manage containers",
    "image": "Manage images",
    "network": "Manage networks",
    "system": "Manage Docker",
    "volume": "Manage volumes",
}
COMMON = ["run", "exec", "ps", "build", "pull", "push", "images", "login", "logout", "version", "info"]
SUBCOMMANDS = {
    "builder": ["build", "prune"],
    "container": ["attach", "commit", "cp", "create", "diff", "exec", "export", "inspect", "kill", "logs",
                  "ls", "pause", "port", "prune", "rename", "restart", "rm", "run", "start", "stats",
                  "stop", "top", "unpause", "update", "wait"],
    "image": ["build", "history", "import", "inspect", "load", "ls", "prune", "pull", "push", "rm", "save", "tag"],
    "network": ["connect", "create", "disconnect", "inspect", "ls", "prune", "rm"],
    "system": ["df", "events", "info", "prune"],
    "volume": ["create", "inspect", "ls", "prune", "rm"],
}
_ALIAS = {"container ls": "ps", "image ls": "images", "image rm": "rmi", "image import": "import",
          "image build": "build", "builder build": "build"}


def describe(cmd: str) -> str:
    """The one-line description of ``cmd`` ("ps", "network ls", "container ls"...)."""
    key = _ALIAS.get(cmd, cmd)
    if key not in COMMANDS and " " in key:
        top, sub = key.split(" ", 1)
        if top in ("container", "image") and sub in COMMANDS:
            key = sub
        elif top == "system" and sub in COMMANDS:
            key = sub
    return COMMANDS.get(key, ("", ""))[1]


def flag_rows(spec: Spec, cmd: str) -> list[tuple[str, str]]:
    """(left column, description) for each flag of ``spec``, in spec order, plus --help."""
    groups: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for name, (key, kind) in spec.by_name.items():
        groups.setdefault(key, []).append(name)
        kinds[key] = kind
    rows = []
    for key, names in groups.items():
        short = [n for n in names if len(n) == 1]
        longs = [n for n in names if len(n) > 1]
        long = max(longs, key=len) if longs else ""
        left = (f"-{short[0]}, " if short else "    ") + (f"--{long}" if long else "")
        if not long:
            left = left.rstrip(", ")
        t = _KIND[kinds[key]]
        if t:
            left += " " + t
        base = cmd.split(" ", 1)[1] if cmd.startswith(("container ", "image ")) else cmd
        desc = FLAGS.get(f"{cmd}:{long}") or FLAGS.get(f"{base}:{long}") or FLAGS.get(long, "")
        rows.append((left, desc))
    rows.append(("    --help", "Print usage"))
    return rows


def command_help(spec: Spec, cmd: str) -> str:
    """The full `skiff CMD --help` text: Usage line, description, options table."""
    key = _ALIAS.get(cmd, cmd)
    base = key.split(" ", 1)[1] if key.startswith(("container ", "image ")) else key
    args = COMMANDS.get(key, COMMANDS.get(base, ("", "")))[0]
    opts = " [OPTIONS]" if spec.by_name else ""
    lines = [f"Usage:  skiff {cmd}{opts}{(' ' + args) if args else ''}", ""]
    d = describe(cmd)
    if d:
        lines += [d, ""]
    lines.append("Options:")
    rows = flag_rows(spec, cmd)
    width = max(len(r[0]) for r in rows) + 3
    for left, desc in rows:
        lines.append(f"  {left.ljust(width)}{desc}".rstrip())
    return "\n".join(lines) + "\n"


def _table(names: list[str], prefix: str = "") -> list[str]:
    width = max(len(n) for n in names) + 3
    return [f"  {n.ljust(width)}{describe(prefix + n)}".rstrip() for n in names]


def main_help(global_rows: list[tuple[str, str]]) -> str:
    """`skiff --help`: the commands grouped as docker lists them, then the global options."""
    others = sorted(k for k in COMMANDS if " " not in k and k not in COMMON)
    lines = ["Usage:  skiff [OPTIONS] COMMAND", "",
             "A docker-compatible client for skiffd (or any Docker Engine API daemon)", "",
             "Common Commands:", *_table(COMMON), "",
             "Management Commands:"]
    width = max(len(n) for n in MANAGEMENT) + 3
    lines += [f"  {n.ljust(width)}{d}" for n, d in MANAGEMENT.items()]
    lines += ["", "Commands:", *_table(others), "", "Global Options:"]
    width = max(len(r[0]) for r in global_rows) + 3
    lines += [f"  {left.ljust(width)}{desc}".rstrip() for left, desc in global_rows]
    lines += ["", "Run 'skiff COMMAND --help' for more information on a command."]
    return "\n".join(lines) + "\n"


def management_help(group: str) -> str:
    """`skiff container|image|network|system|volume [--help]`: the subcommands."""
    lines = [f"Usage:  skiff {group} COMMAND", "", MANAGEMENT[group], "", "Commands:",
             *_table(SUBCOMMANDS[group], group + " "), "",
             f"Run 'skiff {group} COMMAND --help' for more information on a command."]
    return "\n".join(lines) + "\n"


GLOBAL_FLAGS = {
    "host": "Daemon socket to connect to (default $DOCKER_HOST or unix:///run/skiff/skiff.sock)",
    "debug": "Enable debug mode",
    "log-level": 'Set the logging level ("debug", "info", "warn", "error", "fatal")',
    "config": "Location of client config files (default $DOCKER_CONFIG or ~/.docker)",
    "context": 'Name of the context to use (only "default" is supported)',
    "tls": "Use TLS; implied by --tlsverify",
    "tlsverify": "Use TLS and verify the remote",
    "tlscacert": "Trust certs signed only by this CA",
    "tlscert": "Path to TLS certificate file",
    "tlskey": "Path to TLS key file",
    "version": "Print version information and quit",
}


def global_rows(spec: Spec) -> list[tuple[str, str]]:
    rows = []
    for left, _ in flag_rows(spec, "")[:-1]:
        long = left.split("--", 1)[1].split(" ", 1)[0] if "--" in left else ""
        if long == "help":
            continue
        rows.append((left, GLOBAL_FLAGS.get(long, "")))
    return rows
