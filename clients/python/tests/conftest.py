"""Fixtures: a real `lanes up --workers 2` with a prefix and a database of its own."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import pika
import pytest

from lanes_client import Client, Executor, Job, NotFound

LANES_BIN = Path(os.environ.get("LANES_BIN", Path(__file__).resolve().parents[3] / "target" / "debug" / "lanes"))
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Optional[T]], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Polls `check` until it returns something truthy; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_job(client: Client, job_id: str, what: str, check: Callable[[Job], bool], timeout: float = 10.0) -> Job:
    """Polls a job until `check(job)`; a job not recorded yet (404) is polled too."""

    last: List[Optional[Job]] = [None]

    def current() -> Optional[Job]:
        try:
            job = client.get(job_id)
        except NotFound:
            return None
        last[0] = job
        return job if check(job) else None

    try:
        return wait_until(what, current, timeout)
    except pytest.fail.Exception as e:
        raise pytest.fail.Exception(f"{e}; the job: {last[0] and last[0].raw}") from None


@dataclass
class Lanes:
    prefix: str
    database: str
    api_url: str
    amqp_url: str
    executor_port: int
    log_path: Path
    process: subprocess.Popen

    @property
    def executor_url(self) -> str:
        return f"http://127.0.0.1:{self.executor_port}/"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)
    except Exception:
        return None


def _cleanup_broker(prefix: str) -> None:
    queues: List[str] = [f"{prefix}.submit", f"{prefix}.events", f"{prefix}.dead", f"{prefix}.q.default"]
    queues += [f"{prefix}.q.{n}" for n in range(32)]
    exchanges = [prefix, f"{prefix}.control", f"{prefix}.worker-events"]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for queue in queues:
            try:
                channel.queue_delete(queue)
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
        for exchange in exchanges:
            try:
                channel.exchange_delete(exchange)
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
    finally:
        connection.close()


@pytest.fixture(scope="session")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lanes]:
    if not LANES_BIN.exists():
        pytest.fail(f"no lanes binary at {LANES_BIN} (set LANES_BIN)")
    prefix = "py" + secrets.token_hex(4)
    database = f"lanes_{prefix}"
    api_port, executor_port = free_port(), free_port()
    while executor_port == api_port:
        executor_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    log_path = tmp_path_factory.mktemp("lanes") / "lanes.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANES_") and k != "DATABASE_URL"}
    env.update(
        LANES_PREFIX=prefix,
        DATABASE_URL=f"postgres://root@127.0.0.1:5432/{database}",
        LANES_HTTP_ADDR=f"127.0.0.1:{api_port}",
        LANES_AMQP_URL=AMQP_URL,
        LANES_WEBHOOK_ALLOW=f"http://127.0.0.1:{executor_port}/",
        LANES_API_URL=api_url,
        LANES_HEARTBEAT_INTERVAL_MS="300",
        LANES_HEARTBEAT_TIMEOUT_MS="1500",
        LANES_DRAIN_GRACE_MS="1000",
        RUST_LOG=os.environ.get("RUST_LOG", "info"),
    )
    log_file = open(log_path, "wb")
    process = subprocess.Popen(
        [str(LANES_BIN), "up", "--workers", "2"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Lanes(prefix, database, api_url, AMQP_URL, executor_port, log_path, process)
    try:
        # Ready: the server is active and both workers are live (a worker of `lanes up` that
        # cannot reach RabbitMQ as it starts gives up, and jobs would then wait forever).
        deadline = time.monotonic() + 60
        while True:
            health = _get(f"{api_url}/healthz")
            workers = _get(f"{api_url}/workers") if health and health.get("active") is True else None
            if workers is not None and len(workers) >= 2:
                break
            if process.poll() is not None:
                pytest.fail(f"lanes exited with {process.returncode} while starting:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"lanes not ready after 60 s (/healthz: {health}, live workers: {workers}):\n{server.log_tail()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log_file.close()
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "root", "-d", "postgres", "-q", "-c",
             f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            check=False,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        _cleanup_broker(prefix)


@pytest.fixture
def client(lanes: Lanes) -> Client:
    return Client(lanes.api_url)


@pytest.fixture
def executors(lanes: Lanes) -> Iterator[Callable[..., Executor]]:
    """Starts executors on the port lanes may post to; stops them after the test."""
    started: List[Executor] = []

    def start(handler, **kwargs) -> Executor:
        executor = Executor(lanes.api_url, handler=handler, port=lanes.executor_port, **kwargs)
        started.append(executor)
        return executor.start()

    yield start
    for executor in started:
        executor.stop()
