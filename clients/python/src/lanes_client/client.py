"""The HTTP API client: submit, follow and steer jobs (standard library only)."""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from .errors import LanesError, NotFound, Timeout, Unavailable, error_for_status
from .ids import uuid7

#: The states a job never leaves.
FINAL_STATES = frozenset({"completed", "failed", "canceled"})

JobId = Union[str, uuid.UUID]


@dataclass
class Job:
    """A job as the API shows it. Fields the answer lacks are None (the answer to a submit
    carries only what was submitted); `raw` is the whole answer, newer fields included."""

    id: str
    task: str
    state: str
    args: Any = None
    resources: List[str] = field(default_factory=list)
    max_attempts: Optional[int] = None
    timeout_ms: Optional[int] = None
    attempts: Optional[int] = None
    progress: Optional[Dict[str, Any]] = None
    result: Any = None
    error: Optional[str] = None
    queue: Optional[str] = None
    worker: Optional[str] = None
    created_at: Optional[str] = None
    queued_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    updated_at: Optional[str] = None
    submitted_by: Optional[str] = None
    run_at: Optional[str] = None
    steers: Optional[List[Dict[str, Any]]] = None
    blocked_by: Optional[List[Dict[str, Any]]] = None
    waiting_position: Optional[int] = None
    lane_position: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Job":
        known = {f for f in cls.__dataclass_fields__ if f != "raw"}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs.setdefault("id", "")
        kwargs.setdefault("task", "")
        kwargs.setdefault("state", "")
        if kwargs.get("resources") is None:
            kwargs["resources"] = []
        return cls(**kwargs, raw=dict(d))

    @property
    def final(self) -> bool:
        """Whether the job has ended (completed, failed or canceled)."""
        return self.state in FINAL_STATES


class JobList(List[Job]):
    """The jobs of `Client.list`, newest first. `truncated` is true when lanes stopped the page
    early (its args, results and errors passed 16 MiB: header `Lanes-Truncated`)."""

    truncated: bool = False


def due_fields(run_at: Optional[datetime], delay_ms: Optional[int]) -> Dict[str, Any]:
    """The submit fields of a due time: `run_at` (a datetime; a naive one is taken as UTC) or
    `delay_ms`, not both."""
    if run_at is not None and delay_ms is not None:
        raise ValueError("give run_at or delay_ms, not both")
    if run_at is not None:
        if run_at.tzinfo is None:
            run_at = run_at.replace(tzinfo=timezone.utc)
        return {"run_at": run_at.isoformat()}
    if delay_ms is not None:
        return {"delay_ms": int(delay_ms)}
    return {}


def _is_transient(e: BaseException) -> bool:
    return isinstance(e, Unavailable)


class Client:
    """A client of the lanes HTTP API.

    `token` is sent as `Authorization: Bearer` on every request (writes need it when the
    server has tokens; reads too with `LANES_PROTECT_READS`). `ca_file` holds CA certificates
    (PEM) trusted beside the system's roots for an `https://` API.

    A connection error or a 503 is retried (`retries` times, exponential backoff from
    `backoff` seconds) for submits, which carry their id so a retry never makes a second job,
    and for reads; cancel, retry and reports are sent once.
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:8080",
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 3.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._ssl: Optional[ssl.SSLContext] = None
        if ca_file or self.api_url.startswith("https://"):
            ctx = ssl.create_default_context()
            if ca_file:
                ctx.load_verify_locations(cafile=ca_file)
            self._ssl = ctx

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client configured as lanes' own client commands are: `LANES_API_URL`,
        `LANES_API_TOKEN` (or `LANES_API_TOKEN_FILE`), `LANES_CA_FILE`."""
        token = os.environ.get("LANES_API_TOKEN")
        token_file = os.environ.get("LANES_API_TOKEN_FILE")
        if not token and token_file:
            with open(token_file, encoding="utf-8") as f:
                token = f.read()
            if token.endswith("\n"):
                token = token[:-1]
        return cls(
            api_url=os.environ.get("LANES_API_URL", "http://127.0.0.1:8080"),
            token=token or None,
            ca_file=os.environ.get("LANES_CA_FILE") or None,
            **kwargs,
        )

    # --- jobs ---------------------------------------------------------------------------

    def submit(
        self,
        task: str,
        args: Any = None,
        resources: Iterable[str] = (),
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        id: Optional[JobId] = None,
        *,
        run_at: Optional[datetime] = None,
        delay_ms: Optional[int] = None,
    ) -> Job:
        """Submits a task (`POST /jobs`) and returns the job as accepted (state `submitted`,
        or `scheduled` when `run_at` or `delay_ms` puts it later: it joins its resources' order
        when it is due).

        Without `id` a time-ordered UUIDv7 is made here, so that the retries of this call (on a
        connection error or a 503) carry the same id and lanes records one job. Submitting an
        id lanes already has is accepted and changes nothing: the first submit wins.
        """
        body: Dict[str, Any] = {"task": task, "id": str(id) if id is not None else str(uuid7())}
        if args is not None:
            body["args"] = args
        body["resources"] = list(resources)
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        body.update(due_fields(run_at, delay_ms))
        answer, _ = self._call("POST", "/jobs", body, retry=True)
        return Job.from_dict(answer)

    def get(self, id: JobId) -> Job:
        """One job (`GET /jobs/{id}`); raises `NotFound` for an id lanes has not recorded
        (yet: a job appears a few milliseconds after its submit was accepted)."""
        answer, _ = self._call("GET", f"/jobs/{_quote(id)}", retry=True)
        return Job.from_dict(answer)

    def list(
        self,
        state: Optional[str] = None,
        task: Optional[str] = None,
        resource: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> JobList:
        """The newest jobs (`GET /jobs`), filtered; `limit` 1 to 1,000 (lanes' default 100)."""
        query = {"state": state, "task": task, "resource": resource, "limit": limit}
        params = {k: str(v) for k, v in query.items() if v is not None}
        path = "/jobs" + ("?" + urllib.parse.urlencode(params) if params else "")
        answer, headers = self._call("GET", path, retry=True)
        jobs = JobList(Job.from_dict(j) for j in answer)
        jobs.truncated = (headers.get("Lanes-Truncated") or "").lower() == "true"
        return jobs

    def cancel(self, id: JobId) -> Dict[str, Any]:
        """Cancels a job (`POST /jobs/{id}/cancel`). A waiting job is canceled at once (its
        answer says `canceled`); a queued or running one is skipped or stopped by its worker
        (the answer says `canceling`; `wait` for the end). An ended job raises `Conflict`."""
        answer, _ = self._call("POST", f"/jobs/{_quote(id)}/cancel")
        return dict(answer)

    def retry(self, id: JobId) -> Dict[str, Any]:
        """Runs a failed or canceled job again (`POST /jobs/{id}/retry`): same id, attempts
        from zero. Other states raise `Conflict`."""
        answer, _ = self._call("POST", f"/jobs/{_quote(id)}/retry")
        return dict(answer)

    def wait(self, id: JobId, timeout: float = 60.0, interval: float = 0.1) -> Job:
        """Polls the job until it ends (completed, failed or canceled) and returns it; raises
        `Timeout` when `timeout` seconds pass first. An id not recorded yet (404) is polled
        too, since a job appears a moment after its submit is accepted."""
        deadline = time.monotonic() + timeout
        delay = interval
        seen = False
        while True:
            try:
                job = self.get(id)
                seen = True
                if job.final:
                    return job
            except NotFound:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"is still {job.state}" if seen else "was not recorded"
                raise Timeout(f"job {id} {what} after {timeout:g} s")
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 1.0)

    def report(
        self,
        id: JobId,
        attempt: int,
        state: str,
        *,
        progress: Optional[float] = None,
        message: Optional[str] = None,
        result: Any = None,
        error: Optional[str] = None,
        callback: Optional[str] = None,
    ) -> Dict[str, Any]:
        """An external executor's report (`PATCH /jobs/{id}`, or to `callback`, the URL lanes
        posted): `state` running (with `progress`/`message`), completed (with `result`) or
        failed (with `error`), under the `attempt` it answers. A report for an attempt that is
        no longer the job's, or after the job ended, raises `Conflict`."""
        body: Dict[str, Any] = {"attempt": attempt, "state": state}
        if progress is not None:
            body["progress"] = progress
        if message is not None:
            body["message"] = message
        if state == "completed":
            body["result"] = result
        elif result is not None:
            body["result"] = result
        if error is not None:
            body["error"] = error
        return self.patch(callback or f"{self.api_url}/jobs/{_quote(id)}", body)

    def patch(self, url: str, body: Mapping[str, Any], retry: bool = False) -> Dict[str, Any]:
        """PATCHes a report body as it is to a callback URL."""
        answer, _ = self._call("PATCH", url, dict(body), retry=retry)
        return answer if isinstance(answer, dict) else {}

    # --- other endpoints ------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """`GET /healthz` (its answer also when it is a 503 `starting`)."""
        try:
            answer, _ = self._call("GET", "/healthz")
        except Unavailable as e:
            if e.body is not None:
                return dict(e.body)
            raise
        return dict(answer)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retry: bool = False,
    ) -> Any:
        """Any API call (`path` below the API URL, or a whole URL); returns the decoded answer
        and raises the typed error of a refusal."""
        answer, _ = self._call(method, path, body, retry=retry)
        return answer

    # --- plumbing -------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any = None, retry: bool = False
    ) -> "tuple[Any, Mapping[str, str]]":
        url = path if "://" in path else self.api_url + path
        data = None if body is None else json.dumps(body).encode()
        attempts = 1 + (self.retries if retry else 0)
        delay = self.backoff
        last: Optional[LanesError] = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(delay, self.max_backoff) * (0.5 + random.random() / 2))
                delay *= 2
            try:
                return self._once(method, url, data)
            except LanesError as e:
                if not _is_transient(e):
                    raise
                last = e
        assert last is not None
        raise last

    def _once(self, method: str, url: str, data: Optional[bytes]) -> "tuple[Any, Mapping[str, str]]":
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("accept", "application/json")
        if data is not None:
            req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                raw = resp.read()
                headers = resp.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            decoded = _decode(raw)
            reason = decoded.get("error") if isinstance(decoded, dict) else None
            if not reason:
                reason = raw.decode(errors="replace").strip() or (e.reason or f"HTTP {e.code}")
            err = error_for_status(e.code, str(reason))
            err.body = decoded if isinstance(decoded, dict) else None
            raise err from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            why = getattr(e, "reason", None) or e
            err = Unavailable(f"cannot reach {url}: {why}")
            err.status = None
            raise err from e
        return (_decode(raw) if raw else None), headers


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _quote(id: JobId) -> str:
    return urllib.parse.quote(str(id), safe="")
