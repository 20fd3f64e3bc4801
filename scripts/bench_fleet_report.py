#!/usr/bin/env python3
"""Draws docs/fleet-bench.png (gnuplot) from the results of
scripts/bench-fleet.sh: put and get medians and p99 at each scope size, and
how long a rotation took to reach the watching connections."""

import json
import os
import subprocess
import sys
import tempfile

results, png = sys.argv[1:3]
r = json.load(open(results))

with tempfile.TemporaryDirectory() as tmp:
    scale = os.path.join(tmp, "scale.dat")
    with open(scale, "w") as f:
        for row in r["scale"]["scale"]:
            f.write(
                f'"{row["count"]:,} secrets" {row["put"]["median_us"] / 1000:.2f} '
                f'{row["put"]["p99_us"] / 1000:.2f} {row["get"]["median_us"] / 1000:.2f} '
                f'{row["get"]["p99_us"] / 1000:.2f}\n'
            )
    watch = os.path.join(tmp, "watch.dat")
    with open(watch, "w") as f:
        for row in r["watch"]["rows"]:
            size = row["value_bytes"]
            label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
            if row["other_scope_busy"]:
                label += "+busy"
            if row.get("other_scope_granted_elsewhere"):
                label += "\\n(not granted)"
            f.write(
                f'"{label}" {row["reach"]["median_us"] / 1000:.2f} '
                f'{row["reach"]["p99_us"] / 1000:.2f}\n'
            )
    script = f"""
set terminal pngcairo size 1200,420 font "sans,10"
set output "{png}"
set multiplot layout 1,2
set bmargin 4
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key top left
set yrange [0:*]
set title "One scope: put and get (ms, 3-node etcd, loopback)"
set ylabel "ms"
plot "{scale}" using 2:xtic(1) title "put p50", "" using 3 title "put p99", \\
     "" using 4 title "get p50", "" using 5 title "get p99"
set title "A rotation reaching {r["watch"]["watchers"]} watching connections (ms)"
plot "{watch}" using 2:xtic(1) title "p50", "" using 3 title "p99"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
