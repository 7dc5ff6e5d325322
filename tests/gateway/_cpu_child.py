"""A child process for test_thread_cpu: spends ~0.3 s of CPU, says so, then waits."""

import sys
import time

if __name__ == "__main__":
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    print("spun", flush=True)
    sys.stdin.read()  # until the test closes our input
