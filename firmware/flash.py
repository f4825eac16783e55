"""Board flash file helpers: small files, atomic replace (write temp, rename).

On the unix virtual board the current directory is the board's flash."""
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def read(path):
    """File bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write(path, data):
    """Replace `path` atomically: a power cut leaves the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def ensure_dir(path):
    if not exists(path):
        os.mkdir(path)


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
