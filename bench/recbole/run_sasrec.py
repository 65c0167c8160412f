"""RecBole's SASRec on Beauty, driven one epoch at a time: run by bench/recbole_compare.py in RecBole's own venv.

    python run_sasrec.py DATA_DIR SETTINGS_JSON

DATA_DIR holds beauty/beauty.inter (RecBole atomic file). SETTINGS_JSON is the compared model
as RecBole's config keys (hidden_size, inner_size, n_layers, n_heads, hidden_dropout_prob,
attn_dropout_prob, MAX_ITEM_LIST_LENGTH, learning_rate, train_batch_size, seed, ...), written
by recbole_compare.py from its pinned definition: this file holds only RecBole's plumbing
(fields, full-softmax CE, leave-one-out by time, full ranking of valid with history excluded).

Protocol, one JSON object a line on stdout: ``{"ready": ...}`` once the data and model are
built; then each line read on stdin, ``train`` (one epoch: its wall and CPU seconds) or
``evaluate`` (valid metrics, then exit). The caller runs recscope's epochs in between, so both
libraries are timed under the same load of a shared machine.
"""

import json
import os
import sys
import time

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

compared = json.loads(sys.argv[2])
settings = {
    **compared,
    "data_path": sys.argv[1],
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "eval_batch_size": 4096,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "device": "cpu",
    "use_gpu": False,
    "show_progress": False,
    "checkpoint_dir": "/tmp/recbole_saved",
    "worker": 0,
}
config = Config(model="SASRec", dataset="beauty", config_dict=settings)
init_seed(config["seed"], config["reproducibility"])
train, valid, _ = data_preparation(config, create_dataset(config))
trainer = Trainer(config, SASRec(config, train.dataset))


def say(message: dict) -> None:
    print(json.dumps(message), flush=True)


say(
    {
        "ready": True,
        "valid_users": len(valid.dataset),
        "training_examples": len(train.dataset),  # every prefix of every training sequence, one target each
        "steps_per_epoch": len(train),
        "torch_threads": torch.get_num_threads(),
        # RecBole's own values of what the compared model leaves to each library
        "resolved": {
            k: config[k] for k in ("learner", "weight_decay", "hidden_act", "layer_norm_eps", "initializer_range")
        },
    }
)
epoch = 0
for verb in sys.stdin:
    if verb.strip() == "train":
        tic, cpu = time.perf_counter(), os.times()
        trainer._train_epoch(train, epoch, show_progress=False)
        seconds, after = time.perf_counter() - tic, os.times()
        # user + system of the process (all its threads)
        say({"epoch": epoch + 1, "seconds": seconds, "cpu_seconds": after.user + after.system - cpu.user - cpu.system})
        epoch += 1
    elif verb.strip() == "evaluate":
        tic = time.perf_counter()
        metrics = trainer.evaluate(valid, load_best_model=False, show_progress=False)
        say({"valid": dict(metrics), "eval_seconds": time.perf_counter() - tic})
        break
    else:
        sys.exit(f"run_sasrec.py: unknown request {verb.strip()!r} (train or evaluate)")
