"""Map requirement strings to installed distributions and their import names.

    python3 resolve.py [--path DIR]... REQ...

REQ is a requirement as written in requirements.txt: a distribution name with
optional extras, version specifier and environment marker, e.g. ``numpy>=1.20``,
``Pillow``, ``pandas[performance]==2.0``, ``tomli; python_version < "3.11"``.

Distributions are looked up with importlib.metadata in the --path
directories first (in order), then sys.path; names compare after PEP 503
normalisation. Output, on stdout::

    {"resolved": {"numpy": {"version": "1.24.2", "imports": ["numpy"]}, ...},
     "missing": [{"requirement": "numpy>=2", "index": 0,
                  "reason": "version 1.24.2 does not satisfy >=2"}, ...],
     "skipped": [{"requirement": "...", "index": 3, "reason": "marker ... is false"}]}

"resolved" is keyed by the name as written; "index" is the position among
the REQ arguments. Exit status 0 even when something is missing (the caller
decides), 2 on bad input (an unparseable requirement or marker, a URL).

Import names come from top_level.txt, else from the distribution's file list
(top-level packages and modules; *.dist-info, __pycache__ and names that are
not identifiers left out). Private names (leading "_") are dropped unless
nothing else is left.

Limitations, on purpose (this must run with the standard library alone):
version specifiers follow PEP 440 ordering for the usual forms (release
numbers, a/b/rc, post, dev; local labels ignored), but ``<`` and ``>`` do not
apply PEP 440's special exclusions of pre- and post-releases, and a version
that does not parse is compared as a plain string. Extras are accepted and
ignored: the extra's own dependencies are not checked.
"""

import importlib.metadata as metadata
import json
import os
import platform
import re
import sys

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQ = re.compile(
    r"^\s*(?P<name>" + _NAME + r")\s*"
    r"(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"(?P<spec>\([^)]*\)|[^;@]*)?\s*"
    r"(?P<url>@[^;]*)?"
    r"(?:;(?P<marker>.*))?$"
)
_CLAUSE = re.compile(r"^\s*(===|==|!=|~=|<=|>=|<|>)\s*([A-Za-z0-9][A-Za-z0-9._+!*-]*)\s*$")
_VERSION = re.compile(
    r"^\s*v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:-(?P<post_n1>\d+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d*))?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d*))?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_INF = float("inf")


class BadInput(Exception):
    pass


def normalize(name):
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- versions


def _release(v):
    m = _VERSION.match(v)
    return tuple(int(x) for x in m.group("release").split(".")) if m else None


def version_key(v):
    """A sort key for PEP 440 versions, or None if v does not parse."""
    m = _VERSION.match(v)
    if not m:
        return None
    release = [int(x) for x in m.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_l, post = m.group("pre_l"), None
    if m.group("post_n1") is not None:
        post = int(m.group("post_n1"))
    elif m.group("post_l") is not None:
        post = int(m.group("post_n2") or 0)
    dev = int(m.group("dev_n") or 0) if m.group("dev_l") is not None else None
    if pre_l is not None:
        pre = (_PRE_RANK[pre_l.lower()], int(m.group("pre_n") or 0))
    elif post is None and dev is not None:
        pre = (-_INF, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (_INF, 0)
    return (
        int(m.group("epoch") or 0),
        tuple(release),
        pre,
        -_INF if post is None else post,
        _INF if dev is None else dev,
    )


def _cmp(a, b):
    ka, kb = version_key(a), version_key(b)
    if ka is None or kb is None:  # not PEP 440: plain string comparison
        ka, kb = a, b
    return (ka > kb) - (ka < kb)


def _prefix_match(installed, prefix):
    want = _release(prefix)
    have = _release(installed)
    if want is None or have is None:
        return installed.startswith(prefix)
    have = have + (0,) * max(0, len(want) - len(have))
    return have[: len(want)] == want


def satisfies(installed, op, v):
    if op == "===":
        return installed.strip().lower() == v.strip().lower()
    if op in ("==", "!="):
        if v.endswith(".*"):
            ok = _prefix_match(installed, v[:-2])
        else:
            if "+" not in v:  # a local label on the installed version does not count
                installed = installed.split("+", 1)[0]
            ok = _cmp(installed, v) == 0
        return ok if op == "==" else not ok
    if v.endswith(".*"):
        raise BadInput("%s%s: a wildcard only goes with == and !=" % (op, v))
    if op == "~=":
        rel = _release(v)
        if rel is None or len(rel) < 2:
            raise BadInput("~=%s: needs a version with at least two numbers" % v)
        prefix = ".".join(str(x) for x in rel[:-1])
        return _cmp(installed, v) >= 0 and _prefix_match(installed, prefix)
    c = _cmp(installed, v)
    return {">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0}[op]


def parse_spec(spec):
    spec = spec.strip()
    if spec.startswith("(") and spec.endswith(")"):
        spec = spec[1:-1]
    clauses = []
    if not spec.strip():
        return clauses
    for part in spec.split(","):
        m = _CLAUSE.match(part)
        if not m:
            raise BadInput("bad version specifier %r" % part.strip())
        clauses.append((m.group(1), m.group(2)))
    return clauses


# ---------------------------------------------------------------- markers

_MARKER_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>===|==|!=|~=|<=|>=|<|>|\(|\))"
    r"|(?P<word>not\s+in\b|[A-Za-z_][A-Za-z0-9_.]*))"
)


def _environment():
    impl = sys.implementation
    iv = impl.version
    impl_version = "%d.%d.%d" % (iv.major, iv.minor, iv.micro)
    if iv.releaselevel != "final":
        impl_version += iv.releaselevel[0] + str(iv.serial)
    return {
        "os_name": os.name,
        "sys_platform": sys.platform,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": "%d.%d" % sys.version_info[:2],
        "python_full_version": platform.python_version(),
        "implementation_name": impl.name,
        "implementation_version": impl_version,
        "extra": "",  # extras are not installed on anyone's behalf
    }


def _tokens(marker):
    pos, out = 0, []
    while pos < len(marker):
        if marker[pos:].strip() == "":
            break
        m = _MARKER_TOKEN.match(marker, pos)
        if not m or m.end() == pos:
            raise BadInput("bad marker %r" % marker.strip())
        if m.group("str") is not None:
            out.append(("str", m.group("str")[1:-1]))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            w = " ".join(m.group("word").split())
            out.append(("op" if w in ("in", "not in", "and", "or") else "var", w))
        pos = m.end()
    return out


def evaluate_marker(marker, env):
    """Evaluate a PEP 508 environment marker (and/or, parentheses, comparisons)."""
    toks = _tokens(marker)
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else (None, None)

    def take():
        t = peek()
        pos[0] += 1
        return t

    def value():
        kind, v = take()
        if kind == "str":
            return v
        if kind == "var":
            if v not in env:
                raise BadInput("unknown marker variable %r" % v)
            return env[v]
        raise BadInput("bad marker %r" % marker.strip())

    def atom():
        if peek() == ("op", "("):
            take()
            r = disjunction()
            if take() != ("op", ")"):
                raise BadInput("unbalanced parentheses in marker %r" % marker.strip())
            return r
        left = value()
        kind, op = take()
        if kind != "op" or op in ("(", ")", "and", "or"):
            raise BadInput("bad marker %r" % marker.strip())
        right = value()
        if op == "in":
            return left in right
        if op == "not in":
            return left not in right
        if version_key(left) is not None and version_key(right) is not None:
            return satisfies(left, op, right)
        if op in ("==", "==="):
            return left == right
        if op == "!=":
            return left != right
        raise BadInput("cannot compare %r %s %r in marker" % (left, op, right))

    def conjunction():
        r = atom()
        while peek() == ("op", "and"):
            take()
            r = atom() and r
        return r

    def disjunction():
        r = conjunction()
        while peek() == ("op", "or"):
            take()
            r = conjunction() or r
        return r

    result = disjunction()
    if pos[0] != len(toks):
        raise BadInput("bad marker %r" % marker.strip())
    return result


# ---------------------------------------------------------------- distributions


def parse_requirement(req):
    m = _REQ.match(req)
    if not m:
        raise BadInput("cannot parse requirement %r" % req)
    if m.group("url"):
        raise BadInput("%r: direct URL references are not supported (nothing is installed at run time)" % req)
    return m.group("name"), parse_spec(m.group("spec") or ""), (m.group("marker") or "").strip()


def find_distribution(name, paths):
    want = normalize(name)
    for dist in metadata.distributions(name=name, path=paths):
        got = dist.metadata["Name"]
        if got and normalize(got) == want:
            return dist
    return None


def _keep_public(names):
    names = sorted(set(n for n in names if n and n.isidentifier()))
    public = [n for n in names if not n.startswith("_")]
    return public or names


def import_names(dist):
    text = dist.read_text("top_level.txt")
    if text:
        names = [line.strip().replace("/", ".").split(".")[0] for line in text.splitlines()]
        names = _keep_public(names)
        if names:
            return names
    names = []
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0] in ("..", "__pycache__"):
            continue
        top = parts[0]
        if len(parts) == 1:
            base, dot, ext = top.partition(".")
            if dot and (ext == "py" or ext.endswith(("so", "pyd"))):
                names.append(base)
            continue
        if top.endswith((".dist-info", ".egg-info", ".data")):
            continue
        if parts[-1].endswith((".py", ".so", ".pyd")):
            names.append(top)
    names = _keep_public(names)
    if names:
        return names
    guess = normalize(dist.metadata["Name"] or "").replace("-", "_")
    return [guess] if guess.isidentifier() else []


def resolve(reqs, extra_paths):
    paths = list(extra_paths) + [p for p in sys.path if p not in extra_paths]
    env = None
    out = {"resolved": {}, "missing": [], "skipped": []}
    for i, req in enumerate(reqs):
        name, clauses, marker = parse_requirement(req)
        if marker:
            if env is None:
                env = _environment()
            if not evaluate_marker(marker, env):
                out["skipped"].append({"requirement": req, "index": i, "reason": "marker %r is false here" % marker})
                continue
        dist = find_distribution(name, paths)
        if dist is None:
            out["missing"].append({"requirement": req, "index": i, "reason": "not installed"})
            continue
        version = dist.version or ""
        failed = [op + v for op, v in clauses if not satisfies(version, op, v)]
        if failed:
            out["missing"].append(
                {
                    "requirement": req,
                    "index": i,
                    "reason": "version %s does not satisfy %s" % (version, ",".join(op + v for op, v in clauses)),
                }
            )
            continue
        out["resolved"][name] = {"version": version, "imports": import_names(dist)}
    return out


def main(argv):
    paths, reqs = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--path" or a.startswith("--path="):
            if a == "--path":
                i += 1
                if i >= len(argv):
                    raise BadInput("--path needs a directory")
                a = argv[i]
            else:
                a = a[len("--path=") :]
            paths.append(a)
        elif a == "--":
            reqs.extend(argv[i + 1 :])
            break
        elif a.startswith("-"):
            raise BadInput("unknown option %r" % a)
        else:
            reqs.append(a)
        i += 1
    return resolve(reqs, paths)


if __name__ == "__main__":
    try:
        result = main(sys.argv[1:])
    except BadInput as e:
        sys.stderr.write("resolve: %s\n" % e)
        sys.exit(2)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
