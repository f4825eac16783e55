"""The host's side of shared/ota.py (reachable as ota.pack_chunk, ...):
what builds releases and chunks; a board never loads it."""
from shared import cbor

CHUNK = 1024  # bytes per chunk (shared/ota.py: 256..2048)


def chunks(size, chunk):
    """How many chunks a file of `size` bytes takes."""
    return (size + chunk - 1) // chunk


def pack_chunk(rid, index, n, data):
    """Chunk `n` of file `index` of release `rid` (shared/ota.py open_chunk)."""
    return cbor.dumps([rid, index, n, data])


def announcement(rid, version, signer_id):
    """The retained announcement of a release (firmware/otanode.py reads it:
    [rid bstr(8), version int, signer id bstr(16)])."""
    return cbor.dumps([rid, version, signer_id])
