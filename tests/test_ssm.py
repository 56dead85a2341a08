"""tfcourse.ssm (chapter 8): discretisation, the LTI SSM as a recurrence and as a convolution, the
selective scan in a loop, by chunks and one step at a time (Gu and Dao, 2023, arXiv:2312.00752)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tfcourse import checks
from tfcourse.checks import ContractError
from tfcourse.ssm import (
    discretize,
    selective_scan_parallel,
    selective_scan_sequential,
    selective_scan_step,
    ssm_convolution,
    ssm_kernel,
    ssm_recurrent,
)

NAMES = ("x", "delta", "A", "B", "C", "D")
LENGTHS = [1, 7, 100, 257]  # not powers of two, one position, and a chunk of one


def scan_inputs(batch: int, T: int, d_inner: int = 6, N: int = 4, *, dtype=torch.float64,
                seed: int = 0) -> list[torch.Tensor]:
    """x, delta, A, B, C, D as a Mamba layer at initialisation feeds its scan: Δ is the softplus
    of noise plus a bias whose softplus is log-uniform in [0.001, 0.1]; A = −(1 … N) in every
    channel (S4D-real); x, B, C, D standard normal."""
    gen = torch.Generator().manual_seed(seed * 1000 + T)
    dt = torch.exp(torch.rand(d_inner, generator=gen, dtype=dtype) * math.log(100)
                   + math.log(0.001))  # log-uniform in [0.001, 0.1]
    noise = torch.randn(batch, T, d_inner, generator=gen, dtype=dtype)
    delta = F.softplus(noise + torch.log(torch.expm1(dt)))  # softplus⁻¹(dt) + noise
    A = -torch.arange(1, N + 1, dtype=dtype).repeat(d_inner, 1)
    x = torch.randn(batch, T, d_inner, generator=gen, dtype=dtype)
    B, C = torch.randn(2, batch, T, N, generator=gen, dtype=dtype)
    D = torch.randn(d_inner, generator=gen, dtype=dtype)
    return [x, delta, A, B, C, D]


def reference_scan(x, delta, A, B, C, D):
    """The recurrence in plain Python floats, one number at a time: h[c][n] ← exp(Δ A) h + Δ B x,
    y = Σ_n C h + D x. Returns y as nested lists (B, T, Cᵢ) and the last states (B, Cᵢ, N)."""
    x, delta, A, B, C, D = (t.tolist() for t in (x, delta, A, B, C, D))
    ys, states = [], []
    for b in range(len(x)):
        h = [[0.0] * len(A[0]) for _ in A]
        rows = []
        for t in range(len(x[b])):
            row = []
            for c in range(len(A)):
                for n in range(len(A[c])):
                    d = delta[b][t][c]
                    h[c][n] = math.exp(d * A[c][n]) * h[c][n] + d * B[b][t][n] * x[b][t][c]
                row.append(sum(C[b][t][n] * h[c][n] for n in range(len(A[c])))
                           + D[c] * x[b][t][c])
            rows.append(row)
        ys.append(rows)
        states.append(h)
    return torch.tensor(ys, dtype=torch.float64), torch.tensor(states, dtype=torch.float64)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference, relative to the largest entry of ``expected`` (0 if both are 0)."""
    scale = expected.double().abs().max().clamp_min(1e-300)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


# --- discretisation ---


def test_zoh_is_the_exact_solution_given_by_the_matrix_exponential():
    gen = torch.Generator().manual_seed(0)
    A = -torch.rand(2, 3, generator=gen, dtype=torch.float64) * 4 - 0.5  # (Cᵢ, N)
    B = torch.randn(3, generator=gen, dtype=torch.float64)  # (N,)
    delta = torch.tensor([0.05, 0.7], dtype=torch.float64)  # (Cᵢ,)
    A_bar, B_bar = discretize(delta, A, B)
    for c in range(2):
        # Van Loan: exp(Δ [[A, B], [0, 0]]) = [[Ā, B̄], [0, 1]] for the ZOH of x' = Ax + Bu
        block = torch.zeros(4, 4, dtype=torch.float64)
        block[:3, :3], block[:3, 3] = torch.diag(A[c]), B
        expm = torch.linalg.matrix_exp(delta[c] * block)
        mistakes = {"Ā = exp(A), Δ left out": torch.exp(A[c]),
                    "Ā = ΔA, the exponential left out": delta[c] * A[c]}
        checks.expect_close(A_bar[c], torch.diagonal(expm[:3, :3]), "Ā", mistakes=mistakes)
        checks.expect_close(B_bar[c], expm[:3, 3], "B̄", mistakes={"B̄ = ΔB": delta[c] * B})
        # Eq. 4 as written, with matrices: B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB
        dA = delta[c] * torch.diag(A[c])
        eq4 = torch.linalg.solve(dA, torch.linalg.matrix_exp(dA) - torch.eye(3,
                                 dtype=torch.float64)) @ (delta[c] * B)
        checks.expect_close(B_bar[c], eq4)


def test_euler_keeps_the_zoh_A_bar_and_takes_delta_B():
    A = -torch.arange(1.0, 5.0, dtype=torch.float64).repeat(3, 1)  # (Cᵢ, N)
    B = torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=torch.float64)
    for dt in (1e-1, 1e-2, 1e-3):
        delta = torch.full((3,), dt, dtype=torch.float64)
        zoh, euler = discretize(delta, A, B, "zoh"), discretize(delta, A, B, method="euler")
        checks.expect_close(euler[0], zoh[0], rtol=0, atol=0)
        checks.expect_close(euler[1], dt * B.expand(3, 4), rtol=0, atol=1e-15)
        # the two B̄ differ by (Δ²/2) A B to leading order: second order in Δ
        checks.expect_close(zoh[1] - euler[1], dt**2 / 2 * A * B, rtol=dt * 3, atol=0)


def test_discretize_gives_a_matrix_pair_per_position_for_a_selective_ssm():
    x, delta, A, B, C, D = scan_inputs(2, 5, 3, 4)
    A_bar, B_bar = discretize(delta, A, B, method="euler")
    assert A_bar.shape == B_bar.shape == (2, 5, 3, 4)
    checks.expect_close(A_bar[1, 2], torch.exp(delta[1, 2, :, None] * A))
    checks.expect_close(B_bar[1, 2], delta[1, 2, :, None] * B[1, 2])
    assert (A_bar < 1).all() and (A_bar > 0).all()  # Δ > 0 and A < 0: every step decays


# --- the LTI SSM: recurrence and convolution ---


def lti(d_inner: int = 3, N: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    A = -torch.rand(d_inner, N, generator=gen, dtype=torch.float64) * 3 - 0.1
    delta = torch.rand(d_inner, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    B = torch.randn(N, generator=gen, dtype=torch.float64)
    C = torch.randn(d_inner, N, generator=gen, dtype=torch.float64)
    return (*discretize(delta, A, B), C)


@pytest.mark.parametrize("batch, T", [(2, 1), (1, 7), (3, 50), (2, 257)])
def test_lti_ssm_recurrence_and_convolution_are_the_same_map(batch, T):
    A_bar, B_bar, C = lti()
    x = torch.randn(batch, T, 3, generator=torch.Generator().manual_seed(T), dtype=torch.float64)
    recurrent = ssm_recurrent(x, A_bar, B_bar, C)
    assert recurrent.shape == (batch, T, 3)
    checks.expect_close(ssm_convolution(x, A_bar, B_bar, C), recurrent, rtol=0, atol=1e-10)
    checks.expect_close(ssm_convolution(x.float(), A_bar.float(), B_bar.float(), C.float()),
                        recurrent.float(), rtol=1e-4, atol=1e-5)


def test_kernel_is_C_times_powers_of_A_bar_times_B_bar_and_the_impulse_response():
    A_bar, B_bar, C = lti()
    K = ssm_kernel(A_bar, B_bar, C, 6)
    assert K.shape == (3, 6)
    checks.expect_close(K[:, 0], (C * B_bar).sum(-1))  # C B̄
    checks.expect_close(K[:, 1], (C * A_bar * B_bar).sum(-1))  # C Ā B̄
    checks.expect_close(K[:, 5], (C * A_bar**5 * B_bar).sum(-1))  # C Ā⁵ B̄
    impulse = torch.zeros(1, 6, 3, dtype=torch.float64)
    impulse[:, 0] = 1
    checks.expect_close(ssm_recurrent(impulse, A_bar, B_bar, C)[0].T, K)


# --- the selective scan ---


def test_sequential_scan_is_the_recurrence_written_number_by_number():
    x, delta, A, B, C, D = scan_inputs(2, 5, 3, 2)
    delta = delta * 20  # steps of about 0.1 to 2, so that exp(ΔA) is far from exp(A) and from 1
    expected_y, expected_h = reference_scan(x, delta, A, B, C, D)
    y, h = selective_scan_sequential(x, delta, A, B, C, D, return_last_state=True)
    checks.expect_close(y, expected_y, rtol=0, atol=1e-12)
    checks.expect_close(h, expected_h, rtol=0, atol=1e-12)
    # at the first position the state is Δ B x, and it is read after the update: y ≠ D x
    first = (C[:, 0, None] * delta[:, 0, :, None] * B[:, 0, None] * x[:, 0, :, None]).sum(-1)
    checks.expect_close(y[:, 0], first + D * x[:, 0], mistakes={
        "output read before the state update": D * x[:, 0]})
    checks.expect_close(selective_scan_sequential(x, delta, A, B, C), y - D * x)  # D optional


@pytest.mark.parametrize("T", LENGTHS)
def test_parallel_scan_equals_the_sequential_one_in_float32(T):
    inputs = [t.float() for t in scan_inputs(2, T, 8, 16)]
    y, h = selective_scan_sequential(*inputs, return_last_state=True)
    y_par, h_par = selective_scan_parallel(*inputs, return_last_state=True)
    checks.expect_device_dtype(y_par, "cpu", torch.float32)
    assert relative_error(y_par, y) < 1e-5 and relative_error(h_par, h) < 1e-5


@pytest.mark.parametrize("T", LENGTHS)
def test_parallel_scan_gradients_equal_the_sequential_ones(T):
    inputs = [t.float().requires_grad_() for t in scan_inputs(2, T, 8, 16, seed=1)]
    weights = torch.randn(2, T, 8, generator=torch.Generator().manual_seed(T))
    grads = {}
    for scan in (selective_scan_sequential, selective_scan_parallel):
        y, h = scan(*inputs, return_last_state=True)
        loss = (y * weights).sum() + h.square().sum()  # through the outputs and the last state
        grads[scan] = torch.autograd.grad(loss, inputs)
    for name, par, seq in zip(NAMES, grads[selective_scan_parallel],
                              grads[selective_scan_sequential], strict=True):
        assert relative_error(par, seq) < 1e-5, name


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 40])
def test_parallel_scan_is_exact_for_any_chunk_size(chunk_size):
    inputs = scan_inputs(2, 13, 3, 5, seed=2)  # 13 positions: 13 chunks of 1, … one of 13, one
    y, h = selective_scan_sequential(*inputs, return_last_state=True)
    y_par, h_par = selective_scan_parallel(*inputs, return_last_state=True,
                                           chunk_size=chunk_size)
    checks.expect_close(y_par, y, rtol=0, atol=1e-12)
    checks.expect_close(h_par, h, rtol=0, atol=1e-12)


def test_parallel_scan_backward_passes_gradcheck():
    inputs = [t.requires_grad_() for t in scan_inputs(1, 9, 2, 3, seed=3)]

    def scan(*tensors):
        return selective_scan_parallel(*tensors, chunk_size=4, return_last_state=True)

    assert torch.autograd.gradcheck(scan, inputs)
    x, delta, A, B, C, _ = inputs  # and without D
    assert torch.autograd.gradcheck(lambda *t: selective_scan_parallel(*t), (x, delta, A, B, C))


@pytest.mark.parametrize("scan", [selective_scan_sequential, selective_scan_parallel])
def test_stepping_through_the_positions_gives_the_scan(scan):
    x, delta, A, B, C, D = scan_inputs(2, 11, 4, 3)
    y, h = scan(x, delta, A, B, C, D, return_last_state=True)
    state = torch.zeros(2, 4, 3, dtype=torch.float64)
    for t in range(11):
        y_t, state = selective_scan_step(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state)
        checks.expect_close(y_t, y[:, t], rtol=0, atol=1e-12)
    checks.expect_close(state, h, rtol=0, atol=1e-12)


def test_steps_continue_from_the_last_state_of_a_scan():
    x, delta, A, B, C, D = (t.float() for t in scan_inputs(2, 30, 4, 3))
    full = selective_scan_parallel(x, delta, A, B, C, D)
    _, state = selective_scan_parallel(x[:, :20], delta[:, :20], A, B[:, :20], C[:, :20], D,
                                       return_last_state=True)
    for t in range(20, 30):
        y_t, state = selective_scan_step(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state)
        checks.expect_close(y_t, full[:, t])


def test_parallel_scan_is_causal():
    x, delta, A, B, C, D = (t.float() for t in scan_inputs(2, 24, 4, 3))
    noise = torch.log(torch.expm1(delta))  # the pre-softplus Δ, perturbed freely

    def scan(inputs: torch.Tensor) -> torch.Tensor:  # x, Δ, B and C of every position at once
        x, pre, B, C = inputs.split([4, 4, 3, 3], dim=-1)
        return selective_scan_parallel(x, F.softplus(pre), A, B, C, D)

    checks.expect_causal(scan, torch.cat([x, noise, B, C], dim=-1), dim=1, atol=1e-6)


def test_long_sequences_with_large_steps_stay_finite():
    # Δ ≈ 5 and A down to −16: a chunk of 60 decays by exp(−4800); a scan that divided by the
    # cumulative decay (exponentiating positive sums) would overflow here
    x, delta, A, B, C, D = (t.float() for t in scan_inputs(1, 3600, 4, 16))
    delta = delta + 5
    y, h = selective_scan_parallel(x, delta, A, B, C, D, return_last_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    checks.expect_close(h, selective_scan_sequential(x, delta, A, B, C, D,
                                                     return_last_state=True)[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_scanned_in_float32(dtype):
    inputs = [t.float() for t in scan_inputs(2, 40, 4, 8)]
    rounded = [t.to(dtype) for t in inputs]
    y, h = selective_scan_parallel(*rounded, return_last_state=True)
    checks.expect_device_dtype(y, "cpu", dtype)
    checks.expect_device_dtype(h, "cpu", torch.float32)
    # the same rounded inputs in float32: only the output's rounding to the half type differs
    expected = selective_scan_sequential(*(t.float() for t in rounded))
    checks.expect_close(y.float(), expected, rtol=1e-2, atol=1e-2)


def test_scans_run_in_float32_under_autocast():
    inputs = [t.float().requires_grad_() for t in scan_inputs(2, 30, 4, 8)]
    expected = selective_scan_parallel(*inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no bfloat16 matrix products inside
        y = selective_scan_parallel(*inputs)
        grads = torch.autograd.grad(y.square().sum(), inputs)
        y_t, _ = selective_scan_step(*(t[:, 0] for t in (inputs[0], inputs[1])), inputs[2],
                                     inputs[3][:, 0], inputs[4][:, 0], inputs[5],
                                     torch.zeros(2, 4, 8))
        sequential = selective_scan_sequential(*inputs)
    checks.expect_close(y, expected, rtol=1e-6, atol=1e-7)
    checks.expect_close(sequential, expected, rtol=1e-5, atol=1e-6)
    checks.expect_close(y_t, expected[:, 0], rtol=1e-6, atol=1e-7)
    for name, grad, expected_grad in zip(NAMES, grads, expected_grads, strict=True):
        checks.expect_close(grad, expected_grad, name, rtol=1e-6, atol=1e-6)


# --- bad input ---

X, DELTA, A_, B_, C_, D_ = (t.float() for t in scan_inputs(2, 5, 3, 4))
H = torch.zeros(2, 3, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda: discretize(DELTA, A_, B_, "bilinear"), ValueError, r"method: expected one of"),
    (lambda: discretize(DELTA, A_[0], B_), ValueError, r"A: expected 2 dimensions \(Cᵢ, N\)"),
    (lambda: discretize(DELTA[..., :2], A_, B_), ValueError, r"delta: expected size 3"),
    (lambda: discretize(DELTA, A_, B_[..., :3]), ValueError, r"B: expected size 4"),
    (lambda: discretize(DELTA, A_, B_[0]), ValueError, r"B: expected leading dimensions"),
    (lambda: ssm_recurrent(X, A_, A_, A_[:, :2]), ValueError, r"C: expected shape \(3, 4\)"),
    (lambda: ssm_convolution(X[..., :2], A_, A_, A_), ValueError, r"x: expected size 3"),
    (lambda: ssm_kernel(A_, A_, A_, 0), ValueError, "T: expected an int >= 1"),
    (lambda: selective_scan_parallel(X[0], DELTA, A_, B_, C_), ValueError,
     r"x: expected 3 dimensions \(B, T, Cᵢ\)"),
    (lambda: selective_scan_parallel(X, DELTA[:, :4], A_, B_, C_), ValueError,
     r"delta: expected shape \(2, 5, 3\)"),
    (lambda: selective_scan_sequential(X, DELTA, A_.T, B_, C_), ValueError,
     r"A: expected size 3 in dimension 0 \(Cᵢ, the channels of x\)"),
    (lambda: selective_scan_parallel(X, DELTA, A_, B_[..., :3], C_), ValueError,
     r"B: expected shape \(2, 5, 4\)"),
    (lambda: selective_scan_parallel(X, DELTA, A_, B_, C_.long()), TypeError,
     "C: expected a floating-point tensor"),
    (lambda: selective_scan_parallel(X, DELTA, A_, B_, C_, D_[:2]), ValueError, "D: expected"),
    (lambda: selective_scan_parallel(X, DELTA, A_, B_, C_.to("meta")), ValueError,
     "C: expected device cpu like x"),
    (lambda: selective_scan_parallel(X[:, :0], DELTA[:, :0], A_, B_[:, :0], C_[:, :0]),
     ValueError, "x: expected at least one position"),
    (lambda: selective_scan_parallel(X, DELTA, A_, B_, C_, chunk_size=0), ValueError,
     "chunk_size: expected an int >= 1"),
    (lambda: selective_scan_step(X[:, 0], DELTA[:, 0], A_, B_[:, 0], C_[:, 0], None, H[0]),
     ValueError, r"h: expected 3 dimensions \(B, Cᵢ, N\)"),
    (lambda: selective_scan_step(X[:, 0], DELTA[:, 0], A_, B_[:, 0], C_[:, 0], None, H[:1]),
     ValueError, r"h: expected shape \(2, 3, 4\)"),
    (lambda: selective_scan_step(X, DELTA[:, 0], A_, B_[:, 0], C_[:, 0], None, H), ValueError,
     r"x_t: expected 2 dimensions \(B, Cᵢ\)"),
    (lambda: selective_scan_step(X[:, 0], DELTA[:, 0], A_, B_[:1, 0], C_[:, 0], None, H),
     ValueError, r"B_t: expected shape \(2, 4\)"),
])
def test_bad_input_is_rejected_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_expect_causal_would_catch_a_scan_that_reads_ahead():
    x, delta, A, B, C, D = (t.float() for t in scan_inputs(1, 8, 2, 3))

    def reads_ahead(x: torch.Tensor) -> torch.Tensor:  # a scan run over the reversed sequence
        return selective_scan_parallel(x.flip(1), delta, A, B, C, D).flip(1)

    with pytest.raises(ContractError, match="changed by"):
        checks.expect_causal(reads_ahead, x, dim=1, atol=1e-6)
