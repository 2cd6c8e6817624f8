"""Batch scoring job: `ray job submit --working-dir . -- python jobs/batch_predict.py --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra predict-batch` (a pinned table version, one model version,
predictions appended to a Delta table as one commit). `--model 3`, `--table-version 5`,
`--output NAME` pin the rest.
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["predict-batch", *sys.argv[1:]])
