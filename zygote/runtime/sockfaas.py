"""sockfaas: call other functions from inside a sockfaas function.

    import sockfaas

    result = sockfaas.invoke("resize", {"key": "a.png"})   # waits for the result
    event_id = sockfaas.invoke_async("thumbnail", {"key": "a.png"})

invoke returns the callee's result. When the callee's handler raised, it
raises FunctionError (error_type, error_message, stack_trace as the callee
reported them); every other failure (unknown function, payload too large,
timeout, call chain too deep, overload, ...) raises InvokeError, whose kind
names it. invoke_async queues an event, delivered at least once; the callee
sees the returned id as context.aws_request_id on every attempt, so it can
use it as an idempotency key.

The call goes to the invoker over a Unix socket in the sandbox's scratch
directory (no network needed). The invoker knows which function calls from
the socket the call arrives on; a call inherits the calling request's
deadline (less a small reserve) and counts towards the call-depth limit.

Wire format (both ways): 4-byte head length and 4-byte body length, big
endian, then the head (JSON) and the body (the event or result, JSON).
Standard library only.
"""

import json
import os
import socket
import struct
import threading

__all__ = ["invoke", "invoke_async", "Error", "InvokeError", "FunctionError", "MAX_PAYLOAD"]

MAX_PAYLOAD = 6 * 1024 * 1024  # the invoker's limit (AWS Lambda's)
DEFAULT_SOCKET = "/scratch/sockfaas.sock"

# Set by the instance server for the request being served: the caller's
# side of the trace. The invoker trusts only an earlier deadline from here.
_rid = ""
_deadline_ms = 0

_FRAME = struct.Struct(">II")
_RECV = 65536
_HEAD = '{"op":"%s","fn":%s,"rid":%s,"dl":%d}'
_quote = json.encoder.encode_basestring_ascii  # JSON string, in C
_local = threading.local()


class Error(Exception):
    """Base of the errors of this module."""


class InvokeError(Error):
    """The call failed for a reason other than the callee's handler raising.

    kind is one of NotFound, TooLarge, Invalid, CallDepth, Timeout,
    Overloaded, Crashed, Closed, Unavailable (the invoker, or the upstream
    that carries calls between hosts, cannot be reached) or Internal.
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class FunctionError(Error):
    """The callee's handler raised: its error as the callee reported it."""

    def __init__(self, function, error):
        if not isinstance(error, dict):
            error = {"errorMessage": str(error), "errorType": "Unhandled"}
        self.function = function
        self.error_type = error.get("errorType") or "Unhandled"
        self.error_message = error.get("errorMessage") or ""
        self.stack_trace = error.get("stackTrace") or []
        super().__init__("%s raised %s: %s" % (function, self.error_type, self.error_message))


def socket_path():
    return os.environ.get("SOCKFAAS_SOCKET") or DEFAULT_SOCKET


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is not None and _local.pid != os.getpid():  # a forked child: not its connection
        conn = _local.conn = None
    if conn is None:
        path = socket_path()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
        except OSError as e:
            conn.close()
            raise InvokeError("Unavailable", "cannot reach the invoker at %s: %s" % (path, e.strerror or e))
        _local.conn, _local.pid = conn, os.getpid()
    return conn


def _drop():
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass


def _read_frame(conn):
    # Small answers arrive whole: one recv; larger ones are read into place.
    data = conn.recv(_RECV)
    if not data:
        raise ConnectionError("the invoker closed the connection")
    while len(data) < 8:
        more = conn.recv(_RECV)
        if not more:
            raise ConnectionError("the invoker closed the connection")
        data += more
    hl, bl = _FRAME.unpack_from(data)
    n = 8 + hl + bl
    if len(data) >= n:
        return hl, data[8:n]
    buf = bytearray(n - 8)
    buf[: len(data) - 8] = data[8:]
    view = memoryview(buf)
    got = len(data) - 8
    while got < n - 8:
        k = conn.recv_into(view[got:])
        if not k:
            raise ConnectionError("the invoker closed the connection")
        got += k
    return hl, buf


def _call(op, name, event):
    if not isinstance(name, str) or not name:
        raise InvokeError("Invalid", "function name must be a non-empty string, not %r" % (name,))
    try:
        body = json.dumps({} if event is None else event).encode()
    except (TypeError, ValueError) as e:
        raise InvokeError("Invalid", "event is not JSON-serializable: %s" % e)
    if len(body) > MAX_PAYLOAD:
        raise InvokeError(
            "TooLarge", "payload of %d bytes for %s is over the %d-byte limit" % (len(body), name, MAX_PAYLOAD)
        )
    head = (_HEAD % (op, _quote(name), _quote(_rid), int(_deadline_ms))).encode()
    conn = _connection()
    try:
        if len(body) <= 65536:
            conn.sendall(b"".join((_FRAME.pack(len(head), len(body)), head, body)))
        else:
            conn.sendall(_FRAME.pack(len(head), len(body)) + head)
            conn.sendall(body)
        hl, rest = _read_frame(conn)
    except OSError as e:
        _drop()
        raise InvokeError("Unavailable", "call to %s: lost the invoker: %s" % (name, e))
    resp = json.loads(bytes(rest[:hl]))
    if not resp.get("ok"):
        raise InvokeError(resp.get("kind") or "Internal", resp.get("msg") or "call to %s failed" % name)
    if op == "invoke_async":
        return resp.get("id")
    data = bytes(rest[hl:])
    if resp.get("fe"):
        try:
            error = json.loads(data)
        except ValueError:
            error = data.decode("utf-8", "replace")
        raise FunctionError(name, error)
    return json.loads(data) if data else None


def invoke(name, event=None):
    """Call function name with event and return its result.

    Raises FunctionError when its handler raised, InvokeError otherwise.
    """
    return _call("invoke", name, event)


def invoke_async(name, event=None):
    """Queue event for function name; return the event's id (its
    aws_request_id, stable across retries). Raises InvokeError."""
    return _call("invoke_async", name, event)
