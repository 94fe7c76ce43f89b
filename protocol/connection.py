"""A connection to the daemon: one DEALER socket, requests out and their replies in.

:class:`DaemonConnection` sends request headers (with their array frames), receives the
replies to a request by its ``id`` and makes a request-reply call;
:class:`~protocol.client.OrtholensClient` builds the protocol's requests on it.
Pure Python + pyzmq + :mod:`protocol.framing`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence

import zmq

import protocol as P
from .errors import DaemonError, DaemonUnavailable, OrtholensError

log = logging.getLogger("ortholens.client")

#: Longest single wait on the socket, real seconds: the clock is read again after it.
POLL_S = 0.1


class DaemonConnection:
    """A connection to the daemon (a DEALER socket with its own ``zmq.Context``).

    Not thread-safe: use one per thread. The socket is made at the first request, and
    made again after a timeout (it may hold unsent requests or stale replies).

    Args:
        endpoint: ``tcp://host:port`` of the daemon.
        token: sent with every request when the daemon requires one.
        timeout_s: how long to wait for the first reply to any request, seconds.
        clock: the monotonic clock, seconds, every timeout of the connection (and of
            the jobs a client follows on it) is measured with; the socket is polled in
            slices of at most :data:`POLL_S` real seconds between readings. Tests pass
            a clock they move by hand.
    """

    def __init__(self, endpoint: str, token: Optional[str] = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint
        self.token = token or None
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self._ctx = zmq.Context()
        self._sock: Optional[zmq.Socket] = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            if self._ctx is None:
                raise OrtholensError("the client is closed")
            s = self._ctx.socket(zmq.DEALER)
            s.linger = 0
            s.sndtimeo = max(1, int(self.timeout_s * 1000))
            if "[" in self.endpoint:
                s.setsockopt(zmq.IPV6, 1)
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def _reset(self) -> None:
        """Drop the socket (it may hold unsent requests / stale replies)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        """Close the socket and the context; the client cannot be used afterwards."""
        self._reset()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, header: Dict[str, Any], arrays: Sequence[Any] = ()) -> None:
        try:
            self._socket().send_multipart(P.encode(header, arrays), copy=False)
        except zmq.Again:
            self._reset()
            raise DaemonUnavailable(f"cannot send to the daemon at {self.endpoint}") from None

    def _receive(self, request_id: Any, wait_s: float) -> Optional[Dict[str, Any]]:
        """The next reply whose id is ``request_id`` (a string, or a collection of
        them) before :attr:`clock` has moved ``wait_s`` seconds on, else None."""
        end = self.clock() + wait_s
        while True:
            left = end - self.clock()
            if left <= 0:
                return None
            reply = self._poll_reply(request_id, min(left, POLL_S))
            if reply is not None:
                return reply

    def _poll_reply(self, request_id: Any, poll_s: float) -> Optional[Dict[str, Any]]:
        """The next reply whose id is ``request_id`` (a string, or a collection of
        them) that arrives within one poll of the socket of ``poll_s`` real seconds,
        else None; replies to other requests (stale) and undecodable ones are skipped."""
        ids = {request_id} if isinstance(request_id, str) else set(request_id)
        sock = self._socket()
        while sock.poll(max(1, int(poll_s * 1000))):
            frames = sock.recv_multipart(copy=False)
            try:
                header, _ = P.decode(frames, max_header_bytes=P.MAX_REPLY_HEADER_BYTES)
            except P.ProtocolError as exc:
                log.warning("skipping an undecodable reply: %s", exc)
                continue
            if header.get("id") not in ids:
                log.debug("skipping a stale %s reply", header.get("type"))
                continue
            return header
        return None

    def _call(self, mtype: str, timeout_s: Optional[float] = None,
              **fields: Any) -> Dict[str, Any]:
        header = P.request(mtype, token=self.token, **fields)
        self._send(header)
        wait = self.timeout_s if timeout_s is None else float(timeout_s)
        reply = self._receive(header["id"], wait)
        if reply is None:
            self._reset()
            raise DaemonUnavailable(f"the daemon at {self.endpoint} did not answer "
                                    f"{mtype} within {wait:g} s")
        raise_if_error(reply)
        return reply

    def _submit(self, header: Dict[str, Any], arrays: Sequence[Any] = ()) -> Dict[str, Any]:
        """Send a job request and return its ``accepted`` reply (with ``job_id``).

        Raises:
            DaemonUnavailable: no reply within ``timeout_s`` (the socket is reset).
            DaemonError: an ``error`` reply, or a reply other than ``accepted``.
        """
        self._send(header, arrays)
        first = self._receive(header["id"], self.timeout_s)
        if first is None:
            self._reset()
            raise DaemonUnavailable(f"the daemon at {self.endpoint} did not accept the "
                                    f"{header['type']} request within {self.timeout_s:g} s")
        raise_if_error(first)
        if first.get("type") != "accepted" or not isinstance(first.get("job_id"), str):
            raise DaemonError(f"unexpected reply {first.get('type')!r} "
                                            f"to {header['type']}", P.E_INTERNAL)
        return first

    def _cancel_quietly(self, job_id: str) -> None:
        """Best-effort cancel (waits at most ``timeout_s``); resets the socket on failure."""
        try:
            self._call("cancel", job_id=job_id)
        except OrtholensError as exc:
            log.debug("cancel of job %s: %s", job_id, exc)
        except zmq.ZMQError as exc:
            log.debug("cancel of job %s: %s", job_id, exc)
            self._reset()


def raise_if_error(reply: Dict[str, Any]) -> None:
    """Raise the :class:`DaemonError` of an ``error`` reply (code, message, job id and
    ``field``); other replies pass."""
    if reply.get("type") == "error":
        field = reply.get("field")
        raise DaemonError(str(reply.get("message", "")),
                          str(reply.get("code", P.E_INTERNAL)), reply.get("job_id"),
                          field=field if isinstance(field, str) else None)


__all__ = ["POLL_S", "DaemonConnection", "raise_if_error"]
