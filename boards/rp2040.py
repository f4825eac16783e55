"""Raspberry Pi Pico W / Pico 2 W adapter: CYW43 Wi-Fi bring-up and the
on-chip temperature sensor (ADC 4). Imported only on rp2 boards."""
import machine


class Board:
    name = "rp2040"

    def __init__(self, profile, config):
        self.profile = profile
        self.config = config
        self.sensor = profile["sensors"][0]
        self._adc = machine.ADC(self.sensor.get("adc", 4))

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
        # RP2040 datasheet 4.9.5: T = 27 - (V - 0.706) / 0.001721, integer maths in
        # hundredths of a degree so single-precision floats never touch the value.
        raw = self._adc.read_u16()
        microvolts = raw * 3300000 // 65535
        centi = 2700 - (microvolts - 706000) * 100 // 1721
        return centi, self.sensor["scale"], self.sensor["channel"]
