"""An update rolling out while `thingledger run` (`make run`) runs: the run
pins its release key (var/firmware.key) on the virtual boards; a release
signed with it and published with `thingledger firmware publish` is fetched,
swapped in and confirmed by every board, which the run powers on again after
each reset; `thingledger devices` then shows who runs what."""

from __future__ import annotations

import queue
import re
import subprocess
import threading

import httpx
import pytest

from tests.support.brokers import free_port, wait_until
from tests.support.waits import wait_line
from tools.build import tool


@pytest.mark.micropython
def test_an_update_rolls_out_while_the_run_goes_on(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    run = subprocess.Popen([tool("thingledger"), "run", "--listen", url, "--boards", "2",
                            "--no-market", "--http", "127.0.0.1:0", "--interval-ms", "500", "--block-interval", "0.3",
                            "--seconds", "150"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, bufsize=1)
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            q.put(line.rstrip())
        q.put("\x00exit")

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        for _ in range(2):
            wait_line(q, r"board-\d +receipt-verified", 90, seen)
        key = tmp_path / "var" / "firmware.key"
        assert key.exists()
        rel = subprocess.run([tool("thingledger"), "firmware", "release", "--key", str(key),
                              "--board", "unix", "--version", "2", "--out", "var/release-2"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rel.returncode == 0, rel.stdout + rel.stderr
        pub = subprocess.run([tool("thingledger"), "firmware", "publish", "--dir",
                              "var/release-2", "--key", str(key), "--broker", url],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        assert "firmware record: committed" in pub.stdout, pub.stdout
        confirmed = set()
        while len(confirmed) != 2:
            line = wait_line(q, r"board-\d +ota-confirmed version=2", 180, seen)
            confirmed.add(re.search(r"(board-\d)", line)[1])
        reported = 0
        while reported != 2:  # each board's FIRMWARE installed tx
            wait_line(q, r"gateway +accepted firmware from=", 90, seen)
            reported = len(re.findall(r"gateway +accepted firmware from=", "\n".join(seen))) - 1
        # the dashboard shows each board's version once the reports are committed
        web = re.search(r"dashboard (http://127\.0\.0\.1:\d+/)", "\n".join(seen))
        assert web, "no dashboard line"
        ids = set(re.findall(r"online id=(\w{32})", "\n".join(seen)))

        def on_dashboard() -> bool:
            devs = {d["id"]: d for d in httpx.get(web[1] + "api/v1/devices", timeout=10).json()}
            return all((devs[i]["firmware"] or {}).get("version") == 2 for i in ids)

        wait_until(on_dashboard, 60, what="both boards at v2 on the dashboard")
    finally:
        run.terminate()
        run.wait(30)
        print("\n".join(ln for ln in seen if "reading" not in ln and "receipt" not in ln
                        and "block height" not in ln))
    ids = set(re.findall(r"online id=(\w{32})", "\n".join(seen)))
    assert len(ids) == 2
    dev = subprocess.run([tool("thingledger"), "devices"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    rows = {ln.split()[0]: ln.split() for ln in dev.stdout.splitlines()[1:]}
    for i in ids:
        assert rows[i][2] == "v2", dev.stdout
    rel = subprocess.run([tool("thingledger"), "firmware", "releases"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert re.search(r"unix +v2 ", rel.stdout), rel.stdout
