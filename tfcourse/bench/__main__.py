"""``python -m tfcourse.bench NAME [options]``: run one benchmark and print its figures."""

import importlib
import sys

from tfcourse.runtime import pin_threads

# Each benchmark's module is imported only when it runs: tfcourse.bench.measure, which the memory
# figures need, sets a process-wide malloc threshold that slows every small-tensor allocation
# (about 2x on the ToMe benchmark), and a benchmark that does not measure memory must not pay it.
BENCHMARKS = {"attention": "tfcourse.bench.attention", "kv_cache": "tfcourse.bench.kv_cache",
              "tome": "tfcourse.bench.tome", "activator": "tfcourse.bench.activator",
              "hyena": "tfcourse.bench.hyena", "scan": "tfcourse.bench.scan",
              "decoding": "tfcourse.bench.decoding", "mee": "tfcourse.bench.mee",
              "compare": "tfcourse.bench.compare",
              "scaling": "tfcourse.bench.scaling"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        sys.exit(f"usage: python -m tfcourse.bench NAME [options]; NAME is one of: {names}")
    pin_threads()
    importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
