"""How a two-process run ends (`unpact.distributed.close`), run by tests/test_distributed.py under
``accelerate launch --num_processes 2``:

    --mode clean   both processes gather once and return: both must exit 0 with no abort at shutdown
    --mode fail    process 1 raises an uncaught error while process 0 waits for it in a gather: the
                   failing process must close at once (not wait at the closing barrier for a
                   process that is stuck elsewhere), so the launcher stops the run promptly
"""

from __future__ import annotations

import argparse

from unpact import distributed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("clean", "fail"), required=True)
    args = p.parse_args()
    assert distributed.world() == 2
    distributed.gather([distributed.rank()])
    if args.mode == "fail":
        if distributed.rank() == 1:
            raise RuntimeError("process 1 failed on purpose")
        distributed.gather(["never answered"])  # process 0 waits here for process 1, which is gone
    print(f"process {distributed.rank()} done")


if __name__ == "__main__":
    main()
