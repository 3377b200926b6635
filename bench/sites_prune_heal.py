"""Pruning after a partition heals, with real spread_mini daemons: two one-daemon sites (d1,
d2) in network namespaces joined by labnet.WanLab's emulated WAN. A client of d1 (c1) is in
"near" and "both", a client of d2 (c2) in "both". Site 2 is cut off the WAN; while it is, c2
joins "late" (a JOIN the other side never sees: it learns it from site 2's STATE after the
merge). The cut heals and the views merge; then c1 sends COUNT messages of SIZE bytes to
"near" (no member at site 2: the link d1 -> d2 carries SKIPs), to "late" and to "both" (a
member there: the bodies). Printed: the link's data bytes per message in each phase (d1's status
table: "bytes out" of its HOP link, every record on it) and the ratio pruned / unpruned; before
this change (no pruning after a merge) "near" cost what "both" does.

    python3 bench/sites_prune_heal.py                  # 500 x 1000 B per phase
    python3 bench/sites_prune_heal.py --count 2000 --size 200

Needs root (network namespaces) and /dev/net/tun (the WAN relay); everything it creates is
removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import floodtools as ft  # noqa: E402
import labnet  # noqa: E402
from netns_daemons import daemon_argv, json_lines, start_client, start_logged, stop_gently, wait_until, \
    wan_lab_missing  # noqa: E402
from ring_throughput import machine_line  # noqa: E402
from sites_prune import link_figures, settled  # noqa: E402

#: a client: prints every membership and message as a JSON line; runs the commands of the files
#: FOLDER/NAME-1, NAME-2, ... as they appear (a JSON list: ["join", g], ["send", g, count, size])
CLIENT = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import spread_mini as sp
root, server, name, folder, life_s = sys.argv[1:6]
m = sp.connect(server, name, group_membership=True)
step, end = 1, time.time() + float(life_s)
while time.time() < end:
    path = os.path.join(folder, "%s-%d" % (name, step))
    if os.path.exists(path + ".ready"):
        for cmd in json.load(open(path)):
            if cmd[0] == "join":
                m.join(cmd[1])
            elif cmd[0] == "send":
                for i in range(cmd[2]):
                    m.multicast(sp.AGREED_MESS, cmd[1], b"%s %06d " % (cmd[1].encode(), i) + b"x" * cmd[3])
        step += 1
    msg = m.receive(timeout=0.05)
    if msg is None:
        continue
    if msg.is_membership:
        print(json.dumps(["REG" if msg.is_regular else "TRANS", msg.group, sorted(msg.members),
                          str(msg.caused_by)]), flush=True)
    else:
        print(json.dumps(["DATA", ",".join(msg.groups), msg.data[:12].decode()]), flush=True)
"""


class Lab:
    """The two sites, their daemons and clients, and the commands to the clients."""

    def __init__(self, wan, folder):
        self.wan, self.folder = wan, folder
        self.steps = {"c1": 0, "c2": 0}
        self.procs = []

    def start(self):
        ips = [self.wan.ip(s, 1) for s in (1, 2)]
        conf = os.path.join(self.folder, "sites.conf")
        with open(conf, "w") as f:
            f.write(ft.render_spread_conf(ips, 4803, True))
        with open(os.path.join(self.folder, "client.py"), "w") as f:
            f.write(CLIENT)
        env = dict(os.environ, COLUMNS="400")  # (the status tables: one line a row)
        for s in (1, 2):
            self.procs.append(start_logged(self.wan, (s, 1), daemon_argv(conf, "d%d" % s, status_every_s=1),
                                           self.log("d%d" % s), env=env))
        self.wait(lambda: all("HOP link to" in self.text("d%d" % s) for s in (1, 2)), 30, "the HOP link")
        for s in (1, 2):
            self.procs.append(start_client(self.wan, (s, 1), os.path.join(self.folder, "client.py"),
                                           "4803@%s" % ips[s - 1], "c%d" % s, [self.folder, 300], self.log("c%d" % s)))

    def stop(self):
        stop_gently(self.procs)

    def log(self, name):
        return os.path.join(self.folder, name + ".log")

    def text(self, name):
        try:
            return open(self.log(name)).read()
        except OSError:
            return ""

    def lines(self, name):
        return json_lines(self.log(name))

    def command(self, client, *cmds):
        self.steps[client] += 1
        path = os.path.join(self.folder, "%s-%d" % (client, self.steps[client]))
        with open(path, "w") as f:
            json.dump(list(cmds), f)
        open(path + ".ready", "w").close()

    def members(self, client, group):
        """The members of `group` in the client's last regular membership of it (and why)."""
        regs = [x for x in self.lines(client) if x[0] == "REG" and x[1] == group]
        return (regs[-1][2], regs[-1][3]) if regs else ([], "")

    def data(self, client, group):
        return [x[2] for x in self.lines(client) if x[0] == "DATA" and x[2].startswith(group + " ")]

    def wait(self, check, timeout_s, what):
        wait_until(check, timeout_s, what, self.folder)


def measure(count, size, settings=None):
    """The run: a dict of bytes per message on d1's link to site 2 in each phase after the heal,
    the SKIPs counted, and what c2 got."""
    reason = wan_lab_missing()
    if reason:
        raise RuntimeError(reason)
    with tempfile.TemporaryDirectory() as folder, \
            labnet.WanLab([1, 1], settings or labnet.WanSettings(rate_mbit=20, delay_ms=5)) as wan:
        lab = Lab(wan, folder)
        try:
            lab.start()
            lab.command("c1", ["join", "near"], ["join", "both"])
            lab.command("c2", ["join", "both"])
            lab.wait(lambda: len(lab.members("c1", "both")[0]) == 2, 30, "c1 and c2 in 'both'")
            wan.cut_site(2)
            lab.wait(lambda: lab.members("c1", "both")[0] == ["#c1#d1"], 20, "the partition's views")
            lab.command("c2", ["join", "late"])  # (site 1 never sees this JOIN)
            lab.wait(lambda: lab.members("c2", "late")[0] == ["#c2#d2"], 20, "c2's JOIN during the partition")
            wan.heal_site(2)
            lab.wait(lambda: len(lab.members("c1", "both")[0]) == 2 and len(lab.members("c2", "both")[0]) == 2,
                     30, "the merged views")
            lab.wait(lambda: "knows the members of site 1 again" in lab.text("d1"), 20,
                     "d1 to learn site 2's members from its STATE")
            log = lab.log("d1")
            figures = {}
            base, pruned0 = settled(log)
            for group, who in (("near", "c1"), ("late", "c2"), ("both", "c2")):
                lab.command("c1", ["send", group, count, size])
                lab.wait(lambda: len(lab.data(who, group)) >= count, 120, "%d messages to %r at %s" % (count, group, who))
                now, pruned = settled(log)
                figures[group] = ((now - base) / count, pruned - pruned0)
                base, pruned0 = now, pruned
            time.sleep(1.0)  # (anything late to c2 comes in the meantime)
            return {"bytes_per_message": {g: f[0] for g, f in figures.items()},
                    "skips": {g: f[1] for g, f in figures.items()},
                    "c2_got": {g: len(lab.data("c2", g)) for g in ("near", "late", "both")},
                    "c2_late_members": lab.members("c2", "late")[0],
                    "d1_log": lab.text("d1")[-4000:]}
        finally:
            lab.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 1:
        parser.error("--count and --size must be at least 1")
    reason = wan_lab_missing()
    if reason:
        print(reason)
        return 2
    print("sites pruning after a heal (network namespaces, 20 Mbit/s, 5 ms): %s" % machine_line())
    r = measure(args.count, args.size)
    b, skips, got = r["bytes_per_message"], r["skips"], r["c2_got"]
    print("after the merge, %d x %d B AGREED from site 1 per group; the HOP link to site 2 carried "
          "%.1f B per message to 'near' (no member there: %d SKIPs), %.1f B to 'late' (c2 joined it "
          "during the partition: %d of %d arrived) and %.1f B to 'both' (%d of %d arrived); pruned / "
          "unpruned = %.3f ('near' against 'both'; before this change 'near' went in full after a merge)"
          % (args.count, args.size, b["near"], skips["near"], b["late"], got["late"], args.count,
             b["both"], got["both"], args.count, b["near"] / b["both"]))
    print("rerun: python3 bench/sites_prune_heal.py --count %d --size %d" % (args.count, args.size))
    return 0 if got["late"] == got["both"] == args.count and got["near"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
