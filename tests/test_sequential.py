import numpy as np
import pandas as pd
import pytest

from bench.backbones import backbone_settings
from bench.catalog import METHODS
from bench.data.splits import make_split, resolve_split_params
from bench.eval.ranking import rank_users
from bench.types import TrainView
from methods.backbones.sequential import user_sequences, write_sequence_split
from tests.conftest import FitCall, score
from tests.test_method_contract import FakeEncoder


def test_sequence_files_use_only_earlier_items(tiny_dataset, tmp_path):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    write_sequence_split(TrainView.of(tiny_dataset, split), tmp_path, max_len=4)
    valid = pd.read_csv(tmp_path / "bench" / "bench.valid.inter", sep="\t", dtype=str)
    train = pd.read_csv(tmp_path / "bench" / "bench.train.inter", sep="\t", dtype=str)
    history = user_sequences([split.train])
    assert len(valid) == len(split.valid)
    for _, row in valid.iterrows():
        past = row["item_id_list:token_seq"].split(" ")
        assert past == history[row["user_id:token"]][-4:]
        assert row["item_id:token"] not in past
    # RecBole never gets the test part: its test file is a copy of valid
    assert (tmp_path / "bench" / "bench.test.inter").read_text() == (tmp_path / "bench" / "bench.valid.inter").read_text()
    # training rows: targets are training interactions only (no valid/test target leaks into training)
    held = set(zip(split.test["user"], split.test["item"])) | set(zip(split.valid["user"], split.valid["item"]))
    assert not held & set(zip(train["user_id:token"], train["item_id:token"]))
    assert len(train) == sum(len(s) - 1 for s in user_sequences([split.train]).values())


def test_train_targets_per_user_keeps_each_users_last_positions(tiny_dataset, tmp_path):
    from bench.errors import BenchError

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    write_sequence_split(TrainView.of(tiny_dataset, split), tmp_path, max_len=4, train_targets_per_user=2)
    train = pd.read_csv(tmp_path / "bench" / "bench.train.inter", sep="\t", dtype=str)
    sequences = user_sequences([split.train])
    assert len(train) == sum(min(2, len(s) - 1) for s in sequences.values())
    for user, rows in train.groupby("user_id:token"):
        items = sequences[user]
        assert rows["item_id:token"].tolist() == items[-len(rows):]  # the latest targets
        # histories still reach back max_len items before each kept target
        assert rows["item_id_list:token_seq"].iloc[-1].split(" ") == items[-5:-1]
    with pytest.raises(BenchError, match="train_targets_per_user"):
        write_sequence_split(TrainView.of(tiny_dataset, split), tmp_path, max_len=4, train_targets_per_user=0)


@pytest.mark.parametrize("method_name,backbone", [("random", "sasrec"), ("random", "gru4rec"),
                                                  ("seq-text", "sasrec")])
def test_sequential_contract(tiny_dataset, tmp_path, method_name, backbone):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings(backbone, {"epochs": 2, "embedding_size": 16, "train_batch_size": 64})
    cls = METHODS.get(method_name)
    method = cls(cls.Settings())
    text = np.random.default_rng(3).normal(size=(len(tiny_dataset.item_ids), 48)).astype(np.float32)
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=tmp_path,
                     backbone=backbone, backbone_settings=config, encoder=FakeEncoder(), embed_items=lambda: text)
    ctx.run(method)
    users = np.sort(split.test["user"].unique())
    scores = score(method, users)
    assert scores.shape == (len(users), len(tiny_dataset.item_ids)) and np.isfinite(scores).all()
    position = {item: i for i, item in enumerate(tiny_dataset.item_ids)}
    seen = pd.concat([split.train, split.valid])
    exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
    top = rank_users(lambda batch: score(method, batch), users, tiny_dataset.item_ids, {}, exclude)
    assert all(not set(top[r]) & set(exclude[u]) for r, u in enumerate(users))
    if method_name == "seq-text":
        embedding = method.cf.model.item_embedding
        assert embedding.weight.shape == (len(tiny_dataset.item_ids) + 1, 16)
        assert float(embedding.weight[0].abs().sum()) == 0.0  # padding row stays zero
        assert not any(p is embedding.frozen for p in method.cf.model.parameters())  # frozen, not trained
        assert method.parameter_counts().frozen_offline == 1234


def test_cf_method_rejects_sequential_backbone(tiny_dataset, tmp_path):
    from bench.errors import BenchError

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    cls = METHODS.get("llminit-var")
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=tmp_path,
                     backbone="sasrec", backbone_settings=backbone_settings("sasrec", {}))
    with pytest.raises(BenchError, match="valid backbones: mf, lightgcn, sgl, sgcl"):
        ctx.run(cls(cls.Settings()))


def test_cold_users_are_scored_from_their_context_sequence(tiny_dataset, tmp_path):
    """cold_users: SASRec validates on the held-out valid users (their context as history) and scores each
    held-out test user from the sequence the protocol gives at inference; without it the user has none."""
    from bench.errors import BenchError
    from bench.eval.ranking import evaluate_ranking, test_user_histories

    split = make_split(tiny_dataset, "cold_users", resolve_split_params("cold_users", {"valid_fraction": 0.2,
                                                                                       "test_fraction": 0.2}))
    config = backbone_settings("sasrec", {"epochs": 2, "embedding_size": 16, "train_batch_size": 64})
    method = METHODS.create("random")
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=tmp_path,
                  backbone="sasrec", backbone_settings=config)
    ctx.run(method)
    valid_file = pd.read_csv(tmp_path / "work" / "data" / "bench" / "bench.valid.inter", sep="\t", dtype=str)
    assert set(valid_file["user_id:token"]) == set(split.valid["user"])  # every held-out valid user validated
    summary, per_user, evaluation = evaluate_ranking(method, tiny_dataset, split)
    assert summary["overall"]["n_users"] == split.test["user"].nunique() == len(per_user)
    assert "absent from training" in evaluation["protocol"]
    user = split.test["user"].iloc[0]
    with pytest.raises(BenchError, match="no history"):
        score(method, [user])
    histories = test_user_histories(split)
    from bench.types import ScoreQuery

    with_context = method.score(ScoreQuery.of([user], user_histories={user: histories[user]}))
    assert np.isfinite(with_context).sum() == len(tiny_dataset.item_ids)
