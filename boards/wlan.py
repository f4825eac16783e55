"""Wi-Fi station bring-up, the same on ESP32 and Pico W / Pico 2 W (both
MicroPython ports have network.WLAN). Shipped only to boards whose profile
says network "wlan"."""
import time

import network


def connect(config, timeout_ms=20000):
    """Join the network named in config["wifi"]; returns the board's IP address.
    OSError naming the SSID when no connection comes within timeout_ms."""
    wifi = config.get("wifi") or {}
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(wifi.get("ssid", ""), wifi.get("password", ""))
        t0 = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                raise OSError("wifi: no connection to '%s'" % wifi.get("ssid", ""))
            time.sleep_ms(200)
    return wlan.ifconfig()[0]
