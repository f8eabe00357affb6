"""One registration per op: its custom op (torch.compile) and its eager autograd.Function, from one definition.

An op declares four functions once: ``forward(*inputs)`` (checks done, runs the kernels), ``fake(*inputs)``
(empty outputs of the right shapes, for tracing), ``setup_context(ctx, inputs, output)`` (what backward
needs) and ``backward(ctx, *grads)``. ``register`` turns them into

- an opaque ``torch.library.custom_op`` with that fake and that autograd: Dynamo cannot trace into Triton
  launches under the interpreter, where CI runs (fake tensors reach the kernel), and
  ``torch.library.triton_op``, which would let Inductor see the kernel, has the same problem there; an
  opaque op compiles with zero graph breaks and runs the same kernels;
- an ``autograd.Function`` built from the same four functions, which eager calls use: the custom op's
  dispatch costs several times more host time on every call, and an eager step pays it a dozen times.

``register`` returns ``call(*inputs)``, which picks the custom op while torch.compile traces and the
autograd.Function otherwise. Inputs may be tensors, lists of tensors (each tensor gets its gradient, as a
list) and plain values; outputs a tensor or a tuple of them.

A backward that launches kernels itself registers them with ``register_opaque``: an op with no autograd of
its own, which the call runs while ``compiling()`` (torch.compile traces the backward with fake tensors,
which must not reach a kernel) and bypasses otherwise.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch

__all__ = ["register", "register_opaque", "compiling"]


_opaque = threading.local()   # depth of custom-op backwards running on this thread


def compiling() -> bool:
    """True while torch.compile traces, and inside a registered custom op's backward: AOTAutograd traces
    that backward with fake tensors where ``torch.compiler.is_compiling()`` can be False, so its kernels must
    go through their opaque op there too. Eager calls use the autograd.Function, whose backward this never
    sees."""
    return torch.compiler.is_compiling() or getattr(_opaque, "depth", 0) > 0


def _custom_op(name: str, forward: Callable, fake: Callable):
    op = torch.library.custom_op(name, forward, mutates_args=())
    op.register_fake(fake)
    return op


def register_opaque(name: str, forward: Callable, *, fake: Callable) -> Callable:
    """Register ``name`` as an op without autograd (a backward's kernels); returns the call to use: the op
    while ``compiling()``, ``forward`` itself otherwise."""
    op = _custom_op(name, forward, fake)

    def call(*inputs):
        return op(*inputs) if compiling() else forward(*inputs)

    call.op = op
    return call


def register(name: str, forward: Callable, *, fake: Callable, setup_context: Callable, backward: Callable,
             ) -> Callable:
    """Register ``name`` (``"fastgan::op"``) from its four functions; returns the call to use."""
    op = _custom_op(name, forward, fake)

    def op_backward(ctx, *grads):
        _opaque.depth = getattr(_opaque, "depth", 0) + 1
        try:
            return backward(ctx, *grads)
        finally:
            _opaque.depth -= 1

    op.register_autograd(op_backward, setup_context=setup_context)

    arguments = op._opoverload._schema.arguments
    lists = tuple(i for i, argument in enumerate(arguments) if str(argument.type) == "List[Tensor]")
    eager = _function(name, forward, setup_context, backward, len(arguments), lists)

    if lists:
        def call(*inputs):
            return op(*inputs) if compiling() else eager.apply(*_flatten(inputs, lists))
    else:
        def call(*inputs):
            return op(*inputs) if compiling() else eager.apply(*inputs)

    call.op, call.function = op, eager
    return call


def _flatten(inputs, lists):
    """The inputs as ``autograd.Function.apply`` takes them: each list of tensors replaced by its length,
    its tensors appended (autograd tracks only tensors passed one by one)."""
    head, tail = list(inputs), []
    for i in lists:
        tail += head[i]
        head[i] = len(head[i])
    return (*head, *tail)


def _function(name, forward, setup_context, backward, arity, lists):
    """The eager autograd.Function of the op's four functions (inputs as ``_flatten`` passes them)."""

    def regroup(values, lengths):
        """``arity`` values, then the lists' own: as the op's inputs (lists at their places)."""
        inputs, start = list(values[:arity]), arity
        for i, length in zip(lists, lengths):
            inputs[i], start = list(values[start:start + length]), start + length
        return tuple(inputs)

    def eager_forward(ctx, *args):
        # an unused output's gradient stays None (the backwards ignore those of the non-differentiable
        # outputs) rather than a tensor of zeros filled on every backward
        ctx.set_materialize_grads(False)
        if lists:
            ctx.list_lengths = [args[i] for i in lists]
            args = regroup(args, ctx.list_lengths)
        output = forward(*args)
        setup_context(ctx, args, output)
        return output

    def eager_backward(ctx, *grads):
        if not lists:
            return backward(ctx, *grads)
        needs_input_grad = ctx.needs_input_grad
        ctx.needs_input_grad = regroup(needs_input_grad, ctx.list_lengths)   # as the custom op's backward has it
        try:
            grad_inputs = list(backward(ctx, *grads))
        finally:
            ctx.needs_input_grad = needs_input_grad
        tail = []
        for i, length in zip(lists, ctx.list_lengths):
            tail += grad_inputs[i] if grad_inputs[i] is not None else [None] * length
            grad_inputs[i] = None
        return (*grad_inputs, *tail)

    return type(name.replace("::", "_") + "_function", (torch.autograd.Function,),
                {"forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)})
