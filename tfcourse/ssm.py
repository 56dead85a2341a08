"""State space models and the scans that compute them (book: chapter 8).

Gu and Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(arXiv:2312.00752), section 2. A state space model (SSM) maps one input channel x(t) to an output
y(t) through a hidden state h(t) of N numbers:

    h'(t) = A h(t) + B x(t),   y(t) = C h(t)                                 (Eq. 1a, 1b)

A discretisation rule with a step size Δ (:func:`discretize`, Eq. 4) turns it into a recurrence
over positions, h_t = Ā h_{t−1} + B̄ x_t, y_t = C h_t (Eq. 2a, 2b). When Ā, B̄ and C are the same
at every position (a linear time-invariant, LTI, SSM, such as S4), unrolling the recurrence gives
a convolution with the kernel K̄ = (CB̄, CĀB̄, CĀ²B̄, …) (Eq. 3a, 3b): the model trains as a
convolution and decodes as a recurrence (:func:`ssm_convolution`, :func:`ssm_recurrent`).

Mamba's selective SSM (section 3.2, Algorithm 2) computes Δ, B and C from the input, so every
position has its own Ā_t, B̄_t, C_t and there is no kernel to convolve with: only the recurrence
is left, computed by a scan. Three scans compute it here: a loop over positions (the reference),
a chunked scan with its backward pass written out (fast), and one step of decoding.

Every channel has its own SSM with a diagonal A of N entries (S4D, Gu et al., 2022, "On the
Parameterization and Initialization of Diagonal State Space Models"), stored as the (Cᵢ, N)
matrix of the diagonals: Ā = exp(ΔA) is then an elementwise exponential and Āh an elementwise
product.

Glossary (the paper's symbols in brackets): B batch, T positions [L], Cᵢ channels of the SSM
(a Mamba block's inner width E·C [ED], ``d_inner`` in code), N state size [N]. In shape tuples B
and C stand for the batch and a width; in equations, for the SSM's matrices.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from tfcourse import _validate
from tfcourse.hyena import fft_causal_conv

METHODS = ("zoh", "euler")


def discretize(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discrete (Ā, B̄) of the continuous (A, B) for step sizes Δ, each (..., Cᵢ, N).

    ``delta`` (..., Cᵢ) positive step sizes, ``A`` (Cᵢ, N) the diagonals of A (no zero entry),
    ``B`` (..., N) with the same leading dimensions as ``delta`` (none for an LTI SSM, (B, T) for
    a selective one); B is shared by the Cᵢ channels.

    ``"zoh"``, the zero-order hold (Eq. 4), holds x constant over each step and solves the ODE
    exactly: Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB. ``"euler"`` keeps that Ā but takes the
    first-order B̄ = ΔB, which differs from the ZOH by O(Δ²); it is what Mamba's released code
    computes, and what the scans of this module use.
    """
    delta = _validate.rank(_validate.floating(delta, "delta"), "delta", (1,), "(..., Cᵢ)")
    A = _validate.rank(_validate.floating(A, "A"), "A", 2, "(Cᵢ, N)")
    B = _validate.rank(_validate.floating(B, "B"), "B", (1,), "(..., N)")
    _validate.size(delta, "delta", -1, A.shape[0], "Cᵢ, the rows of A")
    _validate.size(B, "B", -1, A.shape[1], "N, the columns of A")
    if B.shape[:-1] != delta.shape[:-1]:
        raise ValueError(f"B: expected leading dimensions {tuple(delta.shape[:-1])} like delta, "
                         f"got shape {tuple(B.shape)}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    for name, t in (("A", A), ("B", B)):
        _validate.same_device(name, t, "delta", delta)
    dA = delta[..., None] * A  # (..., Cᵢ, N): ΔA
    dB = delta[..., None] * B[..., None, :]  # (..., Cᵢ, N): ΔB
    A_bar = torch.exp(dA)  # Ā = exp(ΔA)
    if method == "euler":
        return A_bar, dB  # B̄ = ΔB
    # B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB, elementwise for a diagonal A; expm1 keeps the digits that
    # exp(ΔA) − 1 would lose for small ΔA
    return A_bar, torch.expm1(dA) / dA * dB


def _lti_matrices(
    A_bar: object, B_bar: object, C: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    A_bar = _validate.rank(_validate.floating(A_bar, "A_bar"), "A_bar", 2, "(Cᵢ, N)")
    checked = [A_bar]
    for name, t in (("B_bar", B_bar), ("C", C)):
        t = _validate.rank(_validate.floating(t, name), name, 2, "(Cᵢ, N)")
        if t.shape != A_bar.shape:
            raise ValueError(f"{name}: expected shape {tuple(A_bar.shape)} (Cᵢ, N) like A_bar, "
                             f"got {tuple(t.shape)}")
        _validate.same_device(name, t, "A_bar", A_bar)
        checked.append(t)
    return tuple(checked)


def _lti_input(x: object, A_bar: torch.Tensor) -> torch.Tensor:
    x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, T, Cᵢ)")
    _validate.size(x, "x", 2, A_bar.shape[0], "Cᵢ, the rows of A_bar")
    _validate.same_device("A_bar", A_bar, "x", x)
    return x


def ssm_recurrent(
    x: torch.Tensor, A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """An LTI SSM as a recurrence over positions (Eq. 2a, 2b): ``x`` (B, T, Cᵢ) → (B, T, Cᵢ).

    ``A_bar``, ``B_bar``, ``C`` (Cᵢ, N): one diagonal SSM per channel, the same at every
    position. T steps, each with a state of fixed size (B, Cᵢ, N): how an SSM decodes.
    """
    A_bar, B_bar, C = _lti_matrices(A_bar, B_bar, C)
    x = _lti_input(x, A_bar)
    h = x.new_zeros(x.shape[0], *A_bar.shape)  # (B, Cᵢ, N)
    ys = []
    for x_t in x.unbind(1):  # (B, Cᵢ)
        h = A_bar * h + B_bar * x_t[..., None]  # h_t = Ā h_{t−1} + B̄ x_t  (Eq. 2a)
        ys.append((h * C).sum(-1))  # y_t = C h_t  (Eq. 2b)
    return torch.stack(ys, dim=1)  # (B, T, Cᵢ)


def ssm_kernel(A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor, T: int) -> torch.Tensor:
    """The SSM convolution kernel K̄ = (CB̄, CĀB̄, …, CĀ^{T−1}B̄) (Eq. 3a) of each channel: (Cᵢ, T).

    ``A_bar``, ``B_bar``, ``C`` (Cᵢ, N). With a diagonal Ā, K̄_k = Σ_n C_n Ā_n^k B̄_n.
    """
    A_bar, B_bar, C = _lti_matrices(A_bar, B_bar, C)
    _validate.integer(T, "T", 1)
    k = torch.arange(T, device=A_bar.device, dtype=A_bar.dtype)  # (T,)
    powers = A_bar[..., None] ** k  # (Cᵢ, N, T): Ā^k
    return torch.einsum("cn,cnk,cn->ck", C, powers, B_bar)  # Σ_n C Ā^k B̄


def ssm_convolution(
    x: torch.Tensor, A_bar: torch.Tensor, B_bar: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """An LTI SSM as a convolution, y = x ∗ K̄ (Eq. 3b): ``x`` (B, T, Cᵢ) → (B, T, Cᵢ), equal to
    :func:`ssm_recurrent`.

    The kernel comes from :func:`ssm_kernel`; the causal convolution runs by FFT in
    O(T log T) (:func:`tfcourse.fft_causal_conv`, chapter 7), every position at once.
    """
    A_bar, B_bar, C = _lti_matrices(A_bar, B_bar, C)
    x = _lti_input(x, A_bar)
    K = ssm_kernel(A_bar, B_bar, C, x.shape[1])  # (Cᵢ, T)
    y = fft_causal_conv(x.transpose(1, 2), K)  # (B, Cᵢ, T): convolutions run channels-first
    return y.transpose(1, 2)  # (B, T, Cᵢ)


# --- the selective scan ---


def _scan_inputs(
    x: object, delta: object, A: object, B: object, C: object, D: object, *, step: bool = False
) -> tuple[torch.Tensor | None, ...]:
    """Checks the inputs of a scan, or of one step (``step``: no T dimension, names ending in
    ``_t``), and casts them to float32 (float64 stays float64): the state sums over the whole
    sequence, which half precision would round away."""
    t, lead = ("_t", "B") if step else ("", "B, T")
    x = _validate.rank(_validate.floating(x, "x" + t), "x" + t, lead.count(",") + 2,
                       f"({lead}, Cᵢ)")
    if not step and x.shape[1] == 0:
        raise ValueError(f"x: expected at least one position, got shape {tuple(x.shape)}")
    delta = _validate.rank(_validate.floating(delta, "delta" + t), "delta" + t, x.ndim,
                           f"({lead}, Cᵢ)")
    if delta.shape != x.shape:
        raise ValueError(f"delta{t}: expected shape {tuple(x.shape)} ({lead}, Cᵢ) like x{t}, "
                         f"got {tuple(delta.shape)}")
    A = _validate.rank(_validate.floating(A, "A"), "A", 2, "(Cᵢ, N)")
    _validate.size(A, "A", 0, x.shape[-1], f"Cᵢ, the channels of x{t}")
    checked = {"delta" + t: delta, "A": A}
    for name, matrix in (("B" + t, B), ("C" + t, C)):
        matrix = _validate.rank(_validate.floating(matrix, name), name, x.ndim, f"({lead}, N)")
        expected = (*x.shape[:-1], A.shape[1])
        if matrix.shape != expected:
            raise ValueError(f"{name}: expected shape {expected} ({lead}, N) with {lead} of "
                             f"x{t} and N of A, got {tuple(matrix.shape)}")
        checked[name] = matrix
    if D is not None:
        D = _validate.rank(_validate.floating(D, "D"), "D", 1, "(Cᵢ,)")
        _validate.size(D, "D", 0, x.shape[-1], f"Cᵢ, the channels of x{t}")
        checked["D"] = D
    for name, tensor in checked.items():
        _validate.same_device(name, tensor, "x" + t, x)
    work = torch.promote_types(x.dtype, torch.float32)
    return tuple(None if tensor is None else tensor.to(work)
                 for tensor in (x, delta, A, checked["B" + t], checked["C" + t], D))


def _autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context without autocast on the device of ``x``: autocast would run the scans' matrix
    products in half precision and round the outputs and gradients at every position."""
    try:
        return torch.autocast(x.device.type, enabled=False)
    except RuntimeError:  # a device without autocast, such as "meta"
        return contextlib.nullcontext()


def _step(
    x_t: torch.Tensor, delta_t: torch.Tensor, A: torch.Tensor, B_t: torch.Tensor,
    C_t: torch.Tensor, h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the selective SSM (Algorithm 2), without D: x_t, delta_t (B, Cᵢ),
    A (Cᵢ, N), B_t, C_t (B, N), h (B, Cᵢ, N) → y_t (B, Cᵢ), h_t (B, Cᵢ, N)."""
    A_bar = torch.exp(delta_t[..., None] * A)  # (B, Cᵢ, N): Ā_t = exp(Δ_t A)
    Bx = (delta_t * x_t)[..., None] * B_t[:, None, :]  # (B, Cᵢ, N): B̄_t x_t = Δ_t B_t x_t
    h = A_bar * h + Bx  # h_t = Ā_t h_{t−1} + B̄_t x_t: the state is updated first,
    return (h @ C_t[..., None])[..., 0], h  # then read: y_t = C_t h_t


def selective_scan_sequential(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None = None, *, return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan (Algorithm 2), one position after another: the readable reference.

        h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,   y_t = C_t h_t + D x_t,   h_{−1} = 0

    ``x`` (B, T, Cᵢ); ``delta`` (B, T, Cᵢ), Δ, already positive (Mamba passes it through a
    softplus); ``A`` (Cᵢ, N), negative, so that exp(Δ_t A) < 1 decays the state; ``B``, ``C``
    (B, T, N); ``D`` (Cᵢ,), the skip, or None. Returns y (B, T, Cᵢ) in the dtype of ``x``, and
    with ``return_last_state`` also the state after the last position, (B, Cᵢ, N) in float32
    (float64 for float64 inputs), which :func:`selective_scan_step` continues from.

    T steps in Python: the time grows with T, and so does the work of backpropagating through
    each step's small tensors. :func:`selective_scan_parallel` computes the same.
    """
    out_dtype = _validate.floating(x, "x").dtype
    x, delta, A, B, C, D = _scan_inputs(x, delta, A, B, C, D)
    h = x.new_zeros(x.shape[0], *A.shape)  # (B, Cᵢ, N)
    ys = []
    with _autocast_off(x):
        for x_t, delta_t, B_t, C_t in zip(x.unbind(1), delta.unbind(1), B.unbind(1),
                                          C.unbind(1), strict=True):
            y_t, h = _step(x_t, delta_t, A, B_t, C_t, h)
            ys.append(y_t)
    y = torch.stack(ys, dim=1)  # (B, T, Cᵢ)
    if D is not None:
        y = y + D * x  # + D x_t
    return (y.to(out_dtype), h) if return_last_state else y.to(out_dtype)


class _ChunkedScan(torch.autograd.Function):
    """The selective scan over chunks of L positions, forward and backward; see
    :func:`selective_scan_parallel`. Takes x, delta (B, T, Cᵢ), A (Cᵢ, N), B, C (B, T, N) with T a
    multiple of L, contiguous; returns y (B, T, Cᵢ) without D and the last state (B, Cᵢ, N)."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C, L):
        with _autocast_off(x):
            return _ChunkedScan._forward(ctx, x, delta, A, B, C, L)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, d_last):
        if dy is None and d_last is None:  # neither output was used
            return None, None, None, None, None, None
        saved = ctx.saved_tensors  # once: non-reentrant checkpointing lets them be read once
        with _autocast_off(saved[0]):
            return _ChunkedScan._backward(ctx, saved, dy, d_last)

    @staticmethod
    def _forward(ctx, x, delta, A, B, C, L):
        batch, T, d_inner = x.shape
        N, n = A.shape[1], T // L  # n chunks
        # position t = kL + i is chunk k, column i; each loop runs over i for all n chunks at once
        delta_i = delta.view(batch, n, L, d_inner).unbind(2)  # L × (B, n, Cᵢ)
        Bx_i = (delta * x).view(batch, n, L, d_inner, 1).unbind(2)  # L × (B, n, Cᵢ, 1): Δ_t x_t
        B_i = B.view(batch, n, L, 1, N).unbind(2)  # L × (B, n, 1, N)
        C_i = C.view(batch, n, L, N, 1).unbind(2)  # L × (B, n, N, 1)
        A_bar = [torch.exp(d[..., None] * A) for d in delta_i]  # L × (B, n, Cᵢ, N): exp(Δ_t A)
        # 1. each chunk's own part of its last state: the recurrence from a zero state
        own = x.new_zeros(batch, n, d_inner, N)
        for a, bx, b in zip(A_bar, Bx_i, B_i, strict=True):
            own.mul_(a).addcmul_(bx, b)  # h ← Ā_t h + Δ_t x_t B_t
        # 2. the state entering each chunk, carried from chunk to chunk. A chunk decays it by
        # exp(A ΣΔ), the product of its Ā_t: a sum of log-decays Δ_t A ≤ 0, so exp cannot overflow
        chunk_decay = torch.exp(delta.view(batch, n, L, d_inner).sum(2)[..., None] * A)
        h0 = torch.zeros_like(own)  # (B, n, Cᵢ, N)
        for k in range(1, n):
            h0[:, k] = chunk_decay[:, k - 1] * h0[:, k - 1] + own[:, k - 1]
        # 3. every chunk again from its entering state, now reading the outputs
        h, states, ys = h0, [], []
        for a, bx, b, c in zip(A_bar, Bx_i, B_i, C_i, strict=True):
            h = torch.addcmul(a * h, bx, b)  # h_t = Ā_t h_{t−1} + B̄_t x_t
            states.append(h)
            ys.append(h @ c)  # (B, n, Cᵢ, 1): y_t = C_t h_t
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x, delta, A, B, C)
            ctx.L, ctx.A_bar, ctx.states = L, A_bar, states
            ctx.h0, ctx.chunk_decay = h0, chunk_decay
        ctx.set_materialize_grads(False)
        y = torch.stack(ys, dim=2).view(batch, T, d_inner)  # (B, n, L, Cᵢ, 1) -> (B, T, Cᵢ)
        return y, h[:, -1].clone()  # the last chunk's last state

    @staticmethod
    def _backward(ctx, saved, dy, d_last):
        x, delta, A, B, C = saved
        L, A_bar, states, h0, chunk_decay = ctx.L, ctx.A_bar, ctx.states, ctx.h0, ctx.chunk_decay
        batch, T, d_inner = x.shape
        N, n = A.shape[1], T // L
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        delta_i = delta.view(batch, n, L, d_inner).unbind(2)  # L × (B, n, Cᵢ)
        x_i = x.view(batch, n, L, d_inner).unbind(2)  # L × (B, n, Cᵢ)
        Bx_i = (delta * x).view(batch, n, L, 1, d_inner).unbind(2)  # L × (B, n, 1, Cᵢ)
        B_i = B.view(batch, n, L, N, 1).unbind(2)  # L × (B, n, N, 1)
        C_i = C.view(batch, n, L, 1, N).unbind(2)  # L × (B, n, 1, N)
        dy_i = dy.view(batch, n, L, d_inner, 1).unbind(2)  # L × (B, n, Cᵢ, 1)
        # g_t = ∂loss/∂h_t follows the recurrence run backwards, g_t = dy_t C_t + Ā_{t+1} g_{t+1}:
        # another scan, from the end, in the same three steps. e = Ā_{t+1} g_{t+1} is what
        # position t receives from the positions after it.
        # 1. each chunk's own part of Ā_t g_t at its first position, from e = 0 after its end
        own = x.new_zeros(batch, n, d_inner, N)
        for i in reversed(range(L)):
            own.addcmul_(dy_i[i], C_i[i]).mul_(A_bar[i])
        # 2. e entering each chunk from the next one, carried from the last chunk back
        e = torch.zeros_like(own)  # (B, n, Cᵢ, N)
        if d_last is not None:
            e[:, -1] = d_last  # the last state's own gradient
        for k in range(n - 1, 0, -1):
            e[:, k - 1] = chunk_decay[:, k] * e[:, k] + own[:, k]
        # 3. every chunk again from its entering e, collecting each position's gradients
        dA = torch.zeros_like(e)  # (B, n, Cᵢ, N): summed over B and n at the end
        dx, d_delta, dB, dC = [], [], [], []
        for i in reversed(range(L)):
            g = e.addcmul_(dy_i[i], C_i[i])  # g_t = dy_t C_t + Ā_{t+1} g_{t+1}, in place
            dC.append(dy_i[i].transpose(-1, -2) @ states[i])  # (B, n, 1, N): Σ_c dy_t h_t
            dBx = (g @ B_i[i])[..., 0]  # (B, n, Cᵢ): ∂loss/∂(Δ_t x_t) = Σ_n g_t B_t
            dB.append(Bx_i[i] @ g)  # (B, n, 1, N): Σ_c g_t Δ_t x_t
            e = g.mul_(A_bar[i])  # Ā_t g_t, passed back to h_{t−1}
            d_log = e * (states[i - 1] if i else h0)  # ∂loss/∂(Δ_t A) = g_t ⊙ Ā_t ⊙ h_{t−1}
            d_delta.append(dBx * x_i[i] + (d_log * A).sum(-1))
            dx.append(dBx * delta_i[i])
            dA.addcmul_(d_log, delta_i[i][..., None])

        def positions(grads: list[torch.Tensor], width: int) -> torch.Tensor:
            # L × (B, n, 1, width) or (B, n, width), last position first -> (B, T, width)
            return torch.stack(grads[::-1], dim=2).view(batch, T, width)

        return (positions(dx, d_inner), positions(d_delta, d_inner), dA.sum((0, 1)),
                positions(dB, N), positions(dC, N), None)


def selective_scan_parallel(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None = None, *, return_last_state: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan computed by chunks: the arguments and the result of
    :func:`selective_scan_sequential`, at any length T, with far fewer steps in Python.

    The recurrence h_t = Ā_t h_{t−1} + B̄_t x_t is linear in h, so what a chunk of positions adds
    to the state does not depend on the state it starts from. The T positions are cut into n
    chunks of L ≈ √T (``chunk_size``; the end is padded with Δ = 0, where Ā = 1 and B̄ = 0 leave
    the state as it is), and

    1. the recurrence runs inside every chunk at once from a zero state: L steps on tensors of n
       chunks, giving each chunk's own part of its last state;
    2. a loop over the n chunks carries the state from one chunk to the next; a chunk decays it
       by exp(A Σ_t Δ_t), whose exponent is a sum of log-decays Δ_t A ≤ 0 (the scan exponentiates
       nothing positive, so nothing overflows at any length);
    3. the recurrence runs inside every chunk again, from the state entering it, and reads
       y_t = C_t h_t.

    That is 2L + n ≈ 3√T steps instead of T (96 instead of 1024). The backward pass, written
    out in ``_ChunkedScan.backward``, is the same algorithm run from the end: the gradient with
    respect to the states, g_t = ∂loss/∂h_t, obeys the recurrence g_t = C_t dy_t + Ā_{t+1} g_{t+1}
    backwards, and each input's gradient is a product with g_t at its position. Autograd
    through steps 1 to 3 gives the same gradients but is slower (it stores a graph of every
    step's broadcast products and reduces each of them back). Every state is stored for the
    backward pass: memory O(B·T·Cᵢ·N), as with autograd through the loop; Mamba's GPU kernel
    instead keeps the states in on-chip memory and recomputes them in the backward pass
    (section 3.3.2). The backward pass cannot itself be differentiated.

    On one thread of a busy 2-core CPU, at T = 1024 with B = 2, Cᵢ = 64, N = 16, forward and
    backward ran 10 to 12 times faster than the loop (``python -m tfcourse.bench scan``); the
    gap grows with T, as the loop's T steps against about 3√T. Two textbook parallel
    scans were slower than the loop itself there: a log-depth (Hillis–Steele) scan over the
    pairs (Ā_t, B̄_t x_t), whose log₂T rounds each rewrite the whole (B, T, Cᵢ, N) tensor, and
    chunks computed at once from exponentials of differences of cumulative log-decays, which
    hold an (L, L) matrix per channel and state entry: L times the work.
    """
    out_dtype = _validate.floating(x, "x").dtype
    x, delta, A, B, C, D = _scan_inputs(x, delta, A, B, C, D)
    T = x.shape[1]
    L = math.isqrt(T - 1) + 1 if chunk_size is None else _validate.integer(
        chunk_size, "chunk_size", 1)  # ⌈√T⌉ by default
    L = min(L, T)
    pad = -T % L
    # zeros after the end: Δ = 0 gives Ā = 1 and B̄x = 0, which carry the last state unchanged
    padded = [F.pad(t, (0, 0, 0, pad)).contiguous() for t in (x, delta, B, C)]  # (B, nL, ·)
    y, h = _ChunkedScan.apply(padded[0], padded[1], A.contiguous(), padded[2], padded[3], L)
    y = y[:, :T]  # (B, T, Cᵢ)
    if D is not None:
        y = y + D * x  # + D x_t
    return (y.to(out_dtype), h) if return_last_state else y.to(out_dtype)


def selective_scan_step(
    x_t: torch.Tensor, delta_t: torch.Tensor, A: torch.Tensor, B_t: torch.Tensor,
    C_t: torch.Tensor, D: torch.Tensor | None, h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the selective scan, for decoding: the state h (B, Cᵢ, N) holds all that
    the past left, so the cost of a step does not grow with the tokens before it.

    ``x_t``, ``delta_t`` (B, Cᵢ); ``A`` (Cᵢ, N); ``B_t``, ``C_t`` (B, N); ``D`` (Cᵢ,) or None;
    ``h`` the state after the previous position (zeros before the first). Returns
    ``(y_t, h_t)``: y_t (B, Cᵢ) in the dtype of ``x_t`` and the new state, in float32 (float64
    for float64 inputs). Stepping through positions 0 … T − 1 gives the outputs and the last
    state of :func:`selective_scan_sequential`.
    """
    x, delta, A, B, C, D = _scan_inputs(x_t, delta_t, A, B_t, C_t, D, step=True)
    h = _validate.rank(_validate.floating(h, "h"), "h", 3, "(B, Cᵢ, N)")
    if h.shape != (*x.shape, A.shape[1]):
        raise ValueError(f"h: expected shape {(*x.shape, A.shape[1])} (B, Cᵢ, N), got "
                         f"{tuple(h.shape)}")
    _validate.same_device("h", h, "x_t", x)
    with _autocast_off(x):
        y_t, h = _step(x, delta, A, B, C, h.to(x.dtype))
    if D is not None:
        y_t = y_t + D * x  # + D x_t
    return y_t.to(x_t.dtype), h
