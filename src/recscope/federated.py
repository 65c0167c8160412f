"""Federated training (``recscope federated``): FedAvg over Flower's simulation runtime.

Users are dealt to N clients by a stable hash of their own id (:func:`client_of`): the same
user lands on the same client in every run, whatever else the data holds. A client trains on
its own users' training events only (the local steps are :func:`recscope.train.train_epoch`,
the loop ``recscope train`` runs) and sends back weights, never histories. The server averages
the clients' weights by the number of predictions each trained on (FedAvg, McMahan et al.
2017) over the whole model: every parameter, the item-id table included. The catalog (item
attribute matrices, text vectors: the model's buffers) is public and the same for every
client: each reads it from the run once, so it never travels with the rounds.

Optional DP on the aggregate: ``dp_noise`` > 0 wraps FedAvg in Flower's
``DifferentialPrivacyServerSideFixedClipping``: each client's update (its weights minus the
round's) is clipped to L2 norm ``dp_clip`` and Gaussian noise of ``dp_noise * dp_clip /
sampled clients`` is added to the average. That protects a client's whole contribution (all
its users); the run records the noise and clip, not an epsilon (no accountant here).

Measurement, not training: after every round the server scores the averaged model on the
valid split, centrally, as ``recscope train`` does; a real federation would not hold those
histories. The best round on valid becomes ``model.safetensors`` and the run's first version,
so ``recscope recommend / explain / serve`` read the result as any run. run.json's
``state.federation`` records the clients (users and predictions each), rounds, local epochs,
and per round the bytes sent each way (Flower's ``ArrayRecord.count_bytes`` of every message)
and the valid metrics.

In simulation every client runs in a Ray actor on this machine (``cpus`` at a time, one torch
thread each) and reads the run's data file to take out its own users; in a deployment each
would hold only its own. Flower's telemetry is switched off (``FLWR_TELEMETRY_ENABLED=0``)
unless the environment says otherwise: a privacy feature does not phone home.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from recscope import retrieval, versions
from recscope.config import Config, validate
from recscope.cpu import available_cpus, use_threads
from recscope.data import Dataset, split_of
from recscope.data.split import Split
from recscope.errors import ConfigError, RunError
from recscope.features.text import catalog_vectors
from recscope.lock import RunLock
from recscope.model import SeqRec
from recscope.run import RunInfo, TrainingState, fingerprint, load_weights, save_info, save_weights
from recscope.sampling import make_optimizer
from recscope.tasks import TASKS, event_inputs
from recscope.train import TrainingData, inputs_note, sized_and_split, train_epoch

# Flower reads this when it is first imported (anything of flwr): before that, whoever imports this module
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

# the tasks whose training windows come from the split's training events (a click run trains on impressions)
TASKS_SUPPORTED = ("next_item", "rating")


@dataclasses.dataclass(frozen=True)
class Federation:
    """How a federated run is trained (``recscope federated`` options)."""

    clients: int  # (int) clients the users are dealt to
    rounds: int  # (int) FedAvg rounds
    local_epochs: int = 1  # (int) passes each sampled client makes over its own windows per round
    fraction: float = 1.0  # (float) share of the clients sampled each round (at least one)
    dp_noise: float = 0.0  # (float) noise multiplier on the aggregate (0: no DP)
    dp_clip: float = 0.0  # (float) L2 clip of each client's update; needed with dp_noise
    cpus: int = 0  # (int) clients trained at once (Ray actors, one thread each); 0: the CPUs available

    def check(self) -> None:
        if self.clients < 2:
            raise ConfigError(
                f"--clients {self.clients}: a federation needs 2 clients or more", fix="e.g. --clients 10"
            )
        if self.rounds < 1 or self.local_epochs < 1:
            raise ConfigError(
                f"--rounds {self.rounds} --local-epochs {self.local_epochs}: both must be 1 or more",
                fix="e.g. --rounds 20 --local-epochs 1",
            )
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction {self.fraction} is not in (0, 1]", fix="e.g. --fraction 0.5")
        if self.dp_noise < 0 or self.dp_clip < 0:
            raise ConfigError("--dp-noise and --dp-clip must not be negative", fix="e.g. --dp-noise 1.0 --dp-clip 1.0")
        if self.dp_noise > 0 and self.dp_clip == 0:
            raise ConfigError(
                f"--dp-noise {self.dp_noise} needs --dp-clip: the noise is scaled to the clip of the updates",
                fix="give --dp-clip NORM, e.g. 1.0 (the L2 norm a client's update is clipped to)",
            )

    @property
    def sampled(self) -> int:
        """Clients trained each round."""
        return max(1, int(self.clients * self.fraction))


def client_of(user_id: str, clients: int) -> int:
    """The client holding ``user_id``: the first 8 bytes of its SHA-256, modulo ``clients``
    (stable across runs and machines, unlike Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(user_id.encode("utf-8")).digest()[:8], "big") % clients


def partition(user_ids: list[str], clients: int) -> np.ndarray:
    """(n_users,) the client of each dense user index (index 0 of Dataset.user_ids is a user too)."""
    return np.array([client_of(u, clients) for u in user_ids], dtype=np.int64)


def client_split(data: Dataset, split: Split, owner: np.ndarray, client: int) -> Split:
    """``split`` with training events of ``client``'s users only (``owner``: :func:`partition`)."""
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    return dataclasses.replace(split, train=split.train & (owner[user_of] == client))


def federate(
    data: Dataset,
    config: Config,
    out: Path,
    federation: Federation,
    *,
    data_spec: str,
    catalog: str | None = None,
    console: Console | None = None,
) -> RunInfo:
    """Train ``data`` federated across ``federation.clients`` clients and write the run to ``out``.

    ``config.train.epochs`` becomes ``rounds * local_epochs`` (each round is ``local_epochs``
    epochs of every user's data, spread over the clients), so a centralised run of the same
    config trains as long. Everything is checked before anything is written."""
    out = Path(out)
    console = console or Console(stderr=True)
    federation.check()
    t = config.train
    if t.task not in TASKS_SUPPORTED:
        raise ConfigError(
            f"train.task={t.task} is not trained federated: only {', '.join(TASKS_SUPPORTED)} are",
            fix="train it centrally with recscope train",
        )
    if config.data.split == "cold_items" or t.ema > 0:
        raise ConfigError(
            "data.split=cold_items and train.ema are not trained federated",
            fix="leave them at their defaults (data.split=loo, train.ema=0), or train centrally with recscope train",
        )
    epochs = federation.rounds * federation.local_epochs
    config = dataclasses.replace(config, train=dataclasses.replace(t, epochs=epochs))
    validate(config)
    use_threads(config.train.threads)
    text = catalog_vectors(data, config.model.use_text, config.features)
    if text is not None:
        console.print(text.describe(), highlight=False)
    task = TASKS[config.train.task]
    config, split = sized_and_split(data, config, text, data_spec)
    owner = partition(data.user_ids, federation.clients)
    users = np.bincount(owner, minlength=federation.clients)
    if (users == 0).any():
        empty = ", ".join(str(c) for c in np.flatnonzero(users == 0)[:5])
        raise ConfigError(
            f"--clients {federation.clients}: client(s) {empty} hold no user ({data.n_users} users in all)",
            fix="use fewer clients",
        )
    with RunLock(out, "federated", console):
        if (out / "run.json").exists():
            raise RunError(f"{out} already holds a run", fix="pass another --out")
        return _federate(data, config, task, out, split, owner, federation, data_spec, catalog, console, text)


def _federate(data, config, task, out, split, owner, federation, data_spec, catalog, console, text) -> RunInfo:
    torch.manual_seed(config.train.seed)
    model = SeqRec(config.model)
    model.set_item_fields(
        {f.name: torch.from_numpy(f.values) for f in data.fields},
        text=None if text is None else torch.from_numpy(text.vectors),
    )
    bias = task.head_bias(data, split)
    if bias is not None:
        model.head.bias.data.fill_(bias)
    data.save(out)
    # the initial weights: what clients read the catalog (buffers) from, and the best until a round beats them
    save_weights(out / "model.safetensors", model)
    inputs = event_inputs(data, config)
    info = RunInfo(config, data_spec, catalog, TrainingState(), origin="federated", data_fingerprint=fingerprint(data))
    state = info.state
    state.split, state.data = split.describe(), data.describe()
    state.inputs = inputs_note(data, config, task, inputs)
    clients = []
    for client in range(federation.clients):
        windows = TrainingData.build(data, client_split(data, split, owner, client), config, inputs)
        clients.append({"client": client, "users": int((owner == client).sum()), "targets": int(windows.targets())})
    console.print(
        f"[bold]{data.describe()}[/]\n{split.describe()}\n{state.inputs}\n"
        f"{federation.clients} clients (users by a hash of their id: {_spread([c['users'] for c in clients])} each), "
        f"{federation.sampled} a round, {federation.rounds} rounds of {federation.local_epochs} local epoch(s); "
        + (
            f"DP on the aggregate: noise {federation.dp_noise}, clip {federation.dp_clip}"
            if federation.dp_noise
            else "no DP"
        ),
        highlight=False,
    )
    server = _Server(model, data, split, config, task, inputs, out, state, console, federation)
    started = time.perf_counter()
    _simulate(server, _client_app(out, config, federation.clients), federation)
    seconds = round(time.perf_counter() - started, 2)
    state.epoch = config.train.epochs
    state.train_seconds = round(sum(r["train_seconds"] for r in state.history), 2)
    state.other["federation"] = {
        "framework": "flwr",
        "flwr_version": _flwr_version(),
        "backend": "ray",
        "strategy": "FedAvg" + (" + DifferentialPrivacyServerSideFixedClipping" if federation.dp_noise else ""),
        "clients": federation.clients,
        "clients_per_round": federation.sampled,
        "rounds": federation.rounds,
        "local_epochs": federation.local_epochs,
        "partition": "sha256(user_id) mod clients",
        "per_client": clients,
        "dp": {"noise_multiplier": federation.dp_noise, "clipping_norm": federation.dp_clip}
        if federation.dp_noise
        else None,
        "bytes_catalog": server.catalog_bytes,
        "rounds_log": server.rounds,
        "valid_note": "valid metrics computed centrally after each round, for measurement only",
        "wall_seconds": seconds,
    }
    save_info(out, info)
    version = versions.publish(
        out,
        out / "model.safetensors",
        "federated",
        None,
        best_epoch=state.best_epoch,
        best_valid=state.best_valid,
        rounds=federation.rounds,
        clients=federation.clients,
    ).id
    retrieval.prepare(out, version)
    best = (state.best_valid or {}).get(task.select_on)
    console.print(
        f"best valid {task.select_on} {best if best is None else round(best, 4)} after round "
        f"{state.best_epoch // federation.local_epochs}; run saved in {out} (model version {version}, {seconds:.0f} s)"
    )
    return info


def _spread(counts: list[int]) -> str:
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


def _parameters(model: SeqRec) -> dict[str, torch.Tensor]:
    """What FedAvg averages: every parameter (the item table included), not the catalog buffers."""
    return {name: p.detach() for name, p in model.named_parameters()}


def _load_parameters(model: SeqRec, state: dict[str, torch.Tensor]) -> None:
    expected = set(dict(model.named_parameters()))
    if set(state) != expected:
        raise RunError(
            f"a federated update holds {sorted(set(state) ^ expected)[:5]} beyond or short of the model's parameters",
            fix="clients and server must run the same recscope and config",
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[name])


# ------------------------------------------------------------------------------ server side
class _Server:
    """The ServerApp's work: start the strategy, then after each round measure the average on
    valid (centrally), keep the best, and log what each round cost."""

    def __init__(self, model, data, split, config, task, inputs, out, state, console, federation):
        self.model, self.data, self.split, self.config = model, data, split, config
        self.task, self.inputs, self.out, self.state = task, inputs, out, state
        self.console, self.federation = console, federation
        self.rounds: list[dict] = []
        self.catalog_bytes = int(sum(b.numel() * b.element_size() for b in model.buffers()))
        self.best: float | None = None
        self.tic = time.perf_counter()

    def evaluate(self, server_round: int, arrays):
        """Flower's ``evaluate_fn``: round 0 is the initial model (measured, not selected)."""
        from flwr.app import MetricRecord

        train_seconds = round(time.perf_counter() - self.tic, 2)
        _load_parameters(self.model, arrays.to_torch_state_dict())
        tic = time.perf_counter()
        metrics = self.task.validate(self.model, self.data, self.split, self.config, self.inputs)
        eval_seconds = round(time.perf_counter() - tic, 2)
        select = self.task.select_on
        if server_round == 0:
            self.console.print(f"round 0 (initial weights): valid {select} {metrics[select]:.4f}", highlight=False)
        else:
            log = self.rounds[-1]
            epoch = server_round * self.federation.local_epochs
            record = {"epoch": epoch, "round": server_round, "loss": log["loss"], "train_seconds": train_seconds}
            record |= {"valid": metrics, "eval_seconds": eval_seconds}
            log["valid"] = {k: metrics[k] for k in self.task.shown(metrics)}
            self.state.history.append(record)
            if self.task.improves(metrics[select], self.best):
                self.best = metrics[select]
                self.state.best_epoch, self.state.best_valid = epoch, metrics
                save_weights(self.out / "model.safetensors", self.model)
            shown = " ".join(f"{k} {metrics[k]:.4f}" for k in self.task.shown(metrics))
            self.console.print(
                f"round {server_round}/{self.federation.rounds}: {log['clients']} clients, loss {log['loss']:.4f}, "
                f"valid {shown}; sent {_mb(log['bytes_down'])} down, {_mb(log['bytes_up'])} up "
                f"({train_seconds:.1f} s)",
                highlight=False,
            )
        self.tic = time.perf_counter()
        return MetricRecord({k: float(v) for k, v in metrics.items()})


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _metered(strategy, rounds: list[dict]):
    """``strategy`` with every train message's bytes counted and any failed client made an error
    (FedAvg alone would log it and average the others)."""
    from flwr.serverapp.strategy import Strategy

    class Metered(Strategy):
        def configure_train(self, server_round, arrays, config, grid) -> Iterable:
            messages = list(strategy.configure_train(server_round, arrays, config, grid))
            down = sum(m.content["arrays"].count_bytes() for m in messages)
            rounds.append({"round": server_round, "clients": len(messages), "bytes_down": down})
            return messages

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            failed = [m for m in replies if m.has_error()]
            if failed:
                raise RunError(
                    f"round {server_round}: {len(failed)} client(s) failed: {failed[0].error.reason}",
                    fix="see the client's error above; run with fewer clients (--cpus 1) to rule out memory",
                )
            log = rounds[-1]
            log["bytes_up"] = sum(m.content["arrays"].count_bytes() for m in replies)
            metrics = [next(iter(m.content.metric_records.values())) for m in replies]
            targets = sum(r["num-examples"] for r in metrics)
            log["loss"] = sum(r["loss"] * r["num-examples"] for r in metrics) / targets
            log["targets"] = int(targets)
            return strategy.aggregate_train(server_round, replies)

        def configure_evaluate(self, server_round, arrays, config, grid):
            return strategy.configure_evaluate(server_round, arrays, config, grid)

        def aggregate_evaluate(self, server_round, replies):
            return strategy.aggregate_evaluate(server_round, replies)

        def summary(self) -> None:
            strategy.summary()

    return Metered()


def _simulate(server: _Server, client_app, federation: Federation) -> None:
    """Run the ServerApp and ``client_app`` in Flower's simulation runtime (Ray backend)."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs asked for: no warning about them
    # Ray runs its workers 15 nicer than the driver; here they do the training, so they share the
    # machine as the command that started them does (on a busy machine they would otherwise starve)
    os.environ.setdefault("RAY_worker_niceness", "0")
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.simulation import run_simulation

    failures: list[BaseException] = []
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            sampled = federation.sampled
            strategy = FedAvg(
                fraction_train=federation.fraction,
                fraction_evaluate=0.0,  # evaluated centrally (server.evaluate), for measurement
                min_train_nodes=sampled,
                min_available_nodes=federation.clients,
                weighted_by_key="num-examples",
            )
            if federation.dp_noise > 0:
                strategy = DifferentialPrivacyServerSideFixedClipping(
                    strategy, federation.dp_noise, federation.dp_clip, sampled
                )
            _metered(strategy, server.rounds).start(
                grid=grid,
                initial_arrays=ArrayRecord(_parameters(server.model)),
                num_rounds=federation.rounds,
                train_config=ConfigRecord({"local-epochs": federation.local_epochs}),
                evaluate_fn=server.evaluate,
            )
        except BaseException as e:  # the runtime only logs a ServerApp's error: carry it out
            failures.append(e)

    cpus = min(federation.cpus or available_cpus(), federation.clients)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        # Ray's smallest object store: the rounds' weights travel through Flower's own state
        # (a client's failure comes back in its reply: the actors' own logs are not wanted on the console)
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "object_store_memory": 80 * 1024 * 1024,
            "log_to_driver": False,
        },
    }
    with _quiet("flwr"):
        run_simulation(app, client_app, num_supernodes=federation.clients, backend_config=backend)
    if failures:
        raise failures[0]
    if len(server.state.history) != federation.rounds:
        raise RunError(
            f"the simulation ended after {len(server.state.history)} of {federation.rounds} rounds",
            fix="see Flower's messages above",
        )


@contextmanager
def _quiet(name: str):
    """Flower logs every step at INFO (and that ``run_simulation`` will move to ``flwr run``):
    recscope prints its own line per round, so only Flower's errors show."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------ client side
def _client_app(out: Path, config: Config, clients: int):
    """The ClientApp: built here, pickled by Ray into its actors (only the run path and the
    config travel; each client reads its own users from the run's data file)."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()
    settings = config.to_dict()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client = int(context.node_config["partition-id"])
        record = msg.content["config"]
        weights, loss, targets = train_client(
            out, settings, clients, client, msg.content["arrays"].to_torch_state_dict(),
            int(record["server-round"]), int(record["local-epochs"]),
        )  # fmt: skip
        content = {"arrays": ArrayRecord(weights), "metrics": MetricRecord({"num-examples": targets, "loss": loss})}
        return Message(content=RecordDict(content), reply_to=msg)

    return app


def train_client(
    out: Path,
    settings: dict,
    clients: int,
    client: int,
    weights: dict[str, torch.Tensor],
    server_round: int,
    local_epochs: int,
) -> tuple[dict[str, torch.Tensor], float, int]:
    """One client's round: the global ``weights`` in, ``local_epochs`` epochs of
    :func:`recscope.train.train_epoch` over its own users' windows (a fresh AdamW each round,
    as clients keep no state between rounds), its weights, mean loss and predictions out."""
    model, batches, config = _client(str(out), _frozen(settings), clients, client)
    _load_parameters(model, weights)
    torch.manual_seed(config.train.seed + 7919 * server_round + client)  # dropout: each client and round its own
    optimizer = make_optimizer(model, config)
    losses = []
    for e in range(local_epochs):
        epoch = (server_round - 1) * local_epochs + e  # the schedule and shuffle of a central run's epoch
        losses.append(train_epoch(model, optimizer, batches, config, epoch))
    return {k: v.clone() for k, v in _parameters(model).items()}, float(np.mean(losses)), int(batches.targets())


def _frozen(settings: dict) -> str:
    import json

    return json.dumps(settings, sort_keys=True)


@lru_cache(maxsize=1)
def _dataset(out: str) -> Dataset:
    return Dataset.load(Path(out))


@lru_cache(maxsize=64)
def _client(out: str, settings: str, clients: int, client: int) -> tuple[SeqRec, TrainingData, Config]:
    """A client's model (the catalog buffers read from the run's initial weights) and its own
    users' training windows, built once per actor and client."""
    import json

    use_threads(1)  # one CPU per actor (client_resources)
    config = Config.from_dict(json.loads(settings), "the federated run's config")
    data = _dataset(out)
    split = split_of(data, config)
    own = client_split(data, split, partition(data.user_ids, clients), client)
    batches = TrainingData.build(data, own, config, event_inputs(data, config))
    model = SeqRec(config.model)
    load_weights(Path(out) / "model.safetensors", model)
    return model, batches, config
