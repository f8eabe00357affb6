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

from collections.abc import Callable

import torch

__all__ = ["register", "compiling"]


def compiling() -> bool:
    return torch.compiler.is_compiling()


def register(name: str, forward: Callable, *, fake: Callable, setup_context: Callable, backward: Callable,
             ) -> Callable:
    """Register ``name`` (``"fastgan::op"``) from its four functions; returns the call to use."""
    op = torch.library.custom_op(name, forward, mutates_args=())
    op.register_fake(fake)
    op.register_autograd(backward, setup_context=setup_context)

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
