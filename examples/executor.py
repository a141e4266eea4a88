#!/usr/bin/env python3
"""An external executor for lanes' `webhook` task, in Python with the standard library only.

lanes POSTs {"id", "task", "args", "attempt", "callback"} to this server; it answers 202 at
once, does the work in a thread, and reports with PATCH to `callback` (lanes' /jobs/{id}):
progress while it works, then {"state": "completed", "result": ...} or {"state": "failed",
"error": ...}, each with the `attempt` it answers. lanes holds the job's lane, and so its
resources, until that final report. A cancel notice ({"id", "attempt", "cancel": true}) stops
the work; lanes refuses later reports anyway.

The same `id` posted again is the same job: lanes does that when the job's worker died and
another took it over, with the new attempt. The work goes on (it is not started twice) and
reports under the new attempt; a result lanes refused as being for an old attempt (409) is
reported again under the new one. With --secret (or LANES_WEBHOOK_SECRET, the secret the
workers sign with), every request must carry a valid `Lanes-Signature` (HMAC-SHA256 over
"<t>.<body>", at most five minutes old, never seen before); others get 401.

The work here: sleep `args.seconds`, reporting progress halfway, and return what it did.
With --log and --lock-dir it also proves exclusion the way the lanes test suite does: it takes
a non-blocking flock on `<lock-dir>/<resource>.lock` for each of `args.lock`, appends
"start <args.token> <ns>" / "end <args.token>" to the log, and "overlap ..." if a lock was held.

On start it asks lanes for the webhook jobs left running (GET /jobs?state=running&task=webhook)
that were posted to this executor, and takes them up again: a restart loses no job.

    python3 examples/executor.py --port 9100 --api http://127.0.0.1:8080 [--token TOKEN] [--secret S]
    LANES_WEBHOOK_ALLOW=http://127.0.0.1:9100/ lanes worker
    lanes jobs submit webhook --args '{"url": "http://127.0.0.1:9100/", "seconds": 2}' --wait

With --by-hand it accepts every job and reports nothing, printing what it was posted: you
play the executor with curl (see the README).
"""

import argparse
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPTS = None
CANCELED = set()
RUNNING = set()
# The latest attempt lanes posted for each job, and the final reports lanes refused as too late.
ATTEMPT = {}
REFUSED = {}
# Signatures seen within the tolerance: a replayed request is refused.
SEEN = {}
TOLERANCE = 300
# Reentrant: the state it guards is logged while it is held.
LOG_LOCK = threading.RLock()


def signature_error(header, body):
    """Why a request's Lanes-Signature is not valid (None when it is)."""
    parts = dict(p.strip().split("=", 1) for p in (header or "").split(",") if "=" in p)
    try:
        at, given = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError):
        return "no valid Lanes-Signature header"
    now = int(time.time())
    if abs(now - at) > TOLERANCE:
        return "the signature is too old"
    expected = hmac.new(OPTS.secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        return "the signature does not match"
    with LOG_LOCK:
        for seen, when in list(SEEN.items()):
            if now - when > TOLERANCE:
                del SEEN[seen]
        if given in SEEN:
            return "a replayed request"
        SEEN[given] = at
    return None


def report(job_id, callback, body):
    """A report to lanes under the job's latest attempt. A final one refused (as too late: a
    newer attempt took the job over) is kept, to be reported again under that attempt."""
    with LOG_LOCK:
        attempt = ATTEMPT.get(job_id, 1)
    answer = call("PATCH", callback, dict(body, attempt=attempt))
    if answer is None and body.get("state") in ("completed", "failed"):
        with LOG_LOCK:
            newer = ATTEMPT.get(job_id, 1) != attempt
            if not newer:
                REFUSED[job_id] = (callback, body)
        if newer:
            report(job_id, callback, body)


def call(method, url, body=None):
    """One request to lanes; returns the decoded answer (None for an error status)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if OPTS.token:
        req.add_header("authorization", f"Bearer {OPTS.token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        print(f"{method} {url}: {e.code} {e.read().decode(errors='replace')}", flush=True)
        return None


def log(line):
    if OPTS.log:
        with LOG_LOCK, open(OPTS.log, "a") as f:
            f.write(line + "\n")


def work(job):
    """Runs one job and reports its end to its callback."""
    job_id, args, callback = job["id"], job.get("args") or {}, job["callback"]
    token = args.get("token", job_id)
    attempt = int(job.get("attempt") or job.get("attempts") or 1)
    with LOG_LOCK:
        ATTEMPT[job_id] = max(attempt, ATTEMPT.get(job_id, 0))
        refused = REFUSED.pop(job_id, None)
        if job_id in RUNNING or refused:
            # Posted again (its worker died, another took it over): the same job, now under
            # this attempt.
            log(f"repost {token} a{attempt}")
    if refused:
        report(job_id, *refused)
        return
    with LOG_LOCK:
        if job_id in RUNNING:
            return
        RUNNING.add(job_id)
    held = []
    try:
        for resource in args.get("lock", []) if OPTS.lock_dir else []:
            f = open(os.path.join(OPTS.lock_dir, f"{resource}.lock"), "a")
            held.append(f)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"overlap {token} {resource}")
        log(f"start {token} {time.time_ns()}")
        seconds = float(args.get("seconds", 1))
        for half in (1, 2):
            deadline = time.monotonic() + seconds / 2
            while time.monotonic() < deadline:
                if job_id in CANCELED:
                    log(f"cancel {token}")
                    return
                time.sleep(0.02)
            if half == 1:
                report(job_id, callback, {"state": "running", "progress": 50, "message": "halfway"})
        log(f"end {token}")
        if args.get("fail"):
            report(job_id, callback, {"state": "failed", "error": str(args["fail"])})
        else:
            report(job_id, callback, {"state": "completed", "result": {"slept": seconds, "by": "executor.py"}})
    finally:
        for f in held:
            f.close()
        with LOG_LOCK:
            RUNNING.discard(job_id)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if OPTS.secret:
            why = signature_error(self.headers.get("Lanes-Signature"), raw)
            if why:
                log(f"refused {why}")
                self.send_response(401)
                self.end_headers()
                return
        body = json.loads(raw or b"{}")
        if OPTS.by_hand:
            # Accepted; the reports are yours to send (curl -X PATCH to the callback).
            print(f"posted {body.get('id')} attempt {body.get('attempt')} callback {body.get('callback')}", flush=True)
        elif body.get("cancel"):
            CANCELED.add(body["id"])
        else:
            threading.Thread(target=work, args=(body,), daemon=True).start()
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_):
        pass


def take_up_left_over(own_url):
    """Jobs posted to this executor before it restarted, still running in lanes' record."""
    jobs = call("GET", f"{OPTS.api}/jobs?state=running&task=webhook&limit=1000") or []
    for job in jobs:
        args = job.get("args") or {}
        if str(args.get("url", "")).startswith(own_url):
            job["callback"] = f"{OPTS.api}/jobs/{job['id']}"
            threading.Thread(target=work, args=(job,), daemon=True).start()


def main():
    global OPTS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--api", default=os.environ.get("LANES_API_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("LANES_API_TOKEN"))
    p.add_argument("--secret", default=os.environ.get("LANES_WEBHOOK_SECRET"))
    p.add_argument("--log")
    p.add_argument("--lock-dir")
    p.add_argument("--by-hand", action="store_true",
                   help="accept every job and report nothing: you report with curl")
    OPTS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", OPTS.port), Handler)
    if not OPTS.by_hand:
        take_up_left_over(f"http://127.0.0.1:{OPTS.port}/")
    print(f"executor listening on 127.0.0.1:{OPTS.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
