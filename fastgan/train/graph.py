"""Capturing whole training steps in one CUDA graph.

``GraphedStep`` warms the step up eagerly on a side stream (so lazily created optimizer state exists and
every Triton kernel is autotuned before capture), then captures ``steps_per_replay`` consecutive steps
into one graph. Each replay runs them all with one launch: batch indices, noise, both forward/backward
passes and both optimizer updates. The trainer's RNG is registered with the graph, so every replay
draws fresh batches and fresh noise (the generator's offset advances by what the graph consumed), and
the losses land in one static ``(steps_per_replay, 2)`` tensor that is copied out after each replay, so
reading them never needs a sync per step.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GraphedStep"]

StepFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class GraphedStep:
    def __init__(self, step: StepFn, rng: torch.Generator | list[torch.Generator], device: torch.device,
                 steps_per_replay: int = 1, warmup: int = 3):
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.step, self.rng, self.device = step, rng, device
        self.steps_per_replay, self.warmup = steps_per_replay, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.losses: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def reset(self) -> None:
        """Forget the graph (after a load or a batch-size change); the next ``capture`` records anew."""
        self.graph = None
        self.losses = None

    def warm_up(self, first_index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``warmup`` eager steps on a side stream; returns their losses. They are real training steps."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            results = [self.step(first_index + i) for i in range(self.warmup)]
        torch.cuda.current_stream(self.device).wait_stream(side)
        return results

    def capture(self, first_index: int) -> None:
        """Record ``steps_per_replay`` steps (nothing runs until ``replay``)."""
        graph = torch.cuda.CUDAGraph()
        if not hasattr(graph, "register_generator_state"):
            raise RuntimeError("this PyTorch cannot capture a user-supplied torch.Generator in a CUDA graph "
                               "(CUDAGraph.register_generator_state is missing); use cuda_graph=False")
        for rng in self.rng if isinstance(self.rng, list) else [self.rng]:
            graph.register_generator_state(rng)
        try:
            with torch.cuda.graph(graph):
                losses = [torch.stack(self.step(first_index + j)) for j in range(self.steps_per_replay)]
                self.losses = torch.stack(losses)
        except Exception as e:
            self.reset()
            raise RuntimeError(f"capturing the training step in a CUDA graph failed: {e}. Every op of the step "
                               "must be capturable (no host syncs, no CPU tensors, static shapes); "
                               "cuda_graph=False runs the same step without capture") from e
        self.graph = graph

    def replay(self) -> torch.Tensor:
        """Run the captured steps; returns a copy of their ``(steps_per_replay, 2)`` losses (D, G)."""
        self.graph.replay()
        return self.losses.clone()
