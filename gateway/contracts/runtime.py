"""Deterministic contract runtime: registry, lint, fuel, Context, calls and
the admin lifecycle (deploy / upgrade / disable). See the package docstring
for the semantics; this module is the mechanism."""

from __future__ import annotations

import ast
import contextvars
import hashlib
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.contracts import errors as ce
from gateway.contracts.world import World
from shared import cbor
from shared import errors as tle

# ---- fuel schedule (part of consensus: changing it is a protocol change) ----
STMT_COST = 1  # every statement of contract code, charged as its block is entered
ITEM_COST = 1  # every item a comprehension / generator expression draws
LINE_COST = 1  # METER_LINES (older chains): every traced line of contract code
STEP_COST = 1  # ctx.step() / one item of ctx.range() / ctx.iter()
CALL_COST = 100  # entering a call frame (top-level or nested)
READ_COST = 10  # + 1 per 32 bytes read
WRITE_COST = 40  # + 1 per 8 bytes written
TRANSFER_COST = 30
EMIT_COST = 20  # + 1 per 32 bytes of event data
HOST_COST = 100  # a host hook call (+ its argument/result bytes / 32)

DEFAULT_FUEL = 100_000
# how a Runtime counts the statements a contract runs (see `meter` below)
METER_SYNTAX = "syntax"  # charges written into the code: the same on every CPython
METER_LINES = "lines"  # sys.settrace line events: chains recorded before, replayed alike
MAX_DEPTH = 8  # nested call frames
MAX_VALUE = 4096  # encoded bytes of one argument list / storage value / result
ADDRESS_LEN = 16

ACTIVE = "active"
DISABLED = "disabled"


# ---- boundary values ----------------------------------------------------------
def encode(value: Any, what: str = "value") -> bytes:
    """Canonical CBOR of a boundary value, or BadValue (floats, tuples, sets,
    objects, bool-keyed maps, ints beyond 64 bits, oversized)."""
    _shape(value, 0)
    try:
        b = cbor.dumps(value)
    except tle.EncodeError as e:
        raise ce.BadValue(what + ":" + e.detail) from None
    if len(b) > MAX_VALUE:
        raise ce.BadValue(what + ":too-large")
    return b


def _shape(v: Any, depth: int) -> None:
    # cbor.dumps accepts tuples/bytearrays; the boundary is stricter so that a
    # value read back is exactly the value written (lists stay lists).
    t = type(v)
    if depth > 16:
        raise ce.BadValue("too-deep")
    if t in (int, bool, str, bytes) or v is None:
        return
    if t is list:
        for x in v:
            _shape(x, depth + 1)
        return
    if t is dict:
        for k, x in v.items():
            if type(k) not in (int, str, bytes):
                raise ce.BadValue("bad-key")
            _shape(x, depth + 1)
        return
    raise ce.BadValue("type:" + t.__name__)


def decode(b: bytes) -> Any:
    return cbor.loads(b, max_size=MAX_VALUE)


def clean(value: Any, what: str = "value") -> Any:
    """A fresh copy of a boundary value (checked): nothing is shared by reference."""
    return decode(encode(value, what))


def _account(a: Any, what: str) -> bytes:
    if type(a) is not bytes or len(a) != ADDRESS_LEN:
        raise ce.BadValue(what)
    return a


def _amount(n: Any) -> int:
    if type(n) is not int or n <= 0:
        raise ce.BadValue("amount")
    return n


# ---- contract classes, registry, lint -------------------------------------------
def entry(fn: Callable) -> Callable:
    """Mark a method callable from outside (ctx.call / a transaction)."""
    fn.__tl_entry__ = True
    return fn


class Contract:
    """Base of contract implementations. Stateless: an instance is created per
    call; all state lives in ctx storage. Entry points are @entry methods
    `def m(self, ctx, *args)`; `init(ctx, params)` runs at deploy and
    `migrate(ctx, old_version)` at upgrade (both may revert)."""

    NAME = ""
    VERSION = 0

    def init(self, ctx: Context, params: Any) -> None:
        pass

    def migrate(self, ctx: Context, old_version: int) -> None:
        pass


_FORBIDDEN_NAMES = {"BaseException", "GeneratorExit", "KeyboardInterrupt", "SystemExit",
                    "_Exhausted", "__import__", "__tl_fuel__", "eval", "exec", "compile", "open", "globals",
                    "setattr", "delattr", "__builtins__", "vars", "breakpoint", "input"}
_FORBIDDEN_ATTRS = {"f_trace", "settrace", "gettrace", "setprofile", "_getframe", "__dict__",
                    "__globals__", "__code__", "__class__", "__subclasses__", "_rt", "_frame"}
_METERED = {"range", "iter"}


def lint(cls: type, *, metered_loops: bool = True) -> None:
    """Refuse a contract class whose source could escape the runtime's limits.

    Always: no import, global/nonlocal, try/finally, with, bare `except:`,
    handlers naming BaseException & co, float literals, and none of the
    introspection names above. These make the fuel signal (a BaseException
    raised by the line tracer) impossible to swallow.
    With metered_loops: every `for` / comprehension iterates over
    ctx.range(...) or ctx.iter(...), and every `while` body calls ctx.step().
    """
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        raise ce.LintError("no-source") from None
    for node in ast.walk(ast.parse(src)):
        bad = _lint_node(node, metered_loops)
        if bad:
            raise ce.LintError("%s:%s" % (bad, getattr(node, "lineno", 0)))


def _metered_iter(it: ast.AST) -> bool:
    return (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
            and it.func.attr in _METERED and isinstance(it.func.value, ast.Name)
            and it.func.value.id == "ctx")


def _calls_step(body: list[ast.stmt]) -> bool:
    for stmt in body:
        for n in ast.walk(stmt):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "step"):
                return True
    return False


def _lint_node(node: ast.AST, metered_loops: bool) -> str:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.With,
                         ast.AsyncWith, ast.TryStar, ast.AsyncFunctionDef, ast.Await,
                         ast.Yield, ast.YieldFrom, ast.Lambda)):
        return type(node).__name__.lower()
    if isinstance(node, ast.Try) and node.finalbody:
        return "finally"
    if isinstance(node, ast.ExceptHandler) and node.type is None:
        return "bare-except"
    if isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
        return "name-" + node.id
    if isinstance(node, ast.Attribute) and node.attr in _FORBIDDEN_ATTRS:
        return "attr-" + node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, (float, complex)):
        return "float"
    if isinstance(node, ast.FunctionDef) and node.name.startswith("__") \
            and node.name not in ("__init__",):
        return "dunder-" + node.name
    if metered_loops:
        if isinstance(node, (ast.For, ast.AsyncFor)) and not _metered_iter(node.iter):
            return "unmetered-for"
        if isinstance(node, ast.comprehension) and not _metered_iter(node.iter):
            return "unmetered-comprehension"
        if isinstance(node, ast.While) and not _calls_step(node.body):
            return "unmetered-while"
    return ""


class ContractRegistry:
    """Registered implementations by (name, version). Registration lints the
    class and meters its code (and that of its contract base classes): see
    `meter`."""

    def __init__(self) -> None:
        self._impl: dict[tuple[str, int], type[Contract]] = {}
        self.code_files: set[str] = set()  # METER_LINES counts lines of these files

    def register(self, cls: type[Contract] | None = None, *, metered_loops: bool = True):
        def do(c: type[Contract]) -> type[Contract]:
            if not (isinstance(c.NAME, str) and c.NAME and type(c.VERSION) is int
                    and c.VERSION > 0):
                raise ce.LintError("name-version")
            if (c.NAME, c.VERSION) in self._impl:
                raise ce.LintError("duplicate")
            lint(c, metered_loops=metered_loops)
            meter(c)
            self._impl[(c.NAME, c.VERSION)] = c
            for f in vars(c).values():
                code = getattr(getattr(f, "__func__", f), "__code__", None)
                if code is not None:
                    self.code_files.add(code.co_filename)
            return c

        return do if cls is None else do(cls)

    def get(self, name: str, version: int) -> type[Contract]:
        c = self._impl.get((name, version))
        if c is None:
            raise ce.UnknownContract("implementation")
        return c

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self._impl if n == name)

    def merged(self, other: ContractRegistry) -> ContractRegistry:
        r = ContractRegistry()
        r._impl = {**self._impl, **other._impl}
        r.code_files = self.code_files | other.code_files
        return r


# ---- metering: fuel charges written into the contract's code ------------------------
# Fuel must be the same on every node whatever CPython it runs (a domain's
# gateways re-execute each other's blocks), so it is counted on the contract's
# syntax tree, which does not change between CPython 3.11, 3.12 and 3.13, not
# from the interpreter's line events (sys.settrace), whose count does (PEP 709
# inlined comprehensions, other line tables). At registration each function of
# the class is compiled again from its source with a call `__tl_fuel__(n)` at
# the head of every block of statements (function body, loop body at each
# iteration, if / else / try / except / match arms), n = the block's statement
# count, and a condition `__tl_fuel__(1)` first in every comprehension, so
# each item drawn costs ITEM_COST. No library does this for Python source.
_METER_NAME = "__tl_fuel__"
_ACTIVE: contextvars.ContextVar[Fuel | None] = contextvars.ContextVar("tl_fuel", default=None)


def _fuel_hook(n: int) -> bool:
    fuel = _ACTIVE.get()
    if fuel is not None:
        fuel.charge(n)
    return True


def _charge_stmt(n: int, at: ast.AST) -> ast.stmt:
    call = ast.Call(ast.Name(_METER_NAME, ast.Load()), [ast.Constant(n)], [])
    return ast.copy_location(ast.Expr(call), at)


class _Meter(ast.NodeTransformer):
    def _block(self, body: list[ast.stmt], skip_doc: bool = False) -> list[ast.stmt]:
        if not body:
            return body
        head = 0
        if (skip_doc and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            head = 1
        n = len(body) - head
        if n == 0:
            return body
        return body[:head] + [_charge_stmt(STMT_COST * n, body[head])] + body[head:]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(node, ast.ClassDef):
            return node  # the class body runs once, at registration
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                setattr(node, name, self._block(stmts, skip_doc=isinstance(node, ast.FunctionDef)
                                                 and name == "body"))
        if isinstance(node, ast.comprehension):
            cost = ast.Call(ast.Name(_METER_NAME, ast.Load()), [ast.Constant(ITEM_COST)], [])
            node.ifs = [ast.copy_location(cost, node.iter), *node.ifs]
        return node


def meter(cls: type) -> None:
    """Replace the functions of `cls` and of its bases below Contract by
    metered copies (once per class)."""
    for c in cls.__mro__:
        if c is Contract or not issubclass(c, Contract) or "__tl_metered__" in vars(c):
            continue
        _meter_class(c)


def _meter_class(cls: type) -> None:
    try:
        lines, first = inspect.getsourcelines(cls)
        filename = inspect.getsourcefile(cls) or "<contract>"
    except (OSError, TypeError):
        raise ce.LintError("no-source") from None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    cdef = tree.body[0]
    if not isinstance(cdef, ast.ClassDef):
        raise ce.LintError("no-source")
    cdef.decorator_list = []  # the class is built only to take its functions
    tree = ast.fix_missing_locations(_Meter().visit(tree))
    ast.increment_lineno(tree, first - 1)
    module = sys.modules.get(cls.__module__)
    if module is None:
        raise ce.LintError("no-source")
    # compiled in the module's own namespace (its functions see the names the
    # module defines later, as the originals do); the twin's name is put back
    scope = vars(module)
    scope[_METER_NAME] = _fuel_hook
    missing = object()
    before = scope.get(cdef.name, missing)
    exec(compile(tree, filename, "exec"), scope)  # noqa: S102 - the registered class's own source
    twin = scope.pop(cdef.name)
    if before is not missing:
        scope[cdef.name] = before
    for name, value in vars(twin).items():
        fn = getattr(value, "__func__", value)
        if not inspect.isfunction(fn):
            continue
        if "__class__" in fn.__code__.co_freevars:  # zero-argument super(): the real class
            fn.__closure__[fn.__code__.co_freevars.index("__class__")].cell_contents = cls
        setattr(cls, name, value)
    cls.__tl_metered__ = True


# ---- fuel ---------------------------------------------------------------------------
class _Exhausted(BaseException):  # noqa: N818 - internal signal, not an error
    """Raised inside contract code when fuel runs out. A BaseException that
    lint forbids contracts to name or catch; converted to OutOfFuel at the
    call boundary."""


class Fuel:
    """One transaction's fuel: a shared `used` counter and a stack of stops
    (each nested frame may have a lower cap than its parent)."""

    __slots__ = ("used", "_stops")

    def __init__(self, limit: int) -> None:
        self.used = 0
        self._stops = [limit]

    @property
    def limit(self) -> int:
        return self._stops[0]

    def push(self, cap: int | None) -> None:
        top = self._stops[-1]
        self._stops.append(top if cap is None else min(top, self.used + max(cap, 0)))

    def pop(self) -> None:
        self._stops.pop()

    def charge(self, n: int) -> None:
        self.used += n
        stop = self._stops[-1]
        if self.used > stop:
            self.used = stop
            raise _Exhausted()

    def exhausted(self) -> bool:
        return self.used >= self._stops[-1]


# ---- results ------------------------------------------------------------------------
@dataclass(frozen=True)
class ContractBlock:
    """The only clock a contract sees."""

    time: int
    height: int


@dataclass
class Result:
    """Outcome of one top-level call (what a receipt would carry)."""

    ok: bool
    value: Any = None
    reason: str = ""
    detail: str = ""
    events: list[Any] = field(default_factory=list)
    fuel_used: int = 0


# ---- context ------------------------------------------------------------------------
class Context:
    """The whole API a contract sees. Every operation costs fuel."""

    __slots__ = ("_rt", "_frame")

    def __init__(self, rt: _Call, frame: _Frame) -> None:
        self._rt = rt
        self._frame = frame

    # -- environment (free) --
    @property
    def time(self) -> int:
        return self._rt.block.time

    @property
    def height(self) -> int:
        return self._rt.block.height

    @property
    def caller(self) -> bytes:
        return self._frame.caller

    @property
    def origin(self) -> bytes:
        return self._rt.origin

    @property
    def by_ledger(self) -> bool:
        """True in the frame the ledger itself entered (the market's matching
        step, `Runtime.call(..., by_ledger=True)`); False in a transaction's
        call and in every nested call."""
        return self._rt.by_ledger and self._frame.depth == 1

    @property
    def address(self) -> bytes:
        return self._frame.address

    @property
    def value(self) -> int:
        return self._frame.value

    @property
    def params(self) -> Any:
        return decode(self._frame.params)

    # -- metering --
    def step(self, n: int = 1) -> None:
        self._rt.fuel.charge(STEP_COST * max(int(n), 1))

    def range(self, *args: int) -> Iterator[int]:
        for i in range(*args):
            self._rt.fuel.charge(STEP_COST)
            yield i

    def iter(self, items: Iterable[Any]) -> Iterator[Any]:
        for x in items:
            self._rt.fuel.charge(STEP_COST)
            yield x

    # -- storage --
    def get(self, key: int | str | bytes, default: Any = None) -> Any:
        k = self._key(key)
        b = self._rt.world.get(("st", self._frame.address, k))
        self._rt.fuel.charge(READ_COST + (len(b) // 32 if b else 0))
        return default if b is None else decode(b)

    def put(self, key: int | str | bytes, value: Any) -> None:
        k = self._key(key)
        b = encode(value)
        self._rt.fuel.charge(WRITE_COST + len(b) // 8)
        self._rt.world.put(("st", self._frame.address, k), b)

    def delete(self, key: int | str | bytes) -> None:
        k = self._key(key)
        self._rt.fuel.charge(WRITE_COST)
        self._rt.world.delete(("st", self._frame.address, k))

    @staticmethod
    def _key(key: Any) -> int | str | bytes:
        if type(key) not in (int, str, bytes):
            raise ce.BadValue("key")
        encode(key, "key")
        return key

    # -- value --
    def balance(self, account: bytes | None = None) -> int:
        self._rt.fuel.charge(READ_COST)
        a = self._frame.address if account is None else _account(account, "account")
        return self._rt.world.balance(a)

    def transfer(self, to: bytes, amount: int) -> None:
        """Move `amount` from this contract's own account to `to`."""
        self._rt.fuel.charge(TRANSFER_COST)
        _move(self._rt.world, self._frame.address, _account(to, "to"), _amount(amount))

    # -- events, calls, host --
    def emit(self, name: str, *data: Any) -> None:
        if type(name) is not str:
            raise ce.BadValue("event-name")
        b = encode([name, *data], "event")
        self._rt.fuel.charge(EMIT_COST + len(b) // 32)
        self._frame.events.append([self._frame.address, *decode(b)])

    def call(self, address: bytes, method: str, *args: Any, value: int = 0,
             fuel: int | None = None) -> Any:
        """Call another contract as this contract (its caller is us; `value`
        comes from our account). Failure raises the callee's ContractError
        after the callee's effects were rolled back; catch it to continue."""
        return self._rt.run(self._frame.address, address, method, list(args), value, fuel,
                            self._frame.depth + 1, self._frame.events)

    def host(self, name: str, *args: Any) -> Any:
        """Call a deterministic host hook installed in the Runtime."""
        hook = self._rt.hooks.get(name)
        if hook is None:
            raise ce.UnknownContract("hook")
        b = encode(list(args), "hook-args")
        self._rt.fuel.charge(HOST_COST + len(b) // 32)
        out = encode(hook(*decode(b)), "hook-result")
        self._rt.fuel.charge(len(out) // 32)
        return decode(out)

    # -- failures --
    def revert(self, detail: str = "") -> None:
        raise ce.Reverted(detail)

    def require(self, cond: Any, detail: str = "", error: type[ce.ContractError] = ce.Reverted
                ) -> None:
        if not cond:
            raise error(detail)


def _move(world: World, src: bytes, dst: bytes, amount: int) -> None:
    have = world.balance(src)
    if have < amount:
        raise ce.InsufficientFunds()
    if src == dst:
        return
    world.set_balance(src, have - amount)
    world.set_balance(dst, world.balance(dst) + amount)


# ---- execution -----------------------------------------------------------------------
@dataclass
class _Frame:
    caller: bytes
    address: bytes
    value: int
    params: bytes
    depth: int
    events: list[Any]


class _Call:
    """State of one top-level call: world, fuel, block."""

    def __init__(self, runtime: Runtime, world: World, fuel: Fuel, block: ContractBlock,
                 origin: bytes, by_ledger: bool = False) -> None:
        self.registry = runtime.registry
        self.hooks = runtime.hooks
        self.max_depth = runtime.max_depth
        self.world = world
        self.fuel = fuel
        self.block = block
        self.origin = origin
        self.by_ledger = by_ledger
        files = self.registry.code_files
        charge = fuel.charge

        # METER_LINES only: the line tracer of the chains recorded before
        # fuel was counted on the syntax tree (their receipts carry its counts)
        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "line":
                charge(LINE_COST)
            return local

        def global_(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code.co_filename in files:
                charge(LINE_COST)
                return local
            return None

        self._local = local
        self.tracer = global_
        self.traced = runtime.metering == METER_LINES

    def rearm(self) -> None:
        """A trace function that raises is removed by CPython: put it back (on
        the thread and on the contract frames still running). METER_LINES only."""
        if not self.traced:
            return
        sys.settrace(self.tracer)
        f = sys._getframe(1)
        files = self.registry.code_files
        while f is not None:
            if f.f_code.co_filename in files:
                f.f_trace = self._local
            f = f.f_back

    def run(self, caller: bytes, address: Any, method: Any, args: Any, value: Any,
            cap: int | None, depth: int, events_out: list[Any]) -> Any:
        if depth > self.max_depth:
            raise ce.Reverted("call-depth")
        address = _account(address, "address")
        if type(method) is not str or method.startswith("_"):
            raise ce.UnknownContract("method")
        if type(value) is not int or value < 0:
            raise ce.BadValue("value")
        if cap is not None and (type(cap) is not int or cap < 0):
            raise ce.BadValue("fuel")
        dep = self.world.get(("dep", address))
        if dep is None:
            raise ce.UnknownContract("address")
        if dep["status"] != ACTIVE:
            raise ce.UnknownContract(DISABLED)
        cls = self.registry.get(dep["name"], dep["version"])
        fn = getattr(cls, method, None)
        if fn is None or not getattr(fn, "__tl_entry__", False):
            raise ce.UnknownContract("method")
        args = decode(encode(args, "args"))
        return self._frame(cls, dep, caller, address, value, cap, depth, events_out,
                           lambda obj, ctx: fn(obj, ctx, *args))

    def _frame(self, cls: type[Contract], dep: Mapping[str, Any], caller: bytes,
               address: bytes, value: int, cap: int | None, depth: int,
               events_out: list[Any], body: Callable[[Contract, Context], Any]) -> Any:
        fuel, world = self.fuel, self.world
        fuel.push(cap)
        world.begin()
        frame = _Frame(caller, address, value, encode(dep["params"], "params"), depth, [])
        try:
            try:
                fuel.charge(CALL_COST)
                if value:
                    _move(world, caller, address, value)
                out = body(cls(), Context(self, frame))
                ret = clean(out, "result")
            except _Exhausted:
                world.rollback()
                self.rearm()
                raise ce.OutOfFuel() from None
            except ce.ContractError:
                world.rollback()
                raise
            except RecursionError:
                world.rollback()
                self.rearm()
                raise ce.Reverted("exception:RecursionError") from None
            except Exception as e:
                world.rollback()
                raise ce.Reverted("exception:" + type(e).__name__) from None
            except BaseException:
                world.rollback()
                raise
        finally:
            fuel.pop()
        world.commit()
        events_out.extend(frame.events)
        return ret


class Runtime:
    """Executes calls against a World. `hooks` are deterministic host
    functions contracts reach through ctx.host (e.g. "verify-delivery")."""

    def __init__(self, registry: ContractRegistry, hooks: Mapping[str, Callable[..., Any]] | None = None,
                 max_depth: int = MAX_DEPTH, metering: str = METER_SYNTAX) -> None:
        if metering not in (METER_SYNTAX, METER_LINES):
            raise ValueError("metering")
        self.registry = registry
        self.hooks = dict(hooks or {})
        self.max_depth = max_depth
        self.metering = metering

    def call(self, world: World, *, caller: bytes, address: bytes, method: str,
             args: list[Any] | None = None, value: int = 0, fuel: int = DEFAULT_FUEL,
             block: ContractBlock, by_ledger: bool = False) -> Result:
        """One top-level call (a transaction's body). All or nothing.
        `by_ledger`: the ledger makes this call on its own (the market's
        matching step), not a transaction (the callee sees ctx.by_ledger)."""
        return self._top(world, caller, fuel, block, lambda c, ev: c.run(
            caller, address, method, list(args or []), value, None, 1, ev), by_ledger)

    def _top(self, world: World, origin: bytes, limit: int, block: ContractBlock,
             action: Callable[[_Call, list[Any]], Any], by_ledger: bool = False) -> Result:
        fuel = Fuel(limit)
        c = _Call(self, world, fuel, block, origin, by_ledger)
        events: list[Any] = []
        world.begin()
        token = _ACTIVE.set(None if c.traced else fuel)
        prev = sys.gettrace()
        if c.traced:
            sys.settrace(c.tracer)
        try:
            value = action(c, events)
        except ce.ContractError as e:
            world.rollback()
            return Result(False, None, e.reason, e.detail, [], fuel.used)
        except BaseException:
            world.rollback()
            raise
        finally:
            if c.traced:
                sys.settrace(prev)
            _ACTIVE.reset(token)
        world.commit()
        return Result(True, value, "", "", events, fuel.used)


# ---- lifecycle (admin-permissioned state changes) -------------------------------------
def contract_address(label: str) -> bytes:
    """Address of the deployment named `label` in a domain: SHA-256 of
    cbor(["tl-contract", label]), first 16 bytes (same size as a device id)."""
    return hashlib.sha256(cbor.dumps(["tl-contract", label])).digest()[:ADDRESS_LEN]


def deploy(rt: Runtime, world: World, *, sender: bytes, admin: bytes, label: str, name: str,
           version: int, params: Any = None, fuel: int = DEFAULT_FUEL, block: ContractBlock) -> Result:
    """Create deployment `label` running implementation (name, version) with
    `params`, then run its init(ctx, params) as `sender`. Result.value is the
    contract address. Only the domain admin may deploy."""

    def act(c: _Call, ev: list[Any]) -> bytes:
        if sender != admin:
            raise ce.NotAuthorized("not-admin")
        if type(label) is not str or not label:
            raise ce.BadValue("label")
        cls = rt.registry.get(name, version)
        addr = contract_address(label)
        if world.get(("dep", addr)) is not None:
            raise ce.UnknownContract("exists")
        dep = {"label": label, "name": name, "version": version, "params": clean(params, "params"),
               "admin": admin, "status": ACTIVE}
        world.put(("dep", addr), dep)
        ev.append([addr, "deployed", label, name, version])
        p = dep["params"]
        c._frame(cls, dep, sender, addr, 0, None, 1, ev, lambda obj, ctx: obj.init(ctx, p))
        return addr

    return rt._top(world, sender, fuel, block, act)


def upgrade(rt: Runtime, world: World, *, sender: bytes, admin: bytes, address: bytes,
            version: int, fuel: int = DEFAULT_FUEL, block: ContractBlock) -> Result:
    """Switch a deployment to a newer registered version of the same
    implementation (storage, balance and address kept), then run
    migrate(ctx, old_version)."""

    def act(c: _Call, ev: list[Any]) -> int:
        if sender != admin:
            raise ce.NotAuthorized("not-admin")
        dep = world.get(("dep", _account(address, "address")))
        if dep is None:
            raise ce.UnknownContract("address")
        old = dep["version"]
        if type(version) is not int or version <= old:
            raise ce.UnknownContract("version")
        cls = rt.registry.get(dep["name"], version)
        new = {**dep, "version": version}
        world.put(("dep", address), new)
        ev.append([address, "upgraded", old, version])
        c._frame(cls, new, sender, address, 0, None, 1, ev,
                 lambda obj, ctx: obj.migrate(ctx, old))
        return version

    return rt._top(world, sender, fuel, block, act)


def set_status(rt: Runtime, world: World, *, sender: bytes, admin: bytes, address: bytes,
               status: str, block: ContractBlock) -> Result:
    """disable (status "disabled": every call refused with unknown-contract /
    disabled, balance and storage frozen) or re-enable ("active")."""

    def act(c: _Call, ev: list[Any]) -> str:
        if sender != admin:
            raise ce.NotAuthorized("not-admin")
        if status not in (ACTIVE, DISABLED):
            raise ce.BadValue("status")
        dep = world.get(("dep", _account(address, "address")))
        if dep is None:
            raise ce.UnknownContract("address")
        world.put(("dep", address), {**dep, "status": status})
        ev.append([address, "status", status])
        return status

    return rt._top(world, sender, DEFAULT_FUEL, block, act)


def disable(rt: Runtime, world: World, **kw: Any) -> Result:
    return set_status(rt, world, status=DISABLED, **kw)
