"""sync.Channel: messages both ways, end-of-file, and the error of a peer that closed with a
message of ours still unread (the kernel reports ECONNRESET first, the peer's messages follow)."""

from __future__ import annotations

import pytest

from skiff.runtime.sync import Channel, SyncError


def test_messages_and_end_of_file():
    a, b = Channel.pair()
    a.send("go")
    b.send("pid", pid=5)
    assert b.expect("go") == {"type": "go"}
    assert a.expect("pid")["pid"] == 5
    b.close()
    assert a.recv() is None
    with pytest.raises(SyncError, match="exited while the runtime waited for 'mounted'"):
        a.expect("mounted")
    a.close()


def test_error_of_a_peer_that_closed_with_our_message_unread():
    runtime, init = Channel.pair()
    runtime.send("hooks-done", state={})  # sent ahead, never read
    init.send("error", message="open network namespace /run/netns/x: No such file or directory")
    init.close()
    with pytest.raises(SyncError, match="/run/netns/x: No such file"):
        runtime.expect("mounted")
    assert runtime.recv() is None
    runtime.close()


def test_unexpected_message_type():
    a, b = Channel.pair()
    b.send("ready")
    with pytest.raises(SyncError, match="expected message 'mounted'.*got 'ready'"):
        a.expect("mounted")
    a.close()
    b.close()
