"""The unix virtual board: MicroPython Unix port, no network bring-up, a
simulated temperature sensor (a bounded random walk around 21.50 C), and the
current directory as its flash (config.json "flash_quota" bounds what the
updater may use of it, docs/OTA.md). A reset ends the process with RESET_EXIT; its
launcher (tools/vboard.py) starts it again, as a board's power-on would."""
import os
import sys


class Board:
    name = "unix"

    def __init__(self, profile, config):
        self.sensor = profile["sensors"][0]  # not the whole profile: RAM is scarce
        self._value = int(config.get("sim_start", 2150))

    def reset(self):
        sys.exit(75)  # tools/vboard.py RESET_EXIT

    def network_up(self):
        pass

    def read_sensor(self):
        """(value, scale, channel) of the primary sensor."""
        step = os.urandom(1)[0] % 21 - 10  # -0.10 .. +0.10 C
        self._value = min(4000, max(-1000, self._value + step))
        return self._value, self.sensor["scale"], self.sensor["channel"]

