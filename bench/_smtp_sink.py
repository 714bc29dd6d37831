"""The SMTP sink bench/send.py sends to, in a process of its own: aiosmtpd accepting every
message and counting it. It prints `ready PORT`, then answers lines on stdin: `status` with a
JSON line (messages, bytes, first and last arrival as Unix time), `reset` with `ok`.

    .venv/bin/python bench/_smtp_sink.py PORT"""

import json
import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class Counting:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.messages = 0
            self.bytes = 0
            self.first: float | None = None
            self.last: float | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        now = time.time()
        with self.lock:
            self.messages += 1
            self.bytes += len(envelope.content or b"")
            self.first = self.first or now
            self.last = now
        return "250 Message accepted for delivery"

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "messages": self.messages,
                "bytes": self.bytes,
                "first": self.first,
                "last": self.last,
            }


def main() -> None:
    port = int(sys.argv[1])
    handler = Counting()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print(f"ready {controller.port}", flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "status":
                print(json.dumps(handler.status()), flush=True)
            elif command == "reset":
                handler.reset()
                print("ok", flush=True)
            elif command == "quit":
                break
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
