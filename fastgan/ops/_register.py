"""One registration per op: its custom op (torch.compile) and its eager autograd.Function, from one definition.

An op declares four functions once: ``forward(*inputs)`` (checks done, runs the Triton kernels),
``fake(*inputs)`` (empty outputs of the right shapes, for tracing), ``setup_context(ctx, inputs, output)``
(what backward needs) and ``backward(ctx, *grads)``. ``register`` turns them into

- an opaque ``torch.library.custom_op`` with that fake and that autograd: Dynamo cannot trace into Triton
  launches under the interpreter, where CI runs (fake tensors reach the kernel), and
  ``torch.library.triton_op``, which would let Inductor see the kernel, has the same problem there; an
  opaque op compiles with zero graph breaks and runs the same kernels;
- an ``autograd.Function`` built from the same four functions, which eager calls use: the custom op's
  dispatch costs more on every call (measured on the 2-core CI CPU with the launches stubbed out: forward
  19 us vs 6 us, forward + backward 62 us vs 30 us), and an eager step pays it a dozen times.

``register`` returns ``call(*inputs)``, which picks the custom op while torch.compile traces and the
autograd.Function otherwise. A backward that launches kernels itself asks ``compiling()``: while
torch.compile traces the backward, its kernels must go through an opaque op of their own.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch

__all__ = ["register", "compiling"]


_opaque = threading.local()   # depth of custom-op backwards running on this thread


def compiling() -> bool:
    """True while torch.compile traces, and inside a registered custom op's backward: AOTAutograd traces
    that backward with fake tensors where ``torch.compiler.is_compiling()`` can be False (the first GPU
    run: torch 2.11 traced the head's backward into a raw Triton launch), so its kernels must go through
    their opaque op there too. Eager calls use the autograd.Function, whose backward this never sees."""
    return torch.compiler.is_compiling() or getattr(_opaque, "depth", 0) > 0


def register(name: str, forward: Callable, *, fake: Callable, setup_context: Callable, backward: Callable,
             ) -> Callable:
    """Register ``name`` (``"fastgan::op"``) from its four functions; returns the call to use."""
    op = torch.library.custom_op(name, forward, mutates_args=())
    op.register_fake(fake)

    def op_backward(ctx, *grads):
        _opaque.depth = getattr(_opaque, "depth", 0) + 1
        try:
            return backward(ctx, *grads)
        finally:
            _opaque.depth -= 1

    op.register_autograd(op_backward, setup_context=setup_context)

    def eager_forward(ctx, *inputs):
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    eager = type(name.replace("::", "_") + "_function", (torch.autograd.Function,),
                 {"forward": staticmethod(eager_forward), "backward": staticmethod(backward)})

    def call(*inputs):
        return op(*inputs) if compiling() else eager.apply(*inputs)

    call.op, call.function = op, eager
    return call
