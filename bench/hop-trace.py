#!/usr/bin/env python3
"""Segments of each call in an ftrace of bench/hop-trace.sh: p50 and mean in microseconds.

  bench/hop-trace.py TASKS TRACE

TASKS has one line per process (nodes A, B, C, then the client), its thread ids; TRACE is the text
of /sys/kernel/tracing/trace with sched_switch, sched_wakeup, writev entry and recvfrom exit."""
import re, statistics, sys

names = ["A", "B", "C", "client"]
owner = {}
for index, line in enumerate(open(sys.argv[1])):
    for tid in line.split():
        owner[int(tid)] = names[index]

line_re = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\S+?):?\s(.*)$")
events = []  # (time us, process, kind, cpu)
for line in open(sys.argv[2]):
    match = line_re.match(line)
    if line.startswith("#") or not match:
        continue
    _, tid, cpu, at, name, rest = match.groups()
    who, at, cpu = owner.get(int(tid)), float(at) * 1e6, int(cpu)
    if name.startswith("sys_writev("):
        events.append((at, who, "write", cpu))
    elif name == "sys_recvfrom" and "->" in rest:
        events.append((at, who, "read", cpu))

# A call starts with the client's first write after a pause of more than 60 us.
starts, last = [], -1e18
for index, (at, who, kind, _) in enumerate(events):
    if who == "client" and kind == "write":
        if at - last > 60:
            starts.append(index)
        last = at

segments = {}
def add(name, value):
    segments.setdefault(name, []).append(value)

for begin, end in zip(starts, starts[1:]):
    call = events[begin:end]
    t0 = call[0][0]
    def first(who, kind, after=0.0):
        return next((e for e in call if e[0] - t0 >= after and e[1] == who and e[2] == kind), None)
    b_read = first("B", "read")
    if not b_read:
        continue
    b_write = first("B", "write", b_read[0] - t0)
    c_read = first("C", "read") or first("A", "read")
    if c_read:
        c_write = first(c_read[1], "write", c_read[0] - t0)
        b_answer = first("B", "read", c_write[0] - t0) if c_write else None
        b_reply = first("B", "write", b_answer[0] - t0) if b_answer else None
        if not (b_write and c_write and b_answer and b_reply):
            continue
        add("1 client write -> B read", b_read[0] - t0)
        add("2 B read -> B write to the owner", b_write[0] - b_read[0])
        add("3 B write -> owner read (a wake-up)", c_read[0] - b_write[0])
        add("4 owner read -> owner write", c_write[0] - c_read[0])
        add("5 owner write -> B read (a wake-up)", b_answer[0] - c_write[0])
        add("6 B read -> B write to the client", b_reply[0] - b_answer[0])
        add("7 client write -> B's answer", b_reply[0] - t0)
        add("  owner on another CPU than B (share)", float(c_read[3] != b_write[3]))
    elif b_write:
        add("1 client write -> B read", b_read[0] - t0)
        add("2 B read -> B write to the client", b_write[0] - b_read[0])
        add("7 client write -> B's answer", b_write[0] - t0)

for name in sorted(segments):
    values = segments[name]
    print(f"{name:40s} n={len(values):4d}  p50 {statistics.median(values):7.1f}  mean {statistics.mean(values):7.1f}")
