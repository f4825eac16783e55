"""Board profiles (data, boards/profiles.py) and one small adapter per family
(unix, esp32, rp2040).

The build (tools/build.py) validates the chosen profile on CPython and ships
it to the board as the generated module `boards/profile.py`, holding one dict
PROFILE and the name of the board's adapter module; the full table of
profiles never costs board RAM. Hardware modules (machine, network, esp32,
rp2) are imported only inside the adapter of the board that has them."""
