#!/usr/bin/env python3
"""supervisord event listener: when the proxy or the worker exits on its own, record which one
and shut supervisord down, so docker/entrypoint exits non-zero and the platform restarts the
container. Stops that supervisord itself performs (on SIGTERM) end in STOPPED, not EXITED, and
are left alone."""

import os
import sys

from supervisor import childutils

WATCHED = {"proxy", "worker"}


def main() -> None:
    marker = os.path.join(os.environ["IMGPROXY_CACHE_RUN_DIR"], "failed")
    rpc = childutils.getRPCInterface(os.environ)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        process, _ = childutils.eventdata(payload + "\n")
        name = process.get("processname")
        if name in WATCHED:
            what = "exited" if headers["eventname"] == "PROCESS_STATE_EXITED" else "could not start"
            message = f"{name} {what} (state {process.get('from_state')}); stopping everything"
            with open(marker, "w", encoding="utf-8") as f:
                f.write(message + "\n")
            print(f"imgproxy-cache: {message}", file=sys.stderr, flush=True)
            rpc.supervisor.shutdown()
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
