"""Board profiles (data, boards/profiles.py) and one small adapter per family.

The build (tools/build.py) validates the chosen profile on CPython and ships
it to the board as the generated module `boards/profile.py` holding one dict,
PROFILE; the full table of profiles never costs board RAM. Hardware modules
(machine, network, esp32, rp2) are imported only inside the adapter of the
board that has them."""

_ADAPTERS = {"unix": "boards.unix", "esp32": "boards.esp32", "rp2": "boards.rp2040"}


def load_board(config):
    """The adapter of the board this firmware was built for, with its profile."""
    from boards.profile import PROFILE

    mod = __import__(_ADAPTERS[PROFILE["family"]], None, None, ["Board"])
    return mod.Board(PROFILE, config)
