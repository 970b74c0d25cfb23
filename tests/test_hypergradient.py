"""The HES hypergradient against the exact implicit gradient on a problem where
the Hessian can be formed: L2-regularised multinomial logistic regression on
fixed features, per-sample loss weights as the hyperparameters."""
import pytest
import torch
import torch.nn.functional as F

from custom_models.hypergradient import hypergradient


@pytest.fixture(autouse=True)
def double_precision():
    """Exact comparisons need float64; restored afterwards for the other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

REGULARISATION = 0.1


def make_problem(seed=0, samples=40, features=5, classes=3):
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.randn(samples, features, generator=generator)
    true_w = torch.randn(classes, features, generator=generator)
    y_train = (x_train @ true_w.T).argmax(-1)
    flip = torch.arange(samples) % 4 == 0  # a quarter of the labels are wrong
    y_train[flip] = (y_train[flip] + 1) % classes
    x_valid = torch.randn(60, features, generator=generator)
    y_valid = (x_valid @ true_w.T).argmax(-1)
    return x_train, y_train, x_valid, y_valid, flip


def train_loss(theta, x, y, weight_logits):
    weights = F.softplus(weight_logits) / torch.log(torch.tensor(2.0))
    per_sample = F.cross_entropy(x @ theta.T, y, reduction="none")
    return (weights * per_sample).mean() + 0.5 * REGULARISATION * (theta ** 2).sum()


def valid_loss(theta, x, y):
    return F.cross_entropy(x @ theta.T, y)


def solve_inner(x, y, weight_logits, classes):
    """θ*(λ) to machine precision by Newton's method (the problem is strongly convex)."""
    theta = torch.zeros(classes, x.shape[1])
    for _ in range(50):
        flat = theta.flatten().requires_grad_(True)

        def loss_of(flat_theta):
            return train_loss(flat_theta.view_as(theta), x, y, weight_logits)
        grad = torch.autograd.functional.jacobian(loss_of, flat)
        hessian = torch.autograd.functional.hessian(loss_of, flat)
        theta = (flat - torch.linalg.solve(hessian, grad)).detach().view_as(theta)
        if grad.norm() < 1e-13:
            break
    return theta


def exact_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits):
    """-(∂²L_t/∂λ∂θ) H⁻¹ ∇θ L_v with H and the mixed derivative formed explicitly."""
    flat = theta.flatten()
    hessian = torch.autograd.functional.hessian(
        lambda t: train_loss(t.view_as(theta), x_train, y_train, weight_logits), flat)
    v = torch.autograd.functional.jacobian(lambda t: valid_loss(t.view_as(theta), x_valid, y_valid), flat)
    mixed = torch.autograd.functional.jacobian(   # (dim θ, dim λ)
        lambda lam: torch.autograd.functional.jacobian(
            lambda t: train_loss(t.view_as(theta), x_train, y_train, lam), flat, create_graph=True),
        weight_logits)
    return -mixed.T @ torch.linalg.solve(hessian, v)


def hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, iterations, alpha):
    theta = theta.clone().requires_grad_(True)
    lam = weight_logits.clone().requires_grad_(True)
    v = torch.autograd.grad(valid_loss(theta, x_valid, y_valid), theta)[0]
    result = hypergradient(lambda t: train_loss(t, x_train, y_train, lam), v, theta, [lam],
                           iterations=iterations, alpha=alpha)
    return result.grads[0] * alpha, result  # undo the 1/alpha scale


def test_neumann_hypergradient_matches_exact_implicit_gradient():
    x_train, y_train, x_valid, y_valid, _ = make_problem()
    weight_logits = 0.3 * torch.randn(len(y_train), generator=torch.Generator().manual_seed(1))
    theta = solve_inner(x_train, y_train, weight_logits, 3)
    exact = exact_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits)
    # the eigenvalues of H lie in [0.1, ~1]; alpha = 0.5 and 200 terms converge
    approx, _ = hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, 200, 0.5)
    cosine = F.cosine_similarity(exact, approx, dim=0)
    assert cosine > 0.999
    assert torch.allclose(approx, exact, rtol=1e-3, atol=1e-7)


def test_few_neumann_terms_still_point_the_right_way():
    """The paper's setting (J = 5, small alpha) gives a scaled, truncated estimate:
    not equal to the exact gradient, but well aligned with it."""
    x_train, y_train, x_valid, y_valid, _ = make_problem(seed=3)
    weight_logits = torch.zeros(len(y_train))
    theta = solve_inner(x_train, y_train, weight_logits, 3)
    exact = exact_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits)
    approx, _ = hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, 5, 0.01)
    assert F.cosine_similarity(exact, approx, dim=0) > 0.9


def test_hypergradient_agrees_with_finite_differences_of_the_valid_loss():
    x_train, y_train, x_valid, y_valid, _ = make_problem(seed=5)
    weight_logits = torch.zeros(len(y_train))
    theta = solve_inner(x_train, y_train, weight_logits, 3)
    approx, _ = hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, 300, 0.5)
    step = 1e-4
    for index in (0, 1, 7, 12):
        plus, minus = weight_logits.clone(), weight_logits.clone()
        plus[index] += step
        minus[index] -= step
        numeric = (valid_loss(solve_inner(x_train, y_train, plus, 3), x_valid, y_valid)
                   - valid_loss(solve_inner(x_train, y_train, minus, 3), x_valid, y_valid)) / (2 * step)
        assert torch.sign(numeric) == torch.sign(approx[index])
        assert abs(float(numeric - approx[index])) <= 1e-3 * abs(float(numeric)) + 1e-8


def test_wrong_labels_get_positive_hypergradient_so_their_weights_fall():
    """Raising the weight of a mislabelled sample raises the valid loss."""
    x_train, y_train, x_valid, y_valid, flipped = make_problem(seed=7, samples=80)
    weight_logits = torch.zeros(len(y_train))
    theta = solve_inner(x_train, y_train, weight_logits, 3)
    approx, _ = hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, 5, 0.01)
    assert approx[flipped].mean() > 0 > approx[~flipped].mean()


def test_diagnostics_are_the_gradient_norms_and_their_inner_product():
    x_train, y_train, x_valid, y_valid, _ = make_problem()
    weight_logits = torch.zeros(len(y_train))
    theta = torch.randn(3, x_train.shape[1], generator=torch.Generator().manual_seed(2))
    _, result = hes_hypergradient(theta, x_train, y_train, x_valid, y_valid, weight_logits, 1, 0.01)
    t = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(train_loss(t, x_train, y_train, weight_logits), t)[0]
    v = torch.autograd.grad(valid_loss(t, x_valid, y_valid), t)[0]
    assert torch.isclose(result.g_norm_sq, (g * g).sum())
    assert torch.isclose(result.v_norm_sq, (v * v).sum())
    assert torch.isclose(result.g_dot_v, (g * v).sum())
    assert torch.isclose(result.divergence, ((g - v) ** 2).sum())
