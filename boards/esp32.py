"""ESP32 / ESP32-S3 adapter: Wi-Fi station bring-up and the profile's sensor.
Imported only on those boards (machine, network, onewire exist there)."""
import time

import machine


class Board:
    name = "esp32"

    def __init__(self, profile, config):
        self.profile = profile
        self.config = config
        self.sensor = profile["sensors"][0]
        self._ds = None

    def reset(self):
        machine.reset()  # the boot file (firmware/otaboot.py) picks the version

    def flash_free(self):
        """Free bytes of the flash file system (the updater never writes past it)."""
        import os

        st = os.statvfs("/")
        return st[0] * st[3]

    def network_up(self, timeout_ms=20000):
        from boards.wlan import connect

        return connect(self.config, timeout_ms)

    def read_sensor(self):
        s = self.sensor
        if s["kind"] == "ds18x20":
            import ds18x20
            import onewire

            if self._ds is None:
                self._ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(s["pin"])))
                self._roms = self._ds.scan()
            self._ds.convert_temp()
            time.sleep_ms(750)
            centi = int(self._ds.read_temp(self._roms[0]) * 100)
        else:
            import esp32

            centi = (esp32.raw_temperature() - 32) * 500 // 9  # reported in Fahrenheit
        return centi, s["scale"], s["channel"]
