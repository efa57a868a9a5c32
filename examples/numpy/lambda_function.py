# An AWS-Lambda-style handler that needs a package: requirements.txt names
# numpy, which must be installed on the host (Debian: python3-numpy). A
# zygote with numpy already imported serves the cold starts, so they skip
# numpy's import time.
import numpy as np


def lambda_handler(event, context):
    n = 4
    if isinstance(event, dict):
        n = int(event.get("n", n))
    n = max(1, min(n, 512))
    # A Hilbert matrix: famously ill-conditioned, a cheap real computation.
    i = np.arange(n)
    h = 1.0 / (i[:, None] + i[None, :] + 1)
    x = np.linalg.solve(h, h.sum(axis=1))  # the exact answer is all ones
    return {
        "n": n,
        "determinant": float(np.linalg.det(h)),
        "condition_number": float(np.linalg.cond(h)),
        "max_error_of_solve": float(np.abs(x - 1).max()),
        "numpy": np.__version__,
    }
