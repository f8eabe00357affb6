"""Elementwise math shared by the kernels, accurate to a few fp32 ulps on the interpreter *and* on a GPU.

On a GPU ``tl.exp(x)`` compiles to ``ex2.approx.f32(x * log2(e))``: the hardware exp2 is good to about
2 ulps, but rounding the product ``x * log2(e)`` costs ``|x|`` times more, so ``exp(-80)`` is off by about
40 ulps; and ``1 - exp(-2|x|)`` (the textbook tanh) cancels for small ``|x|``. The interpreter computes
``exp`` exactly in NumPy and hides both. So:

- ``exp_neg(a) = exp(-a)`` for ``a >= 0`` reduces its argument first (Cody and Waite, as Cephes' ``expf``):
  ``a = k ln2 + r`` with ``|r| <= ln2 / 2``, ``k ln2`` split in two constants so ``k * LN2_HI`` is exact;
  then ``exp(-r)`` (the hardware exp on a small argument: about 2 ulps) times ``2^-k`` built from its bits
  (exact). Error: about 2 ulps over the whole range, and ``exp(-a)`` for ``a`` up to 100 (a subnormal
  result) instead of an early flush to 0.
- ``tanh``: an odd polynomial ``x + x^3 P(x^2)`` for ``|x| < 0.625`` (fitted to minimise the relative error:
  0.71 ulp in fp32 arithmetic, no cancellation near 0, ``tanh(x) = x`` exactly for tiny ``x``), and
  ``(1 - e) / (1 + e)``, ``e = exp_neg(2|x|) <= 0.29``, above it (no cancellation there).
- ``sigmoid``: ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp_neg(|x|)``: never overflows, and the small
  tail (``x`` very negative) keeps its relative accuracy. Divisions are ``div_rn`` (correctly rounded;
  a plain ``/`` is ``div.full.f32``, 2 ulps): the epilogue's cost is nothing beside its matmul.
- ``bce_with_logits``: the loss and its gradient, shared by ``ops/bce.py`` and ``ops/head.py``.
- ``expm1``: Kahan's ``(u - 1) x / log(u)``; Adam's bias corrections ``1 - beta^t = -expm1(t log beta)``.
- Derivatives from the output: ``sigmoid' = y (1 - y)`` (``1 - y`` is exact for ``y >= 1/2``) and
  ``tanh' = (1 - |y|)(1 + |y|)``, not ``1 - y^2``, which cancels where ``|y|`` is near 1.
"""
from __future__ import annotations

from ._runtime import HAS_TRITON, triton, tl

# Cody-Waite split of ln 2 (Cephes expf): LN2_HI has 9 significant bits, so k * LN2_HI is exact for the
# k <= 145 used here; LN2_LO = ln 2 - LN2_HI.
LN2_HI, LN2_LO, LOG2E = 0.693359375, -2.12194440e-4, 1.4426950408889634
# tanh(x) = x + x^3 P(x^2) on |x| < TANH_POLY_LIMIT; P's coefficients, lowest degree first (fitted in
# float64 by iteratively re-weighted least squares on the relative error; max 0.71 ulp in fp32 Horner).
TANH_POLY_LIMIT = 0.625
TANH_POLY = (-0.3333333134651184, 0.13333210349082947, -0.05394720286130905, 0.021702965721488,
             -0.00818267185240984, 0.00214753532782197)
# exp_neg clamps its argument here: exp(-100) = 3.7e-44 is already subnormal in fp32.
EXP_NEG_LIMIT = 100.0

if HAS_TRITON:
    # The kernels read these as compile-time constants.
    _LN2_HI, _LN2_LO, _LOG2E = tl.constexpr(LN2_HI), tl.constexpr(LN2_LO), tl.constexpr(LOG2E)
    _EXP_NEG_LIMIT, _TANH_POLY_LIMIT = tl.constexpr(EXP_NEG_LIMIT), tl.constexpr(TANH_POLY_LIMIT)
    _P0, _P1, _P2, _P3, _P4, _P5 = (tl.constexpr(c) for c in TANH_POLY)

    @triton.jit
    def exp_neg(a):
        """``exp(-a)`` for ``a >= 0`` (fp32), argument-reduced so the hardware exp sees ``|r| <= ln2/2``."""
        a = tl.minimum(a, _EXP_NEG_LIMIT)
        k = tl.floor(a * _LOG2E + 0.5)
        r = (a - k * _LN2_HI) - k * _LN2_LO
        ki = k.to(tl.int32)
        half = ki // 2
        # 2^-k as two normal powers of two (k <= 145 would underflow one): exact, from their bit patterns
        scale_1 = ((127 - half) << 23).to(tl.float32, bitcast=True)
        scale_2 = ((127 - (ki - half)) << 23).to(tl.float32, bitcast=True)
        return tl.exp(-r) * scale_1 * scale_2

    @triton.jit
    def expm1(x):
        """``exp(x) - 1``, accurate near 0 (Kahan): ``(u - 1) x / log(u)`` with ``u = exp(x)`` is exact to
        rounding even where ``u`` itself is a few ulps off (the ratio varies slowly in ``u``)."""
        u = tl.exp(x)
        um1 = u - 1.0
        ratio = tl.div_rn(um1, tl.where(um1 == 0.0, 1.0, tl.log(u)))
        return tl.where(um1 == 0.0, x, tl.where(u == 0.0, -1.0, ratio * x))

    @triton.jit
    def sigmoid(z):
        e = exp_neg(tl.abs(z))
        inverse = tl.div_rn(1.0, 1.0 + e)  # correctly rounded: '/' is div.full.f32 (2 ulps) on a GPU
        return tl.where(z >= 0, inverse, e * inverse)

    @triton.jit
    def tanh(z):
        a = tl.abs(z)
        s = z * z
        p = _P5
        p = p * s + _P4
        p = p * s + _P3
        p = p * s + _P2
        p = p * s + _P1
        p = p * s + _P0
        small = z + z * (s * p)
        e = exp_neg(2.0 * a)
        large = tl.div_rn(1.0 - e, 1.0 + e)
        large = tl.where(z < 0, -large, large)
        return tl.where(a < _TANH_POLY_LIMIT, small, large)

    @triton.jit
    def sigmoid_derivative_from_output(y):
        return y * (1.0 - y)

    @triton.jit
    def tanh_derivative_from_output(y):
        a = tl.abs(y)
        return (1.0 - a) * (1.0 + a)

    @triton.jit
    def bce_with_logits(x, t):
        """``(loss, d loss / dx)`` of binary cross-entropy on logits ``x`` against targets ``t`` (fp32).

        loss = max(x, 0) - x t + log1p(e), e = exp(-|x|) in (0, 1]: no overflow for any x; log1p by
        Kahan's ``log(u) e / (u - 1)``, u = 1 + e, exact to rounding. The gradient sigmoid(x) - t is formed
        as (1 - t) - sigmoid(-x) for x >= 0: with t = 1 and a confident D, ``1/u - 1`` would cancel to a
        few correct digits (1e-4 relative at x = 8), ``-e/u`` keeps them all.
        """
        e = exp_neg(tl.abs(x))
        u = 1.0 + e
        log1p_e = tl.where(u == 1.0, e, tl.div_rn(tl.log(u) * e, tl.where(u == 1.0, 1.0, u - 1.0)))
        loss = tl.maximum(x, 0.0) - x * t + log1p_e
        sigmoid_of_minus_abs = tl.div_rn(e, u)
        grad = tl.where(x >= 0, (1.0 - t) - sigmoid_of_minus_abs, sigmoid_of_minus_abs - t)
        return loss, grad
