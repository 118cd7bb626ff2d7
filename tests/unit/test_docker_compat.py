"""What dockerd sends skiff-runc that the OCI spec alone does not tell (no root needed).

The real-Docker end-to-end checks are in tests/root/test_docker_runtime.py; these pin down the
value-level rules found there.
"""

from __future__ import annotations

import pytest

from skiff.runtime.cgroups import CgroupError
from skiff.runtime.cgroups._resources import check

# linux.resources of a `docker run busybox` (dockerd 20.10, no resource flags), as it writes it
DOCKER_DEFAULT_RESOURCES = {
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    "memory": {"disableOOMKiller": False},
    "cpu": {"shares": 0},
    "blockIO": {"weight": 0},
}


def test_zero_blkio_weight_means_unset() -> None:
    """dockerd sends blockIO.weight 0 when --blkio-weight is not given; runc reads 0 as "not
    set", so skiff-runc must accept it and write nothing."""
    out = check(DOCKER_DEFAULT_RESOURCES)
    assert out["blockIO"] == {}
    assert out["cpu"] == {"shares": 0}  # 0 shares: unset as well (the writer skips it)
    assert check({"blockIO": {"weight": 0, "leafWeight": 0}})["blockIO"] == {}
    assert check({"blockIO": {"weight": 300, "leafWeight": 0}})["blockIO"] == {"weight": 300}


@pytest.mark.parametrize("weight", [1, 9, 1001])
def test_nonzero_blkio_weight_out_of_range_is_refused(weight: int) -> None:
    with pytest.raises(CgroupError, match=rf"linux.resources.blockIO.weight: {weight} is out of range \[10, 1000\]"):
        check({"blockIO": {"weight": weight}})


def test_home_dir_from_the_containers_passwd(tmp_path) -> None:
    """dockerd does not put HOME in the environment; runc (and so skiff-runc) sets it from the
    container's /etc/passwd, or to / when the uid has no entry."""
    from skiff.runtime.process import home_dir

    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                      "broken line\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    assert home_dir(0, str(passwd)) == "/root"
    assert home_dir(65534, str(passwd)) == "/home"
    assert home_dir(1000, str(passwd)) == "/"
    assert home_dir(0, str(tmp_path / "missing")) == "/"
