"""Llama-2-format test checkpoints built at set-up from the real Llama-2 vocabulary.

The vocabulary is under the Llama 2 Community License, so it is never committed: the source
archive of ``llama-cpp-python==0.3.36`` (a registry package, fetched with pip) carries it as
``ggml-vocab-llama-spm.gguf`` with 46 golden tokenisations beside it. This module fetches the
archive once, checks the files' sha256, builds a Hugging Face tokenizer from the GGUF with
Meta's normaliser, checks it against every golden case, and writes two tiny random-weight
(seeded) ``LlamaForCausalLM`` checkpoints in the layout of Meta's Hugging Face repositories
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` with
``tokenizer_class: LlamaTokenizer`` and ``legacy: true``, Meta's chat template for the chat
one). Everything lands under ``KC_CACHE_DIR/llama2/``, keyed by the vocabulary's hash and the
recipe's version; a second run finds it and returns at once.

``python -m tests.llama2_fixture`` builds it (``make test`` and ``.ci/run`` do) and prints the
time it took and its size. A drifted source fails the build, naming the file and the hash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kafka_fixture import jar_cache_dir

PACKAGE = "llama-cpp-python==0.3.36"
MEMBER_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
VOCAB = "ggml-vocab-llama-spm.gguf"
# Pinned: a drifted archive must fail the build, not quietly change the tokenizer under test.
SHA256 = {
    VOCAB: "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
    VOCAB + ".inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    VOCAB + ".out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
}
GOLDEN_CASES = 46
CASE_SEPARATOR = "\n__ggml_vocab_test__\n"
RECIPE = 1  # bump when what is built changes, so every cache rebuilds
BOS, EOS = 1, 2
CONTEXT = 4096
# Meta's format (llama/generation.py), as its Hugging Face chat checkpoints write it.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


@dataclass(frozen=True, slots=True)
class Llama2Fixture:
    """Where the built pieces are."""

    root: Path

    @property
    def vocab_dir(self) -> Path:
        """The GGUF vocabulary and its golden cases, as the archive ships them."""
        return self.root / "vocab"

    @property
    def chat(self) -> Path:
        """The chat checkpoint (Meta's chat template)."""
        return self.root / "llama-2-tiny-chat"

    @property
    def base(self) -> Path:
        """The base checkpoint (no chat template)."""
        return self.root / "llama-2-tiny"

    def golden(self) -> list[tuple[str, list[int]]]:
        """The 46 golden cases: text and its ids (without BOS)."""
        return golden_cases(self.vocab_dir)


def golden_cases(vocab_dir: Path) -> list[tuple[str, list[int]]]:
    """Read the archive's golden tokenisations; fail if their count is not the known one."""
    texts = (vocab_dir / (VOCAB + ".inp")).read_text(encoding="utf-8").split(CASE_SEPARATOR)
    ids = (vocab_dir / (VOCAB + ".out")).read_text(encoding="utf-8").split("\n")
    # Each file ends with a separator / newline after its last case.
    cases = [(t, [int(i) for i in o.split()]) for t, o in zip(texts[:-1], ids, strict=False)]
    if len(cases) != GOLDEN_CASES:
        raise SystemExit(f"llama2 fixture: {len(cases)} golden cases, expected {GOLDEN_CASES}")
    return cases


def fixture_root(cache_dir: Path | None = None) -> Path:
    """The directory of this recipe's build for the pinned vocabulary."""
    cache = cache_dir or jar_cache_dir()
    return cache / "llama2" / f"recipe{RECIPE}-{SHA256[VOCAB][:12]}"


def ensure_fixture(cache_dir: Path | None = None) -> Llama2Fixture:
    """The built fixture, building it first when this cache has none."""
    fixture = Llama2Fixture(fixture_root(cache_dir))
    if (fixture.root / "kc-built.ok").exists():
        return fixture
    tmp = fixture.root.with_name(fixture.root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _fetch_vocab(tmp / "vocab")
    tokenizer = build_tokenizer(tmp / "vocab")
    _write_checkpoint(tmp / "llama-2-tiny-chat", tokenizer, seed=16, chat=True)
    _write_checkpoint(tmp / "llama-2-tiny", tokenizer, seed=17, chat=False)
    (tmp / "kc-built.ok").write_text(PACKAGE + "\n")
    shutil.rmtree(fixture.root, ignore_errors=True)
    tmp.rename(fixture.root)
    return fixture


def _fetch_vocab(target: Path) -> None:
    """Download the source archive with pip and keep only the vocabulary files, checked."""
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="kc-llama2-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        # Only the package itself from source: its build backend may come as wheels.
        command += ["--no-binary", PACKAGE.split("==")[0], PACKAGE, "-d", tmp]
        subprocess.run(command, check=True)
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            for name in SHA256:
                source = tar.extractfile(MEMBER_DIR + name)
                if source is None:
                    raise SystemExit(f"llama2 fixture: {MEMBER_DIR + name} missing from {PACKAGE}")
                (target / name).write_bytes(source.read())
    for name, expected in SHA256.items():
        digest = hashlib.sha256((target / name).read_bytes()).hexdigest()
        if digest != expected:
            raise SystemExit(
                f"llama2 fixture: {name} from {PACKAGE} has sha256 {digest}, expected {expected}"
            )


def build_tokenizer(vocab_dir: Path) -> Any:
    """The Hugging Face tokenizer of the GGUF vocabulary, checked against every golden case."""
    from transformers import AutoTokenizer

    from worker.weights import sentencepiece_normaliser

    tokenizer = AutoTokenizer.from_pretrained(vocab_dir, gguf_file=VOCAB)
    # As the worker converts an operator's GGUF; the golden cases check both.
    sentencepiece_normaliser(tokenizer)
    check_golden(tokenizer, golden_cases(vocab_dir))
    return tokenizer


def check_golden(tokenizer: Any, cases: list[tuple[str, list[int]]]) -> None:
    """Fail loudly, naming the cases, if the tokenizer drifts from any golden tokenisation."""
    wrong = [
        repr(text)
        for text, ids in cases
        if tokenizer(text, add_special_tokens=False)["input_ids"] != ids
    ]
    if wrong:
        raise SystemExit(f"llama2 fixture: {len(wrong)} golden cases differ: {', '.join(wrong)}")


def _write_checkpoint(target: Path, tokenizer: Any, *, seed: int, chat: bool) -> None:
    """A tiny random-weight Llama-2 in the layout of Meta's Hugging Face checkpoints."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    _meta_tokenizer_config(target, chat)


def _meta_tokenizer_config(target: Path, chat: bool) -> None:
    """Rewrite tokenizer_config.json as Meta's repositories have it (save_pretrained drops
    ``legacy`` and names its own class); the chat template lives in it, as in theirs."""
    path = target / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(
        tokenizer_class="LlamaTokenizer",
        legacy=True,
        add_bos_token=True,
        add_eos_token=False,
        pad_token=None,
        model_max_length=CONTEXT,
    )
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    if chat:
        config["chat_template"] = CHAT_TEMPLATE
    (target / "chat_template.jinja").unlink(missing_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")


def scripted_checkpoint(base: Path, target: Path, chains: dict[int, list[int]]) -> Path:
    """A copy of a Llama-2 checkpoint that follows each token of ``chains`` with a fixed one.

    Every chain starts at a prompt's last token and goes through its ids to EOS. Attention
    and MLP outputs are zeroed, so a position's hidden state is its token's embedding; the
    chains' tokens get orthonormal embeddings and the LM head maps each to its successor
    with a margin of ~32 logits, so the text is the same under any sampling settings.
    """
    import torch
    from transformers import LlamaForCausalLM

    steps = {
        t: n
        for first, ids in chains.items()
        for t, n in zip([first, *ids], [*ids, EOS], strict=True)
    }
    if len(steps) != sum(len(ids) + 1 for ids in chains.values()):
        raise ValueError("a token occurs twice in the chains; each needs one successor")
    model: Any = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
    hidden = model.config.hidden_size
    basis = torch.linalg.qr(
        torch.randn(hidden, len(steps), generator=torch.Generator().manual_seed(0))
    )[0]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for column, (token, successor) in enumerate(steps.items()):
            model.model.embed_tokens.weight[token] = basis[:, column]
            model.lm_head.weight[successor] += 4 * basis[:, column]  # EOS ends every chain
    model.to(torch.bfloat16).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, target / name)
    return target


def size_bytes(root: Path) -> int:
    """Bytes on disk under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    """Build (or find) the fixture; print where, how long it took and how big it is."""
    started = time.perf_counter()
    cached = (fixture_root() / "kc-built.ok").exists()
    fixture = ensure_fixture()
    elapsed = time.perf_counter() - started
    how = "found in the cache" if cached else f"built, {GOLDEN_CASES} golden cases checked"
    print(
        f"llama2 fixture in {fixture.root}: {how} in {elapsed:.1f} s, "
        f"{size_bytes(fixture.root) / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
