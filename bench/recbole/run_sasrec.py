"""RecBole's SASRec on Beauty, timed per epoch: run by bench/recbole_compare.py in RecBole's own venv.

    python run_sasrec.py DATA_DIR EPOCHS   ->  prints one JSON line

DATA_DIR holds beauty/beauty.inter (RecBole atomic file). The settings mirror
configs/beauty.yaml: 64 wide, 2 layers, 2 heads, inner 256, dropout 0.3, max length 50,
full-softmax cross-entropy, lr 2e-3, batch 256, full ranking of valid with history excluded.
"""

import json
import sys
import time

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

settings = {
    "data_path": sys.argv[1],
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": 50,
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.3,
    "attn_dropout_prob": 0.3,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "epochs": int(sys.argv[2]),
    "train_batch_size": 256,
    "eval_batch_size": 4096,
    "learning_rate": 0.002,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "device": "cpu",
    "use_gpu": False,
    "show_progress": False,
    "checkpoint_dir": "/tmp/recbole_saved",
    "worker": 0,
    "seed": 0,
}
config = Config(model="SASRec", dataset="beauty", config_dict=settings)
init_seed(config["seed"], config["reproducibility"])
train, valid, _ = data_preparation(config, create_dataset(config))
trainer = Trainer(config, SASRec(config, train.dataset))
epoch_seconds = []
for epoch in range(config["epochs"]):
    tic = time.perf_counter()
    trainer._train_epoch(train, epoch, show_progress=False)
    epoch_seconds.append(time.perf_counter() - tic)
tic = time.perf_counter()
metrics = trainer.evaluate(valid, load_best_model=False, show_progress=False)
eval_seconds = time.perf_counter() - tic
print(json.dumps({"epoch_seconds": epoch_seconds, "eval_seconds": eval_seconds, "valid": dict(metrics)}))
