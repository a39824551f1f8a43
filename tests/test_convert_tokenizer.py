"""Tokenizers survive conversion: llama.cpp tokenizes like the Hugging Face tokenizer, and the real
Phi-3 SentencePiece vocabulary converts to exactly what llama.cpp ships (ggml-vocab-phi-3.gguf)
and tokenizes its test vectors."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.checkpoints import KINDS

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

TEXTS = [
    "Hello world",
    " Hello world",
    "  two leading spaces and trailing  ",
    "line one\nline two\n\n\nthree newlines\r\nCRLF\ttab",
    "def add(a, b):\n    return a + b  # comment\n",
    "I've been 'told' he's there, you'll see; WE'RE SURE",
    "Numbers 0 12 345 6789 3.14159 1e-9 1,000,000",
    "café naïve Zürich Ελληνικά русский 日本語 中文 한국어",
    "emoji 🚀😀👍🏽 and 😶‍🌫️ ZWJ",
    "\u00a0non-breaking\u2009thin space",
    "",
    " ",
    "\n",
]


def vocab_only(path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def special_texts(kind) -> list[str]:
    specials = [t for t, _ in KINDS[kind]["specials"]]
    return [" ".join(specials), "".join(specials), f"{specials[0]}Hi there{specials[-1]}\n ok"]


TOKENIZER_CASES = [("phi-2", "hub"), ("phi-3-mini-4k", "hub"), ("phi-4", "hub"), ("phi-4-mini", "hub"),
                   ("phi-3.5-moe", "hub"), ("phi-3-mini-4k", "transformers")]


@pytest.mark.parametrize("kind,layout", TOKENIZER_CASES, ids=[f"{k}-{lay}" for k, lay in TOKENIZER_CASES])
def test_llama_cpp_tokenizes_like_hf(kind, layout, checkpoint, converted):
    hf = transformers.AutoTokenizer.from_pretrained(checkpoint(kind, layout=layout))
    llm = vocab_only(converted(kind, layout=layout))
    try:
        for text in TEXTS + special_texts(kind):
            want = hf.encode(text, add_special_tokens=False)
            got = llm.tokenize(text.encode(), add_bos=False, special=True)
            assert got == want, text
            # add_bos/add_eos written to the GGUF reproduce HF's own special-token handling
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == hf.encode(text), text
    finally:
        llm.close()


@pytest.mark.parametrize("kind,pre", [("phi-2", "phi-2"), ("phi-4", "dbrx"), ("phi-4-mini", "gpt-4o"),
                                      ("phi-3-mini-4k", "default")])
def test_tokenizer_metadata(kind, pre, checkpoint, converted):
    reader = gguf.GGUFReader(converted(kind))
    f = {k: v.contents() for k, v in reader.fields.items() if k.startswith("tokenizer.")}
    hf = transformers.AutoTokenizer.from_pretrained(checkpoint(kind))
    assert f["tokenizer.ggml.pre"] == pre
    n_vocab = next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1]
    assert len(f["tokenizer.ggml.tokens"]) == n_vocab  # padded up to the embedding
    assert f["tokenizer.ggml.eos_token_id"] == hf.eos_token_id
    assert f["tokenizer.ggml.bos_token_id"] == hf.bos_token_id
    types = f["tokenizer.ggml.token_type"]
    for text, special in KINDS[kind]["specials"]:
        assert types[hf.convert_tokens_to_ids(text)] == (3 if special else 4), text
    assert types[-1] == 5 and f["tokenizer.ggml.tokens"][-1] == f"[PAD{n_vocab - 1}]"
    if KINDS[kind]["template"]:
        assert f["tokenizer.chat_template"] == hf.chat_template
    else:
        assert "tokenizer.chat_template" not in f


# ---- the real Phi-3 vocabulary -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_phi3(llama_cpp_tree, checkpoint, tmp_path_factory):
    """A tiny phi-3 checkpoint carrying the real Phi-3 tokenizer.model, rebuilt from llama.cpp's vocab."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    ref_path = llama_cpp_tree / "models" / "ggml-vocab-phi-3.gguf"
    ref = gguf.GGUFReader(ref_path)
    tokens = ref.fields["tokenizer.ggml.tokens"].contents()[:32000]
    scores = ref.fields["tokenizer.ggml.scores"].contents()[:32000]
    types = ref.fields["tokenizer.ggml.token_type"].contents()[:32000]
    proto = pb.ModelProto()
    proto.ParseFromString((checkpoint("phi-3-mini-4k") / "tokenizer.model").read_bytes())  # trainer/normalizer
    del proto.pieces[:]
    for text, score, typ in zip(tokens, scores, types):
        proto.pieces.add(piece=text, score=score, type=typ)
    proto.trainer_spec.vocab_size = len(tokens)
    sp = tmp_path_factory.mktemp("real-phi3") / "tokenizer.model"
    sp.write_bytes(proto.SerializeToString())
    small = dict(sp_model=sp, hidden_size=64, num_attention_heads=4, num_key_value_heads=4, intermediate_size=128)
    return ref_path, ref, small


def test_real_phi3_vocab_equals_llama_cpp(real_phi3, converted):
    ref_path, ref, small = real_phi3
    ours = gguf.GGUFReader(converted("phi-3-mini-4k", **small))
    # Real Phi-3 marks </s> (id 2) special=false (USER_DEFINED); our rebuilt tokenizer marks it special.
    ours_types, ref_types = (r.fields["tokenizer.ggml.token_type"].contents() for r in (ours, ref))
    assert (ours_types[2], ref_types[2]) == (3, 4)
    # ids 32011.. are padding: that file (made by an older converter) types them UNKNOWN, today's UNUSED
    assert ours_types[:2] + ours_types[3:32011] == ref_types[:2] + ref_types[3:32011]
    assert set(ours_types[32011:]) == {5}
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.model",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id"):
        assert ours.fields[key].contents() == ref.fields[key].contents(), key
    assert np.array_equal(np.float32(ours.fields["tokenizer.ggml.scores"].contents()),
                          np.float32(ref.fields["tokenizer.ggml.scores"].contents()))


def test_real_phi3_vocab_test_vectors(real_phi3, converted):
    ref_path, _, small = real_phi3
    texts = ref_path.with_name(ref_path.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    expected = ref_path.with_name(ref_path.name + ".out").read_text(encoding="utf-8").split("\n")
    llm = vocab_only(converted("phi-3-mini-4k", **small))
    try:
        assert len(texts) >= 40
        for text, ids in zip(texts, expected):
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == [int(i) for i in ids.split()], text
    finally:
        llm.close()
