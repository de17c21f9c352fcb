"""A stage command for tests/integration/test_stage_server.py: says where and how it runs, then exits as asked."""

import os
import sys
import time

from pipelines.stage_server import stage_main


def main() -> int:
    print(f"pid={os.getpid()} cwd={os.getcwd()} marker={os.environ.get('PROBE_MARKER')} args={sys.argv[1:]}",
          flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    if "--sleep" in sys.argv:
        time.sleep(120)
    if "--fail" in sys.argv:
        raise SystemExit(3)
    if "--raise" in sys.argv:
        raise RuntimeError("the probe's own error")
    return 0


if __name__ == "__main__":
    sys.exit(stage_main(main))
