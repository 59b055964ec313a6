"""Arch validation, pruning, JSON round-trip, importers and samplers."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from leti.errors import ArchError, LetiError
from leti.importers.inputs import to_arch
from leti.space import Arch, canonical_space, fbnet, native_text, nb101, nb201, parse_arch, sample

NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def chain(*ops, config=None):
    n = len(ops) + 2
    adj = [[1 if j == i + 1 else 0 for j in range(n)] for i in range(n)]
    return Arch(adj, ["input", *ops, "output"], config or {"merge": "sum"})


# ---- bad input: every malformed arch names the offending field ------------------------------------------------------
GOOD_ADJ = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
BAD_ARCHS = [
    (
        "non-square",
        dict(adjacency=[[0, 1, 0], [0, 0], [0, 0, 0]], layers=["input", "conv3x3-bn-relu", "output"]),
        "adjacency[1]",
    ),
    (
        "below diagonal",
        dict(adjacency=[[0, 1, 0], [0, 0, 1], [0, 1, 0]], layers=["input", "conv", "output"]),
        "adjacency",
    ),
    (
        "cycle",
        dict(
            adjacency=[[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]],
            layers=["input", "conv", "conv", "output"],
        ),
        "cycle",
    ),  # fmt: skip
    (
        "cut off from input",
        dict(adjacency=[[0, 0, 1], [0, 0, 1], [0, 0, 0]], layers=["input", "conv", "output"]),
        "cut off from the input",
    ),  # fmt: skip
    (
        "cut off from output",
        dict(adjacency=[[0, 1, 1], [0, 0, 0], [0, 0, 0]], layers=["input", "conv", "output"]),
        "cut off from the output",
    ),  # fmt: skip
    ("unknown op", dict(adjacency=GOOD_ADJ, layers=["input", "conv9x9-bn-gelu", "output"]), "layers[1]"),
    (
        "bad kernel",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "conv", "k": 0}, "output"]),
        "layers[1].k",
    ),
    (
        "kernel type",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "conv", "k": "3"}, "output"]),
        "layers[1].k",
    ),
    (
        "unknown attribute",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "conv", "kernel": 3}, "output"]),
        "layers[1].kernel",
    ),  # fmt: skip
    (
        "bad activation",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "conv", "act": "mish"}, "output"]),
        "layers[1].act",
    ),  # fmt: skip
    (
        "missing rank",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "tucker2", "rin": 4}, "output"]),
        "layers[1].rout",
    ),  # fmt: skip
    (
        "too many nodes",
        dict(
            adjacency=np.triu(np.ones((260, 260), int), 1).tolist(),
            layers=["input"] + ["conv"] * 258 + ["output"],
        ),
        "adjacency",
    ),  # fmt: skip
    ("layers count", dict(adjacency=GOOD_ADJ, layers=["input", "output"]), "layers"),
    ("first not input", dict(adjacency=GOOD_ADJ, layers=["conv", "conv", "output"]), "layers[0]"),
    (
        "output inside",
        dict(
            adjacency=[[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
            layers=["input", "output", "conv", "output"],
        ),
        "layers[1]",
    ),  # fmt: skip
    (
        "non 0/1 entry",
        dict(adjacency=[[0, 2, 0], [0, 0, 1], [0, 0, 0]], layers=["input", "conv", "output"]),
        "adjacency[0][1]",
    ),  # fmt: skip
    (
        "self loop",
        dict(adjacency=[[0, 1, 0], [0, 1, 1], [0, 0, 0]], layers=["input", "conv", "output"]),
        "adjacency[1][1]",
    ),  # fmt: skip
    (
        "config key",
        dict(adjacency=GOOD_ADJ, layers=["input", "conv", "output"], config={"stack": 2}),
        "config.stack",
    ),
    (
        "config input size",
        dict(adjacency=GOOD_ADJ, layers=["input", "conv", "output"], config={"input_size": 4}),
        "config.input_size",
    ),  # fmt: skip
    (
        "config merge",
        dict(adjacency=GOOD_ADJ, layers=["input", "conv", "output"], config={"merge": "mean"}),
        "config.merge",
    ),  # fmt: skip
    (
        "stride with dilation",
        dict(adjacency=GOOD_ADJ, layers=["input", {"op": "conv", "stride": 2, "dilation": 2}, "output"]),
        "layers[1].dilation",
    ),  # fmt: skip
    ("empty matrix", dict(adjacency=[], layers=[]), "adjacency"),
]


@pytest.mark.parametrize("name,kwargs,field", BAD_ARCHS, ids=[b[0] for b in BAD_ARCHS])
def test_bad_arch_names_the_field(name, kwargs, field):
    with pytest.raises(ArchError) as exc:
        Arch(**kwargs)
    msg = str(exc.value)
    assert field in msg, msg
    assert "\n" not in msg


BAD_TEXTS = [
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|", "arch"),
    ("nb201", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
    ("nb201", "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "repeated"),
    ("nb101", '{"matrix": [[0,1],[0,0]]}', "arch"),
    (
        "nb101",
        json.dumps(
            {
                "matrix": np.triu(np.ones((7, 7), int), 1).tolist(),
                "ops": ["input"] + ["conv3x3-bn-relu"] * 5 + ["output"],
            }
        ),
        "edges",
    ),  # fmt: skip
    (
        "nb101",
        json.dumps({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "sepconv", "output"]}),
        "ops[1]",
    ),
    ("fbnet", "k3_e1,k3_e6", "needs 22 blocks"),
    ("fbnet", ",".join(["k7_e6"] * 22), "arch[0]"),
    ("leti", "{not json", "invalid JSON"),
    ("leti", '{"adjacency": [[0]], "layers": ["input"], "extra": 1}', "extra"),
]


@pytest.mark.parametrize("space,text,needle", BAD_TEXTS)
def test_bad_native_text(space, text, needle):
    with pytest.raises(LetiError) as exc:
        parse_arch(space, text)
    assert needle in str(exc.value)


def test_unknown_space():
    with pytest.raises(LetiError, match="space"):
        canonical_space("nb301")
    assert canonical_space("NB201") == "nasbench201"


# ---- structure -----------------------------------------------------------------------------------------------------
def test_prune_drops_dead_nodes_and_zero_ops():
    # input -> conv -> output, plus a zero edge and a branch whose only input is the zero op
    adj = [
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ]
    a = Arch(adj, ["input", "conv", "zero", "maxpool", "output"], {"merge": "sum"})
    p = a.prune()
    assert [x["op"] for x in p.layers] == ["input", "conv", "output"]
    assert a.live_mask() == [True, True, False, False, True]
    assert a.hash == p.hash and a.full_hash != a.hash
    assert p.prune() is p


def test_all_zero_cell_prunes_to_zero_cell():
    a = nb201.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    p = a.prune()
    assert [x["op"] for x in p.layers] == ["input", "zero", "output"]
    g = a.to_graph()
    assert g.live.sum() < g.n_nodes  # the cells' nodes are dead, stem and head are not


def test_json_round_trip_all_spaces():
    for space in ("nb101", "nb201", "fbnet", "leti"):
        for arch, text in sample(space, 25, seed=11):
            back = Arch.from_json(arch.to_json())
            assert back == arch and back.full_hash == arch.full_hash and back.hash == arch.hash
            assert parse_arch(space, text) == arch
            if space != "leti":
                assert native_text(arch) == text or parse_arch(space, native_text(arch)) == arch


def test_nb201_string_round_trip_and_layout():
    a = nb201.from_string(NB201_BEST)
    assert nb201.to_string(a) == NB201_BEST
    assert a.n_nodes == 10 and a.config["cells_per_stack"] == 5
    assert len(nb201.all_strings()) == 15625 and len(set(nb201.all_strings())) == 15625


def test_nb101_prunes_like_modelspec():
    # vertex 2 does not reach the output: NB101's ModelSpec removes it
    m = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    a = nb101.from_spec(m, ["input", "conv3x3-bn-relu", "maxpool3x3", "output"])
    assert a.n_nodes == 3
    with pytest.raises(ArchError, match="not connected"):
        nb101.from_spec([[0, 0], [0, 0]], ["input", "output"])


def test_nb101_channels_follow_the_paper():
    from leti.space.expand import nb101_vertex_channels

    # two interior vertices feed the output: the 128 output channels are split 64/64; vertex 1 feeds vertex 2 only
    m = [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert nb101_vertex_channels(64, 128, m) == [64, 64, 64, 64, 128]
    m3 = [[0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert nb101_vertex_channels(128, 128, m3) == [128, 43, 43, 42, 128]


def test_fbnet_macro_network():
    a = fbnet.from_blocks(["k3_e1"] * 22)
    g = a.to_graph()
    assert g.input_shape == (224, 224, 3) and g.output_shape == (1, 1, 1000)
    stage_out = [c for c, _, _ in fbnet.STAGES]
    convs = [nd for nd in g.nodes() if nd.op == "conv"]
    assert {nd.out_shape[2] for nd in convs} >= set(stage_out) | {1984}
    small = fbnet.from_blocks(["skip"] * 22, input_size=96)
    assert small.to_graph().input_shape == (96, 96, 3)
    grouped = fbnet.from_blocks(["k5_e1_g2"] + ["skip"] * 21).to_graph()
    assert "shuffle" in grouped.op_counts()


def test_to_arch_accepts_every_form():
    forms = [
        NB201_BEST,
        ["k3_e1"] * 22,
        ",".join(["k5_e6"] * 22),
        chain("conv").to_json(),
        json.loads(chain("conv").to_json()),
        chain("conv"),
    ]
    for f in forms:
        assert isinstance(to_arch(f), Arch)
    m = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert to_arch((m, ["input", "maxpool3x3", "output"])).space == "nasbench101"


# ---- samplers ------------------------------------------------------------------------------------------------------
def test_every_space_module_follows_the_protocol():
    from leti.space import ALIASES, SPACE_MODULES, SPACES

    assert SPACES == ("nasbench101", "nasbench201", "fbnet", "leti")
    assert {ALIASES["nb101"], ALIASES["nb201"]} == {"nasbench101", "nasbench201"}
    for name, mod in SPACE_MODULES.items():
        assert name == mod.NAME and all(ALIASES[a] == name for a in mod.ALIASES)
        rng = np.random.default_rng(5)
        arch, text = mod.sample(rng)
        assert arch.space == name and mod.to_string(arch) == text and mod.parse(text) == arch
        small, _ = mod.sample(rng, input_size=64)
        assert small.to_graph().input_shape[:2] == (64, 64)


@pytest.mark.parametrize("space", ["nb101", "nb201", "fbnet", "leti"])
def test_sampler_is_unique_and_deterministic(space):
    a = sample(space, 40, seed=7)
    b = sample(space, 40, seed=7)
    c = sample(space, 40, seed=8)
    assert [x.full_hash for x, _ in a] == [x.full_hash for x, _ in b]
    assert len({x.hash for x, _ in a}) == 40
    assert [x.full_hash for x, _ in a] != [x.full_hash for x, _ in c]


def test_sampler_constraints():
    archs = sample("leti", 20, seed=1, constraints={"max_macs": 50_000_000, "input_size": 64})
    for a, _ in archs:
        g = a.to_graph()
        assert g.total_macs <= 50_000_000 and g.input_shape[:2] == (64, 64)
    with pytest.raises(LetiError, match="constraints.max_flops"):
        sample("nb201", 2, constraints={"max_flops": 1})
    with pytest.raises(LetiError, match="found only"):
        sample("nb201", 5, constraints={"max_macs": 10, "max_tries": 50})


def test_leti_space_is_wide():
    archs = [a for a, _ in sample("leti", 60, seed=2)]
    sizes = {a.config["input_size"][0] for a in archs}
    ops = {x["op"] for a in archs for x in a.layers}
    assert min(sizes) < 100 < max(sizes)
    assert {"conv", "mbconv", "dwconv", "sepconv", "tucker2", "cp"} <= ops


# ---- robustness: whatever comes in, the only exception is a LetiError ---------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.sampled_from(
        ["adjacency", "layers", "config", "space", "op", "k", "matrix", "ops", "arch", "stem"]), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@given(_json, st.sampled_from([None, "nb101", "nb201", "fbnet", "leti"]))
@settings(max_examples=400, deadline=None)
def test_to_arch_raises_only_leti_errors(obj, space):
    with contextlib.suppress(LetiError):  # any other exception fails the test
        to_arch(obj, space).to_graph()
