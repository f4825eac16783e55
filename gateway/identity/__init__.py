"""The identity lifecycle: its consensus rules (rules: schemas, checks and
effects of claim, owner transfer, grants, rotation, retirement, recovery,
node join/assign), statement builders (statements), node roles (roles) and
the read-only access views the broker codes against (access)."""
