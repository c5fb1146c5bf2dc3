"""One minilog per data directory: a second one refuses to start, with one line, and harms nothing."""

import subprocess
import sys

import pytest

from harness import ROOT
from minilog_wire_helpers import batch, connect, create, fetch, produce, record_values, values


def test_a_second_minilog_on_the_same_data_dir_refuses_with_one_line(spawn_server, tmp_path):
    data_dir = tmp_path / "shared"
    first = spawn_server("minilog", data_dir)
    with connect(first) as c:
        create(c, "t")
        produce(c, "t", 0, batch(values(3)))
    second = subprocess.run([sys.executable, "-m", "minilog", "--port", "0", "--data-dir", str(data_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"minilog: cannot start: data directory {data_dir} is in use by another minilog; "
        "stop it or start this one with another --data-dir")
    with connect(first) as c:  # the first one never noticed
        assert produce(c, "t", 0, batch(values(2)))[0][2] == 3
        assert record_values(fetch(c, "t", 0, 0)[3]) == values(3) + values(2)
    assert first.stop() == 0
    third = spawn_server("minilog", data_dir)  # the lock went with the first process
    with connect(third) as c:
        assert record_values(fetch(c, "t", 0, 0)[3]) == values(3) + values(2)


def test_a_second_server_thread_on_the_same_data_dir_is_refused(start_minilog, tmp_path):
    start_minilog(tmp_path / "d")
    with pytest.raises(OSError, match="in use by another minilog"):
        start_minilog(tmp_path / "d")
