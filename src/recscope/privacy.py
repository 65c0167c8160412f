"""User-level differential privacy in training (``train.privacy: dp``): DP-SGD through Opacus.

The unit protected is a user: the trained weights change by at most (epsilon, delta) whether or
not any one user's whole history was in the training data. What makes the accounting right:

- One example per user. ``training_windows`` cuts a history longer than ``max_len + 1`` into
  several windows; a user's example is all of them, stacked (users, windows, max_len + 1), and
  its loss is the mean next-item cross-entropy over all its targets. (One example per window
  would let a long history move several examples: the accountant's epsilon would be wrong.)
- Poisson sampling of users: each step takes every user independently with probability
  q = 1 / steps per epoch, steps per epoch = ceil(users / train.batch_size) (Opacus's
  ``UniformWithReplacementSampler``, as its ``DPDataLoader`` sets it), so a step holds about
  ``train.batch_size`` users.
- Per-user gradients of every parameter from ``torch.func`` (``vmap`` of ``grad`` of one user's
  loss over the whole model). Opacus's hooks derive a layer's per-sample gradient from the
  inputs that layer saw, which is wrong for this model: the item table is read by the tokens'
  lookup and again, whole, by the tied output projection (``item_table()`` looks every item up:
  that call has no user dimension at all), and the tower maps run tower-major
  (towers, B, T, d): their first dimension is not the batch. Differentiating each user's loss
  as a function of all parameters has no such blind spot; tests/test_privacy_dp.py checks it
  against explicit per-user backward passes of :meth:`SeqRec.loss`.
- Clipping, noise and accounting: Opacus's ``DPOptimizer`` (every user's gradient clipped to
  ``dp_max_grad_norm`` over all parameters, Gaussian noise of std noise multiplier x
  ``dp_max_grad_norm`` added to the sum, divided by the expected batch size) and accountant
  (RDP or PRV, ``dp_accountant``). The noise multiplier is calibrated by Opacus's
  ``get_noise_multiplier`` to reach ``dp_epsilon`` at ``dp_delta`` after exactly epochs x steps
  per epoch steps, as ``PrivacyEngine.make_private_with_epsilon`` does; a step's users go
  through in chunks that bound memory (Opacus's virtual steps, ``signal_skip_step``).
- Secret randomness: the noise and the sampling draw from a generator seeded by the operating
  system, not from ``train.seed``, which run.json publishes (with it anyone could draw the noise
  again and subtract it). A private run does not repeat exactly; initialisation and dropout
  still follow ``train.seed``.
- What the guarantee covers: the weights (every step's, so the last and any average of them,
  ``train.ema``). Selecting an epoch on valid would read the valid cases, the same users' next
  items, outside the accountant, so a private run keeps its last epoch (train.py): no selection,
  no early stopping. The losses and valid metrics run.json records are measurements on the
  users' data, as any evaluation, and are not covered; nor is the run directory, which holds the
  training data itself (share a version's weights, not the run).

Refused (config.py, or here when the data decides): tasks other than next-item, sampled
softmax, ``train.tower_batches=own``, ``train.tower_shards``, several processes, ``--resume``.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Callable

import numpy as np
import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.optim.swa_utils import AveragedModel

from recscope.config import Config
from recscope.data import Dataset
from recscope.errors import RunError
from recscope.model import SeqRec
from recscope.run import PrivacySpent
from recscope.sampling import uses_sampled_softmax
from recscope.train import TrainingProgress, learning_rate, prepare_id_dropout

# Values a chunk of a step's users may hold at once: their gradients (one model's parameters each)
# plus their logits (positions x items, about three copies through the backward); 2**26 floats is
# 256 MB, some 60 users of Beauty (12,101 items, width 32) at once: fewer chunks, each reading the
# item table once.
CHUNK_BUDGET = 2**26


@dataclasses.dataclass
class UserExamples:
    """Every user with a training target as one example: all their training windows.

    ``windows`` (W + 1, max_len + 1) are the epoch's windows (as ``training_windows`` lays them
    out: user by user, each user's from their most recent backwards) with an all-padding window
    last, which pads users of fewer windows; ``events`` the same of their event labels (or None).
    User u owns rows ``starts[u]`` to ``starts[u] + counts[u]``; ``lengths[u]`` is the width of
    their widest window (items, not padding)."""

    windows: Tensor
    events: Tensor | None
    starts: Tensor  # (U,)
    counts: Tensor  # (U,)
    lengths: Tensor  # (U,)

    @classmethod
    def build(cls, data: Dataset, train: np.ndarray, windows: Tensor, events: Tensor | None) -> UserExamples:
        """``train`` (n_events,) bool: the split's training events; ``windows`` and ``events``
        those ``training_windows`` built from them (TrainingData's)."""
        max_len = windows.shape[1] - 1
        users_of = np.repeat(np.arange(data.n_users), data.lengths)[train]
        train_len = np.bincount(users_of, minlength=data.n_users)
        per_user = -(-np.maximum(train_len - 1, 0) // max_len)  # training_windows' count: ceil(transitions / max_len)
        if per_user.sum() != len(windows):
            raise RuntimeError(f"{len(windows)} training windows, but the split's users hold {per_user.sum()}")
        has = per_user > 0
        starts = (np.cumsum(per_user) - per_user)[has]
        lengths = np.minimum(train_len, max_len + 1)[has]

        def padded(w: Tensor) -> Tensor:
            return torch.cat([w, w.new_zeros(1, w.shape[1])])

        return cls(
            padded(windows),
            None if events is None else padded(events),
            torch.from_numpy(starts),
            torch.from_numpy(per_user[has]),
            torch.from_numpy(lengths),
        )

    def __len__(self) -> int:
        return len(self.starts)

    def chunks(self, users: Tensor, floats_per_user: Callable[[int, int], int]) -> list[Tensor]:
        """``users`` in chunks of similar shape (sorted by windows, then width) whose
        ``floats_per_user(windows, width)`` of the chunk's widest sum to at most CHUNK_BUDGET."""
        order = users[torch.argsort(self.counts[users] * 100_000 + self.lengths[users], stable=True)]
        chunks, start = [], 0
        while start < len(order):
            end = start + 1
            while end < len(order):
                last = order[end]
                cost = floats_per_user(int(self.counts[last]), int(self.lengths[last])) * (end + 1 - start)
                if cost > CHUNK_BUDGET:
                    break
                end += 1
            chunks.append(order[start:end])
            start = end
        return chunks

    def gather(self, users: Tensor) -> tuple[Tensor, Tensor | None]:
        """(U, windows, width) the users' windows, cut to the widest, padded with empty windows; and
        their event labels alike (or None)."""
        most, width = int(self.counts[users].max()), int(self.lengths[users].max())
        offsets = torch.arange(most)
        rows = self.starts[users, None] + offsets
        rows = torch.where(offsets < self.counts[users, None], rows, len(self.windows) - 1)  # the empty window
        windows = self.windows[rows][..., -width:]
        return windows, None if self.events is None else self.events[rows][..., -width:]


class UserLoss(nn.Module):
    """One user's mean next-item cross-entropy over all their windows, written for ``torch.func``:
    no data-dependent shapes (masks multiply rather than select) and no custom autograd function,
    so it can be vmapped over users. Equal to ``model.loss(inputs, targets, reduction="sum")``
    over the user's targets (the towers' mean of each tower's loss, full softmax over the
    catalog with the tied item table), which tests/test_privacy_dp.py checks."""

    def __init__(self, model: SeqRec):
        super().__init__()
        self.model = model

    def forward(self, windows: Tensor, events: Tensor | None, dropped: Tensor | None, unseen: Tensor | None) -> Tensor:
        """windows (W, T + 1) one user's, events alike or None; dropped, unseen (n_items + 1,) bool or None."""
        m = self.model
        inputs, targets = windows[:, :-1], windows[:, 1:]
        table = m.item_table()  # (n_items + 1, C)
        if dropped is not None:
            table = table - m.item_emb.weight * dropped[:, None]
        # the eager attention (asking for the weights takes it): vmap has no batching rule for the fused
        # kernel on CPU and would run it user by user
        labels = None if events is None else events[:, :-1]
        hidden = m(inputs, tokens=table[inputs], events=labels, output_attentions=True).hidden
        mask = ((inputs > 0) & (targets > 0)).to(hidden.dtype)  # (W, T)
        target = (targets - 1).clamp(min=0)[..., None]  # padding targets point anywhere: their loss is masked
        d = m.cfg.d_model
        losses = []
        for h, items in zip(hidden.split(d, dim=-1), table[1:].split(d, dim=-1), strict=True):  # one per tower
            logits = h @ items.T  # (W, T, n_items)
            if unseen is not None:
                logits = logits.masked_fill(unseen[1:], float("-inf"))
            ce = logits.logsumexp(-1) - logits.gather(-1, target).squeeze(-1)  # (W, T)
            losses.append((ce * mask).sum())
        return torch.stack(losses).mean() / mask.sum().clamp(min=1)


def per_user_gradients(
    model: SeqRec,
    windows: Tensor,
    events: Tensor | None = None,
    dropped: Tensor | None = None,
    unseen: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Each user's gradient of their :class:`UserLoss`: windows (U, W, T + 1) -> ({parameter name:
    (U, *its shape)} for every trainable parameter, (U,) the users' losses). Dropout masks differ
    per user, as they would in a batch."""
    loss = UserLoss(model)
    params = {f"model.{k}": p.detach() for k, p in model.named_parameters() if p.requires_grad}
    rest = {f"model.{k}": p for k, p in model.named_parameters() if not p.requires_grad}
    rest |= {f"model.{k}": b for k, b in model.named_buffers()}

    def one(params: dict[str, Tensor], windows: Tensor, events: Tensor | None) -> tuple[Tensor, Tensor]:
        value = functional_call(loss, (params, rest), (windows, events, dropped, unseen))
        return value, value.detach()

    per_user = vmap(grad(one, has_aux=True), in_dims=(None, 0, None if events is None else 0), randomness="different")
    grads, values = per_user(params, windows, events)
    return {k.removeprefix("model."): g for k, g in grads.items()}, values


@dataclasses.dataclass
class PrivateTraining:
    """The state of a private run: its users as examples, the Opacus optimizer wrapping the run's,
    the accountant, and the secret generator of sampling and noise."""

    examples: UserExamples
    optimizer: DPOptimizer
    accountant: object  # an Opacus accountant ("prv" or "rdp")
    accountant_name: str
    sample_rate: float
    steps_per_epoch: int
    delta: float
    target_epsilon: float
    generator: torch.Generator
    steps: int = 0

    @classmethod
    def build(
        cls, data: Dataset, train: np.ndarray, windows: Tensor, events: Tensor | None, config: Config, optimizer
    ) -> PrivateTraining:
        """Wrap ``optimizer`` (the run's AdamW) for DP-SGD over the users of the training events
        ``train`` (the split's), whose ``windows`` and ``events`` TrainingData holds."""
        if uses_sampled_softmax(config):
            raise RunError(
                f"train.privacy=dp needs full softmax, and train.loss=auto picks sampled softmax for "
                f"{config.model.n_items:,} items (above train.sampled_above={config.train.sampled_above:,})",
                fix="set train.loss=ce, or train.privacy=none",
            )
        t = config.train
        examples = UserExamples.build(data, train, windows, events)
        if len(examples) < 2:
            raise RunError(
                f"train.privacy=dp needs users to sample from; {len(examples)} user has a training target",
                fix="train on data with more users, or train.privacy=none",
            )
        steps_per_epoch = math.ceil(len(examples) / t.batch_size)
        sample_rate = 1 / steps_per_epoch
        delta = t.dp_delta or 1 / len(examples)
        noise = get_noise_multiplier(
            target_epsilon=t.dp_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=t.epochs * steps_per_epoch,
            accountant=t.dp_accountant,
        )
        generator = torch.Generator().manual_seed(secrets.randbits(63))
        dp = DPOptimizer(
            optimizer,
            noise_multiplier=noise,
            max_grad_norm=t.dp_max_grad_norm,
            expected_batch_size=len(examples) * sample_rate,
            generator=generator,
        )
        accountant = create_accountant(t.dp_accountant)
        dp.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate))
        return cls(
            examples, dp, accountant, t.dp_accountant, sample_rate, steps_per_epoch, delta, t.dp_epsilon, generator
        )

    def describe(self, config: Config) -> str:
        t = config.train
        return (
            f"user-level DP-SGD (Opacus): {len(self.examples):,} users, one example each (all their windows); "
            f"Poisson sample rate {self.sample_rate:.4g} (about {len(self.examples) * self.sample_rate:.0f} users "
            f"a step), {self.steps_per_epoch} steps an epoch; each user's gradient clipped to {t.dp_max_grad_norm:g}, "
            f"noise multiplier {self.optimizer.noise_multiplier:.4g} for epsilon {self.target_epsilon:g} at delta "
            f"{self.delta:.3g} after {t.epochs} epochs ({self.accountant_name} accountant); the last epoch is kept"
        )

    def spent(self, config: Config) -> PrivacySpent:
        """What the steps taken so far spent (run.json's state.privacy)."""
        epsilon = self.accountant.get_epsilon(self.delta) if self.steps else 0.0
        return PrivacySpent(
            epsilon=round(float(epsilon), 4),
            delta=self.delta,
            accountant=self.accountant_name,
            noise_multiplier=self.optimizer.noise_multiplier,
            max_grad_norm=config.train.dp_max_grad_norm,
            sample_rate=self.sample_rate,
            steps=self.steps,
            target_epsilon=self.target_epsilon,
            users=len(self.examples),
        )

    def train_epoch(
        self,
        model: SeqRec,
        config: Config,
        epoch: int,
        progress: TrainingProgress | None = None,
        unseen: Tensor | None = None,
        averaged: AveragedModel | None = None,
    ) -> float:
        """One epoch of ``steps_per_epoch`` noisy steps, each over a Poisson sample of the users;
        returns the mean of the steps' mean user loss (a step without users counts 0)."""
        t = config.train
        model.train()
        ids = torch.Generator().manual_seed(t.seed * 1000 + epoch)  # id dropout: public randomness is fine
        prepare_id_dropout(model, config, unseen)
        sampler = UniformWithReplacementSampler(
            num_samples=len(self.examples),
            sample_rate=self.sample_rate,
            generator=self.generator,
            steps=self.steps_per_epoch,
        )
        if progress:
            progress.start_epoch(epoch + 1, self.steps_per_epoch)
        total = 0.0
        for i, users in enumerate(sampler):
            if t.lr_schedule != "constant":
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(t, epoch + i / self.steps_per_epoch)
            dropped = None
            if t.id_dropout > 0:
                dropped = torch.rand(config.model.n_items + 1, generator=ids) < t.id_dropout
            loss = self.step(model, torch.as_tensor(users, dtype=torch.long), dropped, unseen)
            if averaged is not None:
                averaged.update_parameters(model)
            total += loss
            if progress:
                progress.step(loss)
        return total / self.steps_per_epoch

    def step(self, model: SeqRec, users: Tensor, dropped: Tensor | None = None, unseen: Tensor | None = None) -> float:
        """One noisy step over ``users`` (indices of examples); returns their mean loss. An empty
        sample still takes its step: noise alone, as the accountant counts it."""
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        cfg = model.cfg
        n_params = sum(p.numel() for _, p in params)

        def floats(windows: int, length: int) -> int:
            # a user's gradient; their logits about three times over (forward, softmax, backward);
            # their activations, a dozen or so hidden widths per position and layer
            return n_params + windows * length * (3 * cfg.n_items * cfg.towers + 16 * cfg.width * cfg.n_layers)

        chunks = self.examples.chunks(users, floats) or [users]
        losses = []
        for j, chunk in enumerate(chunks):
            if len(chunk):
                windows, events = self.examples.gather(chunk)
                grads, values = per_user_gradients(model, windows, events, dropped, unseen)
                losses.append(values)
            else:
                grads = {name: p.new_zeros((0, *p.shape)) for name, p in params}
            for name, p in params:
                p.grad_sample = grads[name]
            if j < len(chunks) - 1:
                self.optimizer.signal_skip_step(True)  # clip and add up this chunk; the last one steps
            self.optimizer.step()
        self.steps += 1
        return float(torch.cat(losses).mean()) if losses else 0.0
