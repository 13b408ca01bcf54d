"""A job for test_forked_job.py: ``main(argv)`` does what its first argument names."""

import os
import signal
import sys
import time


def main(argv):
    what = argv[0]
    print(f"argv={sys.argv[1:]} cwd={os.getcwd()} probe={os.environ.get('PROBE')} rank={os.environ.get('RANK')}")
    print("said before the end", file=sys.stderr)
    if what == "raise":
        raise RuntimeError("the probe failed")
    if what == "exit":
        return int(argv[1])
    if what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "rank1_fails" and os.environ["RANK"] == "1":
        return 3
    if what == "preloaded":  # what the fork server gave the child: the PRELOAD modules imported, its heap frozen
        import gc

        import forked_job

        print(f"missing={[m for m in forked_job.PRELOAD if m not in sys.modules]} frozen={gc.get_freeze_count() > 0}")
    if what in ("rank1_fails", "sleep"):
        time.sleep(float(argv[1]))
    return 0
