"""A scratch flash folder for firmware tests under MicroPython."""
import os


class Flash:
    """Context manager: chdir into a fresh folder (the board's flash), back out after."""

    def __init__(self, name):
        self.path = "build/fwtest-" + name + "-" + os.urandom(4).hex()

    def __enter__(self):
        self.home = os.getcwd()
        os.mkdir(self.path)
        os.chdir(self.path)
        return self

    def __exit__(self, *exc):
        os.chdir(self.home)
        _rmtree(self.path)


def _rmtree(path):
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)
