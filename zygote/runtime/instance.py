"""sockfaas instance server: one function's handler behind HTTP/1.1 on a Unix socket.

Two ways in:

* CLI, for a fresh interpreter::

      python3 instance.py --socket PATH --dir DIR [--handler MOD.FUNC]
          [--style lambda|openlambda] [--name NAME] [--memory-mb N]
          [--max-body BYTES] [--ready-fd FD]

  Once the socket listens, b"ready\\n" is written to FD (and FD closed). A
  startup failure (handler module or function missing, syntax error, bad
  socket path) writes b"error: <message>\\n" there instead (to stderr when
  there is no FD) and exits with status 3.

* Import, for a child forked from a zygote: ``import instance`` before the
  fork, then ``instance.serve(cfg, ready)`` once the child is in its sandbox.
  cfg keys: socket, dir, handler, style, name, memory_mb (and optionally
  max_body). ``instance.load(cfg)`` imports the handler on its own. Both raise
  StartupError with a one-line message on failure; reporting it is the
  caller's business.

Protocol (the invoker sends one request at a time per instance):

* ``POST /invoke``, JSON body = the event (an empty body is ``{}``); optional
  ``X-Request-Id`` and ``X-Deadline-Ms`` (absolute Unix time in ms).
  200 + the handler's return value as JSON. A handler exception, or a return
  value json cannot encode, gives 200 + ``X-Function-Error: Unhandled`` and
  the AWS Lambda error object (errorMessage, errorType, stackTrace).
  Malformed JSON: 400; body over max-body: 413 (the body is discarded, not
  stored); chunked or missing length: 411; other protocol errors: 400/431.
* ``GET /healthz``: 200 ``ok``. Anything else: 404 (405 for a wrong method).

The HTTP reader is deliberately small and strict (request line, headers up
to CRLFCRLF, Content-Length body): http.server's header parsing costs more
than the rest of a warm invocation. Connections are persistent; a single
thread multiplexes them with epoll but runs one request at a time.

The handler can call other functions with the SDK, runtime/sockfaas.py
(``import sockfaas``): serve puts the runtime directory at the end of
sys.path, points SOCKFAAS_SOCKET at sockfaas.sock beside the instance's own
socket (the invoker listens there), and before each call hands the SDK the
request's id and deadline, which its calls carry.

The handler's stdout and stderr are the process's fds 1 and 2 (whoever starts
the instance points them at files); both are flushed after every invocation.
The server writes nothing per request. SIGTERM exits 0 at once.

Standard library only, and few imports, because a fresh instance pays for
each of them on its cold start.
"""

import json
import os
import select
import signal
import socket
import sys
import time

# signal's own module wraps every result in an enum, which runs a good deal
# of Python code: in a zygote's child each page of code and data that runs
# for the first time is a private copy. The C functions do the same work.
_sig = getattr(signal, "_signal", None) or signal
_SIGTERM, _SIGPIPE, _SIG_IGN = int(signal.SIGTERM), int(signal.SIGPIPE), int(signal.SIG_IGN)
# Likewise socket.accept, which converts family and type to enums (the
# listener is always AF_UNIX, SOCK_STREAM).
_AF_UNIX, _SOCK_STREAM = int(socket.AF_UNIX), int(socket.SOCK_STREAM)

__all__ = ["StartupError", "load", "serve", "main"]

DEFAULT_MAX_BODY = 6 * 1024 * 1024  # AWS Lambda's synchronous payload limit
MAX_HEAD = 32 * 1024  # request line + headers
MAX_DISCARD = 64 * 1024 * 1024  # an oversize body larger than this closes the connection
NO_DEADLINE_MS = 15 * 60 * 1000  # without X-Deadline-Ms: Lambda's longest timeout
DEFAULT_HANDLERS = {"lambda": "lambda_function.lambda_handler", "openlambda": "f.f"}

_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    505: b"HTTP Version Not Supported",
}


class StartupError(Exception):
    """The instance cannot start: the message is one line, fit for a ready fd."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind  # AWS-style error type, e.g. Runtime.ImportModuleError


def _one_line(s):
    return " ".join(str(s).split())


# ---------------------------------------------------------------- loading


def _settings(cfg):
    style = cfg.get("style") or "lambda"
    if style not in DEFAULT_HANDLERS:
        raise StartupError("Runtime.InvalidConfig", "unknown style %r (want lambda or openlambda)" % style)
    handler = cfg.get("handler") or DEFAULT_HANDLERS[style]
    try:
        memory_mb = int(cfg.get("memory_mb") or 128)
        max_body = int(cfg.get("max_body") or DEFAULT_MAX_BODY)
    except (TypeError, ValueError) as e:
        raise StartupError("Runtime.InvalidConfig", "bad number in config: %s" % e)
    return {
        "socket": cfg.get("socket") or "",
        "dir": cfg.get("dir") or "",
        "handler": handler,
        "style": style,
        "name": cfg.get("name") or "function",
        "memory_mb": memory_mb,
        "max_body": max_body,
    }


def load(cfg):
    """Import the handler module from cfg["dir"] and return the handler function.

    Raises StartupError naming what is wrong: a missing module or function, a
    syntax error, or an exception raised while the module was imported.
    """
    s = _settings(cfg)
    return _load(s)


def _load(s):
    directory, handler = s["dir"], s["handler"]
    mod_name, dot, func_name = handler.rpartition(".")
    if not dot or not mod_name or not func_name:
        raise StartupError("Runtime.MalformedHandlerName", "bad handler %r: want MODULE.FUNCTION" % handler)
    if directory:
        if not os.path.isdir(directory):
            raise StartupError("Runtime.ImportModuleError", "function directory %s does not exist" % directory)
        if not sys.path or sys.path[0] != directory:
            sys.path.insert(0, directory)
    try:
        __import__(mod_name)
        module = sys.modules[mod_name]
    except SyntaxError as e:
        where = "%s line %s" % (e.filename, e.lineno) if e.filename else "handler module"
        raise StartupError(
            "Runtime.UserCodeSyntaxError",
            "syntax error in %s: %s" % (where, _one_line(e.msg)),
        )
    except ModuleNotFoundError as e:
        if e.name == mod_name or mod_name.startswith((e.name or "\0") + "."):
            raise StartupError(
                "Runtime.ImportModuleError",
                "handler module %r not found in %s" % (mod_name, directory or "sys.path"),
            )
        raise StartupError(
            "Runtime.ImportModuleError",
            "import handler module %r: %s" % (mod_name, _one_line(e)),
        )
    except BaseException as e:  # anything the module's top level raises, SystemExit too
        raise StartupError(
            "Runtime.ImportModuleError",
            "import handler module %r: %s: %s" % (mod_name, type(e).__name__, _one_line(e)),
        )
    fn = getattr(module, func_name, None)
    if fn is None:
        raise StartupError(
            "Runtime.HandlerNotFound",
            "handler function %r not found in module %r" % (func_name, mod_name),
        )
    if not callable(fn):
        raise StartupError(
            "Runtime.HandlerNotFound",
            "handler %r in module %r is not callable" % (func_name, mod_name),
        )
    return fn


# ---------------------------------------------------------------- context


def _uuid4():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class LambdaContext:
    """What AWS Lambda passes as a handler's second argument."""

    __slots__ = (
        "aws_request_id",
        "function_name",
        "function_version",
        "memory_limit_in_mb",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "identity",
        "client_context",
        "_deadline_ms",
    )

    def __init__(self, static, request_id, deadline_ms):
        (
            self.function_name,
            self.function_version,
            self.memory_limit_in_mb,
            self.invoked_function_arn,
            self.log_group_name,
            self.log_stream_name,
        ) = static
        self.aws_request_id = request_id
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def __repr__(self):
        return "LambdaContext(%s, %s)" % (self.function_name, self.aws_request_id)


def _context_static(s):
    name = s["name"]
    stream = time.strftime("%Y/%m/%d", time.gmtime()) + "/[$LATEST]" + _uuid4().replace("-", "")
    return (
        name,
        "$LATEST",
        s["memory_mb"],
        "arn:aws:lambda:local:000000000000:function:" + name,
        "/aws/lambda/" + name,
        stream,
    )


def _lambda_environment(s, static):
    # Lambda code sometimes reads these instead of the context; whatever the
    # starter set explicitly wins.
    env = os.environ
    env.setdefault("AWS_LAMBDA_FUNCTION_NAME", static[0])
    env.setdefault("AWS_LAMBDA_FUNCTION_VERSION", static[1])
    env.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(static[2]))
    env.setdefault("AWS_LAMBDA_LOG_GROUP_NAME", static[4])
    env.setdefault("AWS_LAMBDA_LOG_STREAM_NAME", static[5])
    env.setdefault("AWS_REGION", "local")
    env.setdefault("AWS_DEFAULT_REGION", "local")
    env.setdefault("_HANDLER", s["handler"])
    if s["dir"]:
        env.setdefault("LAMBDA_TASK_ROOT", s["dir"])


# ---------------------------------------------------------------- responses


def _response(status, body, ctype=b"application/json", extra=b"", close=False):
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, _REASONS.get(status, b"Unknown"), ctype, len(body)),
            extra,
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


def _error_body(error_type, message, stack=()):
    return json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": list(stack)}).encode()


def _protocol_error(status, error_type, message, close=False, extra=b""):
    return _response(status, _error_body(error_type, message), extra=extra, close=close)


def _handler_error(e):
    import traceback  # only errors pay for it

    tb = e.__traceback__
    if tb is not None:
        tb = tb.tb_next  # drop the server's own frame
    stack = traceback.format_list(traceback.extract_tb(tb)) if tb is not None else []
    try:
        message = str(e)
    except Exception:  # an exception whose __str__ raises
        message = "<unprintable %s>" % type(e).__name__
    return _response(
        200,
        _error_body(type(e).__name__, message, stack),
        extra=b"X-Function-Error: Unhandled\r\n",
    )


def _flush_std():
    for f in (sys.stdout, sys.stderr):
        if f is not None:
            try:
                f.flush()
            except Exception:
                pass


# ---------------------------------------------------------------- server


class _Conn:
    __slots__ = ("sock", "buf", "head", "need", "discard")

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.head = None  # (method, path, headers, keep_alive) of the request being read
        self.need = 0  # its body length
        self.discard = 0  # bytes of a rejected body still to drop


class _Close(Exception):
    """Close the connection (after sending what is attached, if anything)."""

    def __init__(self, data=b""):
        self.data = data


def _parse_head(raw):
    """Parse request line and headers; returns (method, path, headers, keep_alive)."""
    try:
        text = raw.decode("latin-1")
    except Exception:
        raise _Close(_protocol_error(400, "BadRequest", "undecodable request head", close=True))
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Close(_protocol_error(400, "BadRequest", "malformed request line", close=True))
    method, target, version = parts
    if version == "HTTP/1.1":
        keep_alive = True
    elif version == "HTTP/1.0":
        keep_alive = False
    elif version.startswith("HTTP/"):
        raise _Close(_protocol_error(505, "BadRequest", "unsupported %s" % version, close=True))
    else:
        raise _Close(_protocol_error(400, "BadRequest", "malformed request line", close=True))
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            raise _Close(_protocol_error(400, "BadRequest", "malformed header line", close=True))
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise _Close(_protocol_error(400, "BadRequest", "conflicting Content-Length", close=True))
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value
    conn_hdr = headers.get("connection")
    if conn_hdr:
        tokens = conn_hdr.lower()
        if "close" in tokens:
            keep_alive = False
        elif "keep-alive" in tokens:
            keep_alive = True
    path = target.split("?", 1)[0]
    return method, path, headers, keep_alive


class _Server:
    def __init__(self, s, fn):
        self.s = s
        self.fn = fn
        self.lambda_style = s["style"] == "lambda"
        self.max_body = s["max_body"]
        self.static = _context_static(s)
        self.conns = {}
        self.poll = None
        self.listener = None

    # -- per request

    def _invoke(self, body, headers):
        if not body:
            event = {}
        else:
            try:
                event = json.loads(body)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
                return _protocol_error(400, "InvalidRequestContentException", "could not parse request body as JSON: %s" % e)
        try:
            rid = headers.get("x-request-id") or ""
            dl = headers.get("x-deadline-ms")
            deadline = None
            if dl:
                try:
                    deadline = int(dl)
                except ValueError:
                    pass
            if deadline is None:
                deadline = time.time() * 1000 + NO_DEADLINE_MS
            # The SDK, once the handler imported it, sends the request's
            # trace with the calls it makes.
            sdk = _modules.get("sockfaas")
            if sdk is not None:
                sdk._rid, sdk._deadline_ms = rid, deadline
            if self.lambda_style:
                result = self.fn(event, LambdaContext(self.static, rid or _uuid4(), deadline))
            else:
                result = self.fn(event)
        except Exception as e:
            return _handler_error(e)
        finally:
            _flush_std()
        try:
            out = json.dumps(result).encode()
        except Exception as e:  # TypeError, ValueError, RecursionError, ...
            return _response(
                200,
                _error_body("Runtime.MarshalError", "Unable to marshal response: %s" % e),
                extra=b"X-Function-Error: Unhandled\r\n",
            )
        return _response(200, out)

    def _route(self, method, path, body, headers):
        if path == "/invoke":
            if method != "POST":
                return _protocol_error(405, "MethodNotAllowed", "use POST for /invoke", extra=b"Allow: POST\r\n")
            return self._invoke(body, headers)
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return _protocol_error(405, "MethodNotAllowed", "use GET for /healthz", extra=b"Allow: GET, HEAD\r\n")
            return _response(200, b"ok" if method == "GET" else b"", ctype=b"text/plain")
        return _protocol_error(404, "NotFound", "no such path: %s" % path)

    # -- per connection

    def _feed(self, c):
        """Handle every complete request in c.buf; False when c must close."""
        buf = c.buf
        sock = c.sock
        while True:
            if c.discard:
                n = min(c.discard, len(buf))
                del buf[:n]
                c.discard -= n
                if c.discard:
                    return True
            if c.head is None:
                idx = buf.find(b"\r\n\r\n")
                if idx < 0:
                    if len(buf) > MAX_HEAD:
                        raise _Close(_protocol_error(431, "BadRequest", "request head over %d bytes" % MAX_HEAD, close=True))
                    return True
                if idx > MAX_HEAD:
                    raise _Close(_protocol_error(431, "BadRequest", "request head over %d bytes" % MAX_HEAD, close=True))
                method, path, headers, keep_alive = _parse_head(buf[:idx])
                del buf[: idx + 4]
                if "transfer-encoding" in headers:
                    raise _Close(_protocol_error(411, "BadRequest", "chunked bodies are not accepted: send Content-Length", close=True))
                cl = headers.get("content-length")
                if cl is None:
                    if method in ("POST", "PUT", "PATCH"):
                        raise _Close(_protocol_error(411, "BadRequest", "Content-Length required", close=True))
                    length = 0
                else:
                    if not cl.isdigit() or not cl.isascii():
                        raise _Close(_protocol_error(400, "BadRequest", "bad Content-Length", close=True))
                    length = int(cl)
                if length > self.max_body:
                    msg = "request body of %d bytes is over the %d byte limit" % (length, self.max_body)
                    if length > MAX_DISCARD or not keep_alive:
                        raise _Close(_protocol_error(413, "RequestEntityTooLargeException", msg, close=True))
                    sock.sendall(_protocol_error(413, "RequestEntityTooLargeException", msg))
                    c.discard = length
                    continue
                c.head = (method, path, headers, keep_alive)
                c.need = length
                if len(buf) < length and headers.get("expect", "").lower() == "100-continue":
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            need = c.need
            if len(buf) < need:
                return True
            method, path, headers, keep_alive = c.head
            c.head = None
            if need:
                body = buf[:need]
                del buf[:need]
            else:
                body = b""
            resp = self._route(method, path, body, headers)
            if not keep_alive:
                raise _Close(resp.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            sock.sendall(resp)

    def _close(self, c, data=b""):
        fd = c.sock.fileno()
        self.conns.pop(fd, None)
        try:
            self.poll.unregister(fd)
        except (OSError, ValueError, KeyError):
            pass
        if data:
            try:
                c.sock.sendall(data)
            except OSError:
                pass
        try:
            c.sock.close()
        except OSError:
            pass

    def _readable(self, c):
        try:
            chunk = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        if not chunk:
            self._close(c)
            return
        c.buf += chunk
        try:
            self._feed(c)
        except _Close as e:
            self._close(c, e.data)
        except OSError:  # the client went away while we answered
            self._close(c)

    def run(self, listener):
        self.listener = listener
        lfd = listener.fileno()
        poll = self.poll = select.epoll()
        poll.register(lfd, select.EPOLLIN)
        conns = self.conns
        while True:
            for fd, _ in poll.poll():
                if fd == lfd:
                    try:
                        cfd, _ = listener._accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    sock = socket.socket(_AF_UNIX, _SOCK_STREAM, 0, cfd)
                    conns[sock.fileno()] = _Conn(sock)
                    poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                    continue
                c = conns.get(fd)
                if c is not None:
                    self._readable(c)


def _listen(path):
    if not path:
        raise StartupError("Runtime.InvalidConfig", "no socket path")
    if len(os.fsencode(path)) >= 108:
        raise StartupError("Runtime.InvalidConfig", "socket path %s is longer than 107 bytes" % path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StartupError("Runtime.InvalidConfig", "socket path %s: %s" % (path, e.strerror))
    else:
        import stat

        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError("Runtime.InvalidConfig", "socket path %s exists and is not a socket" % path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a dead instance's leftover
        else:
            raise StartupError("Runtime.InvalidConfig", "socket %s is in use by a live server" % path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise StartupError("Runtime.InvalidConfig", "listen on %s: %s" % (path, e.strerror or e))
    sock.setblocking(False)  # accept must not block when a client gave up
    return sock


_socket_path = None  # to unlink on SIGTERM
_modules = sys.modules
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
SDK_SOCKET = "sockfaas.sock"  # the SDK's socket, beside the instance's own


def _sdk_setup(s):
    # The SDK (runtime/sockfaas) is importable by the handler, after its own
    # modules; it finds the invoker's socket beside the instance's.
    if _RUNTIME_DIR not in sys.path:
        sys.path.append(_RUNTIME_DIR)
    if s["socket"]:
        os.environ.setdefault("SOCKFAAS_SOCKET", os.path.join(os.path.dirname(s["socket"]), SDK_SOCKET))


def _no_mark(name):
    pass


def _on_sigterm(signum, frame):
    _flush_std()
    if _socket_path:
        try:
            os.unlink(_socket_path)
        except OSError:
            pass
    os._exit(0)


def serve(cfg, ready=None, mark=None):
    """Load the handler, listen on cfg["socket"], call ready(), serve forever.

    mark, if given, is called with a checkpoint name after each startup
    step (a zygote's fork tracing).

    Raises StartupError if the instance cannot start. Never returns
    otherwise: SIGTERM ends the process with status 0, a handler calling
    sys.exit with its status, a crash of the server with 1, all through
    os._exit, so that a zygote's child never unwinds into the fork server.
    """
    global _socket_path
    if mark is None:
        mark = _no_mark
    s = _settings(cfg)
    _sdk_setup(s)
    fn = _load(s)
    mark("load")
    server = _Server(s, fn)
    if s["style"] == "lambda":
        _lambda_environment(s, server.static)
    mark("server")
    try:
        _sig.signal(_SIGTERM, _on_sigterm)
        # A client that hung up must be an EPIPE, not the end of the
        # instance, whatever disposition a zygote left behind.
        _sig.signal(_SIGPIPE, _SIG_IGN)
    except ValueError:  # not the main thread: the caller owns signals
        pass
    listener = _listen(s["socket"])
    _socket_path = s["socket"]
    mark("listen")
    if ready is not None:
        ready()
    try:
        server.run(listener)
    except SystemExit as e:  # the handler called sys.exit: so does the instance
        _flush_std()
        code = e.code
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
    except BaseException:
        # Never unwind into the caller: in a zygote's child that would run
        # the fork server's loop.
        import traceback

        traceback.print_exc()
        _flush_std()
        os._exit(1)


# ---------------------------------------------------------------- CLI

_USAGE = (
    "usage: instance.py --socket PATH --dir DIR [--handler MOD.FUNC] "
    "[--style lambda|openlambda] [--name NAME] [--memory-mb N] [--max-body BYTES] [--ready-fd FD]"
)
_FLAGS = {
    "--socket": "socket",
    "--dir": "dir",
    "--handler": "handler",
    "--style": "style",
    "--name": "name",
    "--memory-mb": "memory_mb",
    "--max-body": "max_body",
    "--ready-fd": "ready_fd",
}


def _parse_argv(argv):
    # argparse would add a few ms to every fresh start.
    cfg = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(_USAGE)
            sys.exit(0)
        name, eq, value = arg.partition("=")
        if name not in _FLAGS:
            raise StartupError("Runtime.InvalidConfig", "unknown argument %r; %s" % (arg, _USAGE))
        if not eq:
            i += 1
            if i >= len(argv):
                raise StartupError("Runtime.InvalidConfig", "%s needs a value" % name)
            value = argv[i]
        cfg[_FLAGS[name]] = value
        i += 1
    return cfg


def _report(fd, line):
    data = line.encode("utf-8", "replace") + b"\n"
    if fd is None:
        try:
            os.write(2, data)
        except OSError:
            pass
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ready_fd = None
    try:
        cfg = _parse_argv(argv)
        if "ready_fd" in cfg:
            try:
                ready_fd = int(cfg["ready_fd"])
            except ValueError:
                raise StartupError("Runtime.InvalidConfig", "bad --ready-fd %r" % cfg["ready_fd"])
        for key in ("socket", "dir"):
            if not cfg.get(key):
                raise StartupError("Runtime.InvalidConfig", "--%s is required; %s" % (key, _USAGE))

        ready = None
        if ready_fd is not None:

            def ready():
                _report(ready_fd, "ready")

        serve(cfg, ready)
    except StartupError as e:
        _report(ready_fd, "error: " + _one_line(e))
        _flush_std()
        os._exit(3)
    except Exception as e:  # a bug here must still not leave the starter waiting
        _report(ready_fd, "error: internal: %s: %s" % (type(e).__name__, _one_line(e)))
        _flush_std()
        os._exit(3)


if __name__ == "__main__":
    main()
