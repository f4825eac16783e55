"""Board profiles as data: pins, sensors, network bring-up and memory budget.

`profile(name)` returns a checked profile; a mistake raises ProfileError naming
the board and the key, e.g. "esp32: sensors[0].scale must be an int".
Checked at build time on CPython (tools/build.py), which ships only the chosen
board's profile to the board."""

PROFILES = {
    "unix": {
        "family": "unix", "heap": 64 * 1024, "network": "none",
        "sensors": [{"name": "temperature", "kind": "simulated", "unit": "C", "scale": -2,
                     "channel": 0}],
    },
    "esp32": {
        "family": "esp32", "heap": 111 * 1024, "network": "wlan",
        "sensors": [{"name": "temperature", "kind": "ds18x20", "pin": 4, "unit": "C",
                     "scale": -2, "channel": 0}],
        "led": 2,
    },
    "esp32s3": {
        "family": "esp32", "heap": 200 * 1024, "network": "wlan",
        "sensors": [{"name": "temperature", "kind": "mcu", "unit": "C", "scale": -2,
                     "channel": 0}],
        "led": 48,
    },
    "rp2040": {
        "family": "rp2", "heap": 200 * 1024, "network": "wlan",
        "sensors": [{"name": "temperature", "kind": "adc", "adc": 4, "unit": "C",
                     "scale": -2, "channel": 0}],
        "led": "LED",
    },
    "rp2350": {
        "family": "rp2", "heap": 400 * 1024, "network": "wlan",
        "sensors": [{"name": "temperature", "kind": "adc", "adc": 4, "unit": "C",
                     "scale": -2, "channel": 0}],
        "led": "LED",
    },
}

_SENSOR_KEYS = {"name": str, "kind": str, "unit": str, "scale": int, "channel": int}


class ProfileError(ValueError):
    pass


def check(name, prof):
    if prof.get("family") not in ("unix", "esp32", "rp2"):
        raise ProfileError("%s: family must be one of unix, esp32, rp2" % name)
    if not isinstance(prof.get("heap"), int) or prof["heap"] < 32 * 1024:
        raise ProfileError("%s: heap must be an int >= 32768" % name)
    if prof.get("network") not in ("none", "wlan"):
        raise ProfileError("%s: network must be 'none' or 'wlan'" % name)
    sensors = prof.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        raise ProfileError("%s: sensors must be a non-empty list" % name)
    for i, s in enumerate(sensors):
        for key, typ in _SENSOR_KEYS.items():
            if not isinstance(s.get(key), typ) or isinstance(s.get(key), bool):
                raise ProfileError("%s: sensors[%d].%s must be %s" % (name, i, key, typ.__name__))
        if not -20 <= s["scale"] <= 20:
            raise ProfileError("%s: sensors[%d].scale out of range" % (name, i))
    return prof


def profile(name):
    if name not in PROFILES:
        raise ProfileError("unknown board '%s' (known: %s)" % (name, ", ".join(sorted(PROFILES))))
    return check(name, PROFILES[name])
