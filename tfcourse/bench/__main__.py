"""``python -m tfcourse.bench NAME [options]``: run one benchmark and print its figures."""

import sys

from tfcourse.bench import attention, kv_cache, tome
from tfcourse.runtime import pin_threads

BENCHMARKS = {"attention": attention.main, "kv_cache": kv_cache.main, "tome": tome.main}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        sys.exit(f"usage: python -m tfcourse.bench NAME [options]; NAME is one of: {names}")
    pin_threads()
    BENCHMARKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
