"""Train many finite twins at once by full-batch gradient descent (tests of ntkit.predict)."""

from __future__ import annotations

import torch
from torch.func import functional_call, stack_module_state, vmap


def train_twins(net, x_train, y_train, x_test, *, seeds, learning_rate, steps, dtype=None):
    """Outputs of ``len(seeds)`` twins of ``net`` trained by full-batch gradient descent.

    Loss ``|f(x_train) - y_train|^2 / (2 y_train.size)`` (neural-tangents' convention), step
    ``learning_rate``, the twins stacked and vectorised with ``torch.func.vmap``.

    **Returns:** ``(fx_train, fx_test)`` of shapes ``(len(steps), S, n, outputs)`` and
    ``(len(steps), S, m, outputs)``, at the (sorted) step counts ``steps``.
    """
    dtype = dtype or x_train.dtype
    models = [net.module(tuple(x_train.shape[1:]), dtype=dtype,
                         generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    params, buffers = stack_module_state(models)
    base = models[0]

    def f(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(f, in_dims=(0, 0, None))
    y = y_train.reshape(len(x_train), -1)
    x_all = torch.cat([x_train, x_test])
    n = len(x_train)
    out_train, out_test = [], []
    step = 0
    for target in sorted(steps):
        while step < target:
            out = batched(params, buffers, x_train)
            loss = ((out - y) ** 2).sum() / (2 * y.numel())  # summed over twins: each its own
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p -= learning_rate * g
            step += 1
        with torch.no_grad():
            out = batched(params, buffers, x_all)
        out_train.append(out[:, :n])
        out_test.append(out[:, n:])
    return torch.stack(out_train), torch.stack(out_test)
