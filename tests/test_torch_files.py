"""PyTorch checkpoints (zip and legacy) and Python 2 pickles read without torch: tensors as NumPy arrays with their
strides, offsets and dtypes, OrderedDicts kept, `module.` prefixes stripped, and anything that could run code refused.
The files are written by tests/torch_format.py in the layouts torch.save and Python 2 use."""

from __future__ import annotations

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest
from torch_format import Tensor, write_legacy, write_python2_pickle, write_zip

from t2ictl.errors import UserError
from t2ictl.torch_files import read_checkpoint, read_pickle, strip_module_prefix

WRITERS = {"zip": write_zip, "legacy": write_legacy}


def sample_checkpoint(rng) -> tuple[dict, dict]:
    """A DF-GAN-like checkpoint and the arrays each of its tensors must read as."""
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    storage = np.arange(40, dtype=np.float32)
    half = rng.standard_normal(5).astype(np.float16)
    state = collections.OrderedDict([("module.conv.weight", Tensor(weight)),
                                     ("module.bn.num_batches_tracked", Tensor(np.array(7, np.int64)))])
    checkpoint = {
        "model": {"netG": state},
        "epoch": 12,
        "transposed": Tensor(storage, offset=0, shape=(8, 5), stride=(1, 8)),  # big.t() of a 5 x 8 tensor
        "slice": Tensor(storage, offset=10, shape=(2, 4), stride=(8, 1)),  # big[1:3, 2:6]
        "half": Tensor(half), "flags": Tensor(np.array([True, False])), "ids": Tensor(np.arange(3, dtype=np.int64)),
        "empty": Tensor(np.zeros((0, 3), np.float32)), "steps": [1, 2, (3, "x")],
    }
    big = storage.reshape(5, 8)
    expected = {"weight": weight, "count": np.array(7, np.int64), "transposed": big.T, "slice": big[1:3, 2:6],
                "half": half, "flags": np.array([True, False]), "ids": np.arange(3),
                "empty": np.zeros((0, 3), np.float32)}
    return checkpoint, expected


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_a_checkpoint_reads_as_numpy_with_its_layout(layout, tmp_path):
    checkpoint, expected = sample_checkpoint(np.random.default_rng(0))
    read = read_checkpoint(WRITERS[layout](tmp_path / "state.pth", checkpoint))
    state = read["model"]["netG"]
    assert isinstance(state, collections.OrderedDict) and list(state) == list(checkpoint["model"]["netG"])
    got = {"weight": state["module.conv.weight"], "count": state["module.bn.num_batches_tracked"],
           **{name: read[name] for name in ("transposed", "slice", "half", "flags", "ids", "empty")}}
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert got[name].flags["C_CONTIGUOUS"], name
    assert read["epoch"] == 12 and read["steps"] == [1, 2, (3, "x")]
    assert list(strip_module_prefix(state)) == ["conv.weight", "bn.num_batches_tracked"]


def test_bfloat16_storages_read_as_float32(tmp_path):
    values = np.array([-0.9296875, 0.97265625, -0.11865234375, 1.5], np.float32)  # exact in bfloat16
    read = read_checkpoint(write_zip(tmp_path / "bf.pth", {"x": Tensor(values, bfloat16=True)}))
    assert read["x"].dtype == np.float32
    np.testing.assert_array_equal(read["x"], values)


class RunsCode:
    def __reduce__(self):
        return os.system, ("echo owned",)


@pytest.mark.parametrize("payload, refused", [
    (RunsCode(), "refused posix.system"),
    (np.zeros(3), "refused numpy"),
    (collections.Counter("ab"), "refused collections.Counter"),
])
def test_anything_that_could_run_code_is_refused_in_both_layouts_and_in_pickles(payload, refused, tmp_path):
    for layout, write in WRITERS.items():
        with pytest.raises(UserError, match=refused):
            read_checkpoint(write(tmp_path / f"{layout}.pth", {"state": payload}))
    (tmp_path / "plain.pickle").write_bytes(pickle.dumps([payload], protocol=2))
    with pytest.raises(UserError, match=refused):
        read_pickle(tmp_path / "plain.pickle")


def test_files_that_are_not_checkpoints_are_one_clear_error(tmp_path):
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(UserError, match="no torch.save magic number"):
        read_checkpoint(tmp_path / "plain.pth")
    full = write_legacy(tmp_path / "full.pth", {"w": Tensor(np.ones(100, np.float32))}).read_bytes()
    (tmp_path / "cut.pth").write_bytes(full[:-40])
    with pytest.raises(UserError, match="truncated"):
        read_checkpoint(tmp_path / "cut.pth")
    zipped = write_zip(tmp_path / "full.zip", {"w": Tensor(np.arange(4000, dtype=np.float32))}).read_bytes()
    # A zip's header dates its entries; when those bytes happen to be ASCII, a cut zip once read as a pickle whose
    # persistent id was the header itself, and gave another error.
    ascii_header = b"PK\x03\x04" + b"K" * 24 + b"\n" + zipped[29:]
    for cut in range(1, 10):
        for copy in (zipped, ascii_header):
            (tmp_path / "cut.zip").write_bytes(copy[: len(copy) * cut // 10])
            with pytest.raises(UserError, match="cut.zip: not a readable PyTorch checkpoint"):
                read_checkpoint(tmp_path / "cut.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="without one data.pkl"):
        read_checkpoint(tmp_path / "other.zip")
    with pytest.raises(UserError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")


def test_the_damsm_captions_pickle_of_python_2_reads_with_latin_1_strings(tmp_path):
    ixtoword = {0: "<end>", 1: "bird", 2: "café"}
    wordtoix = {word: index for index, word in ixtoword.items()}
    captions = [[[1, 2], [1]], [[2, 1]], ixtoword, wordtoix]
    path = write_python2_pickle(tmp_path / "captions.pickle", captions)
    assert b"U\x04caf\xe9" in path.read_bytes()  # a Python 2 byte string, as the 2018 release wrote them
    assert read_pickle(path) == captions


def test_a_torchscript_archive_gives_its_tensors_by_state_dict_name_and_nothing_else(tmp_path):
    from torch_format import ScriptObject, script_modules

    from t2ictl.torch_files import read_torchscript_state

    state = {"visual.conv1.weight": np.arange(12, dtype=np.float16).reshape(3, 1, 2, 2),
             "visual.transformer.resblocks.0.attn.in_proj_bias": np.ones(6, np.float32), "logit_scale": np.array(4.6)}
    write_zip(tmp_path / "ViT.pt", script_modules(state), name="ViT")
    read = read_torchscript_state(tmp_path / "ViT.pt")
    assert set(read) == set(state)  # flags such as `training` are not tensors
    for key, array in state.items():
        np.testing.assert_array_equal(read[key], array)
        assert read[key].dtype == array.dtype
    with pytest.raises(UserError, match="refused __torch__.clip.model.CLIP"):
        read_checkpoint(tmp_path / "ViT.pt")  # a checkpoint holds no TorchScript objects
    write_zip(tmp_path / "plain.pt", {"weight": Tensor(np.zeros(2, np.float32))})
    with pytest.raises(UserError, match="plain.pt: a zip of torch.save, not a TorchScript module"):
        read_torchscript_state(tmp_path / "plain.pt")
    write_zip(tmp_path / "code.pt", ScriptObject("clip.model.CLIP", {"run": RunsCode()}))
    with pytest.raises(UserError, match="refused posix.system"):
        read_torchscript_state(tmp_path / "code.pt")  # only __torch__ classes are taken as attribute holders
