"""The operators a hosted model may run, and the walks that find every operator a model would run.

A model is a program. TorchScript and torch.export graphs call operators, and some operators reach
outside the tensors they are given: measured on this node, a TorchScript model whose forward calls
`torch.from_file("/etc/passwd", ...)` (aten::from_file) answers an inference with that file's bytes,
and `torch.from_file(path, True, n)` creates the file; `torch.save` (aten::save) writes one. So every
archive is walked at upload, and again whenever it is loaded from storage, before any of its code runs:

- TorchScript: every method of the module and of every submodule (forward, exported methods,
  `__getstate__`, and the scripted forward hooks, which run around forward), each on a copy of its
  graph with every call inlined, including the blocks of `prim::If` and `prim::Loop`. A call that
  inlining could not resolve stays a `prim::CallMethod` / `prim::CallFunction` (a module interface,
  a C++ custom class) and is refused: its target is not in the archive to walk.
  `__setstate__` runs while torch.jit.load restores the archive, before any walk could see it, so
  archives that define it are refused before loading (gridarchive/archives.py).
- torch.export: every node of the program's graph and of every graph module below it (the branches
  and bodies of higher-order operators such as torch.cond), by the operator each node calls; and,
  before `torch.export.load` builds anything, every node target the archive's JSON names.

An operator runs only if its name is in ALLOWED_OPERATORS, one list for both kinds. The list was built
from the graphs of real layers (tests/security/zoo.py scripts and exports Linear, Conv1d/2d/3d and their
transposes, BatchNorm, LayerNorm, GroupNorm, RMSNorm, pooling, upsampling, Embedding(Bag), RNN/LSTM/GRU,
MultiheadAttention, Transformer layers, losses, and TorchScript's control flow), plus the pointwise math,
reductions and views those layers are made of. Names are operators, not overloads: every overload of
an allowed operator is allowed (tests/security/test_operator_allowlist.py checks that none of them takes
a Storage or a file name). What is deliberately NOT allowed, by family:

- files and storages: aten::from_file, aten::save, aten::set_ (which can take a Storage), any
  `*storage*` operator, debugprims::load_tensor;
- uninitialised memory: aten::empty, empty_like, new_empty, empty_strided, resize_: a fresh
  allocation holds whatever the allocator freed last, e.g. another caller's inputs;
- printing: prim::Print and aten::_print write to the node's standard output on every call, unbounded,
  and can forge log lines (aten::warn is allowed: standard layers use it, and Python's warning filter
  shows each message once);
- process-wide state: aten::manual_seed, aten::seed, aten::set_grad_enabled, profiler::*;
- threads and futures: prim::fork, aten::wait, prim::awaitable_* (work outside the request's threads);
- network: prim::rpc_*, c10d::*, _c10d_functional::*, symm_mem::*;
- Python and addresses: prim::PythonOp, prim::id, mkldnn::data_ptr;
- every other namespace (quantized::*, custom operator libraries, ...), and any Python callable a
  torch.export graph names other than the few size operators listed under _EXPORT_PYTHON.

Operators can still use CPU and memory (a model can be slow, or ask for a huge tensor); that is a matter
of limits and timeouts, not of this list.

Allowed operators can still write into the model's own state, and a hosted model serves every caller
from one loaded object: a forward doing `self.prev.copy_(x)` answered each caller with the previous
caller's input. So the same walks also trace where the model's parameters, buffers, constants and
attributes flow (through views, containers and control flow, by what each operator's schema says),
and a model that writes into any of them is refused, naming the operator and the state. See "Writes
into the model's own state" below.
"""

import functools
import math
import operator
from typing import cast

import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.node import map_aggregate

from gridarchive.errors import ArchiveRefused

# TorchScript's own nodes whose outputs are numbers, strings, devices, a new tensor from a number
# (NumToTensor), a new list of numbers (tolist), a placeholder for a value never read
# (Uninitialized), or nothing at all (RaiseException): nothing of the model's state passes through.
_PRIM_FRESH = {
    "prim::RaiseException",
    "prim::Uninitialized",
    "prim::NumToTensor",
    "prim::tolist",
    "prim::device",
    "prim::dtype",
    "prim::layout",
    "prim::type",
    "prim::requires_grad",
    "prim::is_nested",
    "prim::is_cpu",
    "prim::is_cuda",
    "prim::is_sparse",
    "prim::is_quantized",
    "prim::min",
    "prim::max",
    "prim::abs",
}

# TorchScript's own IR: constants, reading the module's attributes, control flow, containers and
# casts, and the nodes above. They compute nothing outside the interpreter's values; RaiseException
# makes a model's own `raise` a 400 for the caller.
_STRUCTURE = {
    "prim::Constant",
    "prim::GetAttr",
    "prim::If",
    "prim::Loop",
    "prim::ListConstruct",
    "prim::ListUnpack",
    "prim::TupleConstruct",
    "prim::TupleUnpack",
    "prim::TupleIndex",
    "prim::DictConstruct",
    "prim::unchecked_cast",
    "prim::unchecked_unwrap_optional",
    *_PRIM_FRESH,
}

# What TorchScript compiles Python's built-ins into: numbers, comparisons, list/dict/str methods,
# len/isinstance-style queries, and the facts of a tensor (its size, rank, dtype). Values only.
# aten::warn goes to Python's warnings (the default filter shows each message once per place):
# standard layers (Conv, Embedding, MultiheadAttention, Transformer, losses) call it.
_PYTHON_BUILTINS = {
    "aten::Int",
    "aten::Float",
    "aten::Bool",
    "aten::IntImplicit",
    "aten::FloatImplicit",
    "aten::ScalarImplicit",
    "aten::item",
    "aten::__getitem__",
    "aten::__contains__",
    "aten::__is__",
    "aten::__isnot__",
    "aten::__not__",
    "aten::__and__",
    "aten::__or__",
    "aten::__xor__",
    "aten::__range_length",
    "aten::__derive_index",
    "aten::__round_to_zero_floordiv",
    "aten::len",
    "aten::list",
    "aten::append",
    "aten::extend",
    "aten::insert",
    "aten::pop",
    "aten::_set_item",
    "aten::keys",
    "aten::values",
    "aten::items",
    "aten::get",
    "aten::format",
    "aten::str",
    "aten::warn",
    "aten::dim",
    "aten::size",
    "aten::stride",
    "aten::numel",
    "aten::floordiv",
    "aten::is_floating_point",
    "aten::is_contiguous",
    "aten::is_grad_enabled",
    "aten::is_autocast_enabled",
    "aten::is_scripting",
}

# New tensors with defined contents: constants, ranges, copies, conversions. None of them allocates
# uninitialised memory or takes memory from a file, a pointer or a storage.
_CREATION = {
    "aten::tensor",
    "aten::scalar_tensor",
    "aten::as_tensor",
    "aten::zeros",
    "aten::zeros_like",
    "aten::ones",
    "aten::ones_like",
    "aten::full",
    "aten::full_like",
    "aten::new_zeros",
    "aten::new_ones",
    "aten::new_full",
    "aten::arange",
    "aten::linspace",
    "aten::eye",
    "aten::one_hot",
    "aten::lift_fresh_copy",
    "aten::clone",
    "aten::contiguous",
    "aten::to",
    "aten::_to_copy",
    "aten::type_as",
    "aten::detach",
    "aten::detach_",
    "aten::alias",
}

# Elementwise arithmetic, comparisons, math functions and activations, and their in-place forms:
# each output element is a function of input elements.
_POINTWISE = {
    "aten::add",
    "aten::add_",
    "aten::sub",
    "aten::sub_",
    "aten::rsub",
    "aten::mul",
    "aten::mul_",
    "aten::div",
    "aten::div_",
    "aten::true_divide",
    "aten::floor_divide",
    "aten::remainder",
    "aten::fmod",
    "aten::neg",
    "aten::abs",
    "aten::sign",
    "aten::sgn",
    "aten::pow",
    "aten::square",
    "aten::sqrt",
    "aten::rsqrt",
    "aten::reciprocal",
    "aten::exp",
    "aten::exp2",
    "aten::expm1",
    "aten::log",
    "aten::log1p",
    "aten::log2",
    "aten::log10",
    "aten::sin",
    "aten::cos",
    "aten::tan",
    "aten::asin",
    "aten::acos",
    "aten::atan",
    "aten::atan2",
    "aten::sinh",
    "aten::cosh",
    "aten::tanh",
    "aten::tanh_",
    "aten::sigmoid",
    "aten::sigmoid_",
    "aten::logit",
    "aten::erf",
    "aten::erfc",
    "aten::round",
    "aten::floor",
    "aten::ceil",
    "aten::trunc",
    "aten::frac",
    "aten::clamp",
    "aten::clamp_",
    "aten::clamp_min",
    "aten::clamp_min_",
    "aten::clamp_max",
    "aten::clamp_max_",
    "aten::clip",
    "aten::lerp",
    "aten::addcmul",
    "aten::addcdiv",
    "aten::hypot",
    "aten::maximum",
    "aten::minimum",
    "aten::where",
    "aten::masked_fill",
    "aten::masked_fill_",
    "aten::nan_to_num",
    "aten::isnan",
    "aten::isinf",
    "aten::isfinite",
    "aten::eq",
    "aten::ne",
    "aten::lt",
    "aten::le",
    "aten::gt",
    "aten::ge",
    "aten::logical_and",
    "aten::logical_or",
    "aten::logical_xor",
    "aten::logical_not",
    "aten::bitwise_and",
    "aten::bitwise_or",
    "aten::bitwise_xor",
    "aten::bitwise_not",
    "aten::zero_",
    "aten::fill_",
    "aten::copy_",
    "aten::relu",
    "aten::relu_",
    "aten::relu6",
    "aten::relu6_",
    "aten::leaky_relu",
    "aten::leaky_relu_",
    "aten::elu",
    "aten::elu_",
    "aten::selu",
    "aten::selu_",
    "aten::celu",
    "aten::celu_",
    "aten::gelu",
    "aten::silu",
    "aten::silu_",
    "aten::mish",
    "aten::mish_",
    "aten::hardtanh",
    "aten::hardtanh_",
    "aten::hardswish",
    "aten::hardswish_",
    "aten::hardsigmoid",
    "aten::hardsigmoid_",
    "aten::hardshrink",
    "aten::softshrink",
    "aten::softplus",
    "aten::log_sigmoid",
    "aten::threshold",
    "aten::threshold_",
    "aten::prelu",
    "aten::glu",
}

# Reductions, scans, sorting and normalisations along a dimension.
_REDUCTIONS = {
    "aten::sum",
    "aten::mean",
    "aten::prod",
    "aten::max",
    "aten::min",
    "aten::amax",
    "aten::amin",
    "aten::argmax",
    "aten::argmin",
    "aten::std",
    "aten::var",
    "aten::norm",
    "aten::linalg_vector_norm",
    "aten::logsumexp",
    "aten::cumsum",
    "aten::cumprod",
    "aten::any",
    "aten::all",
    "aten::count_nonzero",
    "aten::topk",
    "aten::sort",
    "aten::argsort",
    "aten::median",
    "aten::softmax",
    "aten::_softmax",
    "aten::log_softmax",
    "aten::_log_softmax",
}

# Views, joins, splits and indexing: they rearrange or select elements of the tensors they are given
# (every index is bounds-checked by the operator).
_SHAPES = {
    "aten::view",
    "aten::view_as",
    "aten::reshape",
    "aten::reshape_as",
    "aten::flatten",
    "aten::unflatten",
    "aten::squeeze",
    "aten::unsqueeze",
    "aten::permute",
    "aten::transpose",
    "aten::t",
    "aten::movedim",
    "aten::expand",
    "aten::expand_as",
    "aten::broadcast_tensors",
    "aten::repeat",
    "aten::repeat_interleave",
    "aten::tile",
    "aten::cat",
    "aten::stack",
    "aten::split",
    "aten::split_with_sizes",
    "aten::chunk",
    "aten::unbind",
    "aten::narrow",
    "aten::select",
    "aten::slice",
    "aten::index",
    "aten::index_select",
    "aten::index_put",
    "aten::index_put_",
    "aten::gather",
    "aten::scatter",
    "aten::scatter_add",
    "aten::masked_select",
    "aten::nonzero",
    "aten::flip",
    "aten::roll",
    "aten::tril",
    "aten::triu",
    "aten::diag",
    "aten::diagonal",
    "aten::pad",
    "aten::constant_pad_nd",
}

# Products of matrices and tensors.
_LINEAR_ALGEBRA = {
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::mv",
    "aten::dot",
    "aten::addmm",
    "aten::baddbmm",
    "aten::linear",
    "aten::bilinear",
    "aten::einsum",
    "aten::outer",
}

# The layers of torch.nn as the operators they compile to (dropout runs in eval mode: identity).
_LAYERS = {
    "aten::conv1d",
    "aten::conv2d",
    "aten::conv3d",
    "aten::conv_transpose1d",
    "aten::conv_transpose2d",
    "aten::conv_transpose3d",
    "aten::convolution",
    "aten::_convolution",
    "aten::batch_norm",
    "aten::native_batch_norm",
    "aten::_native_batch_norm_legit_no_training",
    "aten::layer_norm",
    "aten::native_layer_norm",
    "aten::group_norm",
    "aten::instance_norm",
    "aten::rms_norm",
    "aten::dropout",
    "aten::dropout_",
    "aten::feature_dropout",
    "aten::feature_dropout_",
    "aten::alpha_dropout",
    "aten::alpha_dropout_",
    "aten::feature_alpha_dropout",
    "aten::embedding",
    "aten::embedding_bag",
    "aten::max_pool1d",
    "aten::max_pool2d",
    "aten::max_pool3d",
    "aten::max_pool2d_with_indices",
    "aten::avg_pool1d",
    "aten::avg_pool2d",
    "aten::avg_pool3d",
    "aten::adaptive_avg_pool1d",
    "aten::adaptive_avg_pool2d",
    "aten::adaptive_avg_pool3d",
    "aten::adaptive_max_pool1d",
    "aten::adaptive_max_pool2d",
    "aten::adaptive_max_pool3d",
    "aten::upsample_nearest1d",
    "aten::upsample_nearest2d",
    "aten::upsample_nearest3d",
    "aten::_upsample_nearest_exact1d",
    "aten::_upsample_nearest_exact2d",
    "aten::_upsample_nearest_exact3d",
    "aten::upsample_linear1d",
    "aten::upsample_bilinear2d",
    "aten::upsample_trilinear3d",
    "aten::upsample_bicubic2d",
    "aten::_upsample_bilinear2d_aa",
    "aten::_upsample_bicubic2d_aa",
    "aten::_upsample_lanczos2d_aa",
    "aten::pixel_shuffle",
    "aten::pixel_unshuffle",
    "aten::channel_shuffle",
    "aten::im2col",
    "aten::col2im",
    "aten::rnn_tanh",
    "aten::rnn_relu",
    "aten::lstm",
    "aten::gru",
    "aten::rnn_tanh_cell",
    "aten::rnn_relu_cell",
    "aten::lstm_cell",
    "aten::gru_cell",
    "aten::scaled_dot_product_attention",
    "aten::_native_multi_head_attention",
    "aten::_transformer_encoder_layer_fwd",
    "aten::_nested_tensor_from_mask",
    "aten::_nested_tensor_from_mask_left_aligned",
    "aten::to_padded_tensor",
    "aten::cosine_similarity",
    "aten::pairwise_distance",
}

# Losses (some models return one from forward).
_LOSSES = {
    "aten::mse_loss",
    "aten::l1_loss",
    "aten::smooth_l1_loss",
    "aten::huber_loss",
    "aten::cross_entropy_loss",
    "aten::nll_loss",
    "aten::nll_loss_nd",
    "aten::nll_loss2d",
    "aten::binary_cross_entropy",
    "aten::binary_cross_entropy_with_logits",
    "aten::kl_div",
}

# What torch.export adds: sizes as symbolic integers, the checks it inserts on them, and the
# higher-order operators for control flow, whose branches and bodies are graphs walked like the rest.
_EXPORT = {
    "aten::sym_size",
    "aten::sym_numel",
    "aten::sym_stride",
    "aten::_assert_scalar",
    "aten::_assert_tensor_metadata",
    "aten::sym_constrain_range",
    "aten::sym_constrain_range_for_size",
    "higher_order::cond",
    "higher_order::while_loop",
    "higher_order::map_impl",
    "higher_order::scan",
    "higher_order::wrap_with_set_grad_enabled",
    "higher_order::wrap_with_autocast",
}

# The Python callables a torch.export graph may call, under the name its archive gives them: integer
# arithmetic and comparisons on sizes, and picking one output of a multi-output operator. No `**`:
# a size to the power of a size is a number too large to compute.
_EXPORT_PYTHON = {
    "_operator.getitem": operator.getitem,
    "_operator.add": operator.add,
    "_operator.sub": operator.sub,
    "_operator.mul": operator.mul,
    "_operator.floordiv": operator.floordiv,
    "_operator.truediv": operator.truediv,
    "_operator.mod": operator.mod,
    "_operator.neg": operator.neg,
    "_operator.eq": operator.eq,
    "_operator.ne": operator.ne,
    "_operator.lt": operator.lt,
    "_operator.le": operator.le,
    "_operator.gt": operator.gt,
    "_operator.ge": operator.ge,
    "_operator.and_": operator.and_,
    "_operator.or_": operator.or_,
    "_operator.not_": operator.not_,
    "torch.sym_max": torch.sym_max,
    "torch.sym_min": torch.sym_min,
    "torch.sym_not": torch.sym_not,
    "torch.sym_float": torch.sym_float,
    "torch.sym_int": torch.sym_int,
    "torch.sym_ite": torch.sym_ite,
    "math.ceil": math.ceil,
    "math.floor": math.floor,
    "math.trunc": math.trunc,
}

ALLOWED_OPERATORS = frozenset(
    _STRUCTURE
    | _PYTHON_BUILTINS
    | _CREATION
    | _POINTWISE
    | _REDUCTIONS
    | _SHAPES
    | _LINEAR_ALGEBRA
    | _LAYERS
    | _LOSSES
    | _EXPORT
    | set(_EXPORT_PYTHON)
)

REFUSED_MESSAGE = "The model uses an operator this node does not run: {name}"


def refusal(name: str) -> ArchiveRefused:
    """The refusal of a model that uses an operator outside the allowlist (names are short, never data)."""
    return ArchiveRefused(REFUSED_MESSAGE.format(name=name[:200]))


def check_script_module(module: torch.jit.ScriptModule) -> None:
    """`ArchiveRefused` naming the first operator outside the allowlist that a TorchScript module could run, or
    the first write into the module's own state.

    Every method and hook of the module and of its submodules is walked with its calls inlined;
    submodules of one class share their compiled methods, so each class's methods are walked once.
    """
    seen: set[tuple[str, str]] = set()
    # Per class: (where its first instance sits, its pre-hooks + forward + hooks, its other methods).
    walks: list[tuple[str, list[torch._C.Graph], list[torch._C.Graph]]] = []
    for path, submodule in module.named_modules():
        compiled = submodule._c
        type_name = compiled._type().qualified_name()
        methods = [
            (name, compiled._get_method(name).graph)
            for name in sorted(compiled._method_names(), key=lambda name: (name != "forward", name))
        ]
        pre_hooks = [(f"pre-hook:{hook.name}", hook.graph) for hook in compiled._get_forward_pre_hooks()]
        hooks = [(f"hook:{hook.name}", hook.graph) for hook in compiled._get_forward_hooks()]
        call: list[torch._C.Graph] = []
        others: list[torch._C.Graph] = []
        for name, graph in [*pre_hooks, *methods, *hooks]:
            if (type_name, name) in seen:
                continue
            seen.add((type_name, name))
            inlined = _inlined(graph)
            refused = _first_refused_in_block(inlined)
            if refused is not None:
                raise refusal(refused)
            # The hooks run around forward, passing values to it and taking its output.
            (call if name == "forward" or name.startswith(("pre-hook:", "hook:")) else others).append(inlined)
        walks.append((f"self.{path}" if path else "self", call, others))
    # Every operator is known to be allowed (no call is left to resolve) before the state is traced.
    # module.modules() is typed as plain Modules; those of a ScriptModule are ScriptModules.
    module_types = {
        cast(torch.jit.ScriptModule, submodule)._c._type().qualified_name() for submodule in module.modules()
    }
    for self_name, call, others in walks:
        for graphs in ([call] if call else []) + [[graph] for graph in others]:
            write = _first_state_write_in_script(graphs, self_name=self_name, module_types=module_types)
            if write is not None:
                raise state_refusal(write)


def _inlined(graph: torch._C.Graph) -> torch._C.Graph:
    """A copy of a method's graph with every call it makes inlined."""
    inlined = graph.copy()
    torch._C._jit_pass_inline(inlined)
    return inlined


# The only allowed kinds with blocks of their own. Every other node that holds code (prim::Closure,
# prim::With, prim::fork and fusion groups, whose code is a graph attribute) is outside the allowlist,
# so it is refused by its kind before anything inside it would need a look. (Asking a node for its
# blocks costs ~30 µs in torch's Python binding, so only these are asked.)
_WITH_BLOCKS = {"prim::If", "prim::Loop"}


def _first_refused_in_block(block) -> str | None:
    """The kind of the first node outside the allowlist, in this block or the blocks inside it."""
    for node in block.nodes():
        kind = node.kind()
        if kind not in ALLOWED_OPERATORS:
            return kind
        if kind in _WITH_BLOCKS:
            for inner in node.blocks():
                refused = _first_refused_in_block(inner)
                if refused is not None:
                    return refused
    return None


def check_exported_program(program: torch.export.ExportedProgram) -> None:
    """`ArchiveRefused` naming the first operator outside the allowlist that a torch.export program could run, or
    the first write into the program's own parameters, buffers or constants."""
    for graph_module in program.graph_module.modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        for node in graph_module.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                raise refusal(node.op)  # call_module, call_method: arbitrary Python, never exported
            _check_callable(node.target)
            # Operators passed as arguments (as some higher-order operators take them) are calls too.
            map_aggregate((node.args, node.kwargs), _check_argument)
    write = _first_state_write_in_program(program)
    if write is not None:
        raise state_refusal(write)


def _check_argument(value):
    if isinstance(value, torch._ops.OperatorBase) or (callable(value) and not isinstance(value, torch.fx.Node)):
        _check_callable(value)
    return value


def _check_callable(target) -> None:
    name = callable_name(target)
    if name not in ALLOWED_OPERATORS:
        raise refusal(name)
    expected = _EXPORT_PYTHON.get(name)
    if expected is not None and target is not expected:
        raise refusal(name)


def callable_name(target) -> str:
    """The allowlist's name for what an fx node calls: `aten::linear`, `higher_order::cond`, `_operator.add`."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    module = getattr(target, "__module__", None) or "?"
    qualified = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{qualified}"


def serialized_target_name(target: str) -> str:
    """The allowlist's name for a node target as a torch.export archive spells it.

    `torch.ops.aten.linear.default` is `aten::linear`, `torch.ops.higher_order.cond` is
    `higher_order::cond`; Python callables keep their spelling (`_operator.getitem`).
    """
    parts = target.split(".")
    if len(parts) in (4, 5) and parts[:2] == ["torch", "ops"] and all(part.isidentifier() for part in parts[2:]):
        return f"{parts[2]}::{parts[3]}"
    return target


# Writes into the model's own state. A hosted model serves every caller, one after another, from the
# same loaded object: its parameters, buffers, constants and attribute containers outlive a request.
# An allowed in-place operator (aten::copy_, add_, zero_, fill_, index_put_, append, ...) aimed at
# any of them carries one caller's data to the next. Measured on this node before this check: a
# TorchScript model doing `old = self.prev.clone(); self.prev.copy_(x); return old` answered every
# caller with the previous caller's input, and so did its torch.export program, whose graph keeps
# `aten.copy_.default(b_prev, x)` while `graph_signature.buffers_to_mutate` stays empty.
#
# So the graphs are traced: a value is state when it is an attribute (prim::GetAttr), a constant,
# or a parameter, buffer or constant placeholder, or may alias one: through an operator whose schema
# says its output aliases an input, through containers, and through control flow. An argument whose
# schema says it is written (`Tensor(a!)`) must not be state. Writes into tensors the model made
# during the call, and into the caller's own inputs (fresh for every request), stay allowed.

STATE_MESSAGE = "The model writes into its own state, which would carry one caller's data to the next: {write}"


def state_refusal(write: str) -> ArchiveRefused:
    """The refusal of a model that writes into its own state; `write` names the operator and the state."""
    return ArchiveRefused(STATE_MESSAGE.format(write=write[:200]))


# Operators that return one of their inputs, or a view of it, while their schema promises a fresh
# tensor (they are CompositeImplicitAutograd, so PyTorch's own aliasing checks never ran on them).
# Measured on torch 2.13 by calling every such allowed operator with identity-like arguments:
# dropout in eval mode returns its input, type_as to the same type returns `self`, einsum may return
# a permuted view. tests/security/test_model_state.py repeats the measurement.
_ALIASES_WITHOUT_SAYING = {
    "aten::dropout",
    "aten::feature_dropout",
    "aten::alpha_dropout",
    "aten::feature_alpha_dropout",
    "aten::type_as",
    "aten::einsum",
}

# Operators that update running statistics in place while their schema marks nothing as written:
# name -> (position of the flag that turns the update on, positions of the statistics it updates).
# Measured: with the flag true, each overwrites running_mean/running_var with the batch's moments
# (momentum 1.0 stores them outright); with it false they only read them.
_WRITES_WHEN_FLAGGED = {
    "aten::batch_norm": (5, (3, 4)),
    "aten::native_batch_norm": (5, (3, 4)),
    "aten::instance_norm": (5, (3, 4)),
}

# TorchScript values that can hold references to other values: a state tensor put into one of
# them (a list append, a dict item) makes the container, and whatever else refers to it, state.
_REFERENCE_KINDS = {"ListType", "DictType", "TupleType", "ClassType", "AnyType", "InterfaceType"}


# What a value may be, as the flow tracks it: (a view of) the model's state itself, or a container
# holding references to state. Writing into the first is refused; the second only matters for what
# is taken out of it.
_IS, _HOLDS = 0, 1

# How each kind of edge carries those two facts from a source to its target: for a source that is
# state, then for one that holds state, the facts its target gains.
_ALIAS = ((_IS,), (_HOLDS,))  # the target may be the source's object, or a view of it
_STORE = ((_HOLDS,), (_HOLDS,))  # the target container may hold the source
_LOAD = ((_IS,), (_IS,))  # the target may be taken out of the source container
_THROUGH = ((_IS,), (_HOLDS, _IS))  # either: what unknown code is assumed to do
_BACK = ((), (_HOLDS,))  # a container gaining a reference gains it for its aliases too


class _StateFlow:
    """Where a model's state can flow through its graphs, and which values its operators write into.

    Values are keys (a TorchScript value's number, an fx node). `origins` names the keys that are
    state; edges say which values may then be state, or hold it; `writes` lists every value an
    operator writes into. Edges only ever add possibilities, so the answer does not depend on the
    order in which nodes were visited (a loop's body may store what an earlier node reads).
    """

    def __init__(self) -> None:
        self.origins: dict = {}
        self.successors: dict = {}
        self.containers: set = set()
        self.writes: list[tuple[str, object]] = []

    def state(self, key, name: str) -> None:
        """Mark a value as the model's own state, named `name` in a refusal."""
        self.origins.setdefault(key, name)

    def edge(self, kind: tuple, source, target) -> None:
        """Record that `target` may gain what `source` is or holds, as `kind` (_ALIAS, ...) carries it."""
        self.successors.setdefault(source, []).append((kind, target))
        # Two containers that may be one object (a list and the same list out of a branch, or out of
        # an outer list): an append to either is seen through both.
        if kind is not _STORE and source in self.containers and target in self.containers:
            self.successors.setdefault(target, []).append((_BACK, source))

    def written(self, operator: str, key) -> None:
        """An operator writes into this value."""
        self.writes.append((operator, key))

    def first_write(self) -> str | None:
        """`<operator> on <state>` for the first write into a value that may be state, else None."""
        if not self.writes:
            return None
        successors = self.successors
        reached = {(key, _IS): name for key, name in self.origins.items()}
        pending = list(reached)
        while pending:
            current = pending.pop()
            key, fact = current
            name = reached[current]
            for kind, target in successors.get(key, ()):
                for gained in kind[fact]:
                    following = (target, gained)
                    if following not in reached:
                        reached[following] = name
                        pending.append(following)
        for operator_name, key in self.writes:
            name = reached.get((key, _IS))
            if name is not None:
                return f"{operator_name} on {name}"
        return None


def _flow_through_schema(flow: _StateFlow, name: str, plan: tuple, inputs: list[list], outputs: list, flag_is_false):
    """Record what one operator call writes and which inputs its outputs may alias, from its schema's plan.

    `inputs[i]` holds the keys passed as the schema's i-th argument (a list of tensors passes many);
    `outputs[r]` is the key of its r-th return; `flag_is_false(i)` says whether argument i is
    certainly False whenever the call runs.
    """
    written, returns, _ = plan
    hidden = _WRITES_WHEN_FLAGGED.get(name)
    if hidden is not None and hidden[0] < len(inputs) and not flag_is_false(hidden[0]):
        written = written + hidden[1]
    for index in written:
        if index >= len(inputs):
            continue
        for key in inputs[index]:
            flow.written(name, key)
            if key in flow.containers:  # a list append, a dict item: it now holds the other arguments
                for other, keys in enumerate(inputs):
                    if other != index:
                        for source in keys:
                            flow.edge(_STORE, source, key)
    for (kind, sources), output in zip(returns, outputs, strict=False):
        if kind is None:
            continue
        for index, keys in enumerate(inputs):
            if sources is None or index in sources:
                for source in keys:
                    flow.edge(kind, source, output)


def _schema_plan(schema) -> tuple[tuple[int, ...], tuple, bool]:
    """What a schema says: the positions of the arguments it writes; for each
    return how it may relate to the arguments, as (edge kind or None, argument positions or None
    for all of them); and whether a call can neither write nor pass anything on (most operators:
    arithmetic on sizes, new tensors), so a walk may skip it."""
    written = tuple(index for index, argument in enumerate(schema.arguments) if _is_written(argument))
    returns: list[tuple[tuple[tuple[int, ...], ...] | None, frozenset[int] | None]] = []
    name = schema.name
    for returned in schema.returns:
        info = returned.alias_info
        if info is not None:
            sets = info.before_set | info.after_set
            if "*" in sets or not sets:
                # `t(*)`: whatever went into a container may come out of it. No set at all: the
                # annotation is on the elements (`Tensor(a)[]`), which Python's binding does not show.
                returns.append((_THROUGH, None))
            else:
                sharing = frozenset(
                    index
                    for index, argument in enumerate(schema.arguments)
                    if argument.alias_info is not None
                    and sets & (argument.alias_info.before_set | argument.alias_info.after_set)
                )
                returns.append((_ALIAS, sharing))
        elif name in _ALIASES_WITHOUT_SAYING:
            returns.append((_THROUGH, None))  # einsum takes its operands as a list
        elif _holds_references(returned.type):
            returns.append((_STORE, None))  # a new container (aten::list, broadcast_tensors' views)
        else:
            returns.append((None, None))  # a new tensor, number or string
    inert = not written and all(kind is None for kind, _ in returns)
    return written, tuple(returns), inert


def _is_written(argument) -> bool:
    """Whether a schema argument is one its operator writes into (`Tensor(a!)`, `t[](a!)`)."""
    return argument.alias_info is not None and argument.alias_info.is_write


@functools.lru_cache(maxsize=4096)
def _script_plan(text: str) -> tuple:
    """The plan of the schema a TorchScript node prints, once per schema (nodes share a few dozen)."""
    return _schema_plan(torch._C.parse_schema(text))


@functools.lru_cache(maxsize=4096)
def _overload_plan(overload: torch._ops.OpOverload) -> tuple:
    """The plan of an fx node's operator overload, once per overload."""
    return _schema_plan(overload._schema)


def _first_state_write_in_script(graphs: list[torch._C.Graph], *, self_name: str, module_types: set[str]) -> str | None:
    """`<operator> on self.<attribute>` for the first write into a module's state in these inlined
    graphs, else None. Several graphs are traced as one call when they are a forward and its hooks:
    each one's outputs may become the others' arguments."""
    walk = _ScriptStateWalk(module_types)
    for tag, graph in enumerate(graphs):
        walk.graph(graph, tag, self_name)
    if len(graphs) > 1:
        returned = [(tag, value) for tag, graph in enumerate(graphs) for value in graph.outputs()]
        for tag, graph in enumerate(graphs):
            for argument in list(graph.inputs())[1:]:
                for source_tag, value in returned:
                    # A returned tuple is unpacked into the next one's arguments.
                    walk.flow.edge(_THROUGH, walk.key(value, source_tag), walk.key(argument, tag))
    return walk.flow.first_write()


# TorchScript's nodes that build a container from their inputs.
_CONSTRUCTS = {"prim::ListConstruct", "prim::TupleConstruct", "prim::DictConstruct"}


class _ScriptStateWalk:
    """Builds the state flow of TorchScript graphs, node by node, blocks included."""

    def __init__(self, module_types: set[str]) -> None:
        self.flow = _StateFlow()
        self.module_types = module_types
        self.names: dict = {}
        self.seen: set = set()

    def key(self, value: torch._C.Value, tag: int):
        """A value's key: its number in its graph (graphs traced together are told apart by tag)."""
        key = (tag, value.unique())
        if key not in self.seen:
            self.seen.add(key)
            if _holds_references(value.type()):
                self.flow.containers.add(key)
        return key

    def graph(self, graph: torch._C.Graph, tag: int, self_name: str) -> None:
        """Trace one inlined graph; its first input is the module (`self_name`), the others the caller's."""
        first = next(iter(graph.inputs()), None)
        if first is not None:
            self.names[self.key(first, tag)] = self_name
        self.block(graph.block(), tag)

    def block(self, block, tag: int) -> None:
        """Trace the nodes of one block, and of the blocks inside them."""
        flow = self.flow
        key = self.key
        for node in block.nodes():
            kind = node.kind()
            if kind == "prim::Constant":  # a third of all nodes, nearly all of them numbers
                value = node.output()
                if _can_be_written(value.type()):  # one object, shared by every call
                    flow.state(key(value, tag), "a constant of the model")
                continue
            if kind.startswith("prim::"):
                if kind not in _PRIM_FRESH:
                    self.structure(node, kind, tag)
                continue
            text = node.schema()
            if text == "(no schema)":
                # An operator without a schema says nothing about what it writes or returns: as if it
                # wrote into every input and returned any of them.
                self.unknown(node, tag)
                flow.writes += [(kind, key(node.inputsAt(index), tag)) for index in range(node.inputsSize())]
                continue
            plan = _script_plan(text)
            if plan[2] and kind not in _WRITES_WHEN_FLAGGED:
                continue  # writes nothing, passes nothing on: most nodes
            inputs = [node.inputsAt(index) for index in range(node.inputsSize())]
            keys = [[key(value, tag)] for value in inputs]
            outputs = [key(node.outputsAt(index), tag) for index in range(node.outputsSize())]
            flag_is_false = functools.partial(_script_flag_is_false, inputs, self.module_types)
            _flow_through_schema(flow, kind, plan, keys, outputs, flag_is_false)

    def structure(self, node: torch._C.Node, kind: str, tag: int) -> None:
        """Trace one of TorchScript's own nodes: attributes, constants, control flow, containers."""
        flow = self.flow
        key = self.key
        inputs = [node.inputsAt(index) for index in range(node.inputsSize())]
        outputs = [key(node.outputsAt(index), tag) for index in range(node.outputsSize())]
        if kind == "prim::GetAttr":
            owner = self.names.get(key(inputs[0], tag), "an object of the model")
            name = f"{owner}.{node.s('name')}"
            self.names[outputs[0]] = name
            if _can_be_written(node.output().type()):
                flow.state(outputs[0], name)
        elif kind == "prim::If":
            branches = list(node.blocks())
            # A branch on a constant, or on the training flag (see _is_training_flag), runs one way.
            condition = _static_bool(inputs[0], self.module_types)
            for branch in branches if condition is None else [branches[0 if condition else 1]]:
                self.block(branch, tag)
                for returned, output in zip(branch.outputs(), outputs, strict=True):
                    flow.edge(_ALIAS, key(returned, tag), output)
        elif kind == "prim::Loop":
            (body,) = node.blocks()
            carried = [key(value, tag) for value in inputs[2:]]
            parameters = [key(value, tag) for value in list(body.inputs())[1:]]
            self.block(body, tag)
            results = [key(value, tag) for value in list(body.outputs())[1:]]
            for start, parameter, result, output in zip(carried, parameters, results, outputs, strict=True):
                for source, target in ((start, parameter), (result, parameter), (start, output), (result, output)):
                    flow.edge(_ALIAS, source, target)
        elif kind in _CONSTRUCTS:
            for value in inputs:
                flow.edge(_STORE, key(value, tag), outputs[0])
        else:
            # The others (unpacking, indexing tuples, casts) are special-cased by TorchScript's alias
            # analysis, not described by their schemas.
            self.unknown(node, tag)

    def unknown(self, node: torch._C.Node, tag: int) -> None:
        """Trace a node whose schema does not tell: every output may be any input, or held by one."""
        sources = [self.key(node.inputsAt(index), tag) for index in range(node.inputsSize())]
        for index in range(node.outputsSize()):
            output = self.key(node.outputsAt(index), tag)
            for source in sources:
                self.flow.edge(_THROUGH, source, output)


def _script_flag_is_false(inputs: list[torch._C.Value], module_types: set[str], index: int) -> bool:
    """Whether a TorchScript node's input at `index` is a bool that is False on every run."""
    return _static_bool(inputs[index], module_types) is False


def _can_be_written(jit_type) -> bool:
    """Whether an operator could write into a value of this TorchScript type: a tensor, or a container
    or object (numbers, strings and None cannot be changed in place). A schema's type variable (`t`)
    could be any of them."""
    kind = jit_type.kind()
    if kind in ("OptionalType", "UnionType"):
        return any(_can_be_written(contained) for contained in jit_type.containedTypes())
    return kind in ("TensorType", "VarType") or kind in _REFERENCE_KINDS


def _holds_references(jit_type) -> bool:
    """Whether values of a TorchScript type can hold references to something an operator could write
    into: a list of tensors can, a list of ints cannot (it can only be written into itself)."""
    kind = jit_type.kind()
    if kind in ("OptionalType", "UnionType"):
        return any(_holds_references(contained) for contained in jit_type.containedTypes())
    if kind in ("ListType", "DictType", "TupleType"):
        return any(_can_be_written(contained) for contained in jit_type.containedTypes())
    return kind == "VarType" or kind in _REFERENCE_KINDS


def _is_training_flag(value: torch._C.Value, module_types: set[str]) -> bool:
    """Whether a value is a module's `training` flag, which is False whenever the node runs a model.

    This is what lets layers like BatchNorm through: TorchScript keeps `if self.training:
    self.num_batches_tracked.add_(1)` in the graph of an eval-mode module, and that branch is dead
    at inference. It is dead because models_app/archives.py calls `module.eval()` on every loaded
    module after these checks and before anything runs, which sets `training` False on the module
    and on every submodule; and nothing can set it back: `self.training = True` compiles to
    prim::SetAttr and `__setstate__` is refused, both outside what a model may run. Only the flag
    of a module of this archive counts (a TorchScript class could carry a `training` of its own).
    """
    node = value.node()
    if node.kind() != "prim::GetAttr" or node.s("name") != "training":
        return False
    owner = node.inputsAt(0).type()
    return owner.kind() == "ClassType" and cast(torch._C.ClassType, owner).qualified_name() in module_types


def _static_bool(value: torch._C.Value, module_types: set[str]) -> bool | None:
    """The value of a bool that every run of the graph computes the same way, else None: constants,
    the training flag, `not`, and branches on them (BatchNorm passes `self.training`, through a
    branch, as batch_norm's flag)."""
    node = value.node()
    kind = node.kind()
    if kind == "prim::Constant":
        constant = value.toIValue()
        return constant if isinstance(constant, bool) else None
    if _is_training_flag(value, module_types):
        return False
    if kind == "aten::__not__":
        inner = _static_bool(node.inputsAt(0), module_types)
        return None if inner is None else not inner
    if kind == "prim::If":
        position = [output.unique() for output in node.outputs()].index(value.unique())
        branches = list(node.blocks())
        condition = _static_bool(node.inputsAt(0), module_types)
        if condition is not None:
            branches = [branches[0 if condition else 1]]
        results = {_static_bool(list(branch.outputs())[position], module_types) for branch in branches}
        return results.pop() if len(results) == 1 else None
    return None


_STATE_INPUTS = {
    InputKind.PARAMETER: "parameter",
    InputKind.BUFFER: "buffer",
    InputKind.CONSTANT_TENSOR: "constant",
    InputKind.CUSTOM_OBJ: "object",
}
_STATE_OUTPUTS = {OutputKind.BUFFER_MUTATION: "buffer", OutputKind.PARAMETER_MUTATION: "parameter"}


def _first_state_write_in_program(program: torch.export.ExportedProgram) -> str | None:
    """`<operator> on buffer <name>` (or parameter, constant) for the first write into a torch.export
    program's own state, else None.

    Two ways to write: an output the signature marks as a mutation, which the unlifted module copies
    back into the buffer after every call; and an in-place operator on a state placeholder (or a view
    of one), which torch 2.13 keeps in the graph without listing it in the signature.
    """
    signature = program.graph_signature
    for spec in signature.output_specs:
        if spec.kind in _STATE_OUTPUTS:
            return f"an output copied back into {_STATE_OUTPUTS[spec.kind]} {spec.target}"
    names = {
        spec.arg.name: f"{_STATE_INPUTS[spec.kind]} {spec.target}"
        for spec in signature.input_specs
        if spec.kind in _STATE_INPUTS and hasattr(spec.arg, "name")
    }
    flow = _StateFlow()
    _flow_through_fx_graph(flow, program.graph_module, names, set())
    return flow.first_write()


def _flow_through_fx_graph(flow: _StateFlow, graph_module: torch.fx.GraphModule, names: dict, walked: set) -> None:
    """Build the state flow of one fx graph and of the graphs its higher-order operators call.

    Keys are fx nodes. A placeholder named in `names` is state; a subgraph's placeholders are fed,
    in order, by the operands of the higher-order operator that calls it.
    """
    walked.add(id(graph_module))
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            if node.name in names:
                flow.state(node, names[node.name])
        elif node.op == "get_attr":
            if not isinstance(_fx_attribute(graph_module, node.target), torch.fx.GraphModule):
                flow.state(node, f"attribute {node.target}")  # a tensor kept on the module, not lifted
        elif node.op == "call_function":
            _flow_through_fx_call(flow, graph_module, node, names, walked)


def _flow_through_fx_call(flow: _StateFlow, graph_module, node: torch.fx.Node, names: dict, walked: set) -> None:
    """Record one fx call: its schema's writes and aliases, or how a higher-order operator's subgraphs
    see their operands and give back their outputs."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        # A packet runs whichever overload fits its arguments: trace them all.
        if isinstance(target, torch._ops.OpOverload):
            overloads = [target]
        else:
            overloads = [getattr(target, overload) for overload in target.overloads()]
        for overload in overloads:
            schema = overload._schema
            values = [_fx_argument(node, index, argument) for index, argument in enumerate(schema.arguments)]
            inputs = [_fx_nodes(value) for value in values]
            flag_is_false = functools.partial(_fx_flag_is_false, values)
            plan = _overload_plan(overload)
            _flow_through_schema(flow, schema.name, plan, inputs, [node] * len(schema.returns), flag_is_false)
        return
    operands = _fx_nodes((node.args, node.kwargs))
    subgraphs = []
    if isinstance(target, torch._ops.HigherOrderOperator):
        for operand in operands:
            # A get_attr node's target is the attribute's dotted path.
            called = _fx_attribute(graph_module, cast(str, operand.target)) if operand.op == "get_attr" else None
            if isinstance(called, torch.fx.GraphModule):
                subgraphs.append((operand, called))
    if not subgraphs:
        # getitem picks one output of a call, size arithmetic makes numbers: either way the result
        # may refer to what the operands refer to.
        for operand in operands:
            flow.edge(_THROUGH, operand, node)
        return
    # Subgraphs take the operands that follow them (cond: pred, true_fn, false_fn, operands).
    first = operands.index(subgraphs[0][0])
    called_nodes = {id(operand) for operand, _ in subgraphs}
    passed = [operand for operand in operands[first:] if id(operand) not in called_nodes]
    for _, called in subgraphs:
        if id(called) not in walked:
            _flow_through_fx_graph(flow, called, {}, walked)
        placeholders = [inner for inner in called.graph.nodes if inner.op == "placeholder"]
        if len(placeholders) == len(passed):
            pairs = list(zip(passed, placeholders, strict=True))
        else:  # an arrangement this walk does not know: every operand may reach every placeholder
            pairs = [(operand, placeholder) for operand in operands for placeholder in placeholders]
        for operand, placeholder in pairs:
            flow.edge(_ALIAS, operand, placeholder)
    # What a subgraph returns is the higher-order operator's result, and (while_loop, scan) what its
    # next iteration takes.
    for _, called in subgraphs:
        for inner in called.graph.nodes:
            if inner.op == "output":
                for returned in _fx_nodes(inner.args):
                    flow.edge(_ALIAS, returned, node)
                    for _, receiving in subgraphs:
                        for placeholder in receiving.graph.nodes:
                            if placeholder.op == "placeholder":
                                flow.edge(_ALIAS, returned, placeholder)


def _fx_flag_is_false(values: list, index: int) -> bool:
    """Whether an fx call passes the literal False at `index` (a symbolic bool could be true)."""
    return values[index] is False


def _fx_attribute(graph_module: torch.fx.GraphModule, target: str):
    """The object a get_attr node names (a dotted path below the graph module), or None."""
    found: object = graph_module
    for part in target.split("."):
        found = getattr(found, part, None)
    return found


def _fx_argument(node: torch.fx.Node, index: int, argument):
    """The value an fx node passes as the schema's argument at `index`, positionally or by name."""
    if not argument.kwarg_only and index < len(node.args):
        return node.args[index]
    return node.kwargs.get(argument.name)


def _fx_nodes(value) -> list[torch.fx.Node]:
    """The fx nodes inside an argument (a node, or lists, tuples and dicts of them)."""
    found: list[torch.fx.Node] = []
    map_aggregate(value, lambda item: found.append(item) if isinstance(item, torch.fx.Node) else None)
    return found
