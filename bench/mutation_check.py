"""Do the simulator's checkers catch every fault they name? Plant each fault in turn and say
which test or soak catches it, one table row per fault; every row must say "caught".

Two sets of faults:
  planted   through the simulator's hooks (tests/planted_faults.py: a delivery filter, or a
            mutant method on one orderer); the test that names each is in the row
  mutants   a real change to a temporary copy of spread_mini.py (this tree is never edited),
            then the ring soak on that copy until a seed shows the expected checker's kind

    python3 bench/mutation_check.py                 # both sets, about half a minute
    python3 bench/mutation_check.py --seeds 400     # give each mutant more seeds

When spread_mini.py changes so much that a mutant's line is gone, its row says so ("mutation
site not found"): update the MUTANTS table below, so that the check keeps meaning something.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests")

# ---- the mutants: (what is broken, text in spread_mini.py, its replacement, expected kind) ----

MUTANTS = [
    ("EVS discard rule broken (Transport.drain)",
     "if after_gap and m.origin[0] not in trans_names:", "if False:", "causal hole"),
    ("SAFE delivered before it is stable (Transport.deliver_ready)",
     "if m.service & SAFE_MESS and m.lts > min(s.stable_aru for s in streams):", "if False:",
     "safe"),
    ("SAFE delivered as handed up before it is stable (Transport.link_chunk_at_once)",
     "(chunk.service & SAFE_MESS and chunk.lts > stream.stable_aru)", "False", "safe"),
    # (_hand_over_body: every ordered delivery passes there, from the stream's queue or at once)
    ("ordered message delivered twice (Transport._hand_over_body)",
     "        self.deliver_to(msg)\n",
     "        self.deliver_to(msg)\n        if not tag:\n            if self.trace_delivered is not None:\n"
     "                self.trace_delivered.append(self.trace_delivered[-1])\n"
     "            self.deliver_to(msg)\n",
     "duplicate"),
    ("a message skipped everywhere (Transport._hand_over_body)",
     "        self.deliver_to(msg)\n",
     "        if tag or lts % 97 != 3:\n            self.deliver_to(msg)\n", "no loss"),
    ("UNRELIABLE duplicates pass (Transport._unreliable_seen)",
     "return done is not None and (key[1] in done[1]", "return False and (key[1] in done[1]",
     "duplicate"),
    ("transitional configuration missing a member (RingOrderer._emit_transitional)",
     "_configuration_change(CONF_TRANSITIONAL, trans, trans,",
     "_configuration_change(CONF_TRANSITIONAL, trans[1:], trans[1:],", "transitional"),
    ("accelerated token does not count the packets sent after it (RingLink.pass_token)",
     "        self._pass_or_hold(ring, tok, now, may_hold)\n        self.send_trailing()\n",
     "        tok.link_seq -= len(self.trailing)\n"
     "        self._pass_or_hold(ring, tok, now, may_hold)\n        self.send_trailing()\n",
     "no loss"),
]


def run_planted():
    """[(fault, planted through, caught by, checker, result)] for the hooks' faults."""
    sys.path[:0] = [TESTS, ROOT]
    import planted_faults  # noqa: E402 (needs the path above)
    rows = []
    for fault in planted_faults.PLANTED:
        result = fault.run()
        caught = fault.kind in result.kinds()
        rows.append((fault.name, fault.how.split(":")[0], "test_ring_sim planted fault",
                     fault.kind,
                     "caught" if caught else "NOT caught (got %s)" % sorted(result.kinds())))
    return rows


def mutated_copy(old, new):
    """A temporary tree with spread_mini.py mutated and the simulator beside it, or None if the
    text to mutate is not there exactly once."""
    with open(os.path.join(ROOT, "spread_mini.py"), encoding="utf-8") as f:
        source = f.read()
    if source.count(old) != 1:
        return None
    top = tempfile.mkdtemp(prefix="mutant-")
    os.mkdir(os.path.join(top, "tests"))
    with open(os.path.join(top, "spread_mini.py"), "w", encoding="utf-8") as f:
        f.write(source.replace(old, new))
    shutil.copy(os.path.join(TESTS, "ring_sim.py"), os.path.join(top, "tests"))
    return top


def soak_copy(top, kind, seeds):
    """Run in a child process on a mutated copy: seeds 1.. until one reports `kind`."""
    sys.path[:0] = [os.path.join(top, "tests"), top]
    import ring_sim  # noqa: E402 (the mutated copy's)
    assert os.path.dirname(os.path.abspath(ring_sim.sr.__file__)) == os.path.abspath(top)
    for seed in range(1, seeds + 1):
        kinds = ring_sim.run_seed(seed).kinds()
        if kind in kinds:
            print("CAUGHT %d %s" % (seed, ",".join(sorted(kinds))))
            return 0
    print("MISSED")
    return 0


def run_mutants(seeds):
    rows = []
    for name, old, new, kind in MUTANTS:
        top = mutated_copy(old, new)
        how = "spread_mini.py copy"
        if top is None:
            rows.append((name, how, "-", kind,
                         "NOT caught (mutation site not found: update MUTANTS)"))
            continue
        try:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--soak-copy", top,
                                  "--kind", kind, "--seeds", str(seeds)],
                                 capture_output=True, text=True, timeout=600)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        words = out.stdout.split()
        if words[:1] == ["CAUGHT"]:
            rows.append((name, how, "ring soak, seed %s" % words[1], kind, "caught"))
        else:
            rows.append((name, how, "ring soak, seeds 1..%d" % seeds, kind,
                         "NOT caught %s" % (out.stdout.strip() or out.stderr.strip()[-300:])))
    return rows


def render(rows):
    header = ("fault", "planted through", "caught by", "checker", "result")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    widths[-1] = len(header[-1])  # the last column is not padded, nor cut
    lines = []
    for row in [header] + rows:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(row)]
        lines.append(" | ".join(cells).rstrip())
        if row is header:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Plant each fault the simulator's checkers name and show which test or soak "
                    "catches it (every row must say 'caught').")
    parser.add_argument("--seeds", type=int, default=200,
                        help="most seeds of the ring soak per mutant (default 200)")
    parser.add_argument("--only", choices=("planted", "mutants"), default=None,
                        help="run one set only")
    parser.add_argument("--soak-copy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.soak_copy:
        return soak_copy(args.soak_copy, args.kind, args.seeds)
    started = time.monotonic()
    rows = []
    if args.only in (None, "planted"):
        rows += run_planted()
    if args.only in (None, "mutants"):
        rows += run_mutants(args.seeds)
    print(render(rows))
    missed = [r for r in rows if r[-1] != "caught"]
    print("%d of %d faults caught, %.0f s" % (len(rows) - len(missed), len(rows),
                                              time.monotonic() - started))
    print("rerun: python3 bench/mutation_check.py --seeds %d%s" % (
        args.seeds, " --only " + args.only if args.only else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
