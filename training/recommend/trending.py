"""The seed solution's serving rule: trending products of the brands a reviewer recently engaged with."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def trending_for_brands(trending_rows: Iterable[Mapping], recent_brands: list, n: int) -> list[dict]:
    """Up to ``n`` trending products of ``recent_brands`` (newest brand first), as copies of the input rows.

    Rules:
    * only the latest ``day`` of the trending table is used (days compare as given: ISO dates or date
      objects); rows with a missing asin, brand or score are ignored;
    * brands match exactly after trimming and casefolding; a brand that appears more than once in
      ``recent_brands`` counts at its newest position; unknown brands contribute nothing;
    * order: brands in ``recent_brands`` order, round-robin (the best product of each brand, then the second
      of each, ...), so one brand cannot fill the list; within a brand by score descending, then rank
      ascending, then asin ascending (all ties resolved, so the result is deterministic);
    * an asin listed under several recent brands appears once, at its first position;
    * ``n`` <= 0, no rows or no brands -> ``[]``.
    """
    if n <= 0:
        return []
    norm = lambda b: b.strip().casefold() if isinstance(b, str) else None
    order: dict[str, int] = {}
    for b in recent_brands or []:
        key = norm(b)
        if key and key not in order:
            order[key] = len(order)
    rows = [r for r in (trending_rows or []) if r.get("asin") and norm(r.get("brand")) and r.get("score") is not None]
    if not order or not rows:
        return []
    latest = max(r.get("day") for r in rows if r.get("day") is not None) if any(
        r.get("day") is not None for r in rows) else None
    per_brand: dict[int, list] = {}
    for r in rows:
        pos = order.get(norm(r["brand"]))
        if pos is None or r.get("day") != latest:
            continue
        per_brand.setdefault(pos, []).append(r)
    for lst in per_brand.values():
        lst.sort(key=lambda r: (-float(r["score"]), r.get("rank") if r.get("rank") is not None else float("inf"),
                                r["asin"]))
    out, seen, depth = [], set(), 0
    while len(out) < n and any(depth < len(v) for v in per_brand.values()):
        for pos in sorted(per_brand):
            lst = per_brand[pos]
            if depth < len(lst) and lst[depth]["asin"] not in seen:
                seen.add(lst[depth]["asin"])
                out.append(dict(lst[depth]))
                if len(out) == n:
                    break
        depth += 1
    return out
