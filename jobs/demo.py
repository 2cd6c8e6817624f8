"""Main job: `python jobs/demo.py` or `ray job submit --working-dir . -- python jobs/demo.py`.

Thin entrypoint over `rayinfra demo`; takes the same options (--spec, --rows).
"""

from rayinfra.cli import app

if __name__ == "__main__":
    app(["demo", *__import__("sys").argv[1:]])
