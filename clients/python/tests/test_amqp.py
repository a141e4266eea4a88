"""Submitting over AMQP against a real lanes and RabbitMQ."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import List

import pytest

from lanes_client import AmqpSubmitter, Client, Timeout, Unavailable, Unroutable, uuid7

from .conftest import Lanes, free_port, wait_for_job


def test_submit_and_wait_for_result(lanes: Lanes) -> None:
    with AmqpSubmitter(lanes.amqp_url, prefix=lanes.prefix) as submitter:
        job_id = submitter.submit("echo", {"over": "amqp"}, reply=True)
        assert uuid.UUID(job_id).version == 7
        result = submitter.wait_for_result(job_id, timeout=20)
        assert result == {"id": job_id, "state": "completed", "result": {"over": "amqp"}, "error": None}

        failing = submitter.submit("fail", {"message": "no luck"}, max_attempts=1, reply=True)
        result = submitter.wait_for_result(failing, timeout=20)
        assert result["state"] == "failed"
        assert "no luck" in result["error"]


def test_from_env_reads_the_url_and_prefix_lanes_reads(lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANES_AMQP_URL", f"amqp://127.0.0.1:1/%2f,{lanes.amqp_url}")
    monkeypatch.setenv("LANES_PREFIX", lanes.prefix)
    with AmqpSubmitter.from_env() as submitter:
        assert submitter.prefix == lanes.prefix
        job_id = submitter.submit("echo", {"from": "env"}, reply=True)
        assert submitter.wait_for_result(job_id, timeout=20)["result"] == {"from": "env"}
        assert submitter.connected_url is not None and "127.0.0.1:1/" not in submitter.connected_url


def test_submit_then_follow_over_http(lanes: Lanes, client: Client) -> None:
    with AmqpSubmitter(lanes.amqp_url, prefix=lanes.prefix) as submitter:
        job_id = submitter.submit("echo", {"k": "v"}, resources=[f"amqp:{uuid7()}"])
    job = client.wait(job_id, timeout=20)
    assert job.state == "completed"
    assert job.result == {"k": "v"}
    assert job.submitted_by == "amqp"


def test_wait_for_result_times_out(lanes: Lanes, client: Client) -> None:
    with AmqpSubmitter(lanes.amqp_url, prefix=lanes.prefix) as submitter:
        job_id = submitter.submit("sleep", {"ms": 5000}, reply=True)
        with pytest.raises(Timeout):
            submitter.wait_for_result(job_id, timeout=0.3)
        wait_for_job(client, job_id, "the job to be recorded", lambda j: True)
        client.cancel(job_id)
        assert submitter.wait_for_result(job_id, timeout=20)["state"] == "canceled"


def test_tries_the_nodes_in_order(lanes: Lanes, client: Client) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2f"
    with AmqpSubmitter(f"{dead},{lanes.amqp_url}", prefix=lanes.prefix) as submitter:
        job_id = submitter.submit("noop")
        assert submitter.connected_url == "amqp://guest:***@127.0.0.1:5672/%2f"
    assert client.wait(job_id, timeout=20).state == "completed"


def test_no_node_answers(lanes: Lanes) -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/%2f" for _ in range(2)]
    submitter = AmqpSubmitter(dead, prefix=lanes.prefix, resends=1, backoff=0.01)
    with pytest.raises(Unavailable, match="no AMQP node answered"):
        submitter.submit("noop")


def test_unknown_prefix_is_reported(lanes: Lanes) -> None:
    with AmqpSubmitter(lanes.amqp_url, prefix=f"{lanes.prefix}-nothing") as submitter:
        with pytest.raises(Unavailable, match="no exchange"):
            submitter.submit("noop")


def test_unroutable_submit_is_reported(lanes: Lanes) -> None:
    """An exchange that exists but routes nowhere: the mandatory flag brings the message back."""
    import pika

    exchange = f"{lanes.prefix}-empty"
    connection = pika.BlockingConnection(pika.URLParameters(lanes.amqp_url))
    try:
        connection.channel().exchange_declare(exchange, "direct", auto_delete=False)
        with AmqpSubmitter(lanes.amqp_url, prefix=exchange) as submitter:
            with pytest.raises(Unroutable, match="not routed"):
                submitter.submit("noop")
    finally:
        connection.channel().exchange_delete(exchange)
        connection.close()


class _FreezingProxy:
    """A TCP proxy to RabbitMQ whose broker-to-client direction can be frozen: frames the
    client sends still arrive, but nothing (no confirm) comes back."""

    def __init__(self, target: "tuple[str, int]") -> None:
        self.target = target
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: List[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, freezable: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while freezable and self.frozen.is_set() and not self.closed:
                    time.sleep(0.01)
                if self.closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_resends_with_the_same_message_id_when_no_confirm_comes(lanes: Lanes, client: Client) -> None:
    proxy = _FreezingProxy(("127.0.0.1", 5672))
    frozen_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2f"
    resource = f"resend:{uuid7()}"
    try:
        submitter = AmqpSubmitter(f"{frozen_url},{lanes.amqp_url}", prefix=lanes.prefix, confirm_timeout=1.0, backoff=0.01)
        with submitter:
            submitter.submit("noop")  # connected through the proxy
            assert submitter.connected_url is not None and str(proxy.port) in submitter.connected_url
            proxy.frozen.set()
            started = time.monotonic()
            job_id = submitter.submit("echo", {"once": True}, resources=[resource])
            took = time.monotonic() - started
            # The confirm did not come through the proxy: sent again on the next node.
            assert submitter.connected_url == "amqp://guest:***@127.0.0.1:5672/%2f"
            assert 1.0 <= took < 10
    finally:
        proxy.close()
    assert client.wait(job_id, timeout=20).result == {"once": True}
    assert [j.id for j in client.list(resource=resource)] == [job_id]
