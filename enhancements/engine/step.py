"""One step of the search over every population, compiled: tournaments, mutations and
crossovers, scoring, the hall of fame, acceptance and age-based replacement.

A step is what `hybrid_optimization.evolution.Search._step` does, over arrays: each
population draws ``per_step`` parents by tournament (log cost plus the adaptive
parsimony penalty of their complexity) and mutates them, or crosses two over; every
child is scored (`evaluate.run_program` and `evaluate.losses_of`, fused) and offered to
the hall of fame as f, a*f, f+b and a*f+b; then, population by population, each child
is accepted or rejected (simulated annealing and complexity frequencies) and replaces
the oldest member. The complexity statistics are updated as in PySR.

`State` holds the arrays that live across steps; `Settings` the per-search scalars.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from enhancements.engine.evaluate import losses_of, run_program, workspace
from enhancements.engine.mutate import crossover, mutate
from enhancements.engine.programs import CONST, MUL
from enhancements.engine.rng import below, geometric, uniform
from enhancements.engine.trees import check, complexity, copy_range, put_token

_JIT = dict(cache=True, nogil=True, error_model="numpy")

State = namedtuple("State", [
    "ops", "feat", "val", "length", "loss", "cost", "cplx", "birth",   # members, (P*N, ...)
    "freq",                                                          # complexity frequencies (maxsize,)
    "hof_loss", "hof_ops", "hof_feat", "hof_val", "hof_length",     # best entry per integer complexity
    "hof_m_ops", "hof_m_feat", "hof_m_val", "hof_m_length",         # ... and the member it came from
    "hof_m_loss", "hof_m_cost", "hof_m_cplx", "hof_changed",
    "counters",                                                      # [births, evaluations, memo hits]
    "rng",                                                           # (P, 4) uint64 stream states
    "memo", "memo_rows", "memo_check",                               # the loss memo (see `Memo`)
])

Settings = namedtuple("Settings", [
    "P", "N", "per_step", "tournament_n", "tournament_p", "scaling", "use_frequency", "annealing", "alpha",
    "crossover_probability", "skip_mutation_failures", "parsimony", "normalization", "linear_scaling",
    "maxsize", "window", "mul", "add", "sub", "c_mul", "c_add",
])

Data = namedtuple("Data", ["X", "y", "w", "w_sum", "arity", "body_ops", "body_feat", "body_val", "body_length",
                           "scaled"])  # scaled[p]: population p's loss is a*f+b's (else f's)


@njit(**_JIT)
def program_hash(ops, feat, val, length, salt):
    """A 64-bit hash of a program's tokens (constants by their exact bits)."""
    h = np.uint64(1469598103934665603) ^ np.uint64(salt)
    prime = np.uint64(1099511628211)
    bits = val.view(np.uint64)
    for t in range(length):
        h = (h ^ np.uint64(ops[t])) * prime
        h = (h ^ np.uint64(feat[t])) * prime
        h = (h ^ bits[t]) * prime
    h = (h ^ np.uint64(length)) * prime
    return np.int64(h)


@njit(**_JIT)
def memo_lookup(S, ops, feat, val, length, lv, av, bv):
    """The memoized loss of this program (filling lv, av, bv), or -1.0 if not there. Two
    independent hashes must match, so a collision cannot serve another formula's loss."""
    if S.memo_rows.shape[0] == 0:
        return -1.0
    h1 = program_hash(ops, feat, val, length, 0)
    if h1 not in S.memo:
        return -1.0
    slot = S.memo[h1]
    if S.memo_check[slot] != program_hash(ops, feat, val, length, 7):
        return -1.0
    row = S.memo_rows[slot]
    for k in range(4):
        lv[k] = row[1 + k]
        av[k] = row[5 + k]
        bv[k] = row[9 + k]
    return row[0]


@njit(**_JIT)
def memo_store(S, ops, feat, val, length, loss, lv, av, bv):
    """Remember a scored program; a full memo is emptied and starts again (deterministic)."""
    cap = S.memo_rows.shape[0]
    if cap == 0:
        return
    if len(S.memo) >= cap:
        S.memo.clear()
    slot = len(S.memo)
    S.memo[program_hash(ops, feat, val, length, 0)] = slot
    S.memo_check[slot] = program_hash(ops, feat, val, length, 7)
    row = S.memo_rows[slot]
    row[0] = loss
    for k in range(4):
        row[1 + k] = lv[k]
        row[5 + k] = av[k]
        row[9 + k] = bv[k]


@njit(**_JIT)
def _bin(c, maxsize):
    b = int(c + 0.5) - 1
    return b if 0 <= b < maxsize else -1


@njit(**_JIT)
def _normalized(freq, c, maxsize, total):
    b = _bin(c, maxsize)
    if b < 0:
        return 1e-6
    return max(freq[b] / total, 1e-6)


@njit(**_JIT)
def _tournament(state, p, keys, cplx, base, N, n, prob, perm):
    """PySR's tournament: n members without replacement, the k-th best with probability
    prob (1 - prob)^k (k redrawn while out of range)."""
    for j in range(N):
        perm[j] = j
    m = min(n, N)
    for j in range(m):  # a partial Fisher-Yates shuffle: the first m are the sample
        r = j + below(state, p, N - j)
        perm[j], perm[r] = perm[r], perm[j]
    k = 0
    if prob < 1.0:
        while True:
            k = geometric(state, p, prob) - 1
            if k < m:
                break
    if k == 0:
        best = perm[0]
        for j in range(1, m):
            c = perm[j]
            if keys[c] < keys[best] or (keys[c] == keys[best] and cplx[base + c] < cplx[base + best]):
                best = c
        return base + best
    order = np.empty(m, np.int64)
    for j in range(m):
        order[j] = perm[j]
    # insertion sort by (key, complexity): m is small (tournament_selection_n)
    for a in range(1, m):
        x = order[a]
        b = a - 1
        while b >= 0 and (keys[order[b]] > keys[x] or (keys[order[b]] == keys[x] and
                                                       cplx[base + order[b]] > cplx[base + x])):
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = x
    return base + order[k]


@njit(**_JIT)
def _start(ops, end, arity):
    """Where the sub-tree ending at ``end`` starts (a backward scan: no arrays)."""
    need = 1
    t = end
    while True:
        need += arity[ops[t]] - 1
        if need == 0:
            return t
        t -= 1


@njit(**_JIT)
def _form_complexity(ops, length, c, k, rules, st):
    """Complexity of a*f (k=1), f+b (2) or a*f+b (3) without building it (-1: not
    expressible with the search's operators); a factor or offset already at f's root merges."""
    if length == 1 and ops[0] == CONST:
        return c
    root = ops[length - 1]
    c_scaled = c
    if k == 1 or k == 3:
        if st.mul < 0:
            return -1.0
        merges = False
        if root == st.mul:
            merges = ops[length - 2] == CONST or ops[_start(ops, length - 2, rules.arity) - 1] == CONST
        c_scaled = c if merges else c + rules.const_cplx + st.c_mul
        if k == 1:
            return c_scaled
    if st.add < 0 and st.sub < 0:
        return -1.0
    merges = False
    if k == 2 and root == st.add and st.add >= 0:
        merges = ops[length - 2] == CONST or ops[_start(ops, length - 2, rules.arity) - 1] == CONST
    return c_scaled if merges else c_scaled + rules.const_cplx + st.c_add


@njit(**_JIT)
def _materialize(ops, feat, val, length, k, a, b, rules, st, o_ops, o_feat, o_val, W):
    """The program of a*f, f+b or a*f+b with `simplify_top`'s rules at the new root
    (x * 1 -> x, c1 * (c2 * x) -> (c1 c2) * x, likewise for +); -1 if not finite."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return -1
    if length == 1 and ops[0] == CONST:
        v = val[0] * (a if k != 2 else 1.0) + (b if k != 1 else 0.0)
        if not np.isfinite(v):
            return -1
        return put_token(CONST, 0, v, o_ops, o_feat, o_val, 0)
    tmp_ops, tmp_feat, tmp_val = W.ops, W.feat, W.val
    n = copy_range(ops, feat, val, 0, length, tmp_ops, tmp_feat, tmp_val, 0)
    if k == 1 or k == 3:
        n = _wrap(tmp_ops, tmp_feat, tmp_val, n, st.mul, a, 1.0, rules, o_ops, o_feat, o_val)
        if n < 0:
            return -1
        n = copy_range(o_ops, o_feat, o_val, 0, n, tmp_ops, tmp_feat, tmp_val, 0)
    if k == 2 or k == 3:
        if st.add >= 0:
            n = _wrap(tmp_ops, tmp_feat, tmp_val, n, st.add, b, 0.0, rules, o_ops, o_feat, o_val)
        else:
            n = _wrap_sub(tmp_ops, tmp_feat, tmp_val, n, st.sub, -b, o_ops, o_feat, o_val)
        return n
    return copy_range(tmp_ops, tmp_feat, tmp_val, 0, n, o_ops, o_feat, o_val, 0)


@njit(**_JIT)
def _wrap(ops, feat, val, n, code, c, neutral, rules, o_ops, o_feat, o_val):
    """``code(c, f)`` for mul (c first) or ``code(f, c)`` for add, with the identity and merge rules."""
    if c == neutral:
        return copy_range(ops, feat, val, 0, n, o_ops, o_feat, o_val, 0)
    root = ops[n - 1]
    if root == code and n >= 3:
        r = n - 2
        r0 = _start(ops, r, rules.arity)
        lft = r0 - 1
        l0 = _start(ops, lft, rules.arity)
        inner = -1
        other_a, other_b = -1, -1
        if ops[lft] == CONST:
            inner = lft
            other_a, other_b = r0, r + 1
        elif ops[r] == CONST:
            inner = r
            other_a, other_b = l0, lft + 1
        if inner >= 0:
            v = c * val[inner] if code == MUL else c + val[inner]
            if np.isfinite(v):
                if v == neutral:
                    return copy_range(ops, feat, val, other_a, other_b, o_ops, o_feat, o_val, 0)
                pos = put_token(CONST, 0, v, o_ops, o_feat, o_val, 0)
                pos = copy_range(ops, feat, val, other_a, other_b, o_ops, o_feat, o_val, pos)
                return put_token(code, 0, 0.0, o_ops, o_feat, o_val, pos)
    if code == MUL:
        pos = put_token(CONST, 0, c, o_ops, o_feat, o_val, 0)
        pos = copy_range(ops, feat, val, 0, n, o_ops, o_feat, o_val, pos)
    else:
        pos = copy_range(ops, feat, val, 0, n, o_ops, o_feat, o_val, 0)
        pos = put_token(CONST, 0, c, o_ops, o_feat, o_val, pos)
    return put_token(code, 0, 0.0, o_ops, o_feat, o_val, pos)


@njit(**_JIT)
def _wrap_sub(ops, feat, val, n, code, c, o_ops, o_feat, o_val):
    if c == 0.0:
        return copy_range(ops, feat, val, 0, n, o_ops, o_feat, o_val, 0)
    pos = copy_range(ops, feat, val, 0, n, o_ops, o_feat, o_val, 0)
    pos = put_token(CONST, 0, c, o_ops, o_feat, o_val, pos)
    return put_token(code, 0, 0.0, o_ops, o_feat, o_val, pos)


@njit(**_JIT)
def _store_hof(S, slot, e_ops, e_feat, e_val, e_len, m_ops, m_feat, m_val, m_len, loss, m_loss, m_cost, m_cplx):
    S.hof_loss[slot] = loss
    for t in range(e_len):
        S.hof_ops[slot, t] = e_ops[t]
        S.hof_feat[slot, t] = e_feat[t]
        S.hof_val[slot, t] = e_val[t]
    S.hof_length[slot] = e_len
    for t in range(m_len):
        S.hof_m_ops[slot, t] = m_ops[t]
        S.hof_m_feat[slot, t] = m_feat[t]
        S.hof_m_val[slot, t] = m_val[t]
    S.hof_m_length[slot] = m_len
    S.hof_m_loss[slot] = m_loss
    S.hof_m_cost[slot] = m_cost
    S.hof_m_cplx[slot] = m_cplx
    S.hof_changed[slot] = 1


@njit(**_JIT)
def record(S, ops, feat, val, length, c, loss, cost, lv, av, bv, rules, st, b_ops, b_feat, b_val, W):
    """Offer a scored program to the hall of fame as f and (linear scaling) a*f, f+b, a*f+b."""
    maxsize = st.maxsize
    ci = int(c + 0.5)
    if lv[0] < np.inf and c <= maxsize and 0 <= ci < S.hof_loss.shape[0] and lv[0] < S.hof_loss[ci]:
        _store_hof(S, ci, ops, feat, val, length, ops, feat, val, length, lv[0], loss, cost, c)
    if not st.linear_scaling:
        return
    for k in range(1, 4):
        if not lv[k] < np.inf:
            continue
        est = _form_complexity(ops, length, c, k, rules, st)
        ei = int(est + 0.5)
        if est < 0 or est > maxsize or ei >= S.hof_loss.shape[0] or not lv[k] < S.hof_loss[ei]:
            continue
        n = _materialize(ops, feat, val, length, k, av[k], bv[k], rules, st, b_ops, b_feat, b_val, W)
        if n <= 0 or n > S.hof_ops.shape[1]:
            continue
        cb = complexity(b_ops, b_feat, n, rules)
        bi = int(cb + 0.5)
        if cb <= maxsize and bi < S.hof_loss.shape[0] and lv[k] < S.hof_loss[bi] and check(
                b_ops, b_feat, n, float(maxsize), rules, W.size, W.depth, W.cum, W.count):
            _store_hof(S, bi, b_ops, b_feat, b_val, n, ops, feat, val, length, lv[k], loss, cost, c)


@njit(**_JIT)
def _replace_oldest(S, base, N, protect, n_protect, src_ops, src_feat, src_val, src_len, loss, cost, c):
    """The population's oldest member (not among ``protect[:n_protect]``) becomes the
    given program, with a new birth; returns its index."""
    best = -1
    for j in range(N):
        m = base + j
        skip = False
        for q in range(n_protect):
            if protect[q] == m:
                skip = True
        if not skip and (best < 0 or S.birth[m] < S.birth[best]):
            best = m
    for t in range(src_len):
        S.ops[best, t] = src_ops[t]
        S.feat[best, t] = src_feat[t]
        S.val[best, t] = src_val[t]
    S.length[best] = src_len
    S.loss[best] = loss
    S.cost[best] = cost
    S.cplx[best] = c
    S.counters[0] += 1
    S.birth[best] = S.counters[0]
    return best


@njit(**_JIT)
def _update_freq(freq, c, maxsize):
    b = _bin(c, maxsize)
    if b >= 0:
        freq[b] += 1.0


@njit(**_JIT)
def move_window(freq, window):
    """Forget old sightings evenly once the window is full (no bin drops below 1)."""
    excess = freq.sum() - window
    for _ in range(100):
        if excess <= 1e-9:
            break
        n_above = 0
        smallest = np.inf
        for b in range(freq.shape[0]):
            if freq[b] > 1:
                n_above += 1
                smallest = min(smallest, freq[b] - 1)
        if n_above == 0:
            break
        step = min(excess / n_above, smallest)
        for b in range(freq.shape[0]):
            if freq[b] > 1:
                freq[b] -= step
        excess -= step * n_above


@njit(**_JIT)
def run_step(S, D, rules, params, st, temperature, curmax, W):
    """One step (see the module docstring); returns the number of children scored."""
    P, N, per = st.P, st.N, st.per_step
    L = S.ops.shape[1]
    cap = L + 8
    Q = P * per
    # the children: at most two per proposal
    k_ops = np.zeros((2 * Q, cap), np.int64)
    k_feat = np.zeros((2 * Q, cap), np.int64)
    k_val = np.zeros((2 * Q, cap))
    k_len = np.zeros(2 * Q, np.int64)
    k_loss = np.full(2 * Q, np.inf)
    k_cost = np.full(2 * Q, np.inf)
    k_cplx = np.zeros(2 * Q)
    p_pop = np.zeros(Q, np.int64)
    p_cross = np.zeros(Q, np.bool_)
    p_kids = np.zeros(Q, np.int64)
    p_parent_loss = np.zeros(Q)
    p_parent_cost = np.zeros(Q)
    p_parent_cplx = np.zeros(Q)
    p_parent = np.zeros(Q, np.int64)
    keys = np.empty(N)
    perm = np.empty(N, np.int64)
    # The step sees the frequencies as they were when it began (PySR normalises them between steps).
    freq0 = S.freq.copy()
    total = freq0.sum()
    # 1. proposals
    q = 0
    for p in range(P):
        base = p * N
        for j in range(N):
            m = base + j
            c = S.cost[m]
            key = np.log(c) if c > 0 else (-np.inf if c == 0 else np.inf)
            if st.scaling != 0.0:
                b = _bin(S.cplx[m], st.maxsize)
                if b >= 0:
                    key += st.scaling * freq0[b] / total
            keys[j] = key
        for _ in range(per):
            p_pop[q] = p
            if uniform(S.rng, p) < st.crossover_probability:
                a = _tournament(S.rng, p, keys, S.cplx, base, N, st.tournament_n, st.tournament_p, perm)
                b = _tournament(S.rng, p, keys, S.cplx, base, N, st.tournament_n, st.tournament_p, perm)
                p_cross[q] = True
                na, nb = crossover(S.ops[a], S.feat[a], S.val[a], S.length[a], S.ops[b], S.feat[b], S.val[b],
                                   S.length[b], S.rng, p, curmax, rules, k_ops[2 * q], k_feat[2 * q],
                                   k_val[2 * q], k_ops[2 * q + 1], k_feat[2 * q + 1], k_val[2 * q + 1], W)
                if na > 0:
                    k_len[2 * q], k_len[2 * q + 1] = na, nb
                    p_kids[q] = 2
            else:
                par = _tournament(S.rng, p, keys, S.cplx, base, N, st.tournament_n, st.tournament_p, perm)
                p_parent[q] = par
                p_parent_loss[q] = S.loss[par]
                p_parent_cost[q] = S.cost[par]
                p_parent_cplx[q] = S.cplx[par]
                kind, n = mutate(S.ops[par], S.feat[par], S.val[par], S.length[par], S.rng, p, temperature,
                                 curmax, params, rules, k_ops[2 * q], k_feat[2 * q], k_val[2 * q], W)
                # the parent's program, for a rejected mutation without skip_mutation_failures
                for t in range(S.length[par]):
                    k_ops[2 * q + 1, t] = S.ops[par, t]
                    k_feat[2 * q + 1, t] = S.feat[par, t]
                    k_val[2 * q + 1, t] = S.val[par, t]
                k_len[2 * q + 1] = S.length[par]
                if n > 0:
                    k_len[2 * q] = n
                    p_kids[q] = 1
            q += 1
    # 2. scoring, and the hall of fame
    stack, flag, sval, bstack, bflag, bsval, args, aflag, aval = workspace(cap, D.X.shape[1], D.body_ops.shape[1])
    lv = np.empty(4)
    av = np.empty(4)
    bv = np.empty(4)
    hb_ops = np.zeros(S.hof_ops.shape[1] + 4, np.int64)
    hb_feat = np.zeros(S.hof_ops.shape[1] + 4, np.int64)
    hb_val = np.zeros(S.hof_ops.shape[1] + 4)
    scored = 0
    for q in range(Q):
        for kk in range(p_kids[q]):
            r = 2 * q + kk
            loss = memo_lookup(S, k_ops[r], k_feat[r], k_val[r], k_len[r], lv, av, bv)
            if loss == -1.0:
                run_program(k_ops[r], k_feat[r], k_val[r], k_len[r], D.X, stack, flag, sval, D.arity, D.body_ops,
                            D.body_feat, D.body_val, D.body_length, bstack, bflag, bsval, args, aflag, aval)
                loss = losses_of(stack[0], flag[0], sval[0], D.y, D.w, D.w_sum, st.linear_scaling, lv, av, bv)
                memo_store(S, k_ops[r], k_feat[r], k_val[r], k_len[r], loss, lv, av, bv)
            else:
                S.counters[2] += 1
            if not D.scaled[p_pop[q]]:
                loss = lv[0]
            c = complexity(k_ops[r], k_feat[r], k_len[r], rules)
            k_loss[r] = loss
            k_cplx[r] = c
            k_cost[r] = loss / st.normalization + st.parsimony * c if loss < np.inf else np.inf
            record(S, k_ops[r], k_feat[r], k_val[r], k_len[r], c, loss, k_cost[r], lv, av, bv, rules, st, hb_ops,
                   hb_feat, hb_val, W)
            scored += 1
    S.counters[1] += scored
    # 3. acceptance and replacement, population by population in proposal order
    protect = np.empty(2, np.int64)
    for q in range(Q):
        p = p_pop[q]
        base = p * N
        if p_cross[q]:
            n_protect = 0
            for kk in range(p_kids[q]):
                r = 2 * q + kk
                if k_loss[r] < np.inf:
                    protect[n_protect] = _replace_oldest(S, base, N, protect, n_protect, k_ops[r], k_feat[r],
                                                         k_val[r], k_len[r], k_loss[r], k_cost[r], k_cplx[r])
                    n_protect += 1
                    _update_freq(S.freq, k_cplx[r], st.maxsize)
            continue
        r = 2 * q
        accepted = False
        if p_kids[q] == 1 and k_loss[r] < np.inf:
            prob = 1.0
            if st.annealing:
                delta = k_cost[r] - p_parent_cost[q]
                if temperature <= 0:
                    prob = 0.0 if delta > 0 else 1.0
                elif delta > 0:
                    prob = np.exp(min(0.0, -delta / (temperature * st.alpha)))
            if st.use_frequency:
                prob *= (_normalized(freq0, p_parent_cplx[q], st.maxsize, total)
                         / _normalized(freq0, k_cplx[r], st.maxsize, total))
            accepted = prob >= uniform(S.rng, p)
        if accepted:
            _replace_oldest(S, base, N, protect, 0, k_ops[r], k_feat[r], k_val[r], k_len[r], k_loss[r], k_cost[r],
                            k_cplx[r])
            _update_freq(S.freq, k_cplx[r], st.maxsize)
        elif not st.skip_mutation_failures:
            r = 2 * q + 1
            _replace_oldest(S, base, N, protect, 0, k_ops[r], k_feat[r], k_val[r], k_len[r], p_parent_loss[q],
                            p_parent_cost[q], p_parent_cplx[q])
            _update_freq(S.freq, p_parent_cplx[q], st.maxsize)
    move_window(S.freq, st.window)
    return scored
