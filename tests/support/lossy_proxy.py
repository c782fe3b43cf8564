"""A loopback TCP proxy in front of a real server that can lose answers on purpose.

``drop_answer_to(prefix)``: the next request whose request line starts with ``prefix``
is forwarded, the server's answer is read and thrown away, and the client's connection
is cut, as when a Vault node dies or loses leadership right after applying a write.
With ``hold=True`` the connection stays open and silent instead (an answer that never
comes), until the client gives up on it; ``times`` does so for that many requests.
``refuse()``/``accept()`` close and reopen the listening port (connection refused).
"""

from __future__ import annotations

import socket
import threading


class LossyProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._lock = threading.Lock()
        self._armed: str | None = None
        self._hold = False
        self._times = 0
        self.dropped: list[str] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.accept()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_answer_to(self, request_line_prefix: str, *, hold: bool = False,
                       times: int = 1) -> None:
        with self._lock:
            self._armed = request_line_prefix
            self._hold = hold
            self._times = times

    def accept(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._serve, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        if self._listener is not None:
            _close(self._listener)  # shutdown wakes the accepting thread and unlistens
            self._listener = None

    close = refuse

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            drop, hold = threading.Event(), threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, drop, hold),
                             daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, drop, hold),
                             daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket,
                  drop: threading.Event, hold: threading.Event) -> None:
        try:
            while chunk := client.recv(65536):
                line = chunk.split(b"\r\n", 1)[0].decode("latin-1")
                with self._lock:
                    if self._armed is not None and line.startswith(self._armed):
                        self._times -= 1
                        if self._times <= 0:
                            self._armed = None
                        self.dropped.append(line)
                        if self._hold:
                            hold.set()
                        drop.set()
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket,
                 drop: threading.Event, hold: threading.Event) -> None:
        try:
            while chunk := upstream.recv(65536):
                if hold.is_set():
                    continue  # silent until the client hangs up (which closes upstream)
                if drop.is_set():
                    break  # the server answered; the client never hears it
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
