"""transport/curl.py against a raw HTTP/1.1 server on loopback: what is sent, what comes
back, and above all that a write is never sent twice.

libcurl re-sends a request on its own when a kept-alive connection it reused dies before
any answer. The server here can do exactly that to the next request (``drop_next``):
read it whole, then close without a word, as a Vault node that applied a write and died.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator

import pytest
import requests

import certlocker
from certlocker.transport.curl import CurlClient, Trust
from certlocker.transport.failures import failure_reason
from certlocker.vault.client import _not_applied

NO_TRUST = Trust()


class RawServer:
    """Keeps connections alive; records each request with the client port it came on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, dict[str, str], bytes]] = []
        self.drop_next = False
        self.silent = False  # read requests, never answer
        self.hang_up_after = False  # answer, then an alert and a close, as Go's TLS does
        self.hung_up = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, peer[1]), daemon=True).start()

    def _serve(self, conn: socket.socket, port: int) -> None:
        reader = conn.makefile("rb")
        with conn:
            while True:
                line = reader.readline().decode("latin-1").strip()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (header := reader.readline().decode("latin-1").strip()):
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                with self._lock:
                    self.seen.append((line, port, headers, body))
                    drop, self.drop_next = self.drop_next, False
                    # Read before answering: once answered, the test may reset it.
                    hang_up = self.hang_up_after
                if drop:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if self.silent:
                    reader.read()  # until the client gives up
                    return
                payload = b'{"ok": true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Link: <a>;rel=\"up\"\r\nLink: <b>;rel=\"index\"\r\n"
                             + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                if hang_up:
                    time.sleep(0.05)  # after the client has read the answer
                    conn.sendall(b"\x15\x03\x03\x00\x02\x01\x00")
                    conn.shutdown(socket.SHUT_RDWR)
                    self.hung_up.set()
                    return


@pytest.fixture
def server() -> Iterator[RawServer]:
    made = RawServer()
    try:
        yield made
    finally:
        made.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_answer_carries_status_reason_headers_and_body(server: RawServer) -> None:
    answer = CurlClient().call("GET", f"{server.url}/v1/x", None, {"X-Vault-Token": "t"},
                               5, NO_TRUST)
    assert (answer.status, answer.reason, answer.content) == (200, "OK", b'{"ok": true}')
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["LINK"] == '<a>;rel="up", <b>;rel="index"'  # joined, as requests
    line, _, headers, _ = server.seen[-1]
    assert line == "GET /v1/x HTTP/1.1" and headers["x-vault-token"] == "t"
    assert headers["user-agent"] == f"certlocker/{certlocker.__version__}"


def test_a_user_agent_the_caller_sends_is_the_one_sent(server: RawServer) -> None:
    CurlClient().call("GET", f"{server.url}/v1/x", None, {"User-Agent": "acme-python"}, 5,
                      NO_TRUST)
    assert server.seen[-1][2]["user-agent"] == "acme-python"


def test_a_large_body_is_sent_as_is_without_expect_or_a_form_label(server: RawServer) -> None:
    body = b"x" * 100_000
    CurlClient().call("PUT", f"{server.url}/v1/big", body, {}, 5, NO_TRUST)
    line, _, headers, received = server.seen[-1]
    assert line == "PUT /v1/big HTTP/1.1" and received == body
    assert "expect" not in headers and "content-type" not in headers
    assert "transfer-encoding" not in headers


def test_calls_of_one_thread_share_a_kept_alive_connection(server: RawServer) -> None:
    client = CurlClient()
    for method in ("GET", "LIST", "POST", "GET"):
        client.call(method, f"{server.url}/v1/k", b"{}" if method == "POST" else None, {},
                    5, NO_TRUST)
    assert [line.split()[0] for line, *_ in server.seen] == ["GET", "LIST", "POST", "GET"]
    assert len({port for _, port, _, _ in server.seen}) == 1


def test_a_write_whose_answer_is_lost_is_sent_once_and_fails(server: RawServer) -> None:
    client = CurlClient()
    client.call("GET", f"{server.url}/v1/warm", None, {}, 5, NO_TRUST)  # a reused connection
    server.drop_next = True
    with pytest.raises(requests.ConnectionError) as caught:
        client.call("POST", f"{server.url}/v1/write", b'{"data": 1}', {}, 5, NO_TRUST)
    assert [line for line, *_ in server.seen].count("POST /v1/write HTTP/1.1") == 1
    assert not _not_applied(caught.value)  # it may have landed: the caller reads back


def test_a_connection_the_server_closed_while_idle_is_not_used_again(
        server: RawServer) -> None:
    """What a restarted CA or Vault leaves behind: an alert and a close on the kept-alive
    connection. The next write goes on a new connection, and gets its answer."""
    client = CurlClient()
    server.hang_up_after = True
    client.call("GET", f"{server.url}/v1/warm", None, {}, 5, NO_TRUST)
    server.hang_up_after = False
    assert server.hung_up.wait(5)
    answer = client.call("POST", f"{server.url}/v1/write", b'{"data": 1}', {}, 5, NO_TRUST)
    assert answer.status == 200
    writes = [port for line, port, *_ in server.seen if line == "POST /v1/write HTTP/1.1"]
    assert len(writes) == 1 and writes[0] != server.seen[0][1]


def test_a_bodiless_write_takes_a_fresh_connection(server: RawServer) -> None:
    client = CurlClient()
    client.call("GET", f"{server.url}/v1/warm", None, {}, 5, NO_TRUST)
    server.drop_next = True
    with pytest.raises(requests.ConnectionError):
        client.call("DELETE", f"{server.url}/v1/lease", None, {}, 5, NO_TRUST)
    deletes = [(line, port) for line, port, *_ in server.seen if line.startswith("DELETE")]
    assert len(deletes) == 1
    assert deletes[0][1] != server.seen[0][1]


def test_a_read_whose_answer_is_lost_on_a_reused_connection_is_sent_again(
        server: RawServer) -> None:
    client = CurlClient()
    client.call("GET", f"{server.url}/v1/warm", None, {}, 5, NO_TRUST)
    server.drop_next = True
    answer = client.call("GET", f"{server.url}/v1/read", None, {}, 5, NO_TRUST)
    assert answer.status == 200
    assert [line for line, *_ in server.seen].count("GET /v1/read HTTP/1.1") == 2


def test_a_refused_connection_was_certainly_not_applied() -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        CurlClient().call("POST", f"http://127.0.0.1:{_closed_port()}/v1/x", b"{}", {}, 5,
                          NO_TRUST)
    assert not isinstance(caught.value, requests.Timeout)
    assert failure_reason(caught.value) == "connection refused"
    assert _not_applied(caught.value)


def test_a_server_that_never_answers_is_a_read_timeout(server: RawServer) -> None:
    server.silent = True
    with pytest.raises(requests.ReadTimeout) as caught:
        CurlClient().call("POST", f"{server.url}/v1/slow", b"{}", {}, (1, 0.2), NO_TRUST)
    assert failure_reason(caught.value) == "read timed out"
    assert not _not_applied(caught.value)


def test_a_failed_call_leaves_its_thread_a_new_handle_and_the_next_call_works(
        server: RawServer) -> None:
    client = CurlClient()
    client.call("GET", f"{server.url}/v1/warm", None, {}, 5, NO_TRUST)
    failed_on = client._handle()
    server.silent = True
    with pytest.raises(requests.ReadTimeout):
        client.call("GET", f"{server.url}/v1/slow", None, {}, (1, 0.2), NO_TRUST)
    server.silent = False
    assert client.call("GET", f"{server.url}/v1/next", None, {}, 5, NO_TRUST).status == 200
    assert client._handle() is not failed_on


def test_a_forked_child_opens_its_own_connection(server: RawServer) -> None:
    client = CurlClient()
    client.call("GET", f"{server.url}/v1/parent", None, {}, 5, NO_TRUST)
    pid = os.fork()
    if pid == 0:  # the child: exit status says whether its call worked
        try:
            ok = client.call("GET", f"{server.url}/v1/child", None, {}, 5, NO_TRUST)
            os._exit(0 if ok.status == 200 else 1)
        except BaseException:  # noqa: BLE001 - any failure is the child's exit status
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.call("GET", f"{server.url}/v1/parent-again", None, {}, 5, NO_TRUST)
    ports = {line.split()[1]: port for line, port, *_ in server.seen}
    assert ports["/v1/child"] != ports["/v1/parent"] == ports["/v1/parent-again"]


def test_a_header_travels_as_latin_1_and_a_line_break_in_one_is_refused(
        server: RawServer) -> None:
    client = CurlClient()
    token = "tok\u00e9n"  # as WSGI hands over a request header: latin-1 decoded
    client.call("GET", f"{server.url}/v1/x", None, {"X-Vault-Token": token}, 5, NO_TRUST)
    assert server.seen[-1][2]["x-vault-token"] == token  # the server decodes latin-1 too
    for bad in ("a\r\nX-Injected: 1", "a\nb", "\u0100"):
        with pytest.raises(requests.exceptions.InvalidHeader):
            client.call("GET", f"{server.url}/v1/y", None, {"X-Vault-Token": bad}, 5, NO_TRUST)
    assert [line for line, *_ in server.seen] == ["GET /v1/x HTTP/1.1"]
