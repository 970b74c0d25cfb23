"""The implicit hypergradient with a truncated Neumann series (docs/design.md §4).

    dL_v/dλ = -(∂²L_t/∂λ∂θ) · H⁻¹ · ∂L_v/∂θ,   H = ∂²L_t/∂θ²

θ is the classifier's weight only, so every Hessian-vector product touches a
C x F matrix; the one expensive operation is the final back-propagation of
<g, u> through the network into the images and the hyperparameters, which
costs about one ordinary backward pass.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch


@dataclass
class Hypergradient:
    grads: List[Optional[torch.Tensor]]  # one per hyperparameter tensor (None: not reached)
    g_norm_sq: torch.Tensor  # ‖∂L_t/∂θ‖²
    v_norm_sq: torch.Tensor  # ‖∂L_v/∂θ‖²
    g_dot_v: torch.Tensor

    @property
    def divergence(self) -> torch.Tensor:
        """‖g − v‖²: how far the train gradient points from the valid one."""
        return self.g_norm_sq + self.v_norm_sq - 2 * self.g_dot_v

    def finite(self) -> torch.Tensor:
        """A boolean device tensor (no host synchronisation)."""
        checks = [torch.isfinite(g).all() for g in self.grads if g is not None]
        checks.append(torch.isfinite(self.g_dot_v))
        return torch.stack(checks).all()


def hypergradient(train_loss: Callable[[torch.Tensor], torch.Tensor], valid_grad: torch.Tensor,
                  theta: torch.Tensor, hyperparameters: Sequence[torch.Tensor],
                  iterations: int = 5, alpha: float = 0.01,
                  sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> Hypergradient:
    """Hessian-free implicit hypergradient, scaled by 1/alpha.

    train_loss(theta) -> L_t as a differentiable function of θ and of the
    hyperparameters (leaf tensors with requires_grad); valid_grad = ∂L_v/∂θ.
    Returns ∂<g, u>/∂λ with g = ∂L_t/∂θ and u = -Σ_{j=0..J} (I − αH)^j v
    ≈ −(1/α) H⁻¹ v, i.e. (1/α) · dL_v/dλ; the scale is absorbed by RMSprop.

    On several ranks, train_loss is this rank's share of the global-batch loss (its
    samples' sum over the global count) and valid_grad is already the global v;
    sum_over_ranks(tensor) sums a tensor over the ranks in place. H·p and g are sums of
    the ranks' terms, so every rank gets the same u, and ∂<g, u>/∂λ lands on the rows of
    its own samples only: the gathered rows equal the one-process result.
    """
    g = torch.autograd.grad(train_loss(theta), theta, create_graph=True)[0]
    v = valid_grad.detach().to(g.dtype)
    p, u = v.clone(), -v.clone()
    for _ in range(iterations):
        hessian_p = sum_over_ranks(torch.autograd.grad(g, theta, grad_outputs=p, retain_graph=True)[0])
        p = p - alpha * hessian_p
        u = u - p
    grads = torch.autograd.grad(g, list(hyperparameters), grad_outputs=u, allow_unused=True)
    g = sum_over_ranks(g.detach().clone())
    return Hypergradient(list(grads), (g * g).sum(), (v * v).sum(), (g * v).sum())
