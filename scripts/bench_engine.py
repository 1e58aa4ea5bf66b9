#!/usr/bin/env python3
"""Runs the engine benchmark: every job once in our engine (examples/engine_bench, one
process per job) and once in libvips through pyvips (one process per job), with the calls
imgproxy makes (shrink-on-load, vips_resize with Lanczos3, jpegsave Q80 optimize_coding,
webpsave Q79, pngsave), libvips' operation cache off and one thread, as imgproxy runs it.
Prints a markdown table. Usage: bench_engine.py <engine_bench binary> <corpus dir> [iterations]
"""
import json
import os
import platform
import subprocess
import sys
import time

JOBS = [
    # name, file, resizing type, width, height, output format
    ("coffee 300x300 fit jpeg", "big_coffee.jpg", "fit", 300, 300, "jpeg"),
    ("coffee 300x300 fit webp", "big_coffee.jpg", "fit", 300, 300, "webp"),
    ("coffee 1200w jpeg", "big_coffee.jpg", "fit", 1200, 0, "jpeg"),
    ("coffee 300x300 fill jpeg", "big_coffee.jpg", "fill", 300, 300, "jpeg"),
    ("rocket 300x300 fit jpeg", "big_rocket.jpg", "fit", 300, 300, "jpeg"),
    ("rocket 300x300 fit webp", "big_rocket.jpg", "fit", 300, 300, "webp"),
    ("rocket 1200w jpeg", "big_rocket.jpg", "fit", 1200, 0, "jpeg"),
    ("rocket 300x300 fill jpeg", "big_rocket.jpg", "fill", 300, 300, "jpeg"),
    ("hubble png 300x300 fit", "mid_hubble.png", "fit", 300, 300, "png"),
]


def peak_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def vips_worker(job_name, corpus, iterations):
    """One job in libvips, the way imgproxy drives it."""
    os.environ["VIPS_CONCURRENCY"] = "1"
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    _, file, rt, width, height, fmt = next(j for j in JOBS if j[0] == job_name)
    with open(os.path.join(corpus, file), "rb") as f:
        data = f.read()

    def run():
        header = pyvips.Image.new_from_buffer(data, "")
        src_w, src_h = header.width, header.height
        sw = width / src_w if width else None
        sh = height / src_h if height else None
        if sw is None:
            sw = sh
        if sh is None:
            sh = sw
        scale = min(sw, sh) if rt == "fit" else max(sw, sh)
        scale = min(scale, 1.0)
        if file.endswith(".jpg"):
            shrink = next((s for s in (8, 4, 2) if 1 / scale >= s), 1)
            img = pyvips.Image.new_from_buffer(data, "", shrink=shrink)
        else:
            img = pyvips.Image.new_from_buffer(data, "")
        target_w = round(src_w * scale)
        img = img.resize(target_w / img.width)
        if rt == "fill":
            cw, ch = min(width, img.width), min(height, img.height)
            img = img.crop((img.width - cw + 1) // 2, (img.height - ch + 1) // 2, cw, ch)
        if fmt == "jpeg":
            return img.write_to_buffer(".jpg", Q=80, optimize_coding=True, strip=True)
        if fmt == "webp":
            return img.write_to_buffer(".webp", Q=79, strip=True)
        return img.write_to_buffer(".png", compression=6, filter="all", strip=True)

    times = []
    out = b""
    for i in range(iterations + 1):
        start = time.perf_counter()
        out = run()
        if i > 0:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(json.dumps({
        "job": job_name,
        "median_ms": round(times[len(times) // 2], 1),
        "peak_rss_kb": peak_rss_kb(),
        "out_bytes": len(out),
    }))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--vips-worker":
        vips_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    binary, corpus = sys.argv[1], sys.argv[2]
    iterations = sys.argv[3] if len(sys.argv) > 3 else "10"
    import pyvips

    print(f"Engine benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}: "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, "
          f"median of {iterations} runs after one warm-up, one process per job and engine.\n")
    print("| job | ours ms | libvips ms | time ratio | ours peak RSS MB | libvips peak RSS MB | RSS ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for job in JOBS:
        name = job[0]
        ours = run_json([binary, name, corpus, iterations])
        vips = run_json([sys.executable, __file__, "--vips-worker", name, corpus, iterations])
        print(f"| {name} | {ours['median_ms']:.1f} | {vips['median_ms']:.1f} | "
              f"{ours['median_ms'] / vips['median_ms']:.2f} | "
              f"{ours['peak_rss_kb'] / 1024:.0f} | {vips['peak_rss_kb'] / 1024:.0f} | "
              f"{ours['peak_rss_kb'] / vips['peak_rss_kb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
