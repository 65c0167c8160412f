"""recscope against RecBole's SASRec on Beauty, side by side in one run, one pinned model.

    python -m venv /tmp/rbvenv
    /tmp/rbvenv/bin/pip install torch==2.13.0 recbole "numpy<2" "pandas<2.3" "setuptools<81"
    python bench/recbole_compare.py --recbole-python /tmp/rbvenv/bin/python [--epochs 2]
    python bench/recbole_compare.py --recbole-python /tmp/rbvenv/bin/python --users 300 --epochs 1 \
        --max-epochs 1 --out recbole_compare_smoke       # the smallest run: checks the plumbing

RecBole is not a dependency of recscope: it runs in its own venv (RecBole 1.2.1 needs numpy < 2),
through bench/recbole/run_sasrec.py, which takes the compared model from this file.

The compared model is :data:`COMPARED`, pinned here and given to both libraries; nothing is read
from configs/ (configs/beauty.yaml is recscope's tuned model and moves: when it went to 4 towers
this comparison silently became 4 towers against one SASRec). Both read the same Beauty.txt (ids
only) and hold out each user's last item for test and second-last for valid; valid is ranked over
the full catalog with the user's history excluded, by each library's own evaluator.

What is the same and what is not, stated so a reader can judge:

- the same: one causal Transformer over item ids (no attributes, no text, no event types), width
  64, 2 blocks of 2 heads, MLP 256 wide with GELU, dropout 0.3 on hidden states and on attention
  weights, learned positions over the last 50 items, input and output embeddings tied,
  full-softmax cross-entropy over the catalog, Adam (recscope: AdamW with weight decay 0, the
  same update) at lr 2e-3, batch 256, seed 0; an epoch is one pass over every training target.
- not the same, each library's own: RecBole's blocks are post-LayerNorm (eps 1e-12) with a
  LayerNorm on the input embedding; recscope's are pre-LayerNorm with a final LayerNorm and scale
  the id embedding by sqrt(64). A RecBole sample is one prefix with one target, so its batch of
  256 is 256 targets (514 steps an epoch on Beauty); a recscope sample is one sequence with a loss
  at every position, so its batch of 256 is ~1,490 targets (88 steps an epoch). Per-epoch time
  alone therefore flatters us; the fair figure is time to quality.

Two recscope arms train side by side: ``recscope``, the pinned model at batch 256 sequences (the
headline ratios), and ``recscope_examples_batch``, the same model at RecBole's batch counted in
its unit, targets: 256 x windows / targets sequences a step (44 on Beauty, 512 steps an epoch
against RecBole's 514), the only change (ratios under ``examples_batch``).

The two alternate epoch by epoch (RecBole's runner waits for a request before each epoch), so
the load of a shared machine falls on both alike. Time to quality: RecBole trains ``--epochs``
epochs and its valid NDCG@10 is the target; recscope trains on, evaluating valid after every
epoch, until its NDCG@10 reaches that target (an upper bound: it may get there mid-epoch).
The headline ratio is training time to the target (evaluation time kept out on both sides);
the JSON also gives wall time with the evaluations each side needed (RecBole one, recscope one
per epoch), and CPU seconds (user + system) beside wall seconds, since other work on a shared
machine slows wall time. Writes bench/results/<--out>.json with the pinned config, both
libraries' per-epoch seconds, the valid curve, the CPU model, cores, torch threads, the git
commit (with any uncommitted changes to src/ or bench/ listed) and the load average before and
after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import recscope  # noqa: E402
from _common import SHARED, load_average, write  # noqa: E402
from recscope.config import Config, EvalConfig, ModelConfig, TrainConfig  # noqa: E402
from recscope.cpu import use_threads  # noqa: E402
from recscope.data import Dataset, Split, load_dataset, make_split, training_windows  # noqa: E402
from recscope.evaluate import evaluate, model_scorer  # noqa: E402
from recscope.model import SeqRec  # noqa: E402
from recscope.sampling import make_optimizer  # noqa: E402
from recscope.train import TrainingData, _length_batches, _train_epoch  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Compared:
    """The model both libraries train: RecBole SASRec's settings in this benchmark (not RecBole's
    defaults, which are dropout 0.5, lr 1e-3, batch 2048)."""

    max_len: int = 50  # (int) items read: RecBole MAX_ITEM_LIST_LENGTH, recscope model.max_len
    hidden: int = 64  # (int) token and hidden width: hidden_size, model.d_model
    inner: int = 256  # (int) MLP width: inner_size; recscope's MLP is 4 x d_model, so it must be 4 x hidden
    layers: int = 2  # (int) Transformer blocks: n_layers, model.n_layers
    heads: int = 2  # (int) attention heads per block: n_heads, model.n_heads
    dropout: float = 0.3  # (float) on embeddings and hidden states: hidden_dropout_prob, model.dropout
    attn_dropout: float = 0.3  # (float) on attention weights: attn_dropout_prob, model.attn_dropout
    lr: float = 0.002  # (float) Adam / AdamW (weight decay 0) learning rate, constant
    batch_size: int = 256  # (int) samples per step: RecBole prefixes (one target each), recscope sequences
    seed: int = 0  # (int) initialisation, shuffling and dropout seed in both

    def recscope(self, n_items: int) -> Config:
        """recscope's full config for it: one tower, ids only, full softmax, no average of weights."""
        if self.inner != 4 * self.hidden:
            raise ValueError(f"recscope's MLP is 4 x d_model wide: inner {self.inner} needs hidden {self.inner // 4}")
        model = ModelConfig(
            max_len=self.max_len,
            d_model=self.hidden,
            n_layers=self.layers,
            n_heads=self.heads,
            towers=1,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            use_attributes=False,
            use_text=False,
            use_events=False,
            n_items=n_items,
        )
        train = TrainConfig(
            batch_size=self.batch_size,
            lr=self.lr,
            lr_schedule="constant",
            weight_decay=0.0,
            loss="ce",
            id_dropout=0.0,
            ema=0.0,
            seed=self.seed,
        )
        return Config(model=model, train=train, eval=EvalConfig(exclude_history=True))

    def recbole(self, epochs: int) -> dict:
        """RecBole's config keys for it (bench/recbole/run_sasrec.py adds the data and evaluation keys)."""
        return {
            "MAX_ITEM_LIST_LENGTH": self.max_len,
            "hidden_size": self.hidden,
            "inner_size": self.inner,
            "n_layers": self.layers,
            "n_heads": self.heads,
            "hidden_dropout_prob": self.dropout,
            "attn_dropout_prob": self.attn_dropout,
            "hidden_act": "gelu",
            "learning_rate": self.lr,
            "learner": "adam",
            "weight_decay": 0.0,
            "train_batch_size": self.batch_size,
            "epochs": epochs,
            "seed": self.seed,
        }


COMPARED = Compared()


def write_sequences(beauty_txt: Path, out: Path, users: int) -> None:
    """The first ``users`` lines of Beauty.txt (0: all) as out/Beauty.txt, which recscope reads,
    and out/beauty/beauty.inter, RecBole's atomic file of the same sequences (time = position)."""
    lines = [line for line in beauty_txt.read_text().splitlines() if line.strip()]
    lines = lines[:users] if users else lines
    (out / "Beauty.txt").write_text("\n".join(lines) + "\n")
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for line in lines:
        user, *items = line.split()
        rows += [f"{user}\t{item}\t{t}" for t, item in enumerate(items)]
    (out / "beauty").mkdir()
    (out / "beauty" / "beauty.inter").write_text("\n".join(rows) + "\n")


class RecBoleRun:
    """RecBole's SASRec in its own venv (bench/recbole/run_sasrec.py), one epoch per request."""

    def __init__(self, python: str, tmp: Path, epochs: int):
        self.runner = Path(__file__).parent / "recbole" / "run_sasrec.py"
        self.log = tmp / "recbole.log"  # RecBole logs to stderr: a file, so no pipe fills up
        self.process = subprocess.Popen(
            [python, str(self.runner), str(tmp), json.dumps(COMPARED.recbole(epochs))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            cwd=tmp,  # RecBole writes log folders into the working directory
        )
        self.setup = self._answer()

    def _answer(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.process.wait()
        sys.exit(f"RecBole's run ended without an answer ({self.runner}):\n{self.log.read_text()[-3000:]}")

    def ask(self, verb: str) -> dict:
        self.process.stdin.write(verb + "\n")
        self.process.stdin.flush()
        return self._answer()


class RecscopeRun:
    """recscope on ``compared``, one epoch per call, valid evaluated after each (timed apart)."""

    def __init__(self, data: Dataset, split: Split, compared: Compared):
        self.data, self.split = data, split
        self.config = compared.recscope(data.n_items)
        windows = training_windows(data, split.train, self.config.model.max_len)
        self.windows = TrainingData("next_item", torch.from_numpy(windows))
        self.threads = use_threads(self.config.train.threads)
        torch.manual_seed(self.config.train.seed)
        self.model = SeqRec(self.config.model)
        self.optimizer = make_optimizer(self.model, self.config)
        self.epochs: list[dict] = []

    def epoch(self) -> dict:
        model, config = self.model, self.config
        model.train()
        tic, cpu = time.perf_counter(), os.times()
        _train_epoch(model, self.optimizer, self.windows, config, len(self.epochs))
        seconds, after = time.perf_counter() - tic, os.times()
        model.eval()
        tic = time.perf_counter()
        valid = evaluate(model_scorer(model), self.data, self.split.valid, config.model.max_len, exclude_history=True)
        record = {
            "epoch": len(self.epochs) + 1,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(after.user + after.system - cpu.user - cpu.system, 2),
            "eval_seconds": round(time.perf_counter() - tic, 2),
            "HR@10": round(valid["HR@10"], 5),
            "NDCG@10": round(valid["NDCG@10"], 5),
        }
        self.epochs.append(record)
        return record

    def reached(self, target: float) -> dict | None:
        """The first epoch whose valid NDCG@10 is at least ``target``, with the time to get there."""
        for i, e in enumerate(self.epochs):
            if e["NDCG@10"] >= target:
                done = self.epochs[: i + 1]
                return {
                    "epoch": e["epoch"],
                    "train_seconds": round(sum(d["seconds"] for d in done), 2),
                    "train_cpu_seconds": round(sum(d["cpu_seconds"] for d in done), 2),
                    "with_evaluations_seconds": round(sum(d["seconds"] + d["eval_seconds"] for d in done), 2),
                }
        return None

    def examples_batch(self, batch: int) -> int:
        """Sequences per step that hold ``batch`` targets on average: RecBole's batch of ``batch``
        prefixes (one target each) in recscope's unit (a sequence, a target at every position)."""
        return max(1, round(batch * len(self.windows.windows) / self.windows.targets()))

    def summary(self, target: float, epochs: int) -> dict:
        windows, batch = self.windows.windows, self.config.train.batch_size
        return {
            "batch_size": batch,
            "config": self.config.to_dict(),
            "torch_threads": self.threads,
            "training_windows": len(windows),
            "training_targets": int(self.windows.targets()),
            "steps_per_epoch": len(_length_batches(windows, batch, torch.Generator())),
            "valid_users": len(self.split.valid),
            "epochs": self.epochs,
            "median_epoch_seconds": round(statistics.median(e["seconds"] for e in self.epochs), 2),
            "valid_after_epochs": {k: self.epochs[epochs - 1][k] for k in ("HR@10", "NDCG@10")},
            "reached_recbole_ndcg": self.reached(target),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recbole-python", required=True, help="python of a venv with recbole installed")
    parser.add_argument("--epochs", type=int, default=2, help="RecBole's epochs; its valid NDCG@10 then is the target")
    parser.add_argument("--max-epochs", type=int, default=15, help="recscope's limit when chasing RecBole's NDCG")
    parser.add_argument("--users", type=int, default=0, help="only the first N users of Beauty (0: all; smoke runs)")
    parser.add_argument("--out", default="recbole_compare", help="result name: bench/results/<out>.json")
    args = parser.parse_args()
    beauty = SHARED / "beauty" / "Beauty.txt"
    if not beauty.exists():
        sys.exit(f"{beauty} is absent: this benchmark needs ../shared/data/beauty (relative to the repository)")
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sequences(beauty, tmp, args.users)
        theirs = RecBoleRun(args.recbole_python, tmp, args.epochs)
        data = load_dataset(f"s3rec:{tmp / 'Beauty.txt'}")
        split = make_split(data)
        pinned = RecscopeRun(data, split, COMPARED)
        # The lever: the same model at RecBole's batch counted in targets (its samples), not sequences.
        examples = RecscopeRun(
            data, split, dataclasses.replace(COMPARED, batch_size=pinned.examples_batch(COMPARED.batch_size))
        )
        arms = {"recscope": pinned, "recscope_examples_batch": examples}
        # Alternate the libraries' epochs, so a shared machine's load falls on all alike.
        their_epochs = []
        for _ in range(args.epochs):
            their_epochs.append(theirs.ask("train"))
            print(f"RecBole {their_epochs[-1]}", flush=True)
            for name, arm in arms.items():
                print(f"{name} {arm.epoch()}", flush=True)
        answer = theirs.ask("evaluate")
        theirs.process.wait()
        target = answer["valid"]["ndcg@10"]
        print(f"RecBole valid NDCG@10 after {args.epochs} epochs: {target}", flush=True)
        for name, arm in arms.items():
            while arm.reached(target) is None and len(arm.epochs) < args.max_epochs:
                print(f"{name} {arm.epoch()}", flush=True)
    load_after = load_average()
    their_seconds = [e["seconds"] for e in their_epochs]
    their_cpu = [e["cpu_seconds"] for e in their_epochs]

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2)

    def ratios(arm: RecscopeRun) -> dict:
        reached = arm.reached(target)
        return {
            "epoch_speedup": ratio(
                statistics.median(their_seconds), statistics.median(e["seconds"] for e in arm.epochs)
            ),
            "epoch_cpu_speedup": ratio(
                statistics.median(their_cpu), statistics.median(e["cpu_seconds"] for e in arm.epochs)
            ),
            # training time to the same valid NDCG@10 (RecBole's after its epochs), evaluations kept out
            "time_to_quality_speedup": ratio(sum(their_seconds), reached["train_seconds"]) if reached else None,
            "time_to_quality_cpu_speedup": ratio(sum(their_cpu), reached["train_cpu_seconds"]) if reached else None,
            # the same with the evaluations each side needed: RecBole one, recscope one per epoch
            "time_to_quality_with_evaluations_speedup": ratio(
                sum(their_seconds) + answer["eval_seconds"], reached["with_evaluations_seconds"]
            )
            if reached
            else None,
            "eval_speedup": ratio(answer["eval_seconds"], statistics.median(e["eval_seconds"] for e in arm.epochs)),
        }

    write(
        args.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "data": f"{beauty}" + (f" (first {args.users} users)" if args.users else ""),
            "recscope_imported_from": str(Path(recscope.__file__).parent),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "compared": dataclasses.asdict(COMPARED),
            "epochs": args.epochs,
            "recbole": {
                "settings": COMPARED.recbole(args.epochs),
                **{k: v for k, v in theirs.setup.items() if k != "ready"},
                "epoch_seconds": [round(s, 2) for s in their_seconds],
                "epoch_cpu_seconds": [round(s, 2) for s in their_cpu],
                "median_epoch_seconds": round(statistics.median(their_seconds), 2),
                "eval_seconds": round(answer["eval_seconds"], 2),
                "valid": answer["valid"],
            },
            # the first --epochs of each arm alternated with RecBole's, the rest after
            **{name: arm.summary(target, args.epochs) for name, arm in arms.items()},
            # the headline: the pinned model, batch 256 sequences
            **ratios(pinned),
            "examples_batch": ratios(examples),
        },
    )


if __name__ == "__main__":
    main()
