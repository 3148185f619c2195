#!/usr/bin/env python3
"""How a running holdfast's executable is mapped (docs/BENCHMARKS.md, "Idle
connections: what RSS is made of"): for each mapping of the executable, the
pages present and how many of them belong to large page-cache folios (from
/proc/<pid>/pagemap and /proc/kpageflags; needs root).

Usage: scripts/exe-folios.py <pid>
"""
import os
import struct
import sys

pid = int(sys.argv[1])
exe = os.readlink(f"/proc/{pid}/exe")
with open(f"/proc/{pid}/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) < 6 or f[5] != exe:
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        n = (hi - lo) // 4096
        pm.seek(lo // 4096 * 8)
        entries = struct.unpack(f"<{n}Q", pm.read(n * 8))
        present = large = heads = 0
        for e in entries:
            if not e >> 63 & 1:
                continue
            present += 1
            kf.seek((e & ((1 << 55) - 1)) * 8)
            flags = struct.unpack("<Q", kf.read(8))[0]
            if flags >> 15 & 1:  # KPF_COMPOUND_HEAD
                heads += 1
            if flags >> 15 & 3:  # head or tail of a large folio
                large += 1
        print(f"{f[0]} {f[1]}: {present * 4} kB present, {large * 4} kB of it in {heads} large folios")
