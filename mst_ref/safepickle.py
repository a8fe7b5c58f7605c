"""Unpickling untrusted files: an allow-list, a read-through before running, plain data out.

A pickle is a small stack program, and plain ``pickle.load`` imports and calls whatever global the
file names: loading an untrusted ``.pth`` with it can run ``os.system``. :class:`RestrictedUnpickler`
makes three changes:

1. ``find_class`` resolves only an allow-list, and every allowed name maps to a stand-in written in
   mst_ref (never the real torch function): a file can call nothing else.
2. Before running anything, :func:`check_pickle` reads the program (``pickletools.genops``, building
   nothing) and refuses a GLOBAL outside the allow-list, memo indices and frame lengths out of all
   proportion to the file (the C unpickler allocates by them), tuples nested too deep (hashing one
   recurses in C and can overflow the stack), and dict keys or set items too costly to hash (tuple
   hashes are not cached: a key built from the memo as ``t_i = (t_{i-1}, t_{i-1})`` takes 2**i steps).
3. :func:`to_plain` turns the result into plain dicts, lists, tuples, sets, scalars and ndarrays,
   refusing anything else, cycles, and shared structure that expands past ``MAX_NODES`` objects.

Every refusal and every malformed pickle raises :class:`CheckpointError`.
"""
import _compat_pickle
import io
import pickle
import pickletools
from collections import OrderedDict

import numpy as np

MAX_DEPTH = 64              # nesting no checkpoint comes near
MAX_HASH_WORK = 10**7       # hashing steps for all dict keys and set items of one pickle together
MAX_NODES = 10**6           # objects in the unpickled tree, a shared one counted at every use
SCALARS = (type(None), bool, int, float, complex, str, bytes)
PUTS, GETS = {"PUT", "BINPUT", "LONG_BINPUT"}, {"GET", "BINGET", "LONG_BINGET"}
TUPLES = {"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}
HASHING = {"SETITEM", "SETITEMS", "ADDITEMS", "FROZENSET"}


class CheckpointError(ValueError):
    """A checkpoint file that mst_ref cannot or will not read; the message says why and what to do."""


def brief(x):
    """A short description of an object from a file: never the repr of a container (could be huge)."""
    return repr(x)[:60] if type(x) in SCALARS else f"a {type(x).__name__}"


def check_pickle(data, allowed):
    """Walk the opcodes of ``data`` without executing them; raise CheckpointError on a hazard.

    For every object on the simulated stack only two numbers are kept: the work to hash it (a tuple:
    1 + its items' work; anything else: 1) and its tuple nesting depth. Each opcode's stack effect is
    the one pickletools documents (``stack_before`` -> ``stack_after``). Malformed programs raise
    ValueError, KeyError or IndexError, as they would when run.
    """
    stack, marks, memo, work = [], [], {}, 0
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        # the C unpickler sizes its memo array by the largest index and its frames by their stated length
        if (name in PUTS and arg > len(data)) or (name == "FRAME" and pos + 9 + arg > len(data)):
            raise CheckpointError(f"the pickle's {name} argument {arg} is absurd for {len(data)} bytes")
        if name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            if (module, attr) not in allowed:
                raise CheckpointError(refusal(module, attr))
        if name in PUTS or name == "MEMOIZE":
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            continue
        if name in GETS or name == "DUP":
            stack.append(memo[arg] if name in GETS else stack[-1])
            continue
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name == "POP" and marks and marks[-1] == len(stack):     # POP of a bare mark drops the mark
            marks.pop()
            continue
        # pop what the opcode consumes: the items above the last mark, then a fixed number below it
        items, fixed = [], len(op.stack_before)
        if pickletools.markobject in op.stack_before:
            start = marks.pop()
            items, fixed = stack[start:], op.stack_before.index(pickletools.markobject)
            del stack[start:]
        if len(stack) - fixed < (marks[-1] if marks else 0):
            raise IndexError(f"pickle stack underflow at {name}")
        below = stack[len(stack) - fixed:]
        del stack[len(stack) - fixed:]
        if name in HASHING:     # dict keys (SETITEM: dict, key, value; SETITEMS: key, value...), set items
            hashed = below[1:2] if name == "SETITEM" else items[0::2] if name == "SETITEMS" else items
            work += sum(w for w, _ in hashed)
        if work > MAX_HASH_WORK:
            raise CheckpointError(f"the pickle's dict keys and set items take over {MAX_HASH_WORK} steps to "
                                  "hash (deeply shared tuples); no checkpoint does this")
        if name in TUPLES:
            children = items + below
            depth = 1 + max((d for _, d in children), default=0)
            if depth > MAX_DEPTH:
                raise CheckpointError(f"the pickle nests tuples more than {MAX_DEPTH} deep")
            stack.append((min(1 + sum(w for w, _ in children), MAX_HASH_WORK + 1), depth))
        else:
            stack.extend([(1, 0)] * len(op.stack_after))


def refusal(module, name):
    """The message for a global outside the allow-list, under its Python 3 name."""
    # protocol-2 pickles use Python 2 names (__builtin__.eval, commands.call); pickle maps them back
    py3 = _compat_pickle.NAME_MAPPING.get((module, name))
    py3 = py3 or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    alias = f" (named {module}.{name} in the pickle)" if py3 != (module, name) else ""
    return (f"refusing to load {py3[0]}.{py3[1]} from the checkpoint{alias}: not an allow-listed global; "
            "mst_ref never executes code from a file")


class Allowed:
    """An allow-listed function as the pickle sees it: callable, and immune to pickle's BUILD opcode."""
    __slots__ = ("name", "fn")

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        raise CheckpointError(f"the pickle tries to modify {self.name}; refusing the file")


class CfgNode(dict):
    """Stand-in for ``yacs.config.CfgNode``, a dict subclass pickled as NEWOBJ + SETITEMS + BUILD.

    Its BUILD state (the node's ``__dict__``) holds only yacs bookkeeping (``__immutable__``,
    ``__new_allowed__``, ...), kept aside in ``.state``; :func:`to_plain` keeps the items as a dict.
    """
    __slots__ = ("state",)

    def __setstate__(self, state):
        if type(state) is not dict:
            raise CheckpointError(f"a yacs CfgNode's state must be a dict; got {brief(state)}")
        self.state = state


def scalar_set(kind):
    """builtins.set / frozenset, for scalar items only (so no item is costly to hash)."""
    def build(items=()):
        items = list(items)
        if not all(type(v) in SCALARS for v in items):
            raise CheckpointError(f"a {kind.__name__} in the pickle holds non-scalar items")
        return kind(items)
    return Allowed(kind.__name__, build)


def to_plain(obj):
    """Unpickled object -> plain dicts (from dict, OrderedDict, CfgNode), lists, tuples, sets, scalars
    and ndarrays. Shared objects stay shared, but the tree they expand to is held under ``MAX_NODES``,
    so code walking the result cannot be stalled by the pickle's memo."""
    memo = {}       # id -> (plain object, objects it expands to); None while it is being converted

    def convert(obj, depth):
        kind = type(obj)
        if kind in SCALARS or kind is np.ndarray:
            return obj, 1
        if depth > MAX_DEPTH or memo.get(id(obj), ()) is None:
            raise CheckpointError(f"the pickle nests containers more than {MAX_DEPTH} deep or in a cycle")
        if id(obj) in memo:
            return memo[id(obj)]
        memo[id(obj)] = None
        if kind in (dict, OrderedDict, CfgNode):
            pairs = [(convert(k, depth + 1), convert(v, depth + 1)) for k, v in obj.items()]
            plain, size = {k: v for (k, _), (v, _) in pairs}, sum(a + b for (_, a), (_, b) in pairs)
        elif kind in (list, tuple, set, frozenset):
            items = [convert(v, depth + 1) for v in obj]
            plain, size = kind(v for v, _ in items), sum(n for _, n in items)
        else:
            raise CheckpointError(f"the checkpoint holds an object of type {kind.__name__}; mst_ref reads "
                                  "tensors, containers and plain values only")
        memo[id(obj)] = (plain, 1 + size)
        return memo[id(obj)]

    plain, size = convert(obj, 0)
    if size > MAX_NODES:
        raise CheckpointError(f"the pickle expands to {size} objects (over {MAX_NODES}); not a checkpoint")
    return plain


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data`` resolving only ``allowed`` ((module, name) -> stand-in) plus OrderedDict,
    yacs CfgNode and scalar sets; ``load()`` checks the program first and returns plain data."""

    def __init__(self, data, allowed):
        super().__init__(io.BytesIO(data))
        self.data = data
        self.allowed = {("collections", "OrderedDict"): OrderedDict, ("yacs.config", "CfgNode"): CfgNode}
        for module in ("builtins", "__builtin__"):     # protocol-2 pickles name builtins "__builtin__"
            self.allowed[(module, "set")] = scalar_set(set)
            self.allowed[(module, "frozenset")] = scalar_set(frozenset)
        self.allowed.update(allowed)

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise CheckpointError(refusal(module, name))
        return self.allowed[(module, name)]

    def load(self):
        try:
            check_pickle(self.data, self.allowed)      # read the program before running it
            obj = super().load()
        except CheckpointError:
            raise
        except Exception as e:    # a hostile or damaged pickle can raise nearly anything; all mean "bad file"
            raise CheckpointError(f"cannot unpickle ({type(e).__name__}: {str(e)[:200]}); the file is "
                                  "corrupt") from e
        return to_plain(obj)
