"""Pre-training examples: NSP pairs, segment ids, positions, static/dynamic masking."""
import numpy as np

from ssl_jax.data import pretraining


def test_nsp_ratio_is_one_half(tiny_task):
    labels = np.array([i.next_sentence_label for i in tiny_task.train_instances])
    assert len(labels) > 300
    assert abs(labels.mean() - 0.5) < 0.06, labels.mean()


def test_pair_layout_and_segment_ids(tiny_task):
    wp, S = tiny_task.wordpiece, tiny_task.config.max_seq_len
    examples = tiny_task.eval_examples() + [
        pretraining.to_example(i, tiny_task.spec, wp, S, np.random.default_rng(0))
        for i in tiny_task.train_instances[:200]]
    for e in examples:
        n = int(e["input_mask"].sum())
        assert 4 <= n <= S
        np.testing.assert_array_equal(e["input_mask"], np.arange(S) < n)
        original = e["input_ids"].copy()
        k = int(e["masked_weights"].sum())
        original[e["masked_positions"][:k]] = e["masked_ids"][:k]
        seps = np.flatnonzero(original[:n] == wp.sep_id)
        assert original[0] == wp.cls_id and len(seps) == 2 and seps[-1] == n - 1
        # segment 0 through the first [SEP], segment 1 for B and the final [SEP], 0 on padding
        expected = np.zeros(S, np.int32)
        expected[seps[0] + 1:n] = 1
        np.testing.assert_array_equal(e["segment_ids"], expected)
        assert (e["input_ids"][n:] == wp.pad_id).all()
        assert not wp.is_special[original[e["masked_positions"][:k]]].any()


def test_mean_length_uses_the_context(tiny_task):
    lengths = [len(i.tokens) for i in tiny_task.train_instances]
    # short_seq_prob=0.1 and document ends make some sequences short; most are near full
    assert np.median(lengths) >= 0.85 * tiny_task.config.max_seq_len


def test_next_segment_is_the_actual_continuation(tiny_task):
    """is-next: A and B are contiguous pieces of one document, B after A (truncation only
    trims their outer ends). random-next: no document holds B right after A."""
    from ssl_jax.data.corpora import load_documents

    wp = tiny_task.wordpiece
    docs = tiny_task._tokenize(load_documents(tiny_task.config.data, "train"))
    streams = [np.concatenate(d) for d in docs]
    counts = {0: 0, 1: 0}
    for inst in tiny_task.train_instances[:120]:
        seps = np.flatnonzero(inst.tokens == wp.sep_id)
        a, b = inst.tokens[1:seps[0]], inst.tokens[seps[0] + 1:seps[1]]
        follows = any(_find(s, b, after=_find(s, a) + len(a) - 1) >= 0
                      for s in streams if _find(s, a) >= 0)
        assert follows == (inst.next_sentence_label == 0)
        counts[inst.next_sentence_label] += 1
    assert min(counts.values()) > 30


def _find(stream, piece, after=0):
    """First index >= after where piece occurs in stream, or -1."""
    if after < 0:
        return -1
    for start in np.flatnonzero(stream[after:] == piece[0]) + after:
        if np.array_equal(stream[start:start + len(piece)], piece):
            return int(start)
    return -1


def test_dynamic_masking_changes_each_epoch_static_does_not(tiny_task):
    kw = dict(spec=tiny_task.spec, wordpiece=tiny_task.wordpiece, max_seq_len=64, seed=0,
              batch_size=1)
    instances = tiny_task.train_instances[:10]
    dynamic = pretraining.train_dataset(instances, dynamic=True, **kw)
    static = pretraining.train_dataset(instances, dynamic=False, **kw)

    def epochs(ds):  # {instance tokens -> masks seen}
        seen = {}
        for i in range(30):
            e = {k: v[0] for k, v in ds[i].items()}
            original = e["input_ids"].copy()
            original[e["masked_positions"]] = e["masked_ids"]  # unused slots: position 0 = [CLS]
            original[0] = tiny_task.wordpiece.cls_id
            seen.setdefault(tuple(original), set()).add(tuple(e["masked_positions"]))
        return seen

    assert max(len(v) for v in epochs(static).values()) == 1
    assert max(len(v) for v in epochs(dynamic).values()) > 1


def test_process_shards_are_disjoint_and_cover(tiny_task):
    kw = dict(spec=tiny_task.spec, wordpiece=tiny_task.wordpiece, max_seq_len=64, seed=0,
              batch_size=2, dynamic=False)
    instances = tiny_task.train_instances[:12]
    full = pretraining.train_dataset(instances, batch_size=4, spec=tiny_task.spec,
                                     wordpiece=tiny_task.wordpiece, max_seq_len=64, seed=0,
                                     dynamic=False)
    parts = [pretraining.train_dataset(instances, process_index=p, process_count=2, **kw)
             for p in range(2)]
    global_ids = np.concatenate([full[i]["input_ids"] for i in range(3)])
    local_ids = np.concatenate([parts[p][i]["input_ids"] for i in range(3) for p in range(2)])
    assert sorted(map(tuple, global_ids)) == sorted(map(tuple, local_ids))


def test_instances_are_keyed_by_document_not_by_what_comes_before(tiny_task):
    """A document's instances (and their static masks) are the same whether it is built
    alone or after every other document: what lets shards be prepared independently."""
    docs = tiny_task._tokenize(_documents(tiny_task))
    everything = pretraining.create_instances(docs, tiny_task.wordpiece, 64, 0.1, True,
                                              seed=3, copies=2)
    alone = pretraining.keyed_instances(docs, 7, tiny_task.wordpiece, 64, 0.1, True, seed=3,
                                        copies=2)
    mine = [i for i in everything if i.key[1] == 7]
    assert len(alone) == len(mine) > 0
    for a, b in zip(alone, mine):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        assert a.key == b.key and a.next_sentence_label == b.next_sentence_label
        ea, eb = (pretraining.masked_example(x, tiny_task.spec, tiny_task.wordpiece, 64, 9)
                  for x in (a, b))
        np.testing.assert_array_equal(ea["input_ids"], eb["input_ids"])
    order = [(i.key[1], i.key[0]) for i in everything]  # document by document, copies together
    assert order == sorted(order)


def _documents(task):
    from ssl_jax.data.corpora import Documents

    source = Documents(task.config.data, "train")
    return [source[i] for i in range(len(source))]


def test_random_next_rate_is_a_config_field(tiny_task):
    from ssl_jax.data.corpora import load_documents

    docs = tiny_task._tokenize(load_documents(tiny_task.config.data, "train"))
    instances = pretraining.create_instances(docs, tiny_task.wordpiece, 64, 0.1, True,
                                             seed=5, random_next_prob=0.2)
    labels = np.array([i.next_sentence_label for i in instances])
    assert abs(labels.mean() - 0.2) < 0.04, labels.mean()
