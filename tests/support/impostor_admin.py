"""Another local user's side of the admin-channel tests, run as ``nobody`` with the system Python.

Standalone on purpose (stdlib only, no project imports): ``nobody`` cannot read the test venv.

    impostor_admin.py serve SOCKET LOG [--silent]   a fake server-ext admin socket that claims
                                                     every revocation closed one session
    impostor_admin.py ask SOCKET JSON                one request, print the reply
"""

from __future__ import annotations

import json
import os
import socket
import sys


def serve(path: str, log_path: str, *, silent: bool) -> None:
    if os.path.lexists(path):
        os.unlink(path)  # swap out whatever was there
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(8)
    print("ready", flush=True)
    held = []
    while True:
        conn, _ = server.accept()
        with open(log_path, "a") as log:
            log.write("connection\n")
        if silent:
            held.append(conn)  # never answer
            continue
        conn.settimeout(5)
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        if data:
            with open(log_path, "a") as log:
                log.write("request " + data.decode(errors="replace"))
        try:
            conn.sendall(json.dumps({"ok": True, "closed": 1, "sessions": []}).encode() + b"\n")
        except OSError:
            pass
        conn.close()


def ask(path: str, payload: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        try:
            sock.sendall(payload.encode() + b"\n")
        except BrokenPipeError:
            pass  # the server answered and closed without reading: its answer is still here
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    print(data.decode().strip(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], silent="--silent" in sys.argv[4:])
    elif sys.argv[1] == "ask":
        ask(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
