"""Host-side tools: the `thingledger` command line (tools/cli/, one module per
verb group over tools/cli/common.py) and the libraries its verbs drive, which
never import the CLI: board.py (provisioning over mpremote), submit.py (submit
a signed transaction, wait for the checked receipt), keys.py (people's key
files), coordinator.py (the coordination process), build.py (firmware build
with mpy-cross), vboard.py (virtual boards), run.py (`thingledger run`
orchestration), console.py (its terminal output), broker_sync.py (mosquitto
files kept in step with the chain)."""
