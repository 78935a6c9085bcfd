"""Packing documents into causal-LM windows: no token lost, boundaries marked."""
import numpy as np
import pytest

from ssl_jax.data.packing import pack

EOT = 99


def _docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50, n).astype(np.int32) for n in lengths]


@pytest.mark.parametrize("lengths,seq_len", [([5, 3, 7], 4), ([1], 8), ([30, 1, 2, 40], 16),
                                             ([8], 9)])
def test_every_token_is_a_target_exactly_once(lengths, seq_len):
    docs = _docs(lengths)
    packed = pack(docs, EOT, seq_len)
    stream = np.concatenate([np.concatenate([[EOT], d]) for d in docs])
    targets = np.concatenate([packed.example(i)["target_ids"][packed.example(i)["target_weights"] > 0]
                              for i in range(len(packed))])
    np.testing.assert_array_equal(targets, stream[1:])  # in order, none lost, none repeated
    assert packed.num_targets == len(stream) - 1
    # no padding waste: only the last window may hold padding, less than one window of it
    weights = np.stack([packed.example(i)["target_weights"] for i in range(len(packed))])
    assert weights[:-1].all() and 0 < weights[-1].sum() <= seq_len
    for i in range(len(packed)):  # inputs are the targets shifted by one
        e = packed.example(i)
        np.testing.assert_array_equal(e["input_ids"][1:], e["target_ids"][:-1])
        assert e["input_ids"].shape == (seq_len,)


def test_document_boundaries_are_marked():
    docs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9])]
    packed = pack(docs, EOT, seq_len=20)
    e = packed.example(0)
    # stream: EOT 1 2 3 EOT 4 5 EOT 6 7 8 9 ; an EOT starts the document after it
    np.testing.assert_array_equal(e["input_ids"][:11], [EOT, 1, 2, 3, EOT, 4, 5, EOT, 6, 7, 8])
    np.testing.assert_array_equal(e["segment_ids"][:11], [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(e["target_ids"][:11], [1, 2, 3, EOT, 4, 5, EOT, 6, 7, 8, 9])
    assert e["target_weights"][:11].all() and not e["target_weights"][11:].any()


def test_segment_ids_restart_in_each_window():
    packed = pack([np.arange(1, 6), np.arange(10, 16)], EOT, seq_len=4)
    second = packed.example(1)  # stream[4:9] = 4 5 EOT 10 11
    np.testing.assert_array_equal(second["input_ids"], [4, 5, EOT, 10])
    np.testing.assert_array_equal(second["segment_ids"], [0, 0, 1, 1])


def test_bad_input():
    with pytest.raises(ValueError, match="max_seq_len=1"):
        pack(_docs([4]), EOT, 1)
    with pytest.raises(ValueError, match="no document"):
        pack([np.array([], np.int32)], EOT, 8)
