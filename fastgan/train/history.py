"""LossLog: the losses of every step, kept on the device until they are read in one sync."""
from __future__ import annotations

import torch

__all__ = ["LossLog"]


class LossLog:
    """Steps append their device losses; ``flush`` reads everything pending with one host sync.

    ``history`` holds ``{"step": [...], "loss_d": [...], "loss_g": [...]}`` of every flushed step. An eager
    step adds one ``(step, loss_d, loss_g)``; a graph replay adds ``(first step, (k, 2) losses)``.
    Pending entries are flushed by themselves every ``bound`` entries, so an un-logged run stays bounded.
    """

    def __init__(self, bound: int = 10_000):
        self.history: dict[str, list] = {"step": [], "loss_d": [], "loss_g": []}
        self.pending: list[tuple] = []
        self.bound = bound

    def add_step(self, step: int, loss_d: torch.Tensor, loss_g: torch.Tensor) -> None:
        self.pending.append((step, loss_d, loss_g))
        self._keep_bounded()

    def add_replay(self, first_step: int, losses: torch.Tensor) -> None:
        self.pending.append((first_step, losses))
        self._keep_bounded()

    def _keep_bounded(self) -> None:
        if len(self.pending) >= self.bound:
            self.flush()

    def flush(self) -> list[tuple[int, float, float]]:
        """Read the pending losses (one sync) into ``history``; returns the new ``(step, d, g)`` rows."""
        if not self.pending:
            return []
        steps, blocks = [], []
        for entry in self.pending:
            if len(entry) == 3:
                steps.append(entry[0])
                blocks.append(torch.stack(entry[1:])[None])
            else:
                steps.extend(range(entry[0], entry[0] + entry[1].shape[0]))
                blocks.append(entry[1])
        values = torch.cat(blocks).float().cpu().tolist()
        self.pending.clear()
        rows = [(s, d, g) for s, (d, g) in zip(steps, values)]
        for s, d, g in rows:
            self.history["step"].append(s)
            self.history["loss_d"].append(d)
            self.history["loss_g"].append(g)
        return rows

    def reset(self, history: dict | None = None) -> None:
        """Drop what is pending; start from ``history`` (a checkpoint's) or from nothing."""
        self.pending.clear()
        self.history = {k: list((history or {}).get(k, [])) for k in ("step", "loss_d", "loss_g")}
