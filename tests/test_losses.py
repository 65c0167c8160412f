"""The fused full-softmax loss equals the composed ops, in value and gradient."""

import math

import pytest
import torch
import torch.nn.functional as F

from recscope.losses import linear_cross_entropy


def _inputs(n=7, V=11, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, C, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(V, C, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(V, (n,), generator=g)
    return hidden, table, targets


def test_a_case_worked_by_hand():
    # one row, three items with logits 0, ln 2, ln 5 -> softmax 1/8, 2/8, 5/8; target item 1
    hidden = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    table = torch.tensor([[0.0, 0.0], [math.log(2), 0.0], [math.log(5), 0.0]], dtype=torch.float64, requires_grad=True)
    loss = linear_cross_entropy(hidden, table, torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(8) - math.log(2))  # -log(2/8)
    loss.sum().backward()
    # d/dlogits = softmax - onehot = (1/8, 2/8 - 1, 5/8); d/dhidden = that @ table
    dlogits = torch.tensor([1 / 8, 2 / 8 - 1, 5 / 8], dtype=torch.float64)
    assert torch.allclose(hidden.grad[0], dlogits @ table.detach())
    assert torch.allclose(table.grad, dlogits[:, None] * hidden.detach())


@pytest.mark.parametrize("masked", [False, True])
def test_equals_composed_ops_in_value_and_gradient(masked):
    hidden, table, targets = _inputs()
    columns = None
    if masked:  # hide two columns no row targets
        columns = torch.zeros(len(table), dtype=torch.bool)
        free = [v for v in range(len(table)) if v not in set(targets.tolist())][:2]
        columns[free] = True
    weights = torch.linspace(0.5, 2.0, len(targets), dtype=torch.float64)  # a non-uniform incoming gradient
    fused = (linear_cross_entropy(hidden, table, targets, columns) * weights).sum()
    fused.backward()
    got = fused.item(), hidden.grad.clone(), table.grad.clone()
    hidden.grad = table.grad = None
    logits = hidden @ table.T
    if masked:
        logits = logits.masked_fill(columns[None, :], float("-inf"))
    composed = (F.cross_entropy(logits, targets, reduction="none") * weights).sum()
    composed.backward()
    assert got[0] == pytest.approx(composed.item(), rel=1e-12)
    assert torch.allclose(got[1], hidden.grad, atol=1e-12)
    assert torch.allclose(got[2], table.grad, atol=1e-12)
    if masked:
        assert (got[2][columns] == 0).all()  # a hidden column gets no gradient


def test_a_second_backward_is_refused_not_wrong():
    # the backward turns the saved softmax into the gradient in place: autograd's version check
    # must refuse a second pass rather than let it read a spent buffer
    hidden, table, targets = _inputs()
    loss = linear_cross_entropy(hidden, table, targets).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_large_logits_stay_finite():
    hidden, table, targets = _inputs()
    loss = linear_cross_entropy(hidden * 1e3, table, targets)
    assert torch.isfinite(loss).all()
