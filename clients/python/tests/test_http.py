"""The HTTP client against a real lanes."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

import pytest

from lanes_client import BadRequest, Client, Conflict, NotFound, Timeout, Unavailable, uuid7

from .conftest import free_port, wait_for_job


def test_submit_echo_and_wait(client: Client) -> None:
    job = client.submit("echo", {"hello": "world", "n": 1})
    assert job.state == "submitted"
    assert uuid.UUID(job.id).version == 7
    assert job.args == {"hello": "world", "n": 1}

    done = client.wait(job.id, timeout=20)
    assert done.state == "completed"
    assert done.result == {"hello": "world", "n": 1}
    assert done.attempts == 1
    assert done.final


def test_typo_field_is_refused_with_a_hint(client: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        client.request("POST", "/jobs", {"task": "echo", "resource": ["repo:1"]})
    assert caught.value.status == 400
    assert "did you mean `resources`" in caught.value.reason


def test_unknown_task_is_refused(client: Client) -> None:
    with pytest.raises(BadRequest, match="unknown task"):
        client.submit("no-such-task")


def test_get_unknown_id_raises_not_found(client: Client) -> None:
    missing = str(uuid7())
    with pytest.raises(NotFound) as caught:
        client.get(missing)
    assert caught.value.status == 404
    assert missing in caught.value.reason


def test_cancel_a_job_queued_behind_a_long_sleep(client: Client) -> None:
    resource = f"cancel:{uuid7()}"
    sleeper = client.submit("sleep", {"ms": 30000}, resources=[resource])
    behind = client.submit("echo", {"never": True}, resources=[resource])
    wait_for_job(client, sleeper.id, "the sleep to run", lambda j: j.state == "running")
    assert client.get(behind.id).state in ("waiting", "queued")

    answer = client.cancel(behind.id)
    assert answer["state"] in ("canceled", "canceling")
    # The queued job is skipped when its lane reaches it: stop the sleep to get there now.
    client.cancel(sleeper.id)

    assert client.wait(sleeper.id, timeout=15).state == "canceled"
    ended = client.wait(behind.id, timeout=15)
    assert ended.state == "canceled"
    assert ended.attempts == 0
    assert [s["action"] for s in ended.steers or []] == ["cancel"]
    with pytest.raises(Conflict, match="only a job that has not ended can be canceled"):
        client.cancel(behind.id)


def test_cancel_a_waiting_job_is_immediate(client: Client) -> None:
    a, b = f"wa:{uuid7()}", f"wb:{uuid7()}"
    first = client.submit("sleep", {"ms": 30000}, resources=[a])
    second = client.submit("sleep", {"ms": 30000}, resources=[b])
    both = client.submit("echo", {}, resources=[a, b])
    try:
        job = wait_for_job(client, both.id, "the job to wait", lambda j: j.state in ("waiting", "queued"))
        if job.state == "waiting":
            assert job.blocked_by and {blocker["id"] for blocker in job.blocked_by} <= {first.id, second.id}
            assert client.cancel(both.id)["state"] == "canceled"
            assert client.get(both.id).state == "canceled"
    finally:
        client.cancel(first.id)
        client.cancel(second.id)
    assert client.wait(both.id, timeout=15).state == "canceled"
    assert client.wait(first.id, timeout=15).state == "canceled"
    assert client.wait(second.id, timeout=15).state == "canceled"


def test_same_id_twice_is_one_job(client: Client) -> None:
    job_id = uuid7()
    resource = f"idem:{job_id}"
    first = client.submit("echo", {"n": 1}, resources=[resource], id=job_id)
    again = client.submit("echo", {"n": 1}, resources=[resource], id=job_id)
    assert first.id == again.id == str(job_id)
    assert client.wait(job_id, timeout=20).result == {"n": 1}
    jobs = client.list(resource=resource)
    assert [j.id for j in jobs] == [str(job_id)]


def test_retry_a_failed_job(client: Client) -> None:
    job = client.submit("fail", {"message": "nope"}, max_attempts=1)
    failed = client.wait(job.id, timeout=20)
    assert failed.state == "failed"
    assert "nope" in (failed.error or "")

    assert client.retry(job.id)["id"] == job.id
    again = client.wait(job.id, timeout=20)
    assert again.state == "failed"
    assert [s["action"] for s in again.steers or []] == ["retry"]

    done = client.wait(client.submit("noop").id, timeout=20)
    with pytest.raises(Conflict, match="only a failed or canceled job can be retried"):
        client.retry(done.id)


def test_list_filters(client: Client) -> None:
    resource = f"list:{uuid7()}"
    ids = [client.submit("echo", {"i": i}, resources=[resource]).id for i in range(3)]
    for job_id in ids:
        client.wait(job_id, timeout=20)
    jobs = client.list(resource=resource, task="echo", state="completed", limit=2)
    assert [j.id for j in jobs] == list(reversed(ids))[:2]  # newest first
    assert not jobs.truncated
    with pytest.raises(BadRequest, match="unknown state"):
        client.list(state="bogus")


def test_wait_times_out(client: Client) -> None:
    job = client.submit("sleep", {"ms": 5000})
    try:
        with pytest.raises(Timeout):
            client.wait(job.id, timeout=0.3)
    finally:
        client.cancel(job.id)


class _Scripted(BaseHTTPRequestHandler):
    """Answers each POST as `script` says, in turn: "drop" (closes the connection without an
    answer), 503, or 202."""

    script: List[Any] = []
    seen: List[Dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append(body)
        what = self.script.pop(0) if self.script else 202
        if what == "drop":
            self.close_connection = True
            self.connection.close()
            return
        answer = {"error": "broker unavailable"} if what == 503 else dict(body, state="submitted")
        data = json.dumps(answer).encode()
        self.send_response(what)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_submit_retries_with_the_same_id() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Scripted.script, _Scripted.seen = ["drop", 503, 202], []
        job = Client(url, backoff=0.01).submit("echo", {"x": 1})
        assert len(_Scripted.seen) == 3
        assert {body["id"] for body in _Scripted.seen} == {job.id}

        # Bounded: a 503 that lasts is raised, with lanes' reason.
        _Scripted.script, _Scripted.seen = [503] * 10, []
        with pytest.raises(Unavailable, match="broker unavailable"):
            Client(url, retries=2, backoff=0.01).submit("echo")
        assert len(_Scripted.seen) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_is_unavailable() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(Unavailable, match="cannot reach"):
        client.get(str(uuid7()))


def test_a_delayed_job_is_scheduled_then_runs_when_due(client: Client) -> None:
    due = datetime.now(timezone.utc) + timedelta(milliseconds=800)
    job = client.submit("echo", {"when": "later"}, run_at=due)
    assert job.state == "scheduled"
    shown = client.wait(job.id, timeout=20)
    assert shown.state == "completed"
    assert shown.run_at is not None
    started = datetime.fromisoformat(shown.started_at.replace("Z", "+00:00"))
    assert started >= due
    later = client.submit("echo", {"n": 1}, delay_ms=60_000)
    wait_for_job(client, later.id, "recorded scheduled", lambda j: j.state == "scheduled")
    assert client.cancel(later.id)["state"] == "canceled"
    with pytest.raises(ValueError):
        client.submit("echo", run_at=due, delay_ms=5)
