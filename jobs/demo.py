"""Main job: `python jobs/demo.py` or `ray job submit --working-dir . -- python jobs/demo.py`.

Thin entrypoint over `rayinfra demo`; takes the same options (--spec, --rows).
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["demo", *sys.argv[1:]])
