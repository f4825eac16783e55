# Modules here run only under the MicroPython Unix port (firmware/ is MicroPython
# code); tests/test_under_micropython.py runs them there.
collect_ignore_glob = ["test_*.py"]
