"""Submitting over AMQP (with pika), as lanes' contract asks: publisher confirms, persistent,
mandatory, a `message_id` that is the job id, and the same `message_id` again on a resend."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import ssl
import time
import urllib.parse
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Union

import pika
import pika.exceptions
from pika.spec import Basic

from .client import JobId, due_fields
from .errors import Forbidden, LanesError, Timeout, Unavailable
from .ids import uuid7

log = logging.getLogger("lanes_client.amqp")


class Unroutable(Unavailable):
    """The broker took the submit but routed it nowhere: no lanes server has bound the
    `submit` queue under this prefix in this vhost (yet)."""


class _Lost(Exception):
    """The connection (or its channel) went away; a resend may help."""


class _Session:
    """One connection and its channel in confirm mode, driven synchronously: each wait runs
    the connection's own I/O loop until what it waits for happened or its time is up."""

    def __init__(self, params: pika.ConnectionParameters, timeout: float, sink: Dict[str, Dict[str, Any]]) -> None:
        self.error: Optional[BaseException] = None
        self.ready = False
        self.channel: Any = None
        self.published = 0
        self.pending: Set[int] = set()
        self.confirms: Dict[int, bool] = {}
        self.returned: Dict[str, str] = {}
        self.reply_queue: Optional[str] = None
        self._sink = sink
        self.conn = pika.SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close,
        )
        if not self.run_until(lambda: self.ready or self.error is not None, timeout):
            self.close()
            raise _Lost(f"no answer within {timeout:g} s")
        if self.error is not None:
            error = self.error
            self.close()
            raise _Lost(_why(error))

    # I/O loop

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Runs the I/O loop until `done()` (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        loop = self.conn.ioloop
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timer = loop.call_later(left, loop.stop)
            try:
                loop.start()
            finally:
                loop.remove_timeout(timer)
        return True

    def poll(self) -> None:
        """Handles what already arrived (a close from the broker, heartbeats), without waiting."""
        loop = self.conn.ioloop
        loop.call_later(0, loop.stop)
        loop.start()

    def _wake(self) -> None:
        self.conn.ioloop.stop()

    @property
    def usable(self) -> bool:
        return self.ready and self.error is None and self.conn.is_open

    # callbacks

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_close)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)

    def _on_select_ok(self, _frame: Any) -> None:
        self.ready = True
        self._wake()

    def _on_open_error(self, _conn: Any, error: BaseException) -> None:
        self.error = error
        self._wake()

    def _on_close(self, _conn: Any, reason: BaseException) -> None:
        if self.error is None:
            self.error = reason
        self.ready = False
        self._wake()

    def _on_channel_close(self, _channel: Any, reason: BaseException) -> None:
        if self.error is None:
            self.error = reason
        self.ready = False
        if self.conn.is_open:
            self.conn.close()
        self._wake()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        if method.multiple:
            settled = [t for t in self.pending if t <= method.delivery_tag]
        else:
            settled = [method.delivery_tag]
        for tag in settled:
            self.pending.discard(tag)
            self.confirms[tag] = ok
        self._wake()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        if properties.message_id:
            self.returned[properties.message_id] = f"{method.reply_code} {method.reply_text}"

    def _on_reply(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            log.warning("a reply that is not JSON: %r", body[:200])
            return
        key = properties.correlation_id or (payload.get("id") if isinstance(payload, dict) else None)
        if key:
            self._sink[str(key)] = payload
        self._wake()

    # operations

    def ensure_reply_queue(self, timeout: float) -> str:
        """An exclusive server-named queue (`amq.gen-…`) consumed by this session."""
        if self.reply_queue is not None:
            return self.reply_queue
        declared: List[str] = []
        consuming: List[bool] = []

        def on_declared(frame: Any) -> None:
            declared.append(frame.method.queue)
            self._wake()

        def on_consuming(_frame: Any) -> None:
            consuming.append(True)
            self._wake()

        self.channel.queue_declare("", exclusive=True, auto_delete=True, callback=on_declared)
        if not self.run_until(lambda: bool(declared) or self.error is not None, timeout) or not declared:
            raise _Lost(_why(self.error) if self.error else "no answer to queue.declare")
        self.channel.basic_consume(declared[0], self._on_reply, auto_ack=True, exclusive=True, callback=on_consuming)
        if not self.run_until(lambda: bool(consuming) or self.error is not None, timeout) or not consuming:
            raise _Lost(_why(self.error) if self.error else "no answer to basic.consume")
        self.reply_queue = declared[0]
        return self.reply_queue

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties) -> int:
        self.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self.published += 1
        self.pending.add(self.published)
        return self.published

    def wait_confirm(self, tag: int, timeout: float) -> Optional[bool]:
        """True (acked), False (nacked) or None (no confirm in time, or the connection went)."""
        self.run_until(lambda: tag in self.confirms or self.error is not None, timeout)
        return self.confirms.pop(tag, None)

    def close(self) -> None:
        try:
            if not (self.conn.is_closed or self.conn.is_closing):
                self.conn.close()
            if not self.conn.is_closed:
                self.run_until(lambda: self.conn.is_closed, 1.0)
        except Exception:  # pragma: no cover - closing is best effort
            pass
        finally:
            self.ready = False
            try:
                self.conn.ioloop.close()
            except Exception:  # pragma: no cover
                pass


def _why(error: Optional[BaseException]) -> str:
    if error is None:
        return "closed"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def split_urls(urls: Union[str, Iterable[str]]) -> List[str]:
    """`LANES_AMQP_URL`'s form (comma separated) or a list of URLs."""
    if isinstance(urls, str):
        items = urls.split(",")
    else:
        items = list(urls)
    found = [u.strip() for u in items if u and u.strip()]
    if not found:
        raise ValueError("no AMQP URL given")
    return found


class AmqpSubmitter:
    """Submits tasks over AMQP to the exchange named by `prefix` (routing key `submit`).

    `urls` are the nodes of the broker (a comma-separated string like `LANES_AMQP_URL`, or a
    list); the first that answers is used and, when its connection goes, the next. Every
    publish is persistent, mandatory and confirmed; a nack, a confirm that does not come
    within `confirm_timeout` seconds, or a lost connection makes it send the message again
    with the same `message_id` (at most `resends` times), which lanes records once.

    Not safe to share between threads: give each thread its own.
    """

    def __init__(
        self,
        urls: Union[str, Sequence[str]] = "amqp://guest:guest@127.0.0.1:5672/%2f",
        prefix: str = "lanes",
        *,
        confirm_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        resends: int = 5,
        backoff: float = 0.1,
        ca_file: Optional[str] = None,
        connection_name: Optional[str] = None,
    ) -> None:
        self.urls = split_urls(urls)
        self.prefix = prefix
        self.confirm_timeout = confirm_timeout
        self.connect_timeout = connect_timeout
        self.resends = resends
        self.backoff = backoff
        self.ca_file = ca_file
        self.connection_name = connection_name or f"lanes-client-python@{socket.gethostname()}"
        self._next = 0
        self._session: Optional[_Session] = None
        self._replies: Dict[str, Dict[str, Any]] = {}
        self._awaiting: Dict[str, _Session] = {}

    @classmethod
    def from_env(cls, **kwargs: Any) -> "AmqpSubmitter":
        """A submitter configured as lanes' own processes are: `LANES_AMQP_URL` (or
        `LANES_AMQP_URL_FILE`; a cluster's nodes comma separated), `LANES_PREFIX`,
        `LANES_CA_FILE`."""
        urls = os.environ.get("LANES_AMQP_URL")
        url_file = os.environ.get("LANES_AMQP_URL_FILE")
        if not urls and url_file:
            with open(url_file, encoding="utf-8") as f:
                urls = f.read()
            if urls.endswith("\n"):
                urls = urls[:-1]
        return cls(
            urls or "amqp://guest:guest@127.0.0.1:5672/%2f",
            os.environ.get("LANES_PREFIX", "lanes"),
            ca_file=os.environ.get("LANES_CA_FILE") or None,
            **kwargs,
        )

    def __enter__(self) -> "AmqpSubmitter":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (and with it the reply queue)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def connected_url(self) -> Optional[str]:
        """The node in use (password hidden), None when not connected."""
        if self._session is None or not self._session.usable:
            return None
        return _redact(self.urls[self._next])

    def submit(
        self,
        task: str,
        args: Any = None,
        resources: Iterable[str] = (),
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        id: Optional[JobId] = None,
        *,
        reply: bool = False,
        run_at: Optional[datetime] = None,
        delay_ms: Optional[int] = None,
    ) -> str:
        """Publishes a submit and returns the job id (its `message_id`) once the broker has
        confirmed it. With `reply=True` lanes will publish the job's end to this submitter's
        reply queue, for `wait_for_result`."""
        message_id = str(id) if id is not None else str(uuid7())
        payload: Dict[str, Any] = {"task": task}
        if args is not None:
            payload["args"] = args
        payload["resources"] = list(resources)
        if max_attempts is not None:
            payload["max_attempts"] = max_attempts
        if timeout_ms is not None:
            payload["timeout_ms"] = timeout_ms
        payload.update(due_fields(run_at, delay_ms))
        body = json.dumps(payload).encode()

        why = "not sent"
        delay = self.backoff
        for attempt in range(self.resends + 1):
            if attempt:
                time.sleep(min(delay, 2.0) * (0.5 + random.random() / 2))
                delay *= 2
            try:
                session = self._connect()
            except Unavailable as e:
                why = e.reason
                continue
            try:
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=message_id,
                    reply_to=session.ensure_reply_queue(self.connect_timeout) if reply else None,
                    correlation_id=message_id if reply else None,
                )
                tag = session.publish(self.prefix, "submit", body, properties)
            except (_Lost, pika.exceptions.AMQPError) as e:
                why = f"lost before the publish: {e}"
                error = session.error
                self._drop(session)
                if error is not None:
                    self._refused(error)
                continue
            confirmed = session.wait_confirm(tag, self.confirm_timeout)
            if confirmed is True:
                returned = session.returned.pop(message_id, None)
                if returned is not None:
                    raise Unroutable(
                        f"the submit was not routed ({returned}): is a lanes server running "
                        f"with prefix `{self.prefix}` in this vhost?"
                    )
                if reply:
                    self._awaiting[message_id] = session
                return message_id
            if confirmed is False:
                why = "the broker nacked it"
                log.warning("submit %s nacked; sending it again", message_id)
                continue
            error = session.error
            if error is not None:
                why = f"the connection was lost: {_why(error)}"
            else:
                why = f"no confirm within {self.confirm_timeout:g} s"
            self._drop(session)
            if error is not None:
                self._refused(error)
            log.warning("submit %s: %s; sending it again", message_id, why)
        raise Unavailable(f"submit {message_id} not confirmed after {self.resends + 1} tries: {why}")

    def wait_for_result(self, job_id: JobId, timeout: float = 60.0) -> Dict[str, Any]:
        """Waits for the end of a job submitted here with `reply=True` and returns what lanes
        published: `{"id", "state", "result", "error"}`. Raises `Timeout`, or `Unavailable` if
        the connection that carried the reply queue was lost (follow the job over HTTP then)."""
        key = str(job_id)
        if key in self._replies:
            self._awaiting.pop(key, None)
            return self._replies.pop(key)
        session = self._awaiting.get(key)
        if session is None:
            raise LanesError(f"job {key} was not submitted here with reply=True")
        if not session.usable:
            self._awaiting.pop(key, None)
            raise Unavailable(f"the connection carrying job {key}'s reply queue was lost; follow it over HTTP")
        session.run_until(lambda: key in self._replies or session.error is not None, timeout)
        if key in self._replies:
            self._awaiting.pop(key, None)
            return self._replies.pop(key)
        if session.error is not None:
            self._awaiting.pop(key, None)
            self._drop(session)
            raise Unavailable(f"the connection carrying job {key}'s reply queue was lost; follow it over HTTP")
        raise Timeout(f"no result for job {key} within {timeout:g} s")

    # --- connections -----------------------------------------------------------------------

    def _params(self, url: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.socket_timeout = self.connect_timeout
        params.stack_timeout = self.connect_timeout
        params.connection_attempts = 1
        params.blocked_connection_timeout = self.confirm_timeout
        params.client_properties = {"connection_name": self.connection_name}
        if url.startswith("amqps://"):
            ctx = ssl.create_default_context()
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            params.ssl_options = pika.SSLOptions(ctx, params.host)
        return params

    def _connect(self) -> _Session:
        if self._session is not None and self._session.usable:
            self._session.poll()  # an idle connection may have been closed meanwhile
        if self._session is not None and self._session.usable:
            return self._session
        if self._session is not None:
            self._drop(self._session)
        failures = []
        for i in range(len(self.urls)):
            index = (self._next + i) % len(self.urls)
            url = self.urls[index]
            try:
                session = _Session(self._params(url), self.connect_timeout, self._replies)
            except _Lost as e:
                failures.append(f"{_redact(url)}: {e}")
                continue
            except (pika.exceptions.AMQPError, OSError, ValueError) as e:
                failures.append(f"{_redact(url)}: {_why(e)}")
                continue
            self._next = index
            self._session = session
            return session
        raise Unavailable("no AMQP node answered: " + "; ".join(failures))

    def _drop(self, session: _Session) -> None:
        """Leaves a session that failed; the next connection goes to the next node."""
        session.close()
        if session is self._session:
            self._session = None
            self._next = (self._next + 1) % len(self.urls)

    def _refused(self, error: BaseException) -> None:
        """A channel the broker closed for a reason a resend cannot help is reported as is."""
        if isinstance(error, pika.exceptions.ChannelClosedByBroker):
            if error.reply_code == 404:
                raise Unavailable(
                    f"the broker has no exchange `{self.prefix}` ({error.reply_text}): "
                    "is a lanes server running with this prefix in this vhost?"
                )
            if error.reply_code == 403:
                raise Forbidden(f"the broker refused the publish: {error.reply_text}")
            raise LanesError(f"the broker closed the channel: {error.reply_code} {error.reply_text}")
