"""Main job placeholder: training arrives with the training issue (#4).

Until then this prints what exists and exits 0, so the README's first command runs.
"""
import sys


def main(argv: list[str] | None = None) -> int:
    print("jobs/train.py: training arrives with issue #4 (Ray Train). "
          "Built so far: the models (models/), their tests (pytest) and bench/wti.py.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
