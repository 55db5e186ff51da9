"""Per-role GGUF LoRA adapters on llama.cpp: parity with transformers, switch cost, throughput.

Run: MORAGENT_THREADS=1 python benchmarks/bench_switch.py [--positions 200] [--data FILE]
     [--model smollm2|gemma3|FILE.gguf] [--base-dtype quantized|f32|f16] [--parity-only]

With no trained adapters at hand it makes random ``lora`` role adapters (B scaled to
change a good share of the next-token choices) on the base GGUF (the embedded
SmolLM2-135M unless ``--model`` says otherwise), exports them with ``moragent export``
and measures:

1. parity: next-token top-1 agreement of llama.cpp (the GGUF + exported adapters,
   switched at each segment) with transformers (the same GGUF dequantized, MoR ``lora``
   adapters, role ids per token) on real trajectories, per role, and the same for the
   base model without adapters. ``--base-dtype f32`` runs both on an unquantized copy
   of the GGUF (``moragent.export.unquantized``: the same weights, stored F32), so that
   llama.cpp's quantized matmuls (Q8 activations against Q4 weights) drop out and only
   a real mismatch of the two implementations would be left. At each disagreement the
   transformers margin between its own top-1 and llama.cpp's choice is reported: near
   ties (small margins) are arithmetic, large ones a bug;
2. one adapter switch (``llama_set_adapters_lora``): median microseconds; tokens
   re-evaluated at switches;
3. an episode (prefill of prompts, token-by-token decode of role turns) with three
   role adapters switched vs the same tokens on plain llama.cpp: throughput ratio;
4. one ``Llama`` per role (``lora_path``) and reloading at each switch: load time, memory;
5. ``mor`` groups against their collapsed LoRAs at a few ranks, mean and fit collapse
   (in transformers, so only the collapse is measured): top-1 agreement and mean KL per
   role. Random groups, or
   trained ones with ``--adapters DIR`` (a ``moragent finetune --method mor`` folder;
   compared on trajectories of its validation split). ``--mor-only`` runs just this part.

Parts 2 to 5 use the embedded SmolLM2-135M; ``--parity-only`` stops after part 1.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MORAGENT_THREADS", "1")
ROLES = ("reasoner", "executor", "summarizer")


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def base_gguf(model: str, dtype: str) -> Path:
    """The base GGUF of ``--model``, or its unquantized copy (made once, kept in the cache)."""
    from moragent.models import default_gguf, gemma3_gguf
    from moragent.train.base import cache_dir, file_hash

    path = {"smollm2": default_gguf, "gemma3": gemma3_gguf}.get(model, lambda: Path(model))()
    if dtype == "quantized":
        return path
    from moragent.export.unquantized import write_unquantized

    copy = cache_dir() / "unquantized" / f"{path.stem}-{file_hash(path)[:16]}.{dtype}.gguf"
    if not copy.is_file():
        began = time.perf_counter()
        write_unquantized(path, copy, dtype)
        print(f"unquantized {dtype} copy of {path.name} written in "
              f"{time.perf_counter() - began:.0f} s: {copy}")  # fmt: skip
    return copy


def make_lora_adapters(folder: Path, b_scale: float, gguf: Path) -> tuple[object, object]:
    """Random ``lora`` role adapters on ``gguf``, saved with moragent.json."""
    from peft import get_peft_model

    from moragent.mor import MoRConfig
    from moragent.prompts import TEMPLATE_VERSION
    from moragent.train.base import load_base, resolve_base
    from moragent.train.metadata import AdapterMetadata, write_metadata

    base = resolve_base(gguf)
    model, tokenizer = load_base(base)
    torch.manual_seed(0)
    config = MoRConfig(method="lora", init_weights=False, lora_dropout=0.0)
    model = get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mor_B" in name:
                param.mul_(b_scale)
    model.save_pretrained(folder)
    write_metadata(
        folder,
        AdapterMetadata(
            "lora", list(ROLES), TEMPLATE_VERSION, base.to_dict(), {}, config.to_dict()
        ),
    )
    return model, tokenizer


def sequences(data: Path, tokenizer: object, positions: int) -> list[tuple[list[int], list[int]]]:
    """Encoded trajectories until every role has ``positions`` tokens."""
    from moragent.train.dataset import load_training_data
    from moragent.train.tensors import encode_all

    trajectories = load_training_data(data).trajectories
    chosen, counts = [], [0, 0, 0]
    for start in range(0, len(trajectories), 8):
        encoded, _ = encode_all(trajectories[start : start + 8], tokenizer, 1024, roles=ROLES)
        for item in encoded:
            chosen.append((item.input_ids, item.role_ids))
            for role in range(3):
                counts[role] += item.role_ids.count(role)
            if min(counts) >= positions:
                return chosen
    return chosen


def segments_of(ids: list[int], roles: list[int]) -> list[tuple[int, list[int]]]:
    """(role, tokens) runs of one sequence."""
    runs: list[tuple[int, list[int]]] = []
    for token, role in zip(ids, roles, strict=True):
        if runs and runs[-1][0] == role:
            runs[-1][1].append(token)
        else:
            runs.append((role, [token]))
    return runs


def llama_top1(backend: object, ids: list[int], roles: list[int], adapters: bool) -> list[int]:
    """Top-1 after every token, fed segment by segment (adapter switched per segment)."""
    from moragent.roles import Role

    backend.reset()
    llm, n_vocab, top = backend.llm, backend.llm.n_vocab(), []
    for role, tokens in segments_of(ids, roles):
        backend._activate(Role(ROLES[role]) if adapters else Role.REASONER)
        for start in range(0, len(tokens), 256):
            chunk = tokens[start : start + 256]
            llm._batch.set_batch(batch=chunk, n_past=llm.n_tokens, logits_all=True)
            llm._ctx.decode(llm._batch)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk) * n_vocab,))
            top += logits.reshape(len(chunk), n_vocab).argmax(-1).tolist()
            llm.n_tokens += len(chunk)
    return top


def parity(model: object, gguf: Path, gguf_dir: Path, seqs: list, positions: int) -> None:
    from moragent.backends import make_backend

    with_adapters = make_backend("llamacpp", model=gguf, adapters=gguf_dir, n_ctx=1100)
    plain = make_backend("llamacpp", model=gguf, adapters=False, n_ctx=1100)
    agree = {name: [0, 0] for name in (*ROLES, "base")}
    margins: dict[str, list[float]] = {name: [] for name in agree}
    late = [0, 0]  # base positions at index >= 512 (past Gemma 3's sliding window)
    changed = [0, 0]
    for ids, roles in seqs:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), role_ids=torch.tensor([roles])).logits
            logits = logits[0].float()
            want = logits.argmax(-1).tolist()
            with model.disable_adapter():
                base_logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            base_want = base_logits.argmax(-1).tolist()
        got = llama_top1(with_adapters, ids, roles, adapters=True)
        base_got = llama_top1(plain, ids, roles, adapters=False)
        for i, role in enumerate(roles):
            entry = agree[ROLES[role]]
            if entry[1] < positions:
                entry[0] += got[i] == want[i]
                entry[1] += 1
                changed[0] += want[i] != base_want[i]
                changed[1] += 1
                if got[i] != want[i]:
                    margins[ROLES[role]].append(float(logits[i, want[i]] - logits[i, got[i]]))
            if agree["base"][1] < positions * 3:
                agree["base"][0] += base_got[i] == base_want[i]
                agree["base"][1] += 1
                if i >= 512:
                    late[0] += base_got[i] == base_want[i]
                    late[1] += 1
                if base_got[i] != base_want[i]:
                    gap = base_logits[i, base_want[i]] - base_logits[i, base_got[i]]
                    margins["base"].append(float(gap))
    print(f"1. parity, next-token top-1 agreement llama.cpp vs transformers ({gguf.name})")
    for name, (same, total) in agree.items():
        gaps = sorted(margins[name])
        spread = (f"; transformers margin at the misses: median {statistics.median(gaps):.3f}, "
                  f"max {gaps[-1]:.3f}" if gaps else "")  # fmt: skip
        print(f"   {name:<10} {same}/{total} = {100 * same / max(total, 1):.1f}%{spread}")
    if late[1]:
        print(
            f"   (base at positions >= 512: {late[0]}/{late[1]} = {100 * late[0] / late[1]:.1f}%)"
        )
    print(f"   (the adapters change the transformers top-1 at {changed[0]}/{changed[1]} positions)")
    with_adapters.close()
    plain.close()


def switch_cost(gguf_dir: Path, seqs: list) -> None:
    from moragent.backends import make_backend
    from moragent.roles import Role

    backend = make_backend("llamacpp", adapters=gguf_dir, n_ctx=1100)
    lib, ctx = backend._llama_cpp, backend.llm._ctx.ctx
    pointers = [backend._adapters[Role(role)] for role in ROLES]
    one = ctypes.c_float(1.0)
    scales = (ctypes.c_float * 1)(one)
    times = []
    for i in range(3000):
        array = (lib.llama_adapter_lora_p_ctypes * 1)(pointers[i % 3])
        began = time.perf_counter()
        lib.llama_set_adapters_lora(ctx, array, 1, scales)
        times.append(time.perf_counter() - began)
    print(f"2. one adapter switch: median {1e6 * statistics.median(times):.1f} us "
          f"(3000 switches, p90 {1e6 * sorted(times)[2700]:.1f} us)")  # fmt: skip

    ids, roles = seqs[0]
    backend.reset()
    for role, tokens in segments_of(ids, roles):
        backend._eval(Role(ROLES[role]), tokens)
    stats = backend.stats
    print(f"   tokens re-evaluated at {stats.role_switches} role switches over {stats.evaluated} "
          f"tokens: {stats.reevaluated}")  # fmt: skip
    backend.close()


def episode(backend: object, ids: list[int], roles: list[int], adapters: bool) -> float:
    """Seconds to run an episode: prompts prefilled, role turns decoded one token at a time."""
    from moragent.roles import Role

    backend.reset()
    began = time.perf_counter()
    for role, tokens in segments_of(ids, roles):
        name = Role(ROLES[role]) if adapters else Role.REASONER
        if role == 0 and len(tokens) > 64:  # a prompt or observation: one batch
            backend._eval(name, tokens)
        else:  # a generated turn: token by token, as decoding does
            for token in tokens:
                backend._eval(name, [token])
    return time.perf_counter() - began


def throughput(gguf_dir: Path, seqs: list, repeats: int) -> None:
    from moragent.backends import make_backend

    ids, roles = max(seqs[:4], key=lambda item: len(set(item[1])))
    switched = make_backend("llamacpp", adapters=gguf_dir, n_ctx=1100)
    plain = make_backend("llamacpp", adapters=False, n_ctx=1100)
    one_adapter = make_backend("llamacpp", adapters={"reasoner": gguf_dir / "reasoner.gguf"},
                               n_ctx=1100)  # fmt: skip
    runs = {"plain": [], "one adapter, no switch": [], "three adapters, switched": []}
    for _ in range(repeats):
        runs["plain"].append(episode(plain, ids, roles, adapters=False))
        runs["one adapter, no switch"].append(episode(one_adapter, ids, roles, adapters=False))
        runs["three adapters, switched"].append(episode(switched, ids, roles, adapters=True))
    switches = sum(1 for _ in segments_of(ids, roles)) - 1
    print(f"3. episode of {len(ids)} tokens, {switches} role switches, best of {repeats}:")
    best_plain = min(runs["plain"])
    for name, times in runs.items():
        print(f"   {name:<26} {len(ids) / min(times):7.1f} tok/s  ratio to plain "
              f"{best_plain / min(times):.3f}")  # fmt: skip
    for backend in (switched, plain, one_adapter):
        backend.close()


def loading(gguf_dir: Path) -> None:
    from moragent.backends import make_backend
    from moragent.backends.llamacpp_safe import load_llama
    from moragent.models import default_gguf

    threads = int(os.environ["MORAGENT_THREADS"])
    print("4. load time and memory (RSS growth of this process)")
    before, began = rss_mb(), time.perf_counter()
    shared = make_backend("llamacpp", adapters=gguf_dir, n_ctx=1100)
    print(f"   one model + 3 adapters (moragent): {time.perf_counter() - began:.2f} s, "
          f"+{rss_mb() - before:.0f} MB")  # fmt: skip
    shared.close()
    before, began = rss_mb(), time.perf_counter()
    per_role = [
        load_llama(default_gguf(), 1100, threads, lora_path=str(gguf_dir / f"{role}.gguf"))
        for role in ROLES
    ]
    print(f"   one Llama per role (lora_path):    {time.perf_counter() - began:.2f} s, "
          f"+{rss_mb() - before:.0f} MB")  # fmt: skip
    for llm in per_role:
        llm.close()
    del per_role
    began = time.perf_counter()
    for role in ROLES:
        lora = str(gguf_dir / f"{role}.gguf")
        llm = load_llama(default_gguf(), 1100, threads, lora_path=lora)
        llm.close()
    print(
        f"   reload per switch: {(time.perf_counter() - began) / 3 * 1000:.0f} ms per switch "
        "(and the KV cache of the episode is lost)"
    )


def mor_quality(
    data: Path, ranks: list[int], calibration: int, held_out: int, adapters: Path | None = None
) -> None:
    """``mor`` groups vs their collapsed LoRAs, in transformers: top-1 and KL per role.

    With ``adapters`` (a ``moragent finetune --method mor`` folder) the trained groups are
    used, calibrated on training trajectories and compared on trajectories of the run's
    validation split (never trained on); without, random groups on ``data``.
    """
    from peft import PeftModel, get_peft_model

    from moragent.export.collapse import RoutingStats, group_factors, low_rank, measure_routing
    from moragent.models import default_gguf
    from moragent.mor import MoRConfig, MoRLinear
    from moragent.train.base import load_base, resolve_base

    model, tokenizer = load_base(resolve_base(default_gguf()))
    if adapters is not None:
        from moragent.train.dataset import load_training_data, split
        from moragent.train.metadata import read_metadata
        from moragent.train.tensors import encode_all

        metadata = read_metadata(adapters)
        settings = metadata.training
        model = PeftModel.from_pretrained(model, str(adapters)).eval()
        trajectories = load_training_data(metadata.data.get("path", data)).trajectories
        train, val = split(trajectories, settings["val_split"], settings["seed"])

        def encode(items: list) -> list[tuple[list[int], list[int]]]:
            encoded, _ = encode_all(items, tokenizer, 1024, roles=ROLES)
            return [(item.input_ids, item.role_ids) for item in encoded]

        # trajectories with a call, so that every role has tokens to compare (a no-fit
        # trajectory has no executor turn)
        val = [trajectory for trajectory in val if trajectory.calls]
        seqs = encode(train[:calibration]) + encode(val[-held_out:])[:held_out]
        calibration = len(seqs) - min(held_out, len(seqs) - 1)
        source = f"trained mor groups ({adapters})"
    else:
        torch.manual_seed(1)
        model = get_peft_model(model, MoRConfig(init_weights=False, lora_dropout=0.0)).eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "mor_B" in name or "mor_shared_B" in name:
                    param.mul_(0.3)
        seqs = sequences(data, tokenizer, 10**9)[: calibration + held_out]
        source = "random mor groups"
    fitted = measure_routing(model, seqs[:calibration], ROLES, fit=True)
    # the mean collapse: the same routing sums without the fit's moments
    means = {key: RoutingStats(e.weights, e.gate, e.tokens) for key, e in fitted.items()}
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
              if isinstance(m, MoRLinear)}  # fmt: skip
    print(f"5. mor collapse, {source}, routing from {calibration} trajectories, "
          f"compared on {len(seqs) - calibration} others (transformers, float32)")  # fmt: skip
    references = []
    with torch.no_grad():
        for ids, roles in seqs[calibration:]:
            out = model(input_ids=torch.tensor([ids]), role_ids=torch.tensor([roles]))
            references.append(torch.log_softmax(out.logits[0].float(), -1))
    for how, rank in [(how, rank) for how in ("mean", "fit") for rank in ranks]:
        stats = fitted if how == "fit" else means
        collapsed = {}
        for name, layer in layers.items():
            for role in ROLES:
                names = ("mor_A", "mor_B", "mor_shared_A", "mor_shared_B")
                kinds = {kind: getattr(layer, kind)["default"][role].detach() for kind in names}
                pairs = group_factors(kinds, layer.scaling("default"), stats.get((name, role)))
                collapsed[(name, role)] = low_rank(pairs, rank)[:2]
        handles = [layer.register_forward_hook(_static_delta(name, collapsed))
                   for name, layer in layers.items()]  # fmt: skip
        sums = {role: [0, 0, 0.0] for role in ROLES}
        with torch.no_grad():
            for (ids, roles), ref in zip(seqs[calibration:], references, strict=True):
                out = model(input_ids=torch.tensor([ids]), role_ids=torch.tensor([roles]))
                got = torch.log_softmax(out.logits[0].float(), -1)
                kl = (ref.exp() * (ref - got)).sum(-1)
                same = ref.argmax(-1) == got.argmax(-1)
                for i, role in enumerate(roles):
                    entry = sums[ROLES[role]]
                    entry[0] += int(same[i])
                    entry[1] += 1
                    entry[2] += float(kl[i])
        for handle in handles:
            handle.remove()
        cells = "  ".join(f"{role} top-1 {100 * a / n:.1f}% KL {k / n:.4f}" if n
                          else f"{role} no tokens"
                          for role, (a, n, k) in sums.items())  # fmt: skip
        print(f"   {how:>4} rank {rank:>2}: {cells}")


def _static_delta(name: str, collapsed: dict) -> object:
    """A forward hook giving a MoR layer the collapsed static delta of each token's role."""

    def hook(module: object, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x2d = args[0].reshape(-1, args[0].shape[-1])
        result = module.base_layer(args[0]).reshape(-1, output.shape[-1]).clone()
        for role, positions in zip(ROLES, module.role_state.batch.positions, strict=True):
            if positions.numel():
                a, b = collapsed[(name, role)]
                result.index_add_(0, positions, (x2d[positions] @ a.t()) @ b.t())
        return result.view_as(output)

    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=200, help="positions per role")
    parser.add_argument("--data", type=Path, default=Path("runs/train.jsonl"))
    parser.add_argument("--b-scale", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mor-only", action="store_true", help="only the mor collapse table")
    parser.add_argument("--ranks", default="4,8,16", help="export ranks of the mor table")
    parser.add_argument(
        "--adapters", type=Path, help="trained mor adapters (finetune --out) for the mor table"
    )
    parser.add_argument("--held-out", type=int, default=8, help="mor table: trajectories compared")
    parser.add_argument(
        "--model", default="smollm2", help="base of the parity: smollm2, gemma3 or a GGUF file"
    )
    parser.add_argument(
        "--base-dtype",
        choices=("quantized", "f32", "f16"),
        default="quantized",
        help="parity on the GGUF as it is, or on an unquantized copy of the same weights",
    )
    parser.add_argument("--parity-only", action="store_true", help="only part 1 (parity)")
    args = parser.parse_args()
    from moragent.backends.llamacpp_safe import install

    install()  # the plain Llama() loads below get the backend's AMX fix too
    torch.set_num_threads(1)
    ranks = [int(r) for r in args.ranks.split(",")]
    if args.mor_only:
        mor_quality(args.data, ranks, 8, args.held_out, args.adapters)
        return

    from moragent.export import export_adapters
    from moragent.models import default_gguf

    work = Path(tempfile.mkdtemp(prefix="bench_switch."))
    gguf = base_gguf(args.model, args.base_dtype)
    began = time.perf_counter()
    model, tokenizer = make_lora_adapters(work / "adapters", args.b_scale, gguf)
    export_adapters(work / "adapters", work / "gguf", model=gguf)
    print(f"random lora adapters made and exported in {time.perf_counter() - began:.0f} s")
    seqs = sequences(args.data, tokenizer, args.positions)
    print(f"{len(seqs)} trajectories of {args.data}, {sum(len(s[0]) for s in seqs)} tokens")
    sys.stdout.flush()
    parity(model, gguf, work / "gguf", seqs, args.positions)
    if args.parity_only:
        return
    exported = work / "gguf"
    if gguf != default_gguf():  # parts 2 to 5 are on the default model
        exported = work / "gguf-default"
        _, tokenizer = make_lora_adapters(work / "default", args.b_scale, default_gguf())
        export_adapters(work / "default", exported, model=default_gguf())
        seqs = sequences(args.data, tokenizer, args.positions)
    switch_cost(exported, seqs)
    throughput(exported, seqs, args.repeats)
    loading(exported)
    mor_quality(args.data, ranks, 8, args.held_out, args.adapters)


if __name__ == "__main__":
    main()
