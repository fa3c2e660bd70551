#!/usr/bin/env python3
"""Whole-process timing of `falsify generate` against llama.cpp's `llama-completion`.

An independent check of the engines' own timers: each tool is started as a
process on the same prompts and timed by the wall clock here, alternating
which goes first. Per round and tool, three runs:

  load     a one-word prompt, 1 token generated     (start-up and model load)
  prefill  a PROMPT-token prompt, 1 token generated
  decode   a one-word prompt, GEN + 1 tokens generated

prefill tok/s = PROMPT / (fastest prefill - fastest load) and decode tok/s =
GEN / (fastest decode - fastest load): subtracting the load leaves the work
itself. Each kind of run is represented by its fastest, because on a shared
host noise only adds time, and a process's start-up and load vary by more than
a second from run to run (too much to subtract run by run or median by
median). The ratios are falsify's rate over llama.cpp's, with a seeded
percentile-bootstrap 95% CI that resamples each tool's runs of each kind.

Prompts are common words, each one token with its leading space in Qwen2's
tokenizer, so both tools get PROMPT tokens. Uses only the standard library.

Usage: scripts/whole-process.py [--model M] [--rounds 7] [--prompt 512] [--gen 128] [--threads 2]
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = " the of and to in is that for it as with was on be at by this from or an are not but all can one".split()


def prompt_of(n, seed):
    rng = random.Random(seed)
    return "".join(" " + rng.choice(WORDS) for _ in range(n))


def timed(argv):
    """Wall seconds of one run of argv (its output discarded); exits naming it on failure."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-400:]}")
    return seconds


def commands(args):
    """For each tool, a function from (prompt, tokens) to its command line."""
    falsify = os.path.join(ROOT, "target/release/falsify")
    llama = os.path.join(ROOT, "baselines/llama.cpp/llama-completion")
    for path, hint in [(falsify, "cargo build --release"), (llama, "make llama-cpp"), (args.model, "make model")]:
        if not os.path.isfile(path):
            sys.exit(f"missing {path} (run `{hint}`)")
    t = str(args.threads)
    return {
        "falsify": lambda p, n: [falsify, "generate", "--model", args.model, "-p", p, "-n", str(n),
                                 "--threads", t, "--temp", "0", "--ignore-eos"],
        "llama.cpp": lambda p, n: [llama, "-m", args.model, "-t", t, "-p", p, "-n", str(n), "--temp", "0",
                                   "-no-cnv", "--no-display-prompt", "--simple-io", "--ignore-eos",
                                   "-c", str(args.prompt + args.gen + 16)],
    }


def rate(tokens, work, load):
    """Tokens per second of the fastest work run less the fastest load run."""
    return tokens / (min(work) - min(load))


def bootstrap_ratio(tokens, ours, theirs, seed=0x5EED, resamples=2000):
    """Our rate over theirs (each a (work, load) pair of run lists), with a
    percentile-bootstrap 95% interval; resamples whose load reaches their work are dropped."""
    rng = random.Random(seed)
    pick = lambda xs: rng.choices(xs, k=len(xs))
    ratios = []
    for _ in range(resamples):
        (wa, la), (wb, lb) = (pick(ours[0]), pick(ours[1])), (pick(theirs[0]), pick(theirs[1]))
        if min(wa) > min(la) and min(wb) > min(lb):
            ratios.append(rate(tokens, wa, la) / rate(tokens, wb, lb))
    ratios.sort()
    point = rate(tokens, *ours) / rate(tokens, *theirs)
    if len(ratios) < resamples // 2:
        return point, float("nan"), float("nan")
    return point, ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.rounds < 2:
        sys.exit("--rounds must be at least 2 for an interval")
    tools = commands(args)
    runs = {name: {"load": [], "prefill": [], "decode": []} for name in tools}
    for r in range(args.rounds):
        long_prompt, word = prompt_of(args.prompt, r), prompt_of(1, 1000 + r)
        order = list(tools) if r % 2 == 0 else list(reversed(tools))
        for name in order:
            cmd = tools[name]
            load = timed(cmd(word, 1))
            prefill = timed(cmd(long_prompt, 1))
            decode = timed(cmd(word, args.gen + 1))
            for kind, seconds in [("load", load), ("prefill", prefill), ("decode", decode)]:
                runs[name][kind].append(seconds)
            print(f"round {r + 1}/{args.rounds} {name}: load {load:.2f} s, prefill {prefill:.2f} s, "
                  f"decode {decode:.2f} s", file=sys.stderr)
    print(f"whole-process timing, {args.rounds} alternated rounds, {args.threads} threads, "
          f"{args.prompt}-token prompt, {args.gen} tokens, {os.path.basename(args.model)}")
    for name in tools:
        print(f"{name:9} seconds, fastest (median): " + ", ".join(
            f"{kind} {min(runs[name][kind]):.3f} ({statistics.median(runs[name][kind]):.3f})" for kind in runs[name]))
    for metric, tokens in [("prefill", args.prompt), ("decode", args.gen)]:
        ours, theirs = [(runs[n][metric], runs[n]["load"]) for n in ["falsify", "llama.cpp"]]
        if min(min(w) - min(l) for w, l in [ours, theirs]) <= 0:
            sys.exit(f"{metric}: a tool's fastest {metric} run took no longer than its fastest load run; use more tokens")
        ratio, lo, hi = bootstrap_ratio(tokens, ours, theirs)
        print(f"{metric:8} falsify {rate(tokens, *ours):7.1f} tok/s  llama.cpp {rate(tokens, *theirs):7.1f} tok/s"
              f"  ratio {ratio:.3f}x (95% CI {lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
