"""skiff-shim: one process per container between skiff-containerd and the OCI runtime.

The shim runs detached (own session, re-parented away from whoever started it), is the
subreaper of its container, calls the runtime (runc's command line: skiff-runc, runc, crun),
owns the container's stdio, keeps exit statuses and OOM events, and serves the API below on its
own Unix socket. It outlives the manager: after a SIGKILL of skiff-containerd, the restarted
manager finds every shim by the ``address`` file in its state directory (``client.find_shim``)
and asks it for everything (``connect``); no exit status, event or output is lost meanwhile.

Modules: ``server`` (the loop and the methods), ``stdio`` (FIFOs and terminals: the decisions
on output without a reader are documented there), ``oom``, ``daemon`` (detaching, subreaper,
the zygote), ``config`` (start-up options), ``protocol`` (framing, error codes), ``client``
(``ShimClient``, ``start_shim``, ``find_shim``: the manager's side), ``main`` (the command).
The shim imports only the standard library, and nothing heavy at module level (see
docs/conventions.md): ``_socket``/``_signal``/``select`` instead of ``socket``/``signal``/
``selectors``, ``skiff.fastjson`` for JSON, ``posix_spawn`` instead of ``subprocess``.

Start-up
--------
``skiff-shim --id ID --namespace NS --bundle DIR --socket PATH [--state-dir DIR]
[--address MANAGER]`` double-forks and exits once the shim listens, printing
``{"pid": PID, "socket": PATH}`` (or an error on stderr, exit status 1). The shim writes
``shim.pid`` and ``address`` (its socket path) into the state directory (default: the bundle),
its log lines into ``shim.log`` there, and the runtime's ``--log`` into ``log.json``.

The zygote (``skiff-shim zygote --socket PATH``; ``client.start_shim(..., zygote=PATH)``
starts it on first use) is a pre-imported parent that forks shims: a forked shim shares the
zygote's pages copy-on-write, which is how a Python shim gets below conmon's memory cost.
``bench/shim_pss.py``, 50 idle containers on this machine: containerd-shim-runc-v2 2.6 MiB
PSS each, an exec'd skiff-shim 3.6 MiB, a zygote-forked one 1.85 MiB (zygote included).
See ``daemon``.

Protocol
--------
Newline-delimited JSON over a SOCK_STREAM Unix socket: each request is one line
``{"id": N, "method": "NAME", "params": {...}}``; each answer is one line, either
``{"id": N, "result": {...}}`` or ``{"id": N, "error": {"code": CODE, "message": TEXT}}``,
``CODE`` one of containerd's gRPC status names (NotFound, AlreadyExists, FailedPrecondition,
InvalidArgument, Unimplemented, Unknown for a runtime failure, Internal). Requests may be
pipelined; answers come when ready, so they may come out of order (match the ``id``). A
connection may hold any number of pending long-polls; closing it drops them.

Processes are named by ``exec_id``: ``""`` is the container's init. A process state is
``{exec_id, pid, status, terminal, stdin, stdout, stderr, exit_status, exited_at}`` with
``status`` in creating/created/running/paused/stopped/deleted and ``exited_at`` in
nanoseconds since the epoch (0 while running).

=========  ================================================  ===================================
method     params                                            result
=========  ================================================  ===================================
connect    -                                                 everything: version, shim_pid, id,
                                                             namespace, bundle, state_dir,
                                                             address, runtime, runtime_root,
                                                             deleted, init (state or null),
                                                             execs (states), events_seq, oom
state      exec_id                                           the process state (+ id, bundle)
create     bundle, runtime (path or name), runtime_root,     {pid}; ``runtime create`` with the
           runtime_args (extra global flags), stdin,         stdio as fds 0-2 (or a console
           stdout, stderr (FIFO or file paths, "" for        socket with ``terminal``)
           /dev/null), terminal, no_pivot, no_new_keyring
start      exec_id                                           {pid}; ``start`` / ``exec --detach``
exec       exec_id, spec (OCI process), stdin, stdout,       {}; registers it (start runs it)
           stderr, terminal
kill       signal (number), all, exec_id                     {}; init: ``runtime kill [--all]``;
                                                             exec: kill(2). NotFound "process
                                                             already finished" after its exit
delete     exec_id                                           {exec_id, pid, exit_status,
                                                             exited_at}; init: ``runtime delete``
                                                             (``--force`` if never started);
                                                             FailedPrecondition while running
wait       exec_id                                           {exec_id, pid, exit_status,
                                                             exited_at} once it has exited
                                                             (long-poll; any number of waiters,
                                                             on any connection, at any time)
pids       -                                                 {pids: [{pid, exec_id}]}
pause      -                                                 {}
resume     -                                                 {}
update     resources (OCI linux.resources)                   {}; ``update --resources FILE``
resize     exec_id, width, height                            {}; the pty's window size
closeio    exec_id                                           {}; stdin reaches EOF (see stdio)
stats      -                                                 {stats: ``events --stats`` data}
events     after, wait                                       {events, seq, dropped}
shutdown   -                                                 {}; the shim exits. Refused
                                                             (FailedPrecondition) while the
                                                             container exists and is not deleted
=========  ================================================  ===================================

Events: a bounded queue (1024) that the manager drains. Each event is
``{seq, type, id, time, ...}``: ``create`` {pid, bundle}, ``start`` {pid}, ``exec_added``
{exec_id}, ``exec_started`` {exec_id, pid}, ``paused``, ``resumed``, ``oom``, ``exit``
{exec_id, pid, exit_status, exited_at}, ``delete`` {exec_id, pid, exit_status, exited_at}.
``events(after=N)`` returns the events with ``seq > N`` and forgets those up to ``N`` (the
acknowledgement); with ``wait`` it blocks until there is one. A manager that is killed loses
nothing: it asks again from the last ``seq`` it processed (after a restart, from 0, and sees
what it had not acknowledged). An event falls off the queue only when 1024 newer ones wait
behind it (``dropped`` counts them); exit statuses stay in the process states regardless.
Ordering: ``start``/``exec_started`` precede that process's ``exit``; an OOM kill's ``oom``
precedes the init's ``exit``; the init's ``exit`` is published after its terminal output
has been written out.
"""
