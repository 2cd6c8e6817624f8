"""Search job: `ray job submit --working-dir . -- python jobs/tune.py --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra tune` (ASHA search, register and gate the best trial).
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["tune", *sys.argv[1:]])
