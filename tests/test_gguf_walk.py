"""The string-array walk that validates vocabularies steps over whole strings inside its
read-ahead window and hands the rest to the checked reader: whatever the window size, it
reads what gguf-py's own reader reads, and a truncated or over-long string fails as before."""

import struct

import pytest

from llm_phi_gguf import gguf_reader
from llm_phi_gguf.errors import GGUFError

TOKENS = [f"t{i}" + "ab" * (i % 13) for i in range(3000)] + ["", "x" * 300, "\u00e9\u4e2d"]


@pytest.fixture(scope="module")
def vocab_gguf(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("walk") / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_merges([f"a{i} b{i}" for i in range(500)])
    w.add_bos_token_id(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


@pytest.mark.parametrize("window", [8, 9, 64, 1000, 1 << 20])
def test_any_window_reads_what_gguf_py_reads(vocab_gguf, window, monkeypatch):
    import gguf

    monkeypatch.setattr(gguf_reader, "_CHUNK", window)
    info = gguf_reader.read_gguf(vocab_gguf, read_arrays=True)
    theirs = gguf.GGUFReader(str(vocab_gguf)).fields["tokenizer.ggml.tokens"]
    assert info.metadata["tokenizer.ggml.tokens"] == [bytes(theirs.parts[i]).decode() for i in theirs.data] == TOKENS
    assert info.metadata["tokenizer.ggml.bos_token_id"] == 1  # the key after the arrays is where it should be


def _tokens_span(data: bytes) -> tuple[int, int]:
    """(offset of the first token's length field, offset just after the last token)."""
    key = b"tokenizer.ggml.tokens"
    start = data.index(key) + len(key) + 4 + 4 + 8  # value type, element type, count
    pos = start
    for _ in TOKENS:
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
    return start, pos


@pytest.mark.parametrize("window", [8, 64, 1 << 20])
def test_cut_inside_the_vocabulary_is_a_truncation(vocab_gguf, window, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_reader, "_CHUNK", window)
    data = vocab_gguf.read_bytes()
    start, end = _tokens_span(data)
    for cut in range(start + 3, end, 997):
        path = tmp_path / "cut.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match=r"cut\.gguf: file is truncated: the value of 'tokenizer\.ggml\.tokens' needs"):
            gguf_reader.read_gguf(path)


@pytest.mark.parametrize("window", [8, 64, 1 << 20])
@pytest.mark.parametrize("which, length, message", [
    (2000, 1 << 31, r"holds a string of 2147483648 bytes, over the 1 GiB limit"),
    (2999, 1 << 29, r"file is truncated"),  # within the limit, but past the end of the file
])
def test_a_bad_length_inside_the_window_fails_as_before(vocab_gguf, window, which, length, message, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_reader, "_CHUNK", window)
    data = bytearray(vocab_gguf.read_bytes())
    pos = _tokens_span(bytes(data))[0]
    for _ in range(which):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
    struct.pack_into("<Q", data, pos, length)
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=message):
        gguf_reader.read_gguf(path)


@pytest.mark.parametrize("window", [8, 64, 1 << 20])
def test_indexed_strings_read_one_at_a_time_equal_the_decoded_list(vocab_gguf, window, monkeypatch):
    monkeypatch.setattr(gguf_reader, "_CHUNK", window)
    info = gguf_reader.read_gguf(vocab_gguf, index_arrays={"tokenizer.ggml.tokens", "tokenizer.ggml.bos_token_id"})
    assert set(info.string_offsets) == {"tokenizer.ggml.tokens"}  # a scalar key asks for nothing
    lazy = info.strings("tokenizer.ggml.tokens")
    assert len(lazy) == len(TOKENS) and list(lazy) == TOKENS and lazy[-1] == TOKENS[-1]
    assert all(t in lazy for t in ("", "x" * 300, "\u00e9\u4e2d", "t2999" + "ab" * (2999 % 13)))
    assert "t3000" not in lazy and "x" * 299 not in lazy and 7 not in lazy
    with pytest.raises(IndexError):
        lazy[len(TOKENS)]
    with pytest.raises(GGUFError, match="was not read as an indexed string array"):
        info.strings("tokenizer.ggml.merges")


def test_a_file_that_changes_under_the_lazy_list_fails_in_one_line(vocab_gguf, tmp_path):
    path = tmp_path / "changing.gguf"
    data = vocab_gguf.read_bytes()
    path.write_bytes(data)
    lazy = gguf_reader.read_gguf(path, index_arrays={"tokenizer.ggml.tokens"}).strings("tokenizer.ggml.tokens")
    path.write_bytes(data[: _tokens_span(data)[0] + 100])
    with pytest.raises(GGUFError, match=r"changing\.gguf: file changed while reading 'tokenizer\.ggml\.tokens'"):
        lazy[2000]


def test_chat_format_reads_the_same_tokens_lazily(vocab_gguf):
    from llm_phi_gguf import chat, families

    lazy = chat.gguf_metadata(vocab_gguf)
    full = gguf_reader.read_gguf(vocab_gguf, read_arrays=True).metadata
    assert isinstance(lazy["tokenizer.ggml.tokens"], gguf_reader.StringArray)
    family = families.get_family("phi-3")
    assert chat.chat_format(lazy, family).bos_token == chat.chat_format(full, family).bos_token == TOKENS[1]
    assert chat.phi3_tokenizer_overrides(lazy, family) == chat.phi3_tokenizer_overrides(full, family)
