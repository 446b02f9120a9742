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
  archives that define it are refused before loading (models_app/archives.py).
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
"""

import math
import operator

import torch
from torch.fx.node import map_aggregate

from gridnode.errors import BadRequest

# TorchScript's own IR: constants, reading the module's attributes, control flow, containers and
# casts. They compute nothing outside the interpreter's values; RaiseException makes a model's own
# `raise` a 400 for the caller.
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
    "prim::Uninitialized",
    "prim::unchecked_cast",
    "prim::unchecked_unwrap_optional",
    "prim::RaiseException",
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


def refusal(name: str) -> BadRequest:
    """The 400 for a model that uses an operator outside the allowlist (names are short, never data)."""
    return BadRequest(REFUSED_MESSAGE.format(name=name[:200]))


def check_script_module(module: torch.jit.ScriptModule) -> None:
    """A 400 naming the first operator outside the allowlist that a TorchScript module could run.

    Every method and hook of the module and of its submodules is walked with its calls inlined;
    submodules of one class share their compiled methods, so each class's methods are walked once.
    """
    seen: set[tuple[str, str]] = set()
    for submodule in module.modules():
        compiled = submodule._c
        type_name = compiled._type().qualified_name()
        graphs = [
            (name, compiled._get_method(name).graph)
            for name in sorted(compiled._method_names(), key=lambda name: (name != "forward", name))
        ]
        graphs += [
            (f"hook:{hook.name}", hook.graph)
            for hook in [*compiled._get_forward_pre_hooks(), *compiled._get_forward_hooks()]
        ]
        for name, graph in graphs:
            if (type_name, name) in seen:
                continue
            seen.add((type_name, name))
            refused = _first_refused_in_graph(graph)
            if refused is not None:
                raise refusal(refused)


def _first_refused_in_graph(graph: torch._C.Graph) -> str | None:
    inlined = graph.copy()
    torch._C._jit_pass_inline(inlined)
    return _first_refused_in_block(inlined)


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
    """A 400 naming the first operator outside the allowlist that a torch.export program could run."""
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
