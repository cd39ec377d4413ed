"""haproxy.sockets: an answer of any size read whole, through one buffer that doubles.

A thread serves a UNIX socket in the test's directory as HAProxy's CLI does: it reads the
command line, writes the answer and closes.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sidecar.haproxy import sockets


@pytest.mark.parametrize(
    "answer",
    ["", "ok\n", "x" * sockets.BUFFER, "5 bk_F_S 1 s1 127.0.0.1 2 0 1 1 37\n" * 40_000, "é" * 9999],
    ids=["empty", "short", "exactly the buffer", "1.4 MB", "multibyte"],
)
def test_an_answer_is_read_whole_whatever_its_size(tmp_path: Path, answer: str) -> None:
    path = tmp_path / "admin.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    lines: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            lines.append(conn.recv(1024))
            conn.sendall(answer.encode())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert sockets.send_command(path, "show servers state") == answer
    finally:
        thread.join(timeout=10)
        server.close()
    assert lines == [b"show servers state\n"]
