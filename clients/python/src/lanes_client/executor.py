"""An external executor for lanes' `webhook` task (standard library only).

lanes POSTs `{"id", "task", "args", "attempt", "callback"}` to the executor when the job's turn
comes; the executor answers 202 at once, runs the handler in a thread and reports to
`callback` (PATCH): progress while it works, then `completed` with the handler's return value
or `failed` with its exception. lanes holds the job's lane, and so its resources, until that
final report. This mirrors `examples/executor.py` in the lanes repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .client import Client
from .errors import Conflict, LanesError, Unavailable

log = logging.getLogger("lanes_client.executor")

#: How far a signature's `t` may be from this clock, in seconds (and how long a signature is
#: remembered to refuse its replay).
TOLERANCE = 300

Secret = Union[str, bytes]


class InvalidSignature(LanesError):
    """A request whose `Lanes-Signature` is missing, wrong, too old or replayed."""

    status = 401


def signature(secret: Secret, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret` (lanes' `v1`)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: Secret, body: bytes, timestamp: Optional[int] = None) -> str:
    """A `Lanes-Signature` header value for `body`, as lanes' workers send it."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={signature(secret, t, body)}"


class SignatureVerifier:
    """Checks `Lanes-Signature: t=<unix>,v1=<hex>` headers: the HMAC compared in constant
    time, `t` within `tolerance` seconds of this clock, and each signature accepted once
    (those seen within the tolerance are remembered, so a replay is refused). Thread-safe."""

    def __init__(self, secret: Secret, tolerance: int = TOLERANCE) -> None:
        if not secret:
            raise ValueError("an empty secret")
        self._secret = secret
        self.tolerance = tolerance
        self._seen: Dict[str, int] = {}
        self._lock = threading.Lock()

    def verify(self, header: Optional[str], body: bytes, now: Optional[float] = None) -> None:
        """Returns when the request is genuine; raises `InvalidSignature` saying why not."""
        at, given = _parse_header(header)
        if at is None or not given:
            raise InvalidSignature("no valid Lanes-Signature header")
        clock = int(time.time() if now is None else now)
        if abs(clock - at) > self.tolerance:
            raise InvalidSignature("the signature is too old (or from the future)")
        expected = signature(self._secret, at, body)
        match = None
        for candidate in given:
            if hmac.compare_digest(expected, candidate):
                match = candidate
        if match is None:
            raise InvalidSignature("the signature does not match")
        with self._lock:
            for seen, when in list(self._seen.items()):
                if abs(clock - when) > self.tolerance:
                    del self._seen[seen]
            if match in self._seen:
                raise InvalidSignature("a replayed request")
            self._seen[match] = at


def _parse_header(header: Optional[str]) -> Tuple[Optional[int], List[str]]:
    at: Optional[int] = None
    given: List[str] = []
    for part in (header or "").split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                at = int(value)
            except ValueError:
                return None, []
        elif name == "v1":
            given.append(value.strip())
    return at, given


class Report:
    """What a handler reports through: `progress(percent, message)` while it works, and
    `canceled` (true once lanes sent a cancel notice for the job)."""

    def __init__(self, executor: "Executor", job_id: str) -> None:
        self._executor = executor
        self.job_id = job_id

    @property
    def canceled(self) -> bool:
        return self._executor._is_canceled(self.job_id)

    @property
    def attempt(self) -> int:
        """The job's latest attempt (it grows when another worker took the job over)."""
        return self._executor._attempt(self.job_id)

    def progress(self, percent: float, message: Optional[str] = None) -> bool:
        """Reports progress (0 to 100); False when lanes refused it (the job or this attempt
        has ended) or could not be reached."""
        body: Dict[str, Any] = {"state": "running", "progress": percent}
        if message is not None:
            body["message"] = message
        return self._executor._report(self.job_id, body)


Handler = Callable[[Dict[str, Any], Report], Any]


class _JobState:
    __slots__ = ("attempt", "callback", "canceled", "running", "refused")

    def __init__(self, attempt: int, callback: str) -> None:
        self.attempt = attempt
        self.callback = callback
        self.canceled = False
        self.running = False
        self.refused: Optional[Dict[str, Any]] = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    executor: "Executor"


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        executor = self.server.executor
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        if executor._verifier is not None:
            try:
                executor._verifier.verify(self.headers.get("Lanes-Signature"), raw)
            except InvalidSignature as e:
                log.warning("refused a request: %s", e.reason)
                self._answer(401, {"error": e.reason})
                return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            self._answer(400, {"error": "expected a JSON object with an `id`"})
            return
        if body.get("cancel"):
            executor._cancel(body)
        elif not isinstance(body.get("callback"), str):
            self._answer(400, {"error": "a job needs a `callback`"})
            return
        else:
            executor._accept(body)
        self._answer(202, {"accepted": True})

    def _answer(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class Executor:
    """Runs lanes' `webhook` jobs with `handler(job, report)`.

    `job` is what lanes posted: `{"id", "task", "args", "attempt", "callback"}`. The handler's
    return value (JSON) is the job's result; an exception fails the attempt with its text
    (lanes retries it up to the job's `max_attempts`). `report.progress(percent, message)`
    reports progress; `report.canceled` turns true when the job is canceled (a handler should
    then stop; its end is not reported, lanes has ended the job).

    The same `id` posted again (the job's worker died and another took the job over, with a
    newer attempt) is the same job: the handler is not run twice, and its reports go under the
    newer attempt; a final report lanes refused as being for an old attempt (409) is kept and
    reported again under the newer one. With `secret` (the workers' `LANES_WEBHOOK_SECRET`)
    every request must carry a valid `Lanes-Signature`; others get 401.

    On `start` it takes up the webhook jobs lanes still has running that were posted to its own
    URL (`url`, by default `http://<host>:<port>/`), so a restart loses no job.
    """

    def __init__(
        self,
        api_url: str,
        token: Optional[str] = None,
        secret: Optional[Secret] = None,
        handler: Optional[Handler] = None,
        port: int = 9100,
        *,
        host: str = "127.0.0.1",
        url: Optional[str] = None,
        ca_file: Optional[str] = None,
        tolerance: int = TOLERANCE,
        report_retries: int = 5,
        final_report_patience: float = 300.0,
    ) -> None:
        if handler is None:
            raise ValueError("an Executor needs a handler(job, report)")
        self.handler = handler
        self.final_report_patience = final_report_patience
        self.host = host
        self.port = port
        self._url = url
        self._client = Client(api_url, token=token, ca_file=ca_file, retries=report_retries)
        self._verifier = SignatureVerifier(secret, tolerance) if secret else None
        self._lock = threading.RLock()
        self._jobs: Dict[str, _JobState] = {}
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The URL lanes posts to (what the jobs' `args.url` starts with)."""
        return self._url or f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        return self._client.api_url

    def __enter__(self) -> "Executor":
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    def start(self, take_up: bool = True) -> "Executor":
        """Listens (in a background thread) and takes up the jobs left running."""
        server = _Server((self.host, self.port), _RequestHandler)
        server.executor = self
        self._server = server
        if self.port == 0:
            self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="lanes-executor", daemon=True)
        self._thread.start()
        if take_up:
            self.take_up_left_over()
        return self

    def serve_forever(self) -> None:
        """`start`, then block until interrupted."""
        self.start()
        try:
            assert self._thread is not None
            while self._thread.is_alive():
                self._thread.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stops listening. Handlers still running go on in their threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def take_up_left_over(self) -> int:
        """Runs again the webhook jobs lanes has running that were posted to this executor's
        URL (`GET /jobs?state=running&task=webhook`); returns how many."""
        try:
            jobs = self._client.list(state="running", task="webhook", limit=1000)
        except LanesError as e:
            log.warning("cannot ask lanes for jobs left running: %s", e)
            return 0
        taken = 0
        for job in jobs:
            args = job.args if isinstance(job.args, dict) else {}
            if not str(args.get("url", "")).startswith(self.url):
                continue
            posted = {
                "id": job.id,
                "task": job.task,
                "args": job.args,
                "attempt": job.attempts or 1,
                "callback": f"{self._client.api_url}/jobs/{job.id}",
            }
            self._accept(posted)
            taken += 1
        return taken

    # --- jobs ------------------------------------------------------------------------------

    def _accept(self, job: Dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            attempt = int(job.get("attempt") or job.get("attempts") or 1)
        except (TypeError, ValueError):
            attempt = 1
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None:
                state = self._jobs[job_id] = _JobState(attempt, job["callback"])
            else:
                state.attempt = max(state.attempt, attempt)
                state.callback = job["callback"]
            if state.running:
                log.info("job %s posted again (attempt %d): it runs already", job_id, attempt)
                return
            refused, state.refused = state.refused, None
            state.running = True
        if refused is not None:
            # Posted again after its final report was refused as too late: report it again.
            log.info("job %s posted again (attempt %d): reporting its end again", job_id, attempt)
            threading.Thread(target=self._finish, args=(job_id, refused), daemon=True).start()
            return
        threading.Thread(target=self._run, args=(job_id, dict(job, attempt=attempt)), daemon=True).start()

    def _cancel(self, notice: Dict[str, Any]) -> None:
        with self._lock:
            state = self._jobs.get(notice["id"])
            if state is not None:
                state.canceled = True

    def _is_canceled(self, job_id: str) -> bool:
        with self._lock:
            state = self._jobs.get(job_id)
            return state is not None and state.canceled

    def _attempt(self, job_id: str) -> int:
        with self._lock:
            state = self._jobs.get(job_id)
            return state.attempt if state is not None else 1

    def _run(self, job_id: str, job: Dict[str, Any]) -> None:
        report = Report(self, job_id)
        try:
            result = self.handler(job, report)
        except Exception as e:  # the handler's failure is the job's
            log.info("job %s failed: %s", job_id, e)
            final: Dict[str, Any] = {"state": "failed", "error": str(e) or type(e).__name__}
        else:
            final = {"state": "completed", "result": result}
        self._finish(job_id, final)

    def _finish(self, job_id: str, final: Dict[str, Any]) -> None:
        with self._lock:
            state = self._jobs.get(job_id)
            canceled = state is not None and state.canceled
        kept = False
        try:
            if not canceled:
                kept = not self._report(job_id, final, final=True)
        finally:
            with self._lock:
                if not kept:
                    self._jobs.pop(job_id, None)

    def _report(self, job_id: str, body: Dict[str, Any], final: bool = False) -> bool:
        """PATCHes `body` under the job's latest attempt; returns whether lanes took it.

        A final report refused (409) while no newer attempt is known is kept, to be reported
        again when one is posted. A final report that cannot reach lanes (or gets a 503) is
        sent again with backoff for up to `final_report_patience` seconds, then kept too."""
        deadline = time.monotonic() + self.final_report_patience
        delay = 0.5
        while True:
            with self._lock:
                state = self._jobs.get(job_id)
                if state is None:
                    return True
                attempt, callback = state.attempt, state.callback
            try:
                self._client.patch(callback, dict(body, attempt=attempt), retry=final)
                return True
            except Conflict as e:
                if not final:
                    log.info("job %s: progress refused: %s", job_id, e.reason)
                    return False
                with self._lock:
                    if state.canceled:
                        return True
                    if state.attempt == attempt:
                        log.info("job %s: end refused under attempt %d (%s); kept", job_id, attempt, e.reason)
                        state.refused = body
                        state.running = False
                        return False
                # A newer attempt arrived meanwhile: report under it.
            except Unavailable as e:
                if not final:
                    log.warning("job %s: progress not sent: %s", job_id, e)
                    return False
                if time.monotonic() >= deadline:
                    log.error("job %s: end not taken (%s); kept until lanes posts it again", job_id, e)
                    with self._lock:
                        state.refused = body
                        state.running = False
                    return False
                log.warning("job %s: end not taken (%s); sending it again", job_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except LanesError as e:
                # 400, 401, 403, 404: sending it again would not help.
                log.error("job %s: report refused: %s", job_id, e)
                return final
