"""Throughput of formula evaluation on a search-like stream: plain vs memoized.

The stream: 1,000 random formulas of PySR-like size (1-20 nodes, the default
operators) on 1,000 rows, then 20 rounds in which every formula is mutated once (one
random mutation) and the whole population is evaluated again. It is evaluated

- (a) one formula at a time, from scratch, with `Expression.evaluate`;
- (b0) by the `IncrementalEvaluator` without memoization (``memoize=False``): batched
  by (level, operator), every node of every formula computed -- the ablation row;
- (b) by the `IncrementalEvaluator` with its `SubexpressionCache`;
- (c) by the compiled engine's stack machine (`enhancements.engine.evaluate`, numba), on
  the formulas as the compiled search holds them (postfix arrays, encoded before timing),
  one formula after another, every node computed (constant sub-trees as scalars).

Methods alternate, ``--repeats`` times, each repeat with a fresh evaluator and cache;
the table gives medians. A last, separate run of (b) under `torch.profiler` says how
long its torch calls alone take: the floor no Python bookkeeping could go below. One thread. Formulas and mutations are generated before any
timing, so the table measures evaluation only.

    python -m experiments.evaluator_throughput            # the full stream
    python -m experiments.evaluator_throughput --quick    # a short run

The table is printed and written to ``results/evaluator_throughput.md`` (the tracked
reference); a ``--quick`` run writes ``results/quick/evaluator_throughput.md`` instead.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from enhancements.dp_memoization import IncrementalEvaluator, SubexpressionCache
from enhancements.engine.evaluate import evaluate_programs, tables
from enhancements.engine.programs import OperatorTable, encode
from enhancements.hybrid_optimization.options import Options
from experiments.outputs import OUT_HELP, Report, output_dir
from pysr_baseline.expression import Expression
from pysr_baseline.operators import DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS
from pysr_baseline.random_expressions import random_expression, random_mutation


def make_stream(seed: int, n_formulas: int, n_rounds: int, n_features: int, max_size: int) -> list:
    """The populations to evaluate: the initial one, then one per round of mutation."""
    rng = np.random.default_rng(seed)
    population = [random_expression(rng, n_features, int(rng.integers(1, max_size + 1)),
                                    DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS) for _ in range(n_formulas)]
    stream = [population]
    for _ in range(n_rounds):
        population = [random_mutation(e, rng, n_features, DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS,
                                      max_size=max_size) for e in population]
        stream.append(population)
    return stream


def plain_node_rows(expr: Expression, n_rows: int) -> int:
    """Rows a plain evaluation computes: every operator node, a constant-only one on one
    value (a 0-dim tensor), the others on every row."""
    def rec(node) -> tuple[int, bool]:
        if node.op is None:
            return 0, node.feature is not None
        total, has_var = 0, False
        for child in node.children:
            t, v = rec(child)
            total, has_var = total + t, has_var or v
        return total + (n_rows if has_var else 1), has_var
    return rec(expr)[0]


def run_plain(stream, X) -> dict:
    walls, cpus = [], []
    for population in stream:
        wall, cpu = time.perf_counter(), time.process_time()
        for e in population:
            e.evaluate(X)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"walls": walls, "cpus": cpus}


def _cache(capacity, max_bytes) -> SubexpressionCache:
    return SubexpressionCache(capacity=capacity, max_bytes=max_bytes)


def run_batched(stream, X, memoize: bool, capacity, max_bytes) -> dict:
    walls, cpus, node_rows = [], [], []
    wall, cpu = time.perf_counter(), time.process_time()  # setting up counts too: it touches memory
    cache = _cache(capacity, max_bytes) if memoize else None
    ev = IncrementalEvaluator(X, cache=cache, memoize=memoize, dtype=X.dtype)
    out = torch.empty((len(stream[0]), X.shape[0]), dtype=X.dtype)
    for population in stream:
        before = ev.counters.node_rows_computed
        ev.evaluate(population, out=out)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        node_rows.append(ev.counters.node_rows_computed - before)
        wall, cpu = time.perf_counter(), time.process_time()
    result = {"walls": walls, "cpus": cpus, "node_rows": node_rows, "counters": ev.counters}
    if ev.cache is not None:
        result["cache"] = ev.cache.stats
        result["limits"] = (ev.cache.capacity, ev.cache.max_bytes)
    return result


def encode_stream(stream):
    """The stream as the compiled engine holds it: one block of postfix programs a round."""
    opts = Options(binary_operators=list(DEFAULT_BINARY_OPERATORS), unary_operators=list(DEFAULT_UNARY_OPERATORS),
                   soft_tree_seed_fraction=0)
    table = OperatorTable.from_options(opts)
    length = max(e.size for p in stream for e in p)
    return table, [encode(p, table, length) for p in stream]


def run_compiled(blocks, table, X) -> dict:
    walls, cpus = [], []
    Xt = np.ascontiguousarray(X.numpy().T.astype(np.float64))
    out = np.empty((blocks[0].ops.shape[0], Xt.shape[1]))
    args = tables(table)
    evaluate_programs(blocks[0].ops, blocks[0].feat, blocks[0].val, blocks[0].length, Xt, out, *args)  # compiled
    for block in blocks:
        wall, cpu = time.perf_counter(), time.process_time()
        evaluate_programs(block.ops, block.feat, block.val, block.length, Xt, out, *args)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"walls": walls, "cpus": cpus}


def compiled_agreement(blocks, table, stream, X) -> tuple[float, float, float]:
    """Outside the timing: the share of values (c) gives bit for bit as (a), the share
    equal to 1e-9 relative, and whether NaN/inf fall in the same places (a share)."""
    Xt = np.ascontiguousarray(X.numpy().T.astype(np.float64))
    exact = close = same_kind = total = 0
    for block, population in zip(blocks, stream):
        out = np.empty((len(population), Xt.shape[1]))
        evaluate_programs(block.ops, block.feat, block.val, block.length, Xt, out, *tables(table))
        with torch.no_grad():
            want = torch.stack([e.evaluate(X) for e in population]).numpy()
        exact += int(((out == want) | (np.isnan(out) & np.isnan(want))).sum())
        close += int(np.isclose(out, want, rtol=1e-9, atol=0.0, equal_nan=True).sum())
        same_kind += int(((np.isnan(out) == np.isnan(want)) & (np.isinf(out) == np.isinf(want))).sum())
        total += out.size
    return exact / total, close / total, same_kind / total


def check_equal(stream, X, capacity, max_bytes) -> bool:
    """Outside the timing: the memoized values equal the plain ones (NaN/inf included)."""
    ev = IncrementalEvaluator(X, cache=_cache(capacity, max_bytes), dtype=X.dtype)
    ok = True
    for population in stream:
        got = ev.evaluate(population)
        want = torch.stack([e.evaluate(X) for e in population])
        ok = ok and bool(((got == want) | (got.isnan() & want.isnan())).all())
    return ok


def torch_call_seconds(stream, X, capacity, max_bytes) -> tuple[float, int]:
    """Outside the timing: seconds (b) spends inside torch operators, and how many calls,
    by `torch.profiler` (top-level operators; the profiler leaves out each call's Python
    binding, so this is a floor). With every line of Python bookkeeping (building the
    DAG, planning, the cache's dictionary) free, (b) would still take this long: (a)'s
    time over it bounds the ratio an evaluator making these calls could reach."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_batched(stream, X, True, capacity, max_bytes)
    top = [e for e in prof.events() if e.cpu_parent is None]
    return sum(e.cpu_time_total for e in top) / 1e6, len(top)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x < 1e6 else f"{x:.3g}"


OUTPUT_FILE = "evaluator_throughput.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluator_throughput",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 formulas, 5 rounds, 1 repeat; writes to results/quick/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formulas", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--max-size", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--capacity", type=int, default=20_000,
                        help="cache entries (default 20,000: about 3x the ~6,800 distinct operator sub-trees a "
                             "population holds; measured on this stream, the share served from the cache is "
                             "within ~1 point of an unbounded cache from there on, and more capacity only "
                             "touches more memory)")
    parser.add_argument("--max-bytes", type=int, default=256 * 2**20, help="cache bytes")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def output_path(args) -> Path:
    """The markdown file a run with these arguments writes."""
    return output_dir(args.quick, args.out) / OUTPUT_FILE


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    say = Report()  # every line printed is also kept for the markdown file
    if args.quick:
        args.formulas, args.rounds, args.repeats = min(args.formulas, 200), min(args.rounds, 5), 1
    torch.set_num_threads(1)

    stream = make_stream(args.seed, args.formulas, args.rounds, args.features, args.max_size)
    rng = np.random.default_rng(args.seed + 1)
    X = torch.from_numpy(rng.normal(scale=2.0, size=(args.rows, args.features))).to(getattr(torch, args.dtype))
    n_evals = sum(len(p) for p in stream)
    sizes = [e.size for p in stream for e in p]
    plain_rows = sum(plain_node_rows(e, args.rows) for p in stream for e in p)

    table, blocks = encode_stream(stream)
    runs = {"a": [], "b0": [], "b": [], "c": []}
    for _ in range(args.repeats):
        runs["a"].append(run_plain(stream, X))
        runs["b0"].append(run_batched(stream, X, False, args.capacity, args.max_bytes))
        runs["b"].append(run_batched(stream, X, True, args.capacity, args.max_bytes))
        runs["c"].append(run_compiled(blocks, table, X))
    identical = check_equal(stream, X, args.capacity, args.max_bytes)
    in_torch, n_calls = torch_call_seconds(stream, X, args.capacity, args.max_bytes)

    capacity, max_bytes = runs["b"][-1]["limits"]
    limit = "no byte limit" if max_bytes is None else f"{max_bytes / 2**20:.0f} MiB"
    tail = max(1, args.rounds // 2)  # the last rounds: the cache is full, memory is reused
    say(f"Stream: {args.formulas} formulas x {args.rounds + 1} evaluations ({n_evals} in all), mean size "
        f"{np.mean(sizes):.1f} nodes (max {max(sizes)}), {args.rows} rows x {args.features} features "
        f"({args.dtype}), seed {args.seed}; 1 thread; median of {args.repeats} run(s); cache: {capacity:,} "
        f"entries, {limit}. 'last {tail}': the last {tail} rounds only.\n")
    say(f"| method | wall s | CPU s | formulas/s | formulas/s, last {tail} | node-rows computed/s "
        f"| served from cache | peak cache bytes | vs (a) | vs (a), last {tail} |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = {"a": "(a) one at a time, `Expression.evaluate`",
              "b0": "(b0) `IncrementalEvaluator`, no memoization",
              "b": "(b) `IncrementalEvaluator` + `SubexpressionCache`",
              "c": "(c) compiled engine (numba), every node"}
    tail_evals = sum(len(p) for p in stream[-tail:])
    rates = {}
    for name, rs in runs.items():
        wall = statistics.median(sum(r["walls"]) for r in rs)
        cpu = statistics.median(sum(r["cpus"]) for r in rs)
        tail_wall = statistics.median(sum(r["walls"][-tail:]) for r in rs)
        rates[name] = (n_evals / wall, tail_evals / tail_wall)
        if name in ("a", "c"):
            node_rows, served, peak = plain_rows, "0%", "-"
        else:
            c = rs[-1]["counters"]
            node_rows = c.node_rows_computed
            once = (c.nodes_from_cache - c.nodes_from_cache_again) / c.nodes_requested
            served = (f"{c.cache_share:.1%} ({once:.1%} once per batch; "
                      f"+{c.nodes_shared / c.nodes_requested:.1%} shared in batch)")
            peak = f"{rs[-1]['cache'].peak_bytes / 2**20:.1f} MiB" if name == "b" else "-"
        say(f"| {labels[name]} | {wall:.3f} | {cpu:.3f} | {_fmt_rate(rates[name][0])} | "
            f"{_fmt_rate(rates[name][1])} | {_fmt_rate(node_rows / wall)} | {served} | {peak} | "
            f"{rates[name][0] / rates['a'][0]:.2f}x | {rates[name][1] / rates['a'][1]:.2f}x |")
    c = runs["b"][-1]["counters"]
    say(f"\n(b) computed {c.nodes_computed:,} of {c.nodes_requested:,} requested nodes in {c.tensor_calls:,} "
        f"operator calls; (a) computes {sum(e.size - _leaves(e) for p in stream for e in p):,} operator "
        f"nodes in as many calls. (b) values equal (a)'s, NaN/inf included: {'yes' if identical else 'NO'}.")
    wall_a = statistics.median(sum(r["walls"]) for r in runs["a"])
    wall_b = statistics.median(sum(r["walls"]) for r in runs["b"])
    say(f"(b) inside torch calls (torch.profiler, a separate run): {in_torch:.3f} s in {n_calls:,} calls, "
        f"{in_torch / wall_b:.0%} of its median wall time; with all Python bookkeeping free, (b) could reach "
        f"at most {wall_a / in_torch:.1f}x (a).")
    exact, close, same_kind = compiled_agreement(blocks, table, stream, X)
    say(f"(c) against (a): {exact:.2%} of values bit for bit, {close:.3%} equal to 1e-9 relative, NaN/inf in the "
        f"same places for {same_kind:.3%} (the transcendental functions are libm's, not torch's: they may differ "
        f"in the last bit, which an ill-conditioned formula amplifies).")
    s = runs["b"][-1]["cache"]
    say(f"Cache after (b): {s.entries:,} entries, hit rate {s.hit_rate:.1%} of lookups, {s.evictions:,} "
        f"evictions, {s.reserved_bytes / 2**20:.1f} MiB of rows touched by its row store. A population holds "
        f"{live_set(stream[-1]):,} distinct operator sub-trees (what the cache must keep for the next round).")
    say("'Served from cache': nodes of sub-trees whose values the cache held before the call, each time a "
        "formula holds them; 'once per batch' counts a cached sub-tree met by several formulas of one batch "
        "once; 'shared in batch': computed in the call and met again in it.")
    print(f"\nwritten: {say.write(output_path(args))}")


def live_set(population) -> int:
    """Distinct operator sub-trees of a population: the entries a cache needs to serve
    every unchanged part of the next round's mutants."""
    return len({n.key for e in population for n in e.nodes() if n.op is not None})


def _leaves(expr: Expression) -> int:
    return sum(1 for n in expr.nodes() if n.op is None)


if __name__ == "__main__":
    main()
