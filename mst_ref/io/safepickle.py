"""Unpickling untrusted files: an allow-list, a read-through before running, plain data out.

A pickle is a small stack program, and plain ``pickle.load`` imports and calls whatever global the
file names: loading an untrusted ``.pth`` with it can run ``os.system``. :class:`RestrictedUnpickler`
makes three changes:

1. ``find_class`` resolves only an allow-list, and every allowed name maps to a stand-in written in
   mst_ref (never the real torch function): a file can call nothing else.
2. Before running anything, :func:`check_pickle` reads the whole program (building nothing) and
   refuses it unless every opcode is one that ``torch.save`` writes at its default protocol 2, the
   set ``torch.load(weights_only=True)`` accepts (so no EXT1/EXT2/EXT4, which fetch objects from
   copyreg's cache without ``find_class``, no INST/OBJ/STACK_GLOBAL, no protocol-0 text opcodes, no
   LONG4, no frames or out-of-band buffers), every GLOBAL is on the allow-list, every integer fits in
   ``MAX_INT_BYTES``, memo indices come in the order a pickler writes them (the C unpickler sizes its
   memo by the largest index), the program runs at most ``MAX_OPCODES`` opcodes, tuples nest at most ``MAX_DEPTH`` deep (hashing one recurses in C), and the hashing the
   program can cause stays under ``MAX_HASH_WORK`` steps. Tuple and int hashes are not cached: a key
   built from the memo as ``t_i = (t_{i-1}, t_{i-1})`` takes 2**i steps to hash, whether it is a dict
   key (SETITEM) or sits in the arguments of an allowed callable (``OrderedDict(pairs)``), so every
   simulated object carries the cost of hashing everything it holds, and every opcode that may hash
   (SETITEM(S), REDUCE, NEWOBJ, BUILD) is charged for its operands.
3. :func:`to_plain` turns the result into plain dicts, lists, tuples, sets, scalars and ndarrays,
   refusing anything else, cycles, and shared structure that expands past ``MAX_NODES`` objects.
   Objects that allowed callables build (tensors) reach the program only inside a :class:`Leaf`,
   which the BUILD opcode cannot modify.

The checks run in time linear in the pickle, which callers keep to a few MiB. Every refusal and every
malformed pickle raises :class:`CheckpointError`.
"""
import _compat_pickle
import io
import pickle
import pickletools
import struct
from collections import OrderedDict

import numpy as np

MAX_DEPTH = 64              # nesting no checkpoint comes near
MAX_HASH_WORK = 10**7       # hashing steps the whole pickle may cause (dict keys, call arguments)
MAX_NODES = 10**6           # objects in the unpickled tree, a shared one counted at every use
MAX_OPCODES = 5 * 10**5     # Swin-B with its AdamW state: 1.2 * 10**5 (0.35 MiB); a second to read at most
MAX_INT_BYTES = 64          # integers up to 2**511 (LONG1): sizes, seeds, counters; never 4300 digits
SCALARS = (type(None), bool, int, float, complex, str, bytes)

# the opcodes torch.save's pickler writes (protocol 2), exactly those torch.load(weights_only=True)
# reads, and how the argument of each is laid out: None, a struct format, "n<fmt>" (a length, then
# that many bytes) or "lines" (GLOBAL's two newline-terminated names)
ARGUMENTS = {
    "PROTO": "<B", "STOP": None, "MARK": None, "NONE": None, "NEWTRUE": None, "NEWFALSE": None,
    "BININT": "<i", "BININT1": "<B", "BININT2": "<H", "LONG1": "n<B", "BINFLOAT": ">d",
    "BINUNICODE": "n<I", "SHORT_BINSTRING": "n<B",
    "EMPTY_TUPLE": None, "TUPLE": None, "TUPLE1": None, "TUPLE2": None, "TUPLE3": None,
    "EMPTY_LIST": None, "APPEND": None, "APPENDS": None, "EMPTY_DICT": None, "SETITEM": None,
    "SETITEMS": None, "EMPTY_SET": None,
    "BINPUT": "<B", "LONG_BINPUT": "<I", "BINGET": "<B", "LONG_BINGET": "<I",
    "GLOBAL": "lines", "REDUCE": None, "BUILD": None, "NEWOBJ": None, "BINPERSID": None,
}
OPCODES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
# code -> (name, struct of the argument or its length prefix, whether a length prefix), for the scan
ALLOWED_OPCODES = {code: (name, ARGUMENTS[name] if ARGUMENTS[name] in (None, "lines") else
                          struct.Struct(ARGUMENTS[name].lstrip("n")), str(ARGUMENTS[name]).startswith("n"))
                   for code, name in OPCODES.items() if name in ARGUMENTS}
ATOMS = {"NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE",
         "SHORT_BINSTRING"}       # opcodes that push one object holding nothing


class CheckpointError(ValueError):
    """A checkpoint file that mst_ref cannot or will not read; the message says why and what to do."""


def brief(x):
    """A short description of an object from a file: never the repr of a container (could be huge)."""
    if type(x) is int and x.bit_length() > 200:
        return f"an int of {x.bit_length()} bits"
    return repr(x)[:60] if type(x) in SCALARS else f"a {type(x).__name__}"


def _cap(work):
    return min(work, MAX_HASH_WORK + 1)


def check_pickle(data, allowed):
    """Read the opcodes of ``data`` without executing them; raise CheckpointError on any hazard.

    The simulated stack holds, for every object, ``(work, depth)``: the steps to hash it and all it
    holds (an atom: 1; an int: one per 8 bytes; a tuple: 1 + its items'; a list, dict or the result
    of a call: 1 + everything put into it), and its tuple nesting depth. Containers are lists so that
    APPEND, SETITEM and BUILD can add to them through the memo, as the real program would.
    """
    n, pos, ops, work = len(data), 0, 0, 0
    stack, marks, memo = [], [], []

    def pop(count, name):
        if len(stack) - count < (marks[-1] if marks else 0):
            raise CheckpointError(f"the pickle's {name} at byte {pos} pops an empty stack; the file is corrupt")
        items = stack[len(stack) - count:]
        del stack[len(stack) - count:]
        return items

    def pop_mark(name):
        if not marks:
            raise CheckpointError(f"the pickle's {name} at byte {pos} has no MARK; the file is corrupt")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def add(target, items):          # a container receives items (APPEND(S), SETITEM(S), BUILD)
        if type(target) is list:
            target[0] = _cap(target[0] + sum(w for w, _ in items))

    while True:
        if pos >= n:
            raise CheckpointError("the pickle ends without a STOP opcode; the file is truncated")
        code = data[pos]
        if code not in ALLOWED_OPCODES:
            name = OPCODES.get(code, f"byte 0x{code:02x}")
            raise CheckpointError(f"the pickle uses opcode {name} at byte {pos}, which torch.save never "
                                  "writes; refusing the file")
        ops += 1
        if ops > MAX_OPCODES:
            raise CheckpointError(f"the pickle runs over {MAX_OPCODES} opcodes; a checkpoint's pickle holds "
                                  "only the tensors' descriptions (their data is stored beside it)")
        name, fmt, prefixed = ALLOWED_OPCODES[code]
        start, pos, arg = pos, pos + 1, None
        if fmt == "lines":
            first = data.find(b"\n", pos, pos + 1000)
            end = data.find(b"\n", first + 1, first + 1000) if first >= 0 else -1
            if end < 0:
                raise CheckpointError(f"the pickle's GLOBAL at byte {start} is not two short lines")
            arg, pos = data[pos:end].decode("utf-8", "replace").split("\n"), end + 1
        elif fmt is not None:
            if pos + fmt.size > n:
                raise CheckpointError(f"the pickle ends inside {name}; the file is truncated")
            (arg,) = fmt.unpack_from(data, pos)
            pos += fmt.size
            if prefixed:                            # a length-prefixed string or integer
                if arg < 0 or pos + arg > n:
                    raise CheckpointError(f"the pickle's {name} at byte {start} claims {arg} bytes; "
                                          f"only {n - pos} follow")
                if name == "LONG1" and arg > MAX_INT_BYTES:
                    raise CheckpointError(f"the pickle holds an integer of {arg} bytes (over {MAX_INT_BYTES}); "
                                          "no checkpoint needs one")
                pos += arg
        # the stack effect of each opcode (most frequent first), and the hashing it may cause
        if name in ATOMS:
            stack.append((1, 0))
        elif name in ("BINGET", "LONG_BINGET"):
            if arg >= len(memo):
                raise CheckpointError(f"the pickle's {name} reads memo entry {arg}, which was never set")
            stack.append(memo[arg])
        elif name in ("BINPUT", "LONG_BINPUT"):
            if arg > len(memo):              # a pickler numbers its memo 0, 1, 2, ...
                raise CheckpointError(f"the pickle's {name} index {arg} skips ahead of the {len(memo)} "
                                      "objects memoised so far; not a pickler's output")
            if not stack or (marks and marks[-1] == len(stack)):
                raise CheckpointError(f"the pickle's {name} at byte {start} memoises an empty stack")
            if arg == len(memo):
                memo.append(stack[-1])
            else:
                memo[arg] = stack[-1]
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("TUPLE", "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            count = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name)
            items = pop_mark(name) if count is None else pop(count, name)
            depth = 1 + max((d for _, d in items), default=0)
            if depth > MAX_DEPTH:
                raise CheckpointError(f"the pickle nests tuples more than {MAX_DEPTH} deep")
            stack.append((_cap(1 + sum(w for w, _ in items)), depth))
        elif name in ("REDUCE", "NEWOBJ", "BUILD"):
            fn, args = pop(2, name)
            work += args[0]                                         # a callable may hash its arguments
            if name == "BUILD":
                stack.append(fn)
                add(fn, [args])
            else:
                stack.append([_cap(1 + args[0]), 0])
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BINPERSID"):
            if name == "BINPERSID":
                pop(1, name)
            stack.append([1, 0])
        elif name in ("APPENDS", "SETITEMS"):
            items = pop_mark(name)
            (target,) = pop(1, name)
            stack.append(target)
            add(target, items)
            if name == "SETITEMS":                                  # the keys are hashed
                work += sum(w for w, _ in items[0::2])
        elif name in ("APPEND", "SETITEM"):
            items = pop(1 if name == "APPEND" else 2, name)
            (target,) = pop(1, name)
            stack.append(target)
            add(target, items)
            work += items[0][0] if name == "SETITEM" else 0          # the key is hashed
        elif name == "GLOBAL":
            if len(arg) != 2 or (arg[0], arg[1]) not in allowed:
                raise CheckpointError(refusal(*(arg + ["", ""])[:2]))
            stack.append((1, 0))
        elif name == "LONG1":
            stack.append((1 + arg // 8, 0))                        # hashing an int reads all its digits
        elif name == "PROTO":
            if arg > pickle.HIGHEST_PROTOCOL:
                raise CheckpointError(f"the pickle claims protocol {arg}; the highest is {pickle.HIGHEST_PROTOCOL}")
        elif name == "STOP":
            if len(stack) != 1 or marks or pos != n:
                raise CheckpointError(f"the pickle stops at byte {start} with {len(stack)} objects on its "
                                      f"stack and {n - pos} bytes after it; the file is corrupt")
            return
        if work > MAX_HASH_WORK:
            raise CheckpointError(f"the pickle's dict keys and call arguments take over {MAX_HASH_WORK} steps "
                                  "to hash (deeply shared tuples); no checkpoint does this")


def refusal(module, name):
    """The message for a global outside the allow-list, under its Python 3 name."""
    # protocol-2 pickles use Python 2 names (__builtin__.eval, commands.call); pickle maps them back
    py3 = _compat_pickle.NAME_MAPPING.get((module, name))
    py3 = py3 or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    alias = f" (named {module}.{name} in the pickle)" if py3 != (module, name) else ""
    return (f"refusing to load {py3[0][:100]}.{py3[1][:100]} from the checkpoint{alias[:250]}: not an "
            "allow-listed global; mst_ref never executes code from a file")


class Allowed:
    """An allow-listed function as the pickle sees it: callable, and immune to pickle's BUILD opcode."""
    __slots__ = ("name", "fn")

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        raise CheckpointError(f"the pickle tries to modify {self.name}; refusing the file")


class Leaf:
    """A value an allowed callable built (a tensor's array); the pickle can pass it on, never modify it."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __setstate__(self, state):
        raise CheckpointError("the pickle tries to modify a tensor after building it; refusing the file")


class StateDict(OrderedDict):
    """Stand-in for ``collections.OrderedDict``. A state dict is pickled as ``OrderedDict()`` + SETITEMS
    + BUILD with ``{'_metadata': ...}``; the BUILD state (a dict) is kept aside in ``.state``."""

    def __setstate__(self, state):
        if type(state) is not dict:
            raise CheckpointError(f"an OrderedDict's state must be a dict; got {brief(state)}")
        self.state = state


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
        if type(items) not in (list, tuple, set, frozenset):
            raise CheckpointError(f"a {kind.__name__} in the pickle is built from {brief(items)}")
        if not all(type(v) in SCALARS for v in items):
            raise CheckpointError(f"a {kind.__name__} in the pickle holds non-scalar items")
        return kind(items)
    return Allowed(kind.__name__, build)


def to_plain(obj):
    """Unpickled object -> plain dicts (from dict, OrderedDict, CfgNode), lists, tuples, sets, scalars
    and ndarrays (from :class:`Leaf`). Shared objects stay shared, but the tree they expand to is held
    under ``MAX_NODES``, counted as it is walked, so code walking the result cannot be stalled by the
    pickle's memo."""
    memo = {}       # id -> (plain object, objects it expands to); None while it is being converted

    def convert(obj, depth):
        kind = type(obj)
        if kind in SCALARS:
            return obj, 1
        if kind is Leaf and type(obj.value) is np.ndarray:
            return obj.value, 1
        if depth > MAX_DEPTH or memo.get(id(obj), ()) is None:
            raise CheckpointError(f"the pickle nests containers more than {MAX_DEPTH} deep or in a cycle")
        if id(obj) in memo:
            return memo[id(obj)]
        memo[id(obj)] = None
        size = 1
        if kind in (dict, StateDict, CfgNode):
            plain = {}
            for k, v in obj.items():
                (k, a), (v, b) = convert(k, depth + 1), convert(v, depth + 1)
                plain[k], size = v, size + a + b
                if size > MAX_NODES:
                    break
        elif kind in (list, tuple, set, frozenset):
            plain = []
            for v in obj:
                v, a = convert(v, depth + 1)
                plain.append(v)
                size += a
                if size > MAX_NODES:
                    break
            plain = plain if kind is list else kind(plain)
        else:
            raise CheckpointError(f"the checkpoint holds an object of type {kind.__name__}; mst_ref reads "
                                  "tensors, containers and plain values only")
        if size > MAX_NODES:
            raise CheckpointError(f"the pickle expands to over {MAX_NODES} objects; not a checkpoint")
        memo[id(obj)] = (plain, size)
        return memo[id(obj)]

    return convert(obj, 0)[0]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data`` resolving only ``allowed`` ((module, name) -> stand-in) plus OrderedDict,
    yacs CfgNode and scalar sets; ``load()`` checks the program first and returns plain data."""

    def __init__(self, data, allowed):
        super().__init__(io.BytesIO(data))
        self.data = data
        self.allowed = {("collections", "OrderedDict"): StateDict, ("yacs.config", "CfgNode"): CfgNode}
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
            return to_plain(obj)
        except CheckpointError:
            raise
        except Exception as e:    # a hostile or damaged pickle can raise nearly anything; all mean "bad file"
            raise CheckpointError(f"cannot unpickle ({type(e).__name__}: {str(e)[:200]}); the file is "
                                  "corrupt") from e
