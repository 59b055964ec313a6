"""The ``gcn`` family: a graph neural network over the LayerGraph IR.

Design (the knobs are ``GCNPredictor``'s hyper-parameters; defaults chosen by experiment on six real targets):

* Node input: embeddings of the op and fused-activation codes plus a linear map of the standardised continuous
  features of ``graph_tensors`` (kernel, stride, groups, log shapes, log MACs/params/output size, live flag,
  depth, degrees).
* ``layers`` directed message-passing layers with residuals (``conv="dir"``, a torch-geometric ``MessagePassing``
  with mean aggregation, run in its fused sparse-matrix form): a node mixes its own state with the mean of its
  predecessors and the mean of its successors through separate weights, since what a layer reads and what reads it
  play different roles. torch-geometric's ``GCNConv``, ``GraphConv`` and ``GINConv`` (on the
  undirected graph) can be chosen instead; on NB201 they were no more accurate and are slower.
* A global node (``global_node=True``): one vector per graph that reads the mean of all nodes after each layer and
  is added back to every node, so that distant layers can interact (BRP-NAS style).
* Readout ``"sum"`` (default): every node gets a non-negative cost and the prediction is their sum, the way a
  network's latency is the sum of its kernels' times; this beat reading out the global node (``"global"``) or a
  mean-pooled vector (``"mean"``), most clearly at acc@5.
* Trained on log latency with a Huber loss (``huber_delta`` in log units, ~10%): errors count relatively and the
  long tail of disturbed measurements on some boards does not drag predictions off the typical value. AdamW with
  a short warm-up; validation on a held-out part of the training set (grouped by arch hash when
  ``fit(..., groups=hashes)`` is given) cuts the learning rate by 0.3 after ``patience`` epochs without
  improvement, ``lr_drops`` times, then stops early; an exponential moving average of the weights is what is
  validated and kept.
* Speed: node tensors are cached per graph (``graph_tensors.CACHE``), inference runs in blocks of
  ``predict_batch`` graphs (small blocks stay in cache) under ``torch.inference_mode`` with ``threads`` intra-op
  threads (1 by default: on a shared or busy machine, 2 threads on such small blocks were ~10x slower).

Persistence: ``gcn.pt`` (a torch ``state_dict``, read back with ``weights_only=True``) and ``gcn.json``
(normalisation statistics and feature names; the architecture comes from the hyper-parameters in ``meta.json``).
Nothing is pickled.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leti.errors import PredictorError
from leti.graph.layergraph import LayerGraph
from leti.predictors.base import Predictor
from leti.predictors.graph_tensors import (
    CACHE,
    CONTINUOUS,
    N_ACTS,
    N_CONTINUOUS,
    N_OPS,
    Entry,
    GraphTensors,
    concat,
)
from leti.predictors.registry import read_json_checked, write_json_checked
from leti.predictors.schema import n_threads

STATE_FILE = "gcn.pt"
CONFIG_FILE = "gcn.json"
CONVS = ("dir", "gcn", "graph", "gin")
READOUTS = ("sum", "global", "mean")


# ---- batches as torch tensors ---------------------------------------------------------------------------------
class Batch:
    """A block-diagonal batch on the torch side: standardised inputs, mean-aggregation matrices, graph index."""

    def __init__(
        self,
        t: GraphTensors,
        x_mean: np.ndarray,
        x_std: np.ndarray,
        need_edge_index: bool,
        grad: bool = False,
    ):
        n = t.n_nodes
        self.n_graphs = t.n_graphs
        self.op = torch.from_numpy(t.op.astype(np.int64))
        self.act = torch.from_numpy(t.act.astype(np.int64))
        self.x = torch.from_numpy(((t.x - x_mean) / x_std).astype(np.float32))
        sizes = np.diff(t.ptr)
        graph = np.repeat(np.arange(t.n_graphs), sizes)
        self.graph = torch.from_numpy(graph)
        self.inv_size = torch.from_numpy((1.0 / np.maximum(sizes, 1)).astype(np.float32)).unsqueeze(1)
        # per-graph sums as a sparse (graphs x nodes) matrix: faster than a scatter
        ones, nodes = np.ones(n, dtype=np.float32), np.arange(n)
        pool_t = _csr(nodes, graph, ones, (n, t.n_graphs)) if grad else None
        self.pool = _SparseOp(_csr(graph, nodes, ones, (t.n_graphs, n)), pool_t)
        # row-normalised adjacency in CSR: row i averages over i's predecessors (fwd) or successors (bwd);
        # for training the transposes are built here too, so that backward passes need no sparse transpose
        fwd_t = _mean_csr(t.src, t.dst, t.dst, n) if grad else None
        bwd_t = _mean_csr(t.dst, t.src, t.src, n) if grad else None
        self.fwd = _SparseOp(_mean_csr(t.dst, t.src, t.dst, n), fwd_t)
        self.bwd = _SparseOp(_mean_csr(t.src, t.dst, t.src, n), bwd_t)
        self.edge_index = torch.from_numpy(np.stack([t.src, t.dst])) if need_edge_index else None

    def pool_mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool_sum(h) * self.inv_size

    def pool_sum(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool(h)

    def broadcast(self, g: torch.Tensor) -> torch.Tensor:
        """Per-graph rows repeated for each node of the graph."""
        return torch.index_select(g, 0, self.graph)


def _mean_csr(rows: np.ndarray, cols: np.ndarray, by: np.ndarray, n: int) -> torch.Tensor:
    """CSR matrix with entries (rows[e], cols[e]) = 1 / (number of edges sharing by[e])."""
    deg = np.bincount(by, minlength=n)
    return _csr(rows, cols, (1.0 / np.maximum(deg[by], 1)).astype(np.float32), (n, n))


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    order = np.argsort(rows, kind="stable")
    crow = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta": only CSR @ dense is used
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(cols[order].astype(np.int64)),
            torch.from_numpy(vals[order]),
            size=shape,
            check_invariants=False,
        )


class _SparseOp:
    """A sparse matrix, with its transpose when gradients must flow through it."""

    def __init__(self, a: torch.Tensor, at: torch.Tensor | None):
        self.a, self.at = a, at

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.a, h) if self.at is None else _SpMM.apply(self.a, self.at, h)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, at, h):
        ctx.at = at
        return torch.sparse.mm(a, h)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.at, grad)


# ---- the network ----------------------------------------------------------------------------------------------
def _dir_conv_class():
    """``DirConv`` is a torch-geometric ``MessagePassing`` layer, defined on first use so that importing leti does
    not import torch-geometric."""
    global DirConv
    if DirConv is not None:
        return DirConv
    from torch_geometric.nn import MessagePassing

    class _DirConv(MessagePassing):
        """h_i' = W0 h_i + W1 mean_{j->i} h_j + W2 mean_{i->k} h_k + b: separate weights for inputs and consumers.

        Both means are one message-passing step each (``aggr="mean"``), in its fused form: the row-normalised
        adjacency (``Batch.fwd`` / ``Batch.bwd``, transposed for the consumers) times the node states, which is
        what ``propagate`` would compute edge by edge, at the cost of one sparse product.
        """

        def __init__(self, hidden: int):
            super().__init__(aggr="mean")
            self.own = nn.Linear(hidden, hidden)
            self.pred = nn.Linear(hidden, hidden, bias=False)
            self.succ = nn.Linear(hidden, hidden, bias=False)

        def forward(self, h: torch.Tensor, b: Batch) -> torch.Tensor:
            # average first (sparse, cheap), then accumulate the three products in place: no concatenation
            out = torch.addmm(self.own.bias, h, self.own.weight.t())
            out = out.addmm_(self.propagate(b.fwd.a, x=h, op=b.fwd), self.pred.weight.t())
            return out.addmm_(self.propagate(b.bwd.a, x=h, op=b.bwd), self.succ.weight.t())

        def message_and_aggregate(self, adj_t, x: torch.Tensor, op) -> torch.Tensor:
            return op(x)  # op holds adj_t (row-normalised: the mean) and, for training, its transpose

    DirConv = _DirConv
    return DirConv


DirConv = None


class PygConv(nn.Module):
    """A torch-geometric convolution on the undirected version of the graph (for comparison with ``DirConv``)."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        import torch_geometric.nn as pyg

        if kind == "gcn":
            self.conv = pyg.GCNConv(hidden, hidden)
        elif kind == "graph":
            self.conv = pyg.GraphConv(hidden, hidden, aggr="mean")
        else:
            mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.conv = pyg.GINConv(mlp, train_eps=True)

    def forward(self, h: torch.Tensor, b: Batch) -> torch.Tensor:
        ei = b.edge_index
        return self.conv(h, torch.cat([ei, ei.flip(0)], dim=1))


class GCNNet(nn.Module):
    def __init__(
        self, hidden: int, layers: int, conv: str, global_node: bool, readout: str, dropout: float, norm: bool
    ):
        super().__init__()
        self.readout, self.global_node, self.dropout = readout, global_node, dropout
        self.op_emb = nn.Embedding(N_OPS, hidden)
        self.act_emb = nn.Embedding(N_ACTS, hidden)
        self.inp = nn.Linear(N_CONTINUOUS, hidden)
        self.convs = nn.ModuleList(
            _dir_conv_class()(hidden) if conv == "dir" else PygConv(conv, hidden) for _ in range(layers)
        )
        self.norms = nn.ModuleList((nn.LayerNorm(hidden) if norm else nn.Identity()) for _ in range(layers))
        if global_node:
            self.glob = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                for _ in range(layers + 1)
            )
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        # sum readout: log(sum of costs) + offset; the offset starts where ~150 nodes of softplus(0) would land
        self.offset = nn.Parameter(torch.tensor(-math.log(100.0)))

    def init_offset(self, y_mu: float) -> None:
        """Start the sum readout at the mean training log latency."""
        with torch.no_grad():
            self.offset.add_(y_mu)

    def forward(self, b: Batch) -> torch.Tensor:
        h = torch.relu(self.inp(b.x) + self.op_emb(b.op) + self.act_emb(b.act))
        g = h.new_zeros((b.n_graphs, h.shape[1]))
        if self.global_node:
            g = g + self.glob[0](torch.cat([g, b.pool_mean(h)], dim=1))
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if self.global_node:
                h = h + b.broadcast(g)
            m = torch.relu(conv(norm(h), b))
            if self.dropout and self.training:
                m = nn.functional.dropout(m, self.dropout)
            h = h + m
            if self.global_node:
                g = g + self.glob[i + 1](torch.cat([g, b.pool_mean(h)], dim=1))
        if self.readout == "sum":
            cost = nn.functional.softplus(self.head(h))
            return torch.log(b.pool_sum(cost).squeeze(1) + 1e-12) + self.offset
        z = g if self.readout == "global" else b.pool_mean(h)
        return self.head(z).squeeze(1)


# ---- the predictor --------------------------------------------------------------------------------------------
class GCNPredictor(Predictor):
    """Graph neural network on the LayerGraph IR (see the module docstring).

    Architecture: ``hidden`` units, ``layers`` message-passing layers of kind ``conv`` (dir, gcn, graph, gin),
    ``global_node``, ``readout`` (sum, global, mean), ``dropout``, ``norm`` (LayerNorm before each layer).
    Training: ``lr``, ``weight_decay``, at most ``epochs``, ``batch_size`` graphs per step, ``patience`` and
    ``lr_drops`` (plateau schedule and early stopping), ``ema`` (weight averaging, 0 = off), ``val_fraction``,
    ``loss`` (huber or mse on log latency) with ``huber_delta``, ``seed``. Runtime: ``threads`` (torch intra-op
    threads during fit/predict; None = leave torch's setting), ``predict_batch``.
    """

    family = "gcn"

    param_ranges = {"hidden": (1, 4096), "layers": (0, 64), "dropout": (0.0, 0.99), "lr": (1e-8, 10.0),
                    "weight_decay": (0.0, 10.0), "epochs": (1, 100_000), "batch_size": (1, 1_000_000),
                    "patience": (1, 100_000), "lr_drops": (0, 100), "ema": (0.0, 0.9999), "val_fraction": (0.0, 0.9),
                    "huber_delta": (1e-6, 1e3), "threads": (1, 1_000_000), "predict_batch": (1, 1_000_000)}  # fmt: skip

    def __init__(
        self,
        hidden: int = 32,
        layers: int = 2,
        conv: str = "dir",
        global_node: bool = True,
        readout: str = "sum",
        dropout: float = 0.0,
        norm: bool = True,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        epochs: int = 100,
        batch_size: int = 32,
        patience: int = 6,
        lr_drops: int = 3,
        ema: float = 0.99,
        val_fraction: float = 0.1,
        loss: str = "huber",
        huber_delta: float = 0.1,
        seed: int = 0,
        threads: int | None = 1,
        predict_batch: int = 64,
    ):
        self.hidden = hidden
        self.layers = layers
        self.conv = conv
        self.global_node = global_node
        self.readout = readout
        self.dropout = dropout
        self.norm = norm
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.lr_drops = lr_drops
        self.ema = ema
        self.val_fraction = val_fraction
        self.loss = loss
        self.huber_delta = huber_delta
        self.seed = seed
        self.threads = threads
        self.predict_batch = predict_batch

    # ---- fit -------------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.conv not in CONVS:
            raise PredictorError(f"unknown conv {self.conv!r} (known: {', '.join(CONVS)})", "conv")
        if self.readout not in READOUTS:
            raise PredictorError(
                f"unknown readout {self.readout!r} (known: {', '.join(READOUTS)})", "readout"
            )
        if self.readout == "global" and not self.global_node:
            raise PredictorError("readout 'global' needs global_node=True", "readout")
        if self.loss not in ("mse", "huber"):
            raise PredictorError(f"unknown loss {self.loss!r} (known: mse, huber)", "loss")
        for k in ("hidden", "layers", "epochs", "batch_size", "predict_batch", "patience", "lr_drops"):
            v = getattr(self, k)
            least = 0 if k in ("layers", "lr_drops") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise PredictorError(f"must be an integer >= {least}, got {v!r}", k)
        if not 0.0 <= self.val_fraction < 1.0:
            raise PredictorError(f"must be in [0, 1), got {self.val_fraction!r}", "val_fraction")
        if not 0.0 <= self.ema < 1.0:
            raise PredictorError(f"must be in [0, 1), got {self.ema!r}", "ema")

    def _split_val(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Early-stopping split of the training rows: whole groups go to validation."""
        n_val = int(round(self.val_fraction * n))
        if n_val < 1 or n - n_val < 1:
            return np.arange(n), np.zeros(0, dtype=int)
        keys = self._groups if self._groups is not None else np.arange(n)
        uniq, inv = np.unique(keys.astype(str), return_inverse=True)
        order = rng.permutation(uniq.size)
        is_val = np.zeros(uniq.size, dtype=bool)
        count = np.bincount(inv, minlength=uniq.size)
        taken = 0
        for u in order:
            if taken >= n_val:
                break
            is_val[u], taken = True, taken + count[u]
        val = np.flatnonzero(is_val[inv])
        return np.setdiff1d(np.arange(n), val), val

    def _fit(self, graphs: list[LayerGraph], y: np.ndarray) -> None:
        self._check_params()
        with _threads(self.threads), torch.random.fork_rng():
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            parts = CACHE.entries(graphs)
            x_all = np.concatenate([p.nodes for p in parts])[:, 2:]
            self.x_mean_ = x_all.mean(0).astype(np.float32)
            std = x_all.std(0)
            self.x_std_ = np.where(std > 1e-6, std, 1.0).astype(np.float32)  # constant columns pass through
            ylog = np.log(y)
            self.y_mu_, self.y_sd_ = float(ylog.mean()), float(max(ylog.std(), 1e-6))
            z = torch.from_numpy(ylog.astype(np.float32))
            tr, va = self._split_val(len(graphs), rng)
            self.net_ = self._new_net()
            self.net_.init_offset(self.y_mu_)
            self._train(parts, z, tr, va, rng)

    def _new_net(self) -> GCNNet:
        return GCNNet(
            self.hidden, self.layers, self.conv, self.global_node, self.readout, self.dropout, self.norm
        )

    def _batch(self, parts: list[Entry], grad: bool = False) -> Batch:
        return Batch(concat(parts), self.x_mean_, self.x_std_, need_edge_index=self.conv != "dir", grad=grad)

    def _out_log(self, b: Batch, net: GCNNet | None = None) -> torch.Tensor:
        """Predicted log latency (ms). The pooled readouts predict it standardised, the sum readout directly."""
        out = (net or self.net_)(b)
        return out if self.readout == "sum" else out * self.y_sd_ + self.y_mu_

    def _train(
        self, parts, z: torch.Tensor, tr: np.ndarray, va: np.ndarray, rng: np.random.Generator
    ) -> None:
        net = self.net_
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warmup = 2 * math.ceil(tr.size / self.batch_size)  # two epochs of linear warm-up
        lr = self.lr
        # loss on log latency: errors count relatively; Huber keeps the few wild measurements from dominating
        loss_fn = nn.MSELoss() if self.loss == "mse" else nn.HuberLoss(delta=self.huber_delta)
        val_batch = self._batch([parts[i] for i in va]) if va.size else None
        # an exponential moving average of the weights is what gets validated and kept: on noisy measurements
        # single-step weights jump around, the average does not
        avg = copy.deepcopy(net).requires_grad_(False) if self.ema else net
        best, best_state, since, step, drops = math.inf, None, 0, 0, 0
        self.history_ = []
        for _epoch in range(self.epochs):
            net.train()
            perm = rng.permutation(tr)
            total = 0.0
            for s in range(0, perm.size, self.batch_size):
                idx = perm[s : s + self.batch_size]
                b = self._batch([parts[i] for i in idx], grad=True)
                loss = loss_fn(self._out_log(b), z[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if step < warmup:
                    _set_lr(opt, lr * (0.1 + 0.9 * step / warmup))
                elif step == warmup:
                    _set_lr(opt, lr)
                opt.step()
                step += 1
                if self.ema:
                    decay = min(self.ema, (1 + step) / (10 + step))
                    with torch.no_grad():
                        for pa, pn in zip(avg.parameters(), net.parameters(), strict=True):
                            pa.lerp_(pn, 1.0 - decay)
                total += float(loss.detach()) * idx.size
            val = total / tr.size
            if val_batch is not None:
                avg.eval()
                with torch.inference_mode():
                    val = float(loss_fn(self._out_log(val_batch, avg), z[va]))
            self.history_.append(val)
            if val < best * (1 - 1e-3):  # improvements within noise do not count
                best, since = val, 0
                best_state = {k: v.detach().clone() for k, v in avg.state_dict().items()}
            else:
                since += 1
            # plateau: lower the learning rate a few times, then stop. Stopping only after the rate is low keeps
            # what is kept annealed (stopping a fixed schedule early on noisy validation kept half-trained weights)
            if since >= self.patience:
                if drops == self.lr_drops:
                    break
                drops, since, lr = drops + 1, 0, lr * 0.3
                _set_lr(opt, lr)
        self.net_ = avg
        if best_state is not None:
            avg.load_state_dict(best_state)
        avg.eval()
        self.best_epoch_ = int(np.argmin(self.history_)) + 1

    # ---- predict ---------------------------------------------------------------------------------------------
    def _predict(self, graphs: list[LayerGraph]) -> np.ndarray:
        out = np.empty(len(graphs))
        with _threads(self.threads), torch.inference_mode():
            self.net_.eval()
            for s in range(0, len(graphs), self.predict_batch):
                b = self._batch(CACHE.entries(graphs[s : s + self.predict_batch]))
                out[s : s + b.n_graphs] = self._out_log(b).numpy()
        return np.exp(out)

    # ---- persistence -----------------------------------------------------------------------------------------
    def _save(self, d: Path) -> None:
        torch.save(self.net_.state_dict(), d / STATE_FILE)
        cfg = {
            "features": list(CONTINUOUS),
            "x_mean": self.x_mean_.tolist(),
            "x_std": self.x_std_.tolist(),
            "y_mu": self.y_mu_,
            "y_sd": self.y_sd_,
            "best_epoch": self.best_epoch_,
        }
        write_json_checked(d / CONFIG_FILE, cfg)

    def _load(self, d: Path) -> None:
        self._check_params()
        cfg = read_json_checked(d / CONFIG_FILE)
        if cfg.get("features") != list(CONTINUOUS):
            raise PredictorError("was saved with other node features; retrain it", str(d / CONFIG_FILE))
        self.x_mean_ = np.asarray(cfg["x_mean"], dtype=np.float32).reshape(N_CONTINUOUS)
        self.x_std_ = np.asarray(cfg["x_std"], dtype=np.float32).reshape(N_CONTINUOUS)
        self.y_mu_, self.y_sd_ = float(cfg["y_mu"]), float(cfg["y_sd"])
        self.best_epoch_ = int(cfg.get("best_epoch", 0))
        # weights_only: the file may come from anywhere; only tensors are accepted, never arbitrary objects
        state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise PredictorError("is not a state_dict", str(d / STATE_FILE))
        self.net_ = self._new_net()
        self.net_.load_state_dict(state, strict=True)
        self.net_.eval()


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class _threads:
    """Temporarily set torch's intra-op thread count (None leaves it alone)."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(n_threads(self.n))

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
