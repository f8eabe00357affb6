"""Triton kernel of ``adam_step`` (``ops/adam.py`` holds the launcher, the reference and the checks).

The moments live in fp32 or bf16 buffers (the pointer's type decides, at compile time). bf16 moments are
computed in fp32 and stored stochastically rounded: the 16 bits dropped are compared with 16 random bits, so the
stored value is the fp32 one in expectation. Round-to-nearest would lose every change smaller than half a bf16
step (2^-9 to 2^-8 of the value): at beta2 = 0.999, ``v`` moves by 1e-3 of ``g^2 - v`` an update, and would stall.
The bits are a hash of the element's index in its buffer (its row, with replicas: replica k draws its single
run's bits), the update number and the moment: ``ops.adam.stochastic_round_bf16`` computes the same with
PyTorch ops."""
from __future__ import annotations

from . import _math
from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    @triton.jit
    def adam_factors(step, lr, log_beta1, log_beta2):
        """``(step_size, sqrt(bias correction 2))`` of update number ``step`` (fp32)."""
        # 1 - beta^t as -expm1(t log beta): 1 - exp(t log beta) loses ~1e-4 relative at t = 1, beta2 = 0.999
        # on a GPU, whose exp is approximate; sqrt_rn and div_rn round as torch.optim.Adam's CUDA math does.
        bias_correction1 = -_math.expm1(step * log_beta1)
        bias_correction2_sqrt = tl.sqrt_rn(-_math.expm1(step * log_beta2))
        return tl.div_rn(lr, bias_correction1), bias_correction2_sqrt

    @triton.jit
    def adam_update(p, g, m, v, step_size, bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps,
                    weight_decay, shrink, l1):
        """One Adam update of values ``p`` with gradient ``g`` and moments ``m``, ``v``: ``(p, m, v)`` after it.
        Every kernel that updates parameters calls this, so they agree bit for bit."""
        g += weight_decay * p
        g += l1 * tl.where(p > 0, 1.0, tl.where(p < 0, -1.0, 0.0))
        p = p * shrink
        m = m + one_minus_beta1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        p = p - step_size * tl.div_rn(m, tl.div_rn(tl.sqrt_rn(v), bias_correction2_sqrt) + eps)
        return p, m, v

    @triton.jit
    def _hash32(x):
        """lowbias32 (C. Wellons' integer hash) of uint32 ``x``: ``ops.adam._hash32``'s arithmetic."""
        x ^= x >> 16
        x *= 0x7FEB352D
        x ^= x >> 15
        x *= 0x846CA68B
        x ^= x >> 16
        return x

    @triton.jit
    def stochastic_round_bf16(x, index, key):
        """fp32 ``x`` rounded to a bf16 value (returned as fp32: exact in bf16), up with probability equal to its
        distance from the bf16 value below in units of the gap; ``index`` (int64) and ``key`` (uint32) pick the
        bits. NaN stays NaN, infinities stay; a finite value lands on one of its two bf16 neighbours."""
        bits = x.to(tl.uint32, bitcast=True)
        noise = _hash32(index.to(tl.uint32) ^ _hash32(key)) & 0xFFFF
        rounded = ((bits + noise) & 0xFFFF0000).to(tl.float32, bitcast=True)
        return tl.where(x != x, x, rounded)

    @triton.jit
    def load_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, mask):
        """The moments at ``offs`` as fp32 (bf16 buffers widened: exact)."""
        return (tl.load(exp_avg_ptr + offs, mask=mask, other=0.0).to(tl.float32),
                tl.load(exp_avg_sq_ptr + offs, mask=mask, other=0.0).to(tl.float32))

    @triton.jit
    def store_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, m, v, mask, step):
        """``m``, ``v`` stored at ``offs``: as they are in fp32 buffers, stochastically rounded (update ``step``,
        an int) in bf16 ones."""
        if exp_avg_ptr.dtype.element_ty == tl.bfloat16:
            key = (step * 2).to(tl.uint32)
            m = stochastic_round_bf16(m, offs, key)
            v = stochastic_round_bf16(v, offs, key + 1)
        tl.store(exp_avg_ptr + offs, m.to(exp_avg_ptr.dtype.element_ty), mask=mask)
        tl.store(exp_avg_sq_ptr + offs, v.to(exp_avg_sq_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def adam_hyper_row(hyper_ptr, replica):
        """Replica ``replica``'s row of a ``replica_adam_hyper`` table: (lr, 1 - beta1, beta2, 1 - beta2,
        log beta1, log beta2, 1 - lr * decoupled weight decay)."""
        h = hyper_ptr + replica * 7
        return tl.load(h), tl.load(h + 1), tl.load(h + 2), tl.load(h + 3), tl.load(h + 4), tl.load(h + 5), \
            tl.load(h + 6)

    @triton.jit
    def _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, offs, mask, n, step, step_size,
                    bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink, l1,
                    PARTIALS: tl.constexpr):
        """The update (number ``step``) of the elements at ``offs`` of one buffer; the gradient's partial sums
        ``n`` apart."""
        p = tl.load(param_ptr + offs, mask=mask, other=0.0)
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
        for s in tl.static_range(1, PARTIALS):
            g += tl.load(grad_ptr + s * n.to(tl.int64) + offs, mask=mask, other=0.0)
        m, v = load_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, mask)
        p, m, v = adam_update(p, g, m, v, step_size, bias_correction2_sqrt, one_minus_beta1, beta2,
                              one_minus_beta2, eps, weight_decay, shrink, l1)
        tl.store(param_ptr + offs, p, mask=mask)
        store_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, m, v, mask, step)

    @triton.jit
    def _adam_row(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, pid, programs, n, n_whole, step, step_size,
                  bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink, l1,
                  BLOCK: tl.constexpr, PARTIALS: tl.constexpr):
        """Program ``pid`` of ``programs``' share of one buffer of ``n`` elements: the whole blocks below
        ``n_whole`` (mask ``offs < n_whole``, the same over every 16 elements: 16-byte accesses), then, in the
        last program, the partial block."""
        for start in range(pid * BLOCK, n_whole, programs * BLOCK):
            offs = start + tl.arange(0, BLOCK).to(tl.int64)
            _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, offs, offs < n_whole, n, step, step_size,
                        bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink,
                        l1, PARTIALS)
        if pid == programs - 1 and n_whole < n:
            offs = n_whole + tl.arange(0, BLOCK).to(tl.int64)
            _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, offs, offs < n, n, step, step_size,
                        bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink,
                        l1, PARTIALS)

    @triton.jit
    def _adam_step_kernel(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, counter_ptr, n, n_whole,
                          lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, eps, weight_decay,
                          shrink, l1,
                          BLOCK: tl.constexpr, PARTIALS: tl.constexpr = 1):
        """``shrink`` = 1 - lr * decoupled weight decay (AdamW), ``l1``: l1 sign(p) joins the gradient.

        ``1 - beta`` comes from the host, formed in float64: in the kernel, ``1 - beta2`` of beta2 = 0.999
        rounded to fp32 is off by 1.3e-5 relative, which the first GPU run measured in every update
        (6.4e-6 relative after the square root), against a bias correction formed from the exact beta.

        With PARTIALS > 1 the gradient is the sum of PARTIALS copies ``n`` apart (a split reduction's
        partial sums, added here in a fixed order: deterministic, and no separate reduction launch).

        ``n_whole``: the elements in whole blocks (``n`` rounded down to a multiple of BLOCK), looped over with a
        mask that keeps the accesses 16 bytes wide (``_adam_row``; with ``offs < n`` of an odd ``n`` every access
        was 4 bytes)."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        old = tl.atomic_add(counter_ptr, 1)
        step = old // programs + 1
        step_size, bias_correction2_sqrt = adam_factors(step.to(tl.float32), lr, log_beta1, log_beta2)
        _adam_row(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, pid, programs, n, n_whole, step, step_size,
                  bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink, l1,
                  BLOCK, PARTIALS)

    @triton.jit
    def _replica_adam_kernel(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, counter_ptr, hyper_ptr, n, n_whole,
                             eps, l1, BLOCK: tl.constexpr, PARTIALS: tl.constexpr = 1):
        """``_adam_step_kernel``'s update of K replicas' ``(K, n)`` buffers, each row with its own
        hyper-parameters: ``hyper`` is ``(K, 7)``, (lr, 1 - beta1, beta2, 1 - beta2, log beta1, log beta2,
        1 - lr * decoupled weight decay) per replica, formed on the host in float64 as that kernel's arguments
        are, so a replica's arithmetic is its single run's FlatAdam's. The grid: programs over a row x
        replicas; the step count is the counter over the whole grid. With PARTIALS > 1 replica r's gradient
        is the sum of its PARTIALS copies ``n`` apart (``grad`` is ``(K, PARTIALS, n)``), added in order. Each
        row by ``_adam_row`` (its accesses 16 bytes wide where ``n`` is a multiple of 16,
        so that rows start 16-byte aligned: G's classic 130,576 parameters, not D's 117,121)."""
        pid = tl.program_id(0)
        replica = tl.program_id(1).to(tl.int64)
        programs = tl.num_programs(0)
        old = tl.atomic_add(counter_ptr, 1)
        step = old // (programs * tl.num_programs(1)) + 1
        lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, shrink = adam_hyper_row(hyper_ptr, replica)
        step_size, bias_correction2_sqrt = adam_factors(step.to(tl.float32), lr, log_beta1, log_beta2)
        row = replica * n.to(tl.int64)
        param_ptr += row
        grad_ptr += row * PARTIALS
        exp_avg_ptr += row
        exp_avg_sq_ptr += row
        _adam_row(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, pid, programs, n, n_whole, step, step_size,
                  bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, 0.0, shrink, l1,
                  BLOCK, PARTIALS)
