#!/usr/bin/env python3
"""Heap live at the end of a DHAT run (valgrind --tool=dhat), per idle session, by
allocation site. Used by idle-dhat.sh.

    python3 dhat_sites.py dhat.json SESSIONS [--top 40]

Each row is one allocation stack: bytes and blocks still live at exit divided by the
number of sessions, the block size, the innermost frame that is not the allocator, and
the first frame in shoal's own code (what to change)."""
import json
import re
import sys
from collections import defaultdict

ALLOC = re.compile(r"(alloc::alloc::|__rust_alloc|__rdl_alloc|malloc|calloc|realloc|"
                   r"alloc::raw_vec|RawVec|alloc::boxed::Box<.*>::new|exchange_malloc|"
                   r"alloc::sync::Arc<.*>::new|<alloc::alloc::Global|hashbrown::raw::alloc|"
                   r"core::alloc::|std::alloc::|alloc::vec::Vec<.*>::with_capacity|"
                   r"alloc::vec::Vec<.*>::reserve|alloc::vec::Vec<.*>::push|"
                   r"RawTable.*::(new|reserve|fallible|resize)|RawTableInner|do_alloc|alloc_impl|"
                   r"finish_grow|grow_one|grow_amortized|try_allocate_in|allocate_in)")


def name(frame):
    # "0x1234: shoal::engine::websocket::run::{{closure}} (websocket.rs:321:9)"
    f = frame.split(": ", 1)[-1]
    return f


def main():
    path, sessions = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 40
    d = json.load(open(path))
    ftbl = d["ftbl"]
    rows = []
    by_site = defaultdict(lambda: [0, 0])
    total_b = total_k = 0
    for pp in d["pps"]:
        eb, ebk = pp.get("eb", 0), pp.get("ebk", 0)
        if eb == 0:
            continue
        frames = [name(ftbl[i]) for i in pp["fs"]]
        inner = next((f for f in frames if not ALLOC.search(f)), frames[0] if frames else "?")
        mine = next((f for f in frames if "shoal::" in f or "bench_shoal::" in f), "(outside shoal)")
        rows.append((eb, ebk, inner, mine))
        by_site[mine][0] += eb
        by_site[mine][1] += ebk
        total_b += eb
        total_k += ebk
    rows.sort(reverse=True)
    print(f"live at exit: {total_b} B in {total_k} blocks; per session ({sessions}): "
          f"{total_b / sessions:.0f} B, {total_k / sessions:.1f} blocks\n")
    print("| B/session | blocks/session | block size | allocated in | first shoal frame |")
    print("|---:|---:|---:|---|---|")
    for eb, ebk, inner, mine in rows[:top]:
        print(f"| {eb / sessions:.0f} | {ebk / sessions:.2f} | {eb // max(ebk, 1)} | `{inner[:110]}` | `{mine[:110]}` |")
    print("\nBy first shoal frame:\n")
    print("| B/session | blocks/session | first shoal frame |")
    print("|---:|---:|---|")
    for site, (b, k) in sorted(by_site.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"| {b / sessions:.0f} | {k / sessions:.2f} | `{site[:140]}` |")


if __name__ == "__main__":
    main()
