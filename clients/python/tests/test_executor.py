"""The executor helper: webhook jobs of a real lanes, and the takeover rules against a stand-in."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

import pytest

from lanes_client import Client, Executor, Report, sign, uuid7

from .conftest import Lanes, wait_for_job, wait_until


def webhook(client: Client, lanes: Lanes, resources: Optional[List[str]] = None, **args: Any):
    return client.submit(
        "webhook",
        dict(args, url=lanes.executor_url),
        resources=resources if resources is not None else ["r"],
        max_attempts=1,
    )


def test_webhook_runs_the_handler_and_completes(lanes: Lanes, client: Client, executors) -> None:
    proceed = threading.Event()
    seen: List[Dict[str, Any]] = []

    def handler(job: Dict[str, Any], report: Report) -> Any:
        seen.append(job)
        assert report.progress(50, "halfway")
        assert proceed.wait(15)
        return {"echo": job["args"]["n"], "attempt": report.attempt}

    executors(handler)
    job = webhook(client, lanes, n=7)
    running = wait_for_job(client, job.id, "the progress to show", lambda j: j.progress == {"percent": 50, "message": "halfway"})
    assert running.state == "running"
    proceed.set()

    done = client.wait(job.id, timeout=20)
    assert done.state == "completed"
    assert done.result == {"echo": 7, "attempt": 1}
    assert len(seen) == 1
    posted = seen[0]
    assert posted["id"] == job.id and posted["task"] == "webhook" and posted["attempt"] == 1
    assert posted["callback"] == f"{lanes.api_url}/jobs/{job.id}"


def test_early_progress_is_not_overwritten(lanes: Lanes, client: Client, executors) -> None:
    proceed = threading.Event()
    reported = threading.Event()

    def handler(job: Dict[str, Any], report: Report) -> Any:
        assert report.progress(50, "at once")
        reported.set()
        proceed.wait(15)
        return None

    executors(handler)
    job = webhook(client, lanes, resources=[f"p:{uuid7()}"])
    try:
        assert reported.wait(15)
        # Once the delivery note was recorded (or a second passed), what shows is the last word.
        deadline = threading.Event()
        timer = threading.Timer(1.0, deadline.set)
        timer.start()
        while not deadline.is_set():
            progress = client.get(job.id).progress or {}
            if str(progress.get("message", "")).startswith("delivered"):
                break
            deadline.wait(0.02)
        timer.cancel()
        deadline.wait(0.2)
        assert client.get(job.id).progress == {"percent": 50, "message": "at once"}
    finally:
        proceed.set()
        client.wait(job.id, timeout=20)


def test_handler_exception_fails_the_job(lanes: Lanes, client: Client, executors) -> None:
    def handler(job: Dict[str, Any], report: Report) -> Any:
        raise ValueError("the disk is full")

    executors(handler)
    job = webhook(client, lanes)
    done = client.wait(job.id, timeout=20)
    assert done.state == "failed"
    assert "the disk is full" in (done.error or "")


def test_cancel_reaches_the_handler(lanes: Lanes, client: Client, executors) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def handler(job: Dict[str, Any], report: Report) -> Any:
        started.set()
        for _ in range(1500):
            if report.canceled:
                saw_cancel.set()
                return None
            time.sleep(0.01)
        return "not canceled"

    executors(handler)
    job = webhook(client, lanes, resources=[f"c:{uuid7()}"])
    assert started.wait(15)
    client.cancel(job.id)
    assert client.wait(job.id, timeout=20).state == "canceled"
    assert saw_cancel.wait(10)


def test_takes_up_jobs_left_running_after_a_restart(lanes: Lanes, client: Client, executors) -> None:
    started = threading.Event()
    release = threading.Event()

    def first(job: Dict[str, Any], report: Report) -> Any:
        started.set()
        release.wait(30)  # "dies": never reports while it matters
        return {"by": "the first"}

    def second(job: Dict[str, Any], report: Report) -> Any:
        return {"by": "the second", "attempt": job["attempt"]}

    one = executors(first)
    job = webhook(client, lanes, resources=[f"t:{uuid7()}"])
    try:
        assert started.wait(15)
        one.stop()
        two = executors(second)  # same URL: it takes the job up from lanes' record
        done = client.wait(job.id, timeout=20)
        assert done.state == "completed"
        assert done.result == {"by": "the second", "attempt": 1}
        assert two.url == one.url
    finally:
        release.set()


# --- the takeover rules, against a stand-in for lanes' callback -----------------------------


class _Callback(BaseHTTPRequestHandler):
    """Records PATCHes; refuses (409) a report for an attempt below `current`."""

    reports: List[Dict[str, Any]] = []
    current = 1

    def do_PATCH(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.reports.append(body)
        ok = body["attempt"] >= self.current
        self._answer(202 if ok else 409, {"id": "x"} if ok else {"error": "not the job's attempt"})

    def do_GET(self) -> None:  # noqa: N802  (GET /jobs?state=running...: nothing left over)
        self._answer(200, [])

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def standin():
    _Callback.reports, _Callback.current = [], 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post(url: str, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> int:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def _executor(api: str, handler: Callable[..., Any], **kwargs: Any) -> Executor:
    return Executor(api, handler=handler, port=0, **kwargs).start()


def test_the_same_id_posted_again_runs_once_under_the_newer_attempt(standin: str) -> None:
    runs: List[int] = []
    proceed = threading.Event()

    def handler(job: Dict[str, Any], report: Report) -> Any:
        runs.append(job["attempt"])
        proceed.wait(10)
        return "done"

    executor = _executor(standin, handler)
    try:
        job = {"id": str(uuid7()), "task": "webhook", "args": {}, "attempt": 1, "callback": f"{standin}/jobs/x"}
        assert post(executor.url, job) == 202
        wait_until("the handler to start", lambda: runs)
        _Callback.current = 2  # another worker took the job over
        assert post(executor.url, dict(job, attempt=2)) == 202
        proceed.set()
        wait_until("the end to be reported", lambda: [r for r in _Callback.reports if r.get("state") == "completed"])
        assert runs == [1]
        assert _Callback.reports == [{"state": "completed", "result": "done", "attempt": 2}]
    finally:
        proceed.set()
        executor.stop()


def test_a_refused_end_is_reported_again_under_the_newer_attempt(standin: str) -> None:
    runs: List[int] = []
    executor = _executor(standin, lambda job, report: runs.append(job["attempt"]) or {"ok": True})
    try:
        _Callback.current = 2  # lanes already moved on to attempt 2; the executor knows 1
        job = {"id": str(uuid7()), "task": "webhook", "args": {}, "attempt": 1, "callback": f"{standin}/jobs/x"}
        assert post(executor.url, job) == 202
        wait_until("the refused report", lambda: _Callback.reports)
        assert _Callback.reports == [{"state": "completed", "result": {"ok": True}, "attempt": 1}]
        assert post(executor.url, dict(job, attempt=2)) == 202
        wait_until("the report again", lambda: len(_Callback.reports) == 2)
        assert _Callback.reports[1] == {"state": "completed", "result": {"ok": True}, "attempt": 2}
        assert runs == [1]  # reported again, not run again
    finally:
        executor.stop()


def test_a_signed_executor_refuses_unsigned_and_replayed_requests(standin: str) -> None:
    executor = _executor(standin, lambda job, report: "signed", secret="s3cret")
    try:
        job = {"id": str(uuid7()), "task": "webhook", "args": {}, "attempt": 1, "callback": f"{standin}/jobs/x"}
        body = json.dumps(job).encode()
        assert post(executor.url, job) == 401
        assert post(executor.url, job, {"Lanes-Signature": sign("wrong", body)}) == 401
        header = sign("s3cret", body)
        req = urllib.request.Request(executor.url, data=body, method="POST", headers={"Lanes-Signature": header})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 202
        with pytest.raises(urllib.error.HTTPError) as replay:
            urllib.request.urlopen(urllib.request.Request(executor.url, data=body, method="POST", headers={"Lanes-Signature": header}), timeout=5)
        assert replay.value.code == 401
        assert b"replayed" in replay.value.read()
        wait_until("the report", lambda: _Callback.reports)
        assert _Callback.reports == [{"state": "completed", "result": "signed", "attempt": 1}]
    finally:
        executor.stop()


def test_port_zero_picks_a_port(standin: str) -> None:
    executor = _executor(standin, lambda job, report: None)
    try:
        assert executor.port != 0 and executor.url == f"http://127.0.0.1:{executor.port}/"
    finally:
        executor.stop()
