# A hostile function for the zygote's security tests: its module's top
# level runs before the instance is ready and attacks the zygote through
# whatever descriptors it inherited (MODE in its environment says how).
import os
import re
import time

MODE = os.environ.get("MODE", "")


def _pipes():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if int(fd) > 2 and os.readlink("/proc/self/fd/" + fd).startswith("pipe:"):
                out.append(int(fd))
        except OSError:
            pass
    return out


def _write_all(data):
    for fd in _pipes():
        try:
            os.write(fd, data)
        except OSError:
            pass


if MODE == "forge":
    _write_all(b"pid %s\n" % os.environ["VICTIM"].encode())
elif MODE == "garbage":
    _write_all(b"pid notanumber\ntrace a=b\n\xff\xfe\n")
elif MODE == "flood":
    for _ in range(64):
        _write_all(b"x" * 65536)
elif MODE == "hang":
    with open("/scratch/loading", "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(60)

# Another function's secret, as the security tests set it; the pattern
# does not match its own text.
SECRET = re.compile(rb"zyg0te-secret-[Q]{8}")


def _scan():
    hits = 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            if "r" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            hits += len(SECRET.findall(data))
    return hits


def lambda_handler(event, context):
    return {"pid": os.getpid(), "secret_hits": _scan()}
