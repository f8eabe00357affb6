"""Triton kernels of the whole-MLP op (``ops/mlp.py`` holds the launchers, checks and autograd glue).

An MLP of L layers ``y_l = act_l(y_{l-1} W_l^T + b_l)`` is described to the kernels by its parameters in
one flat fp32 buffer (layer l: W_l row-major (d_out, d_in), then b_l) and per layer ``(d_in, d_out,
w_offset, column)``: ``column`` is where layer l's outputs sit in the (rows, S) buffers of saved outputs
``acts`` (hidden layers) and pre-activation gradients ``g`` (every layer). The rows kernel takes them as
compile-time constants (``DIMS``, ``W_OFFS``, ``COLS``: one compile per model shape, whose loop bounds and
offsets the compiler knows: 16-byte loads, software pipelining); the weight-gradient kernel, whose grid
walks the layers, reads them from an int64 table ``meta``.

``_mlp_rows_kernel``: a block of ``BLOCK_M`` rows through every layer — forward (each layer's output
saved, as the per-layer op saves its output), then optionally the sigmoid-BCE loss of a width-1 last layer
(per-row targets and weights; the loss's partial sum per row block, its gradient as the last layer's g) and
the backward chain g_{l-1} = (g_l W_l) * act'(y_{l-1}), down to dX if asked. A layer's outputs are written
by some warps and read by others of the same program, hence ``tl.debug_barrier()`` (``__syncthreads``)
between layers; what crosses layers goes through the row block's own rows of ``acts``/``g`` (L1/L2 at GAN
sizes). Row blocks never meet, but at GAN batch sizes they are a few programs for a GPU of 132 SMs: so
the grid's second axis cuts the MLP's wide end (D's 784 inputs, G's 784 outputs) into slices, one program
each. Their partial sums meet through ``part``: the last program of a row block to arrive (an atomic
count) adds them in slice order (deterministic) and runs the narrow rest alone; no program ever waits.

``_mlp_weight_grad_kernel``: dW_l = g_l^T Y_{l-1} and db_l = sum g_l for every layer in one launch (grid:
tile x layer x batch split). Written, never accumulated: split s writes its own copy of the gradient
(``split_stride`` apart) and the reader (``adam_step(..., partials=S)`` or a sum) adds the copies in a fixed
order, so the result is deterministic. It also sums the rows kernel's per-program losses into the loss.
"""
from __future__ import annotations

from . import _math
from ._runtime import HAS_TRITON, matmul_configs, triton, tl

ROWS_BLOCK_MAX = 32   # the rows kernel's largest BLOCK_M: the launcher sizes the slices for it

if HAS_TRITON:
    from .adam_kernels import adam_factors, adam_hyper_row, adam_update, load_moments, store_moments
    from .linear_kernels import _activate, _activation_grad

    @triton.jit
    def _dot(a, b, acc, PRECISION: tl.constexpr, BF16: tl.constexpr):
        """acc + a @ b with fp32 operands: tf32/ieee per PRECISION, or rounded to bf16 first (BF16)."""
        if BF16:
            return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
        else:
            return tl.dot(a, b, acc, input_precision=PRECISION)

    @triton.jit
    def _xw_tile(in_ptr, stride_im, stride_ik, w_ptr, d_in, rows, mask_m, n, mask_n, k_lo, k_hi,
                 PRECISION: tl.constexpr, BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr):
        """in[rows, k_lo:k_hi] @ W[n, k_lo:k_hi]^T for one tile of outputs ``n``; W (d_out, d_in) row-major."""
        offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            k = k0 + offs_k
            mask_k = k < k_hi
            a = tl.load(in_ptr + rows[:, None] * stride_im + k[None, :] * stride_ik,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
            w = tl.load(w_ptr + n[None, :] * d_in + k[:, None], mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = _dot(a, w, acc, PRECISION, BF16)
        return acc

    @triton.jit
    def _gw_tile(g_ptr, stride_gm, w_ptr, d_in, rows, mask_m, c, mask_c, r_lo, r_hi, PRECISION: tl.constexpr,
                 BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """g[rows, r_lo:r_hi] @ W[r_lo:r_hi, c] for one tile of columns ``c``; W (d_out, d_in) row-major."""
        offs_r = tl.arange(0, BLOCK_K).to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for r0 in range(r_lo, r_hi, BLOCK_K):
            r = r0 + offs_r
            mask_r = r < r_hi
            g = tl.load(g_ptr + rows[:, None] * stride_gm + r[None, :], mask=mask_m[:, None] & mask_r[None, :],
                        other=0.0)
            w = tl.load(w_ptr + r[:, None] * d_in + c[None, :], mask=mask_r[:, None] & mask_c[None, :], other=0.0)
            acc = _dot(g, w, acc, PRECISION, BF16)
        return acc

    @triton.jit
    def _sum_slices(part_ptr, stride_ps, stride_pm, rows, mask, n, slices, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr):
        """The slices' partial sums of one tile, added in slice order (deterministic), 8 loads in flight at a
        time. Read through L2 (.cg): other programs wrote them."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s0 in range(0, slices, 8):
            for j in tl.static_range(8):
                s = s0 + j   # (compared as a tensor: a scalar bool in a mask fails in the interpreter)
                acc += tl.load(part_ptr + s * stride_ps + rows[:, None] * stride_pm + n[None, :],
                               mask=mask & (n[None, :] * 0 + s < slices), other=0.0, cache_modifier=".cg")
        return acc

    @triton.jit
    def _arrive(count_ptr, pid):
        """Counts this program in among its row block's slices; True for the last to arrive, which then
        sees every slice's partial sums (release/acquire at GPU scope) and resets the count for the next
        launch. The first programs never wait, so the interpreter (programs in turn) runs it too."""
        tl.debug_barrier()   # every thread's partial-sum stores are issued before the count goes up
        seen = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel", scope="gpu")
        return seen == tl.num_programs(1) - 1

    @triton.jit
    def _layer_forward(in_ptr, stride_im, stride_ik, w_ptr, out_ptr, stride_om, rows, mask_m, d_in, d_out, n_lo,
                       n_hi, negative_slope, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                       PRECISION: tl.constexpr, BF16: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[rows, n] = act(in[rows, :] W[n]^T + b[n]) for outputs n in [n_lo, n_hi); b right after W."""
        offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
        for n0 in range(n_lo, n_hi, BLOCK_N):
            n = n0 + offs_n
            mask_n = n < n_hi
            acc = _xw_tile(in_ptr, stride_im, stride_ik, w_ptr, d_in, rows, mask_m, n, mask_n, 0, d_in,
                           PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)
            if HAS_BIAS:
                acc += tl.load(w_ptr + d_out * d_in + n, mask=mask_n, other=0.0)[None, :]
            acc = _activate(acc, ACTIVATION, negative_slope)
            tl.store(out_ptr + rows[:, None] * stride_om + n[None, :], acc,
                     mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _layer_backward(g_ptr, stride_gm, w_ptr, y_ptr, stride_ym, out_ptr, stride_om, stride_ok, rows, mask_m,
                        d_in, d_out, negative_slope, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                        BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[rows, :] = (g[rows, :] W) * act'(y[rows, :]): the gradient one layer down (ACTIVATION of
        that layer, recovered from its saved output y; "none" gives dX)."""
        offs_c = tl.arange(0, BLOCK_N).to(tl.int64)
        for c0 in range(0, d_in, BLOCK_N):        # output columns: the layer's inputs
            c = c0 + offs_c
            mask_c = c < d_in
            acc = _gw_tile(g_ptr, stride_gm, w_ptr, d_in, rows, mask_m, c, mask_c, 0, d_out, PRECISION, BF16,
                           BLOCK_M, BLOCK_N, BLOCK_K)
            mask = mask_m[:, None] & mask_c[None, :]
            if ACTIVATION != "none":
                y = tl.load(y_ptr + rows[:, None] * stride_ym + c[None, :], mask=mask, other=0.0)
                acc = _activation_grad(acc, y, ACTIVATION, negative_slope)
            tl.store(out_ptr + rows[:, None] * stride_om + c[None, :] * stride_ok,
                     acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_chain(p_ptr, acts_ptr, stride_am, g_ptr, stride_gm, dx_ptr, stride_dxm, stride_dxk, rows, mask_m,
                        negative_slope, DIMS: tl.constexpr, W_OFFS: tl.constexpr, COLS: tl.constexpr,
                        TOP: tl.constexpr, ACT_HIDDEN: tl.constexpr,
                        NEED_DX: tl.constexpr, PRECISION: tl.constexpr, BF16: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """From layer TOP's g (in the g buffer) down the layers: each layer below's g, then dX if asked."""
        for lb in tl.static_range(TOP, -1, -1):
            d_in = DIMS[lb]
            d_out = DIMS[lb + 1]
            w_ptr = p_ptr + W_OFFS[lb]
            g_l = g_ptr + COLS[lb]
            if lb > 0:
                below = COLS[lb - 1]
                _layer_backward(g_l, stride_gm, w_ptr, acts_ptr + below, stride_am, g_ptr + below, stride_gm, 1,
                                rows, mask_m, d_in, d_out, negative_slope, ACT_HIDDEN, PRECISION, BF16,
                                BLOCK_M, BLOCK_N, BLOCK_K)
                tl.debug_barrier()
            elif NEED_DX:
                _layer_backward(g_l, stride_gm, w_ptr, acts_ptr, stride_am, dx_ptr, stride_dxm, stride_dxk,
                                rows, mask_m, d_in, d_out, negative_slope, "none", PRECISION, BF16,
                                BLOCK_M, BLOCK_N, BLOCK_K)

    # Row blocks of 16-32 rows (ROWS_BLOCK_MAX): at GAN batch sizes the grid's second axis (slices of the
    # wide end) supplies the programs. Three stages: cp.async.wait_group 2 in the sm_90 PTX (prefetch).
    _ROWS_CONFIGS = matmul_configs(
        gpu=[dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3)],
        interpreter=dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32))

    @triton.autotune(configs=_ROWS_CONFIGS, key=["M", "shape_key", "slices"])
    @triton.jit
    def _mlp_rows_kernel(x_ptr, stride_xm, stride_xk, p_ptr, acts_ptr, stride_am, y_ptr, stride_ym,
                         g_ptr, stride_gm, dy_ptr, stride_dym, stride_dyn, dx_ptr, stride_dxm, stride_dxk, loss_ptr,
                         part_ptr, stride_ps, stride_pm, count_ptr, dyg_ptr, stride_dygm, dyw_ptr, dy_k,
                         rep_x, rep_p, rep_a, rep_y, rep_g, rep_dy, rep_dx, rep_loss, rep_part, rep_count, rep_dyg,
                         rep_dyw, labels_ptr,
                         M, shape_key, slices, slice_width, split_row, target_a, target_b, weight_a, weight_b,
                         negative_slope, DIMS: tl.constexpr, W_OFFS: tl.constexpr, COLS: tl.constexpr,
                         NUM_LAYERS: tl.constexpr, HAS_BIAS: tl.constexpr,
                         ACT_HIDDEN: tl.constexpr, ACT_OUT: tl.constexpr, FORWARD: tl.constexpr, LOSS: tl.constexpr,
                         BACKWARD: tl.constexpr, NEED_DX: tl.constexpr, SPLIT: tl.constexpr,
                         DY_LINEAR: tl.constexpr, LABELS: tl.constexpr, PRECISION: tl.constexpr,
                         BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Rows [pid * BLOCK_M, ...) through the MLP: FORWARD, then LOSS (targets/weights: a below
        ``split_row``, b from it), then BACKWARD (from the loss, from dy, or with DY_LINEAR from
        dy = dyg @ dyw, a (rows, dy_k) by (dy_k, out) product), to dX if NEED_DX.

        The grid's second axis cuts the MLP's wide end in ``slices`` of ``slice_width`` columns:
        SPLIT="input": layer 0's reduction; each program writes its partial pre-activations to ``part``,
        the last to arrive (``count``) adds them and runs the rest. SPLIT="output": the last layer's
        outputs; every program runs the layers below (the same values: each writes the same ``acts``),
        its slice of the last layer and of its gradient, whose product with that slice of W goes to
        ``part``; the last to arrive adds them and runs the chain down. ``shape_key`` keys the autotuning.
        ``loss_ptr`` receives [number of row blocks, each row block's loss sum...].

        The grid's third axis: replicas (K MLPs of one shape, each with its own buffers ``rep_*`` elements
        apart: 0 for one MLP); with LABELS, replica r's target ``a`` is ``labels[r]``."""
        pid = tl.program_id(0).to(tl.int64)  # int64 offsets: rows * stride passes 2^31 for large M
        sl = tl.program_id(1).to(tl.int64)
        r = tl.program_id(2).to(tl.int64)
        x_ptr += r * rep_x
        p_ptr += r * rep_p
        acts_ptr += r * rep_a
        y_ptr += r * rep_y
        g_ptr += r * rep_g
        dy_ptr += r * rep_dy
        dx_ptr += r * rep_dx
        loss_ptr += r * rep_loss
        part_ptr += r * rep_part
        count_ptr += r * rep_count
        dyg_ptr += r * rep_dyg
        dyw_ptr += r * rep_dyw
        if LABELS:
            target_a = tl.load(labels_ptr + r)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = rows < M
        offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
        last_in = DIMS[NUM_LAYERS - 1]
        last_out = DIMS[NUM_LAYERS]
        last_w = p_ptr + W_OFFS[NUM_LAYERS - 1]
        last_col = COLS[NUM_LAYERS - 1]
        lo = sl * slice_width   # this program's slice of the wide end
        go = True
        if SPLIT == "input":      # layer 0's partial pre-activations over this slice of its inputs
            d_in0 = DIMS[0]
            d_out0 = DIMS[1]
            for n0 in range(0, d_out0, BLOCK_N):
                n = n0 + offs_n
                mask_n = n < d_out0
                acc = _xw_tile(x_ptr, stride_xm, stride_xk, p_ptr, d_in0, rows, mask_m, n, mask_n, lo,
                               tl.minimum(lo + slice_width, d_in0), PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)
                tl.store(part_ptr + sl * stride_ps + rows[:, None] * stride_pm + n[None, :], acc,
                         mask=mask_m[:, None] & mask_n[None, :])
            go = _arrive(count_ptr, pid)
        if go:
            if SPLIT == "input":  # the last program of the row block: layer 0 from the slices' sums
                tl.atomic_xchg(count_ptr + pid, 0)
                for n0 in range(0, d_out0, BLOCK_N):
                    n = n0 + offs_n
                    mask_n = n < d_out0
                    mask = mask_m[:, None] & mask_n[None, :]
                    acc = _sum_slices(part_ptr, stride_ps, stride_pm, rows, mask, n, slices, BLOCK_M, BLOCK_N)
                    if HAS_BIAS:
                        acc += tl.load(p_ptr + d_out0 * d_in0 + n, mask=mask_n, other=0.0)[None, :]
                    if NUM_LAYERS == 1:
                        tl.store(y_ptr + rows[:, None] * stride_ym + n[None, :],
                                 _activate(acc, ACT_OUT, negative_slope), mask=mask)
                    else:
                        tl.store(acts_ptr + rows[:, None] * stride_am + n[None, :],
                                 _activate(acc, ACT_HIDDEN, negative_slope), mask=mask)
                tl.debug_barrier()
            if FORWARD:
                for li in tl.static_range(1 if SPLIT == "input" else 0, NUM_LAYERS):
                    d_in = DIMS[li]
                    d_out = DIMS[li + 1]
                    w_ptr = p_ptr + W_OFFS[li]
                    col = COLS[li]
                    if li == 0:
                        in_ptr, stride_im, stride_ik = x_ptr, stride_xm, stride_xk
                    else:
                        in_ptr = acts_ptr + COLS[li - 1]
                        stride_im, stride_ik = stride_am, 1
                    if li == NUM_LAYERS - 1:
                        n_lo, n_hi = 0, d_out
                        if SPLIT == "output":
                            n_lo, n_hi = lo, tl.minimum(lo + slice_width, d_out)
                        _layer_forward(in_ptr, stride_im, stride_ik, w_ptr, y_ptr, stride_ym, rows, mask_m, d_in,
                                       d_out, n_lo, n_hi, negative_slope, HAS_BIAS, ACT_OUT, PRECISION, BF16,
                                       BLOCK_M, BLOCK_N, BLOCK_K)
                    else:
                        _layer_forward(in_ptr, stride_im, stride_ik, w_ptr, acts_ptr + col, stride_am, rows,
                                       mask_m, d_in, d_out, 0, d_out, negative_slope, HAS_BIAS, ACT_HIDDEN,
                                       PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)
                    tl.debug_barrier()
            if LOSS:  # the last layer is Linear(h, 1) with no activation: y holds the logits
                z = tl.load(y_ptr + rows * stride_ym, mask=mask_m, other=0.0)
                first = rows < split_row
                t = tl.where(first, target_a, target_b)
                scale = tl.where(mask_m, tl.where(first, weight_a, weight_b), 0.0)
                loss, grad = _math.bce_with_logits(z, t)
                # loss buffer: [number of row blocks, their sums...]; the weight-gradient kernel adds them up
                tl.store(loss_ptr + 1 + pid, tl.sum(loss * scale, axis=0))
                if pid == 0:
                    tl.store(loss_ptr, tl.num_programs(0).to(tl.float32))
                tl.store(g_ptr + rows * stride_gm + last_col, grad * scale, mask=mask_m)
                tl.debug_barrier()
            if BACKWARD:
                if not LOSS:  # g of the last layer (of this program's slice) from the incoming gradient
                    n_lo, n_hi = 0, last_out
                    if SPLIT == "output":
                        n_lo, n_hi = lo, tl.minimum(lo + slice_width, last_out)
                    for n0 in range(n_lo, n_hi, BLOCK_N):
                        n = n0 + offs_n
                        mask_n = n < n_hi
                        mask = mask_m[:, None] & mask_n[None, :]
                        if DY_LINEAR:
                            dy = _gw_tile(dyg_ptr, stride_dygm, dyw_ptr, last_out, rows, mask_m, n, mask_n, 0, dy_k,
                                          PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)
                        else:
                            dy = tl.load(dy_ptr + rows[:, None] * stride_dym + n[None, :] * stride_dyn, mask=mask,
                                         other=0.0).to(tl.float32)
                        y = tl.load(y_ptr + rows[:, None] * stride_ym + n[None, :], mask=mask, other=0.0)
                        tl.store(g_ptr + rows[:, None] * stride_gm + last_col + n[None, :],
                                 _activation_grad(dy, y, ACT_OUT, negative_slope), mask=mask)
                    tl.debug_barrier()
                if SPLIT == "output":
                    # this slice's share of the gradient one layer down (or of dX): g[:, slice] @ W[slice, :]
                    if NUM_LAYERS > 1 or NEED_DX:
                        hi = tl.minimum(lo + slice_width, last_out)
                        for c0 in range(0, last_in, BLOCK_N):
                            c = c0 + offs_n
                            mask_c = c < last_in
                            acc = _gw_tile(g_ptr + last_col, stride_gm, last_w, last_in, rows, mask_m, c, mask_c, lo,
                                           hi, PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)
                            tl.store(part_ptr + sl * stride_ps + rows[:, None] * stride_pm + c[None, :], acc,
                                     mask=mask_m[:, None] & mask_c[None, :])
                        if _arrive(count_ptr, pid):
                            tl.atomic_xchg(count_ptr + pid, 0)
                            if NUM_LAYERS > 1:
                                below = COLS[NUM_LAYERS - 2]
                                out_ptr, stride_om, stride_ok = g_ptr + below, stride_gm, 1
                            else:
                                out_ptr, stride_om, stride_ok = dx_ptr, stride_dxm, stride_dxk
                            for c0 in range(0, last_in, BLOCK_N):
                                c = c0 + offs_n
                                mask = mask_m[:, None] & (c < last_in)[None, :]
                                acc = _sum_slices(part_ptr, stride_ps, stride_pm, rows, mask, c, slices, BLOCK_M,
                                                  BLOCK_N)
                                if NUM_LAYERS > 1:
                                    y = tl.load(acts_ptr + below + rows[:, None] * stride_am + c[None, :], mask=mask,
                                                other=0.0)
                                    acc = _activation_grad(acc, y, ACT_HIDDEN, negative_slope)
                                tl.store(out_ptr + rows[:, None] * stride_om + c[None, :] * stride_ok,
                                         acc.to(out_ptr.dtype.element_ty), mask=mask)
                            if NUM_LAYERS > 1:
                                tl.debug_barrier()
                                _backward_chain(p_ptr, acts_ptr, stride_am, g_ptr, stride_gm, dx_ptr, stride_dxm,
                                                stride_dxk, rows, mask_m, negative_slope, DIMS, W_OFFS, COLS,
                                                NUM_LAYERS - 2, ACT_HIDDEN, NEED_DX, PRECISION, BF16, BLOCK_M,
                                                BLOCK_N, BLOCK_K)
                else:
                    _backward_chain(p_ptr, acts_ptr, stride_am, g_ptr, stride_gm, dx_ptr, stride_dxm, stride_dxk,
                                    rows, mask_m, negative_slope, DIMS, W_OFFS, COLS, NUM_LAYERS - 1, ACT_HIDDEN,
                                    NEED_DX, PRECISION, BF16, BLOCK_M, BLOCK_N, BLOCK_K)

    @triton.jit
    def _adam_tile(offs, mask, g, param_ptr, exp_avg_ptr, exp_avg_sq_ptr, step, step_size, bias_correction2_sqrt,
                   one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, shrink, l1):
        """The Adam update (number ``step``) of the parameters at ``offs`` from their gradient ``g``
        (``adam_update``; the moments' loads and stores as ``adam_step``'s)."""
        m, v = load_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, mask)
        p, m, v = adam_update(tl.load(param_ptr + offs, mask=mask, other=0.0), g, m, v, step_size,
                              bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
                              shrink, l1)
        tl.store(param_ptr + offs, p, mask=mask)
        store_moments(exp_avg_ptr, exp_avg_sq_ptr, offs, m, v, mask, step)

    # 32 x 32 weight tiles: the classic GAN's weight gradients at batch 128 are >= 120 programs (D: 784 -> 128
    # is 4 x 25 tiles) where 64-wide tiles left half an H100's SMs idle; the configs differ in rows per step.
    _WEIGHT_CONFIGS = matmul_configs(
        gpu=[dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_warps=2, num_stages=3),
             dict(BLOCK_M=128, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=3)],
        interpreter=dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32))

    # (autotuning runs each config many times: the folded Adam's state is put back after each config's timing)
    @triton.autotune(configs=_WEIGHT_CONFIGS, key=["M", "shape_key", "rows_per_split"],
                     restore_value=["param_ptr", "exp_avg_ptr", "exp_avg_sq_ptr", "counter_ptr", "arrivals_ptr"])
    @triton.jit
    def _mlp_weight_grad_kernel(x_ptr, stride_xm, stride_xk, acts_ptr, stride_am, g_ptr, stride_gm, meta_ptr,
                                grad_ptr, split_stride, M, shape_key, rows_per_split, loss_ptr, loss_out_ptr,
                                splits, rep_x, rep_a, rep_g, rep_grad, rep_loss,
                                param_ptr, exp_avg_ptr, exp_avg_sq_ptr, rep_param, counter_ptr, arrivals_ptr,
                                adam_programs, hyper_ptr, lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1,
                                log_beta2, eps, weight_decay, shrink, l1,
                                HAS_BIAS: tl.constexpr, HAS_LOSS: tl.constexpr, ADAM: tl.constexpr,
                                HYPER: tl.constexpr, PRECISION: tl.constexpr, BF16: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """grad[split, layer's W tile] = sum over the split's rows of g^T Y_in; db from the k-tile-0 programs.

        Grid: (max tiles over layers, layers, replicas x splits); programs past their layer's tile count
        return. Replica r's buffers are ``rep_*`` elements after replica 0's (0 for one MLP), its loss
        ``loss_out[r]``.

        ADAM (one split): each program also updates the parameters of its tile (``ops.adam.AdamFold``: the
        update number from ``counter``, read before this program arrives; the last program to arrive adds
        ``adam_programs`` to the counter and resets ``arrivals``); HYPER: replica r's lr, betas and decay
        from row r of ``hyper``."""
        tile = tl.program_id(0)
        layer = tl.program_id(1)
        r = (tl.program_id(2) // splits).to(tl.int64)
        split = (tl.program_id(2) % splits).to(tl.int64)
        x_ptr += r * rep_x
        acts_ptr += r * rep_a
        g_ptr += r * rep_g
        grad_ptr += r * rep_grad
        loss_ptr += r * rep_loss
        loss_out_ptr += r
        if ADAM:   # (every program reads the count before any adds to it: the last to arrive adds)
            step = tl.load(counter_ptr) // adam_programs + 1
            if HYPER:
                lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, shrink = \
                    adam_hyper_row(hyper_ptr, r)
            step_size, bias_correction2_sqrt = adam_factors(step.to(tl.float32), lr, log_beta1, log_beta2)
            param_ptr += r * rep_param
            exp_avg_ptr += r * rep_param
            exp_avg_sq_ptr += r * rep_param
        if HAS_LOSS:  # the loss of the pass, from the rows kernel's per-program sums (fixed order)
            if tile == 0 and layer == 0 and split == 0:
                n_loss = tl.load(loss_ptr).to(tl.int32)
                offs = tl.arange(0, 128)
                total = tl.zeros((128,), dtype=tl.float32)
                for i0 in range(0, n_loss, 128):
                    total += tl.load(loss_ptr + 1 + i0 + offs, mask=i0 + offs < n_loss, other=0.0)
                tl.store(loss_out_ptr, tl.sum(total, axis=0))
        d_in = tl.load(meta_ptr + 4 * layer)
        d_out = tl.load(meta_ptr + 4 * layer + 1)
        w_off = tl.load(meta_ptr + 4 * layer + 2)
        col = tl.load(meta_ptr + 4 * layer + 3)
        below = tl.load(meta_ptr + 4 * tl.maximum(layer - 1, 0) + 3)
        tiles_k = tl.cdiv(d_in, BLOCK_K)
        if tile < tl.cdiv(d_out, BLOCK_N) * tiles_k:
            pid_n = tile // tiles_k
            pid_k = tile % tiles_k
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
            offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
            mask_n = offs_n < d_out
            mask_k = offs_k < d_in
            start = split * rows_per_split
            end = tl.minimum(start + rows_per_split, M)
            end_x = tl.where(layer == 0, end, start)      # rows read from x: all or none
            end_acts = tl.where(layer == 0, start, end)
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
            bias_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
            offs_m = tl.arange(0, BLOCK_M).to(tl.int64)
            for m0 in range(start, end, BLOCK_M):
                m = m0 + offs_m
                mask_mm = m < end
                g_t = tl.load(g_ptr + m[None, :] * stride_gm + col + offs_n[:, None],
                              mask=mask_n[:, None] & mask_mm[None, :], other=0.0)       # (N, M)
                if HAS_BIAS:
                    bias_acc += tl.sum(g_t, axis=1)
                # the layer's input: x for layer 0, else the layer below's saved output (both loads are
                # issued, one of them fully masked off: no memory traffic, no branch on pointers)
                a = tl.load(x_ptr + m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                            mask=(m < end_x)[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
                a += tl.load(acts_ptr + m[:, None] * stride_am + below + offs_k[None, :],
                             mask=(m < end_acts)[:, None] & mask_k[None, :], other=0.0)
                acc = _dot(g_t, a, acc, PRECISION, BF16)
            out = grad_ptr + split * split_stride + w_off
            offs_w = offs_n[:, None] * d_in + offs_k[None, :]
            mask_w = mask_n[:, None] & mask_k[None, :]
            tl.store(out + offs_w, acc, mask=mask_w)
            if ADAM:
                _adam_tile(w_off + offs_w, mask_w, acc, param_ptr, exp_avg_ptr, exp_avg_sq_ptr, step, step_size,
                           bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
                           shrink, l1)
            if HAS_BIAS:
                if pid_k == 0:
                    tl.store(out + d_out * d_in + offs_n, bias_acc, mask=mask_n)
                    if ADAM:   # (db read back: triton 3.6's thread-locality pass wants the sum's loop result used once)
                        tl.debug_barrier()
                        db = tl.load(out + d_out * d_in + offs_n, mask=mask_n, other=0.0)
                        _adam_tile(w_off + d_out * d_in + offs_n, mask_n, db, param_ptr, exp_avg_ptr,
                                   exp_avg_sq_ptr, step, step_size, bias_correction2_sqrt, one_minus_beta1, beta2,
                                   one_minus_beta2, eps, weight_decay, shrink, l1)
        if ADAM:   # the update counted once: by the last program to arrive, which then resets the count
            tl.debug_barrier()
            seen = tl.atomic_add(arrivals_ptr, 1, sem="acq_rel", scope="gpu")
            if seen == tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2) - 1:
                tl.atomic_add(counter_ptr, adam_programs)
                tl.atomic_xchg(arrivals_ptr, 0)
