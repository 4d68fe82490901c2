"""Each compatibility patch, tested against the failure it fixes (../shared/RECBOLE-NOTES.md)."""

import pickle
import sys

import numpy as np
import pytest

from bench import recbole_compat

recbole_compat.apply()


def _config(tmp_path, extra=None):
    from recbole.config import Config

    folder = tmp_path / "toy"
    folder.mkdir(exist_ok=True)
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\tprice:float\n"
                                      "1\t1\t1.0\n1\t2\t\n2\t1\t3.0\n2\t3\t2.0\n")
    cfg = {"data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "ckpt"), "show_progress": False,
           "load_col": {"inter": ["user_id", "item_id", "price"]}, "USER_ID_FIELD": "user_id",
           "ITEM_ID_FIELD": "item_id", "eval_args": {"split": {"RS": [0.5, 0.25, 0.25]}, "order": "RO",
                                                     "group_by": None, "mode": "full"},
           **(extra or {})}
    return Config(model="BPR", dataset="toy", config_dict=cfg)


def test_config_builds_under_numpy2(tmp_path):
    config = _config(tmp_path)
    assert config["model"] == "BPR" and np.float is np.float64


def test_config_ignores_sys_argv(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench", "--learning_rate=0.5", "--suite=coldstart"])
    assert _config(tmp_path)["learning_rate"] != 0.5


def test_missing_float_value_is_filled_not_left_nan(tmp_path):
    # pandas 3 copy-on-write made RecBole's chained fillna(inplace=True) a silent no-op
    from recbole.data import create_dataset

    dataset = create_dataset(_config(tmp_path))
    price = np.asarray(dataset.inter_feat["price"], dtype=float)
    assert not np.isnan(price).any()
    assert sorted(price.tolist()) == pytest.approx([1.0, 2.0, 2.0, 3.0])  # NaN -> mean of the others


def test_dok_update_restored_for_lightgcn_adjacency():
    import scipy.sparse as sp

    matrix = sp.dok_matrix((3, 3), dtype=np.float32)
    matrix._update({(0, 1): 1.0, (2, 0): 2.0})
    assert matrix.toarray()[0, 1] == 1.0 and matrix.toarray()[2, 0] == 2.0


def test_checkpoint_holds_weights_only_and_recbole_reloads_it(tmp_path):
    # RecBole pickled its Config into each checkpoint, which torch >= 2.6's default load (weights_only) refuses:
    # reloading the best model raised UnpicklingError. The patched checkpoint loads weights-only, in RecBole's
    # own evaluate(load_best_model=True) and resume_checkpoint too, and holds the model's very tensors.
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import BPR
    from recbole.trainer import Trainer

    config = _config(tmp_path, {"topk": [1]})
    with pytest.raises(pickle.UnpicklingError):  # what RecBole's own checkpoint content does under torch.load
        torch.save({"config": config}, tmp_path / "pickled.pth")
        torch.load(tmp_path / "pickled.pth")
    dataset = create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    model = BPR(config, train._dataset)
    trainer = Trainer(config, model)
    trainer.best_valid_score = np.float64(0.25)  # RecBole's scores are numpy floats
    trainer._save_checkpoint(3, verbose=False)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert checkpoint["config"] == {"model": "BPR"} and checkpoint["epoch"] == 3
    assert type(checkpoint["best_valid_score"]) is float and checkpoint["best_valid_score"] == 0.25
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint["state_dict"].keys() == state.keys()
    assert all(torch.equal(checkpoint["state_dict"][k], state[k]) for k in state)
    with torch.no_grad():
        model.user_embedding.weight.zero_()
    trainer.evaluate(valid, load_best_model=True)  # RecBole's own reload: torch.load with its defaults
    assert torch.equal(model.user_embedding.weight, state["user_embedding.weight"])
    trainer.resume_checkpoint(trainer.saved_model_file)
    assert trainer.start_epoch == 4


def test_token_seq_lengths_are_per_row(tmp_path):
    # pandas 3 made Series.agg(len) the length of the whole Series: sequences were split wrongly
    from recbole.config import Config
    from recbole.data import create_dataset

    folder = tmp_path / "seq"
    folder.mkdir()
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (folder / "seq.train.inter").write_text(header + "1\ta b c\td\n2\ta\tb\n3\tb c\ta\n")
    (folder / "seq.valid.inter").write_text(header + "1\tb c d\ta\n")
    (folder / "seq.test.inter").write_text(header + "2\ta b\tc\n")
    config = Config(model="SASRec", dataset="seq", config_dict={
        "data_path": str(tmp_path), "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "TIME_FIELD": None,
        "ITEM_LIST_LENGTH_FIELD": "item_length", "LIST_SUFFIX": "_list", "MAX_ITEM_LIST_LENGTH": 5,
        "train_neg_sample_args": None, "loss_type": "CE", "show_progress": False,
        "alias_of_item_id": ["item_id_list"]})
    dataset = create_dataset(config)
    assert dataset.inter_feat["item_length"].tolist() == [3, 1, 2, 3, 2]
    tokens = dataset.field2id_token["item_id"]
    first = [tokens[i] for i in dataset.inter_feat["item_id_list"].iloc[0]]
    assert first == ["a", "b", "c"] and tokens[dataset.inter_feat["item_id"].iloc[0]] == "d"


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_anomaly_detection_is_off_and_changes_no_number(tiny_dataset, tmp_path, backbone):
    """RecBole's sine.py turns autograd anomaly detection on at import; apply() imports it and turns it off.
    The same seed trains bit-identical weights and validation scores with it on (RecBole as imported) and
    off (the harness)."""
    import torch

    from bench.backbones import backbone_settings
    from bench.data.splits import make_split, resolve_split_params
    from bench.types import TrainView
    from methods.backbones.sequential import RecBoleSeq
    from tests.test_backbone_protocol import recbole_valid

    assert "recbole.model.sequential_recommender.sine" in sys.modules and not torch.is_anomaly_enabled()
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings(backbone, {"epochs": 2, "embedding_size": 16, "train_batch_size": 64})

    def train(anomaly: bool):
        torch.autograd.set_detect_anomaly(anomaly)
        try:
            seq = RecBoleSeq(backbone, config, 0, "cpu", tmp_path / str(anomaly))
            seq.prepare(TrainView.of(tiny_dataset, split))
            seq.build_model()
            info = seq.train()
            return seq.model.state_dict(), info, recbole_valid(seq)
        finally:
            torch.autograd.set_detect_anomaly(False)

    (state_on, info_on, valid_on), (state_off, info_off, valid_off) = train(True), train(False)
    assert state_on.keys() == state_off.keys()
    assert all(torch.equal(state_on[k], state_off[k]) for k in state_on)
    assert valid_on == valid_off and info_on["best_valid"] == info_off["best_valid"]
    assert info_on["best_epoch"] == info_off["best_epoch"]
