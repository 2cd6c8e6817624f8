"""Training job: `ray job submit --working-dir . -- python jobs/train.py --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra train` (train, log to MLflow, register, gate).
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]])
