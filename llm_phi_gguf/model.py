"""The llm models: messages -> the model's own chat prompt -> tokens -> streamed text -> usage."""

from __future__ import annotations

import asyncio
import codecs
import sys
import threading
from dataclasses import dataclass, field
from typing import Iterator, Literal, Optional, Union

import llm
from pydantic import Field, field_validator

from . import chat, families, output, reasoning, store
from .errors import PhiError
from .tagstream import TagSplitter


class PhiOptions(llm.Options):
    max_tokens: Optional[int] = Field(
        None, description="Most tokens to generate (default: until the model ends its turn or the context is full)", ge=1
    )
    temperature: Optional[float] = Field(None, description="Sampling temperature; 0 = greedy (default 0.8)", ge=0)
    top_p: Optional[float] = Field(None, description="Nucleus sampling probability mass (default 0.95)", gt=0, le=1)
    top_k: Optional[int] = Field(None, description="Sample from the k most likely tokens; 0 = all (default 40)", ge=0)
    min_p: Optional[float] = Field(None, description="Drop tokens below min_p x the top probability (default 0.05)", ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, description="Penalty for repeated tokens; 1.0 = off (default 1.0)", gt=0)
    seed: Optional[int] = Field(None, description="Random seed for sampling, for repeatable output")
    stop: Optional[Union[str, list[str]]] = Field(
        None, description="Extra stop string(s); the model's own end tokens always stop it"
    )
    gpu_layers: Optional[int] = Field(
        None, description="Layers to offload to the GPU (-1 = all, 0 = CPU only; needs a CUDA/Metal build)", ge=-1
    )
    n_ctx: Optional[int] = Field(None, description="Context window in tokens (default: registry value, else 4096)", ge=16)
    n_threads: Optional[int] = Field(
        None, description="CPU threads for generation (default: physical cores, as llama.cpp counts them)", ge=1
    )
    n_threads_batch: Optional[int] = Field(
        None, description="CPU threads for prompt evaluation (default: n_threads if given, else every usable CPU)", ge=1
    )
    cache_type: Optional[Literal["f16", "q8_0", "q4_0"]] = Field(
        None, description="KV cache type: q8_0 halves memory and saved prompt-cache files (turns on flash attention; default f16)"
    )
    prompt_cache: Optional[bool] = Field(
        None, description="Save and reuse the evaluated conversation on disk between llm -c runs (default on; see llm phi cache)"
    )
    n_batch: Optional[int] = Field(None, description="Prompt tokens evaluated per batch (default 512)", ge=1)
    flash_attn: Optional[bool] = Field(
        None, description="Use flash attention (default: auto, as llama.cpp's own CLI: on where the backend runs it)"
    )
    extra_bufts: Optional[bool] = Field(
        None,
        description="Use llama.cpp's extra CPU buffer types (AMX, repacking); default: decided per machine by a probe, off where quantized models crash",
    )

    @field_validator("stop")
    @classmethod
    def _stops_as_list(cls, value):
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)


SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}


@dataclass
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0  # prompt tokens reused from the KV cache of the previous turn

    def record(self, response) -> None:
        response.set_usage(input=self.input, output=self.output, details={"cached_tokens": self.cached} if self.cached else None)


@dataclass
class Generation:
    """One turn's generation settings, resolved from options + registry entry."""

    max_tokens: Optional[int]
    sampling: dict
    stop_strings: tuple[str, ...]
    grammar_schema: Optional[dict] = None
    seed: Optional[int] = None
    strip_first_space: bool = False  # SentencePiece pieces start with "▁": the answer should not
    usage: Usage = field(default_factory=Usage)
    cache_slot: object = None  # prompt_cache.Slot: where this conversation's state is saved, if anywhere
    # special tokens the output filters read (tool-call and think tags): passed on as their text,
    # which detokenizing without specials would drop
    markers: dict[int, bytes] = field(default_factory=dict)
    thinking: bool = False  # the prompt ends inside an open think block


class StopScanner:
    """Streams text while holding back anything that could be the start of a stop string: the
    tag splitter the output filters use, cut at the first stop string it finds."""

    def __init__(self, stops: tuple[str, ...]):
        self.splitter = TagSplitter(stops)
        self.stopped = False

    def feed(self, text: str) -> str:
        out = []
        for stop, piece in self.splitter.feed(text):
            if stop:
                self.stopped = True
                break
            out.append(piece)
        return "".join(out)

    def flush(self) -> str:
        return "".join(piece for _, piece in self.splitter.flush())


def stop_token_ids(llama, stops: tuple[str, ...]) -> set[int]:
    """End-of-generation ids: the GGUF's eos plus every stop string that is one token."""
    ids = {llama.token_eos()}
    for text in stops:
        tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return ids


def token_bytes(llama, token: int, _buf_size: int = 64) -> bytes:
    """A token's text without special tokens (llama-cpp-python's own helper asserts on pieces
    longer than 32 bytes, which Phi-4's whitespace tokens are)."""
    import ctypes

    import llama_cpp

    vocab = llama._model.vocab
    buf = ctypes.create_string_buffer(_buf_size)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, _buf_size, 0, False)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, -n, 0, False)
    return buf.raw[:n]


def generate(llama, prompt_tokens: list[int], gen: Generation) -> Iterator[str]:
    """Stream text for `prompt_tokens`, never yielding end tokens or stop strings."""
    import llama_cpp

    n_ctx = llama.n_ctx()
    if len(prompt_tokens) >= n_ctx:
        raise PhiError(f"The prompt is {len(prompt_tokens)} tokens, the context holds {n_ctx}", hint="raise -o n_ctx")
    from . import decode

    gen.usage.input = len(prompt_tokens)
    stream = decode.TokenStream(llama, prompt_tokens, decode.sampling(gen.sampling, gen.seed, gen.grammar_schema), gen.cache_slot)
    gen.usage.cached = stream.cached
    stop_ids = stop_token_ids(llama, gen.stop_strings)
    vocab = llama._model.vocab
    limit = min(gen.max_tokens or n_ctx, n_ctx - len(prompt_tokens))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    scanner = StopScanner(gen.stop_strings)

    def text_of(token: int) -> bytes | None:
        if token in stop_ids or llama_cpp.llama_vocab_is_eog(vocab, token):
            return None
        return gen.markers.get(token) or token_bytes(llama, token)

    known: dict[int, bytes | None] = {}  # token -> its bytes, None for an end token: ctypes once a token
    for token in stream:
        if token not in known:
            known[token] = text_of(token)
        piece = known[token]
        if piece is None:
            break
        gen.usage.output += 1
        if gen.strip_first_space and gen.usage.output == 1 and piece.startswith(b" "):
            piece = piece[1:]
        text = scanner.feed(decoder.decode(piece))
        if text:
            yield text
        if scanner.stopped or gen.usage.output >= limit:
            break
    if not scanner.stopped:
        tail = scanner.feed(decoder.decode(b"", final=True)) + scanner.flush()
        if tail:
            yield tail


def marker_tokens(llama, texts: tuple[str, ...]) -> dict[int, bytes]:
    """Token id -> text for each marker string that the vocab holds as one token."""
    out = {}
    for text in texts:
        tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
        if len(tokens) == 1:
            out[tokens[0]] = text.encode()
    return out


class _PhiBase:
    can_stream = True
    supports_schema = True
    Options = PhiOptions

    def __init__(self, entry: store.ModelEntry):
        self.entry = entry
        self.model_id = store.model_id(entry.alias)
        family = families.BY_KEY.get(entry.family)
        # families without a tool format keep llm's own "does not support tools" refusal
        self.supports_tools = bool(family and family.tool_format)

    def __str__(self) -> str:
        return f"Phi GGUF: {self.model_id}"

    def load_options(self, options: PhiOptions, metadata: dict, family: families.Family):
        from .runtime import LoadOptions

        e = self.entry
        return LoadOptions(
            kv_overrides=chat.phi3_tokenizer_overrides(metadata, family),
            n_ctx=options.n_ctx or e.n_ctx or families.default_n_ctx(metadata),
            gpu_layers=options.gpu_layers if options.gpu_layers is not None else (e.gpu_layers or 0),
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads_batch,
            cache_type=options.cache_type or "f16",
            n_batch=options.n_batch or 512,
            flash_attn=options.flash_attn,
            extra_bufts=options.extra_bufts,
        )

    def prepare(self, prompt, conversation=None):
        """Load the model and turn llm's messages into prompt tokens + generation settings."""
        from . import prompt_cache
        from .runtime import CACHE

        path = self.entry.path
        metadata = chat.gguf_metadata(path)
        family = families.get_family(self.entry.family)
        fmt = chat.chat_format(metadata, family, self.entry.template)
        text = fmt.render(chat.messages_from_llm(prompt, family))
        load = self.load_options(prompt.options, metadata, family)
        warn_context(metadata, load.n_ctx)
        llama = CACHE.get(path, load)
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=fmt.needs_bos(text), special=True)
        o = prompt.options
        sampling = {k: getattr(o, k) if getattr(o, k) is not None else v for k, v in SAMPLING_DEFAULTS.items()}
        sampling["temp"] = sampling.pop("temperature")
        gen = Generation(
            max_tokens=o.max_tokens,
            sampling=sampling,
            stop_strings=fmt.stops + tuple(o.stop or ()),
            grammar_schema=prompt.schema,
            seed=o.seed,
            strip_first_space=metadata.get("tokenizer.ggml.model") == "llama",
            cache_slot=None if o.prompt_cache is False else prompt_cache.slot_for(path, load, getattr(conversation, "id", None), tokens),
            markers=marker_tokens(llama, output.marker_strings(family)),
            thinking=bool(family.reasoning) and reasoning.opened_in_prompt(text, family.reasoning),
        )
        return llama, tokens, gen

    def respond(self, prompt, response, conversation=None):
        """The response's chunks: answer text, reasoning events; tool calls go onto `response`.
        A turn that runs to its end leaves its state in the prompt cache for the next process."""
        llama, tokens, gen = self.prepare(prompt, conversation)
        family = families.get_family(self.entry.family)
        try:
            yield from output.shape(generate(llama, tokens, gen), response, family, gen.thinking)
            save_prompt_cache(llama, gen)
        finally:
            gen.usage.record(response)


def warn_context(metadata: dict, n_ctx: int) -> None:
    """Warn when n_ctx goes beyond what the model was trained for, naming the RoPE regime."""
    arch = metadata.get("general.architecture")
    trained = metadata.get(f"{arch}.context_length")
    if not isinstance(trained, int) or n_ctx <= trained:
        return
    original = metadata.get(f"{arch}.rope.scaling.original_context_length")
    if isinstance(original, int) and original < trained:
        regime = f"LongRoPE long factors, which cover up to {trained}; beyond that positions are extrapolated"
    else:
        regime = "plain RoPE: positions beyond the trained length are extrapolated"
    print(
        f"Warning: n_ctx {n_ctx} is larger than the model's trained context {trained} ({regime}); output may degrade",
        file=sys.stderr,
    )


def save_prompt_cache(llama, gen: Generation) -> None:
    """After a complete turn: keep the conversation's state on disk for the next process."""
    from . import prompt_cache

    prompt_cache.save_quietly(llama, gen.cache_slot)


class PhiModel(_PhiBase, llm.Model):
    def execute(self, prompt, stream, response, conversation):
        yield from self.respond(prompt, response, conversation)


_END = object()


class PhiAsyncModel(_PhiBase, llm.AsyncModel):
    async def execute(self, prompt, stream, response, conversation):
        """Run the blocking llama.cpp generation in a thread and relay its chunks."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def produce():
            try:
                chunks = self.respond(prompt, response, conversation)
                try:
                    for chunk in chunks:
                        if cancel.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                finally:
                    chunks.close()
                loop.call_soon_threadsafe(queue.put_nowait, _END)
            except BaseException as e:  # hand the error to the event loop side
                loop.call_soon_threadsafe(queue.put_nowait, e)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            await worker
