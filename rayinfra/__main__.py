"""`python -m rayinfra ...`: the `rayinfra` command, where the console script is not on PATH."""

from rayinfra.cli import app

if __name__ == "__main__":
    app(prog_name="rayinfra")
