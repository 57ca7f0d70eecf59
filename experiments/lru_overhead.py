"""Why `SubexpressionCache` keeps its LRU order in an ``OrderedDict``, not ``cachetools``.

Times the bookkeeping the evaluator does per sub-tree (no tensors): entering a miss,
serving a hit (and making it most recent), and entering a batch of misses at once,
for ``collections.OrderedDict`` and for ``cachetools.LRUCache`` (plain, and with
``getsizeof``, which a byte bound needs). Prints microseconds per entry, the median of
``--runs`` runs, and writes nothing.

    python -m experiments.lru_overhead            # 100,000 keys, 7 runs, ~10 s
    python -m experiments.lru_overhead --quick    # 20,000 keys, 3 runs

cachetools is not a dependency of the project; this script needs ``pip install cachetools``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import OrderedDict


def _time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n_keys: int, runs: int) -> list[tuple[str, float, float, float]]:
    """Rows (implementation, insert us, hit us, batch insert us) per entry."""
    import cachetools

    keys = [("fingerprint", f"add(x0,mul(c{i},x1))") for i in range(n_keys)]
    rows = []

    def ordered():
        return OrderedDict()

    def plain():
        return cachetools.LRUCache(maxsize=n_keys)

    def sized():
        return cachetools.LRUCache(maxsize=8 * n_keys, getsizeof=lambda value: 8)

    for name, make, native in (("collections.OrderedDict", ordered, True),
                               ("cachetools.LRUCache", plain, False),
                               ("cachetools.LRUCache(getsizeof=...)", sized, False)):
        cache = make()

        def insert():
            cache.clear()
            for k in keys:
                cache[k] = 1

        if native:
            def hit():
                for k in keys:
                    cache.get(k)
                    cache.move_to_end(k)

            def batch():
                cache.clear()
                cache.update(zip(keys, range(n_keys)))
        else:
            def hit():
                for k in keys:
                    cache[k]

            def batch():
                cache.clear()
                cache.update(zip(keys, range(n_keys)))

        t_insert = _time(insert, runs)
        insert()
        t_hit = _time(hit, runs)
        t_batch = _time(batch, runs)
        rows.append((name, 1e6 * t_insert / n_keys, 1e6 * t_hit / n_keys, 1e6 * t_batch / n_keys))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="20,000 keys, 3 runs")
    args = parser.parse_args(argv)
    n_keys, runs = (20_000, 3) if args.quick else (args.keys, args.runs)
    print(f"{n_keys:,} keys, median of {runs} runs, microseconds per entry\n")
    print("| LRU | insert | hit | insert a batch |")
    print("|---|---:|---:|---:|")
    for name, t_insert, t_hit, t_batch in measure(n_keys, runs):
        print(f"| `{name}` | {t_insert:.3f} | {t_hit:.3f} | {t_batch:.3f} |")


if __name__ == "__main__":
    main()
