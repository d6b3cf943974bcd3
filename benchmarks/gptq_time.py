"""Time of GPTQ calibration of SmolLM2-135M on 128 sequences of 512 tokens (issue 3: under 10 minutes).

Wall time of `torchlite.compress(model, "int4-gptq", calib=...)`: activation statistics of every
linear input through the model, then GPTQ layer by layer; the perplexity of the result on WikiText-2
test (first --tokens tokens) checks that the run did its job.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import torchlite
from common import header, markdown, write_section
from models import smollm2_and_wikitext
from torchlite.eval.lm import perplexity

warnings.filterwarnings("ignore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib", type=int, default=128, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens for perplexity")
    args = parser.parse_args()
    loaded = smollm2_and_wikitext(args.tokens, args.calib)
    if loaded is None:
        return 1
    model, _, test_ids, calib = loaded
    start = time.perf_counter()
    small = torchlite.compress(model, "int4-gptq", calib=calib)
    seconds = time.perf_counter() - start
    ppl = perplexity(small, test_ids, desc="int4 g128 GPTQ")
    row = [f"{args.calib} x 512", f"{seconds:.0f}", f"{seconds / 60:.1f}", "yes" if seconds < 600 else "no", f"{ppl:.2f}"]
    body = [header("GPTQ calibration time (SmolLM2-135M)"), (
        f"`torchlite.compress(model, \"int4-gptq\", calib=...)` with {args.calib} sequences of 512 tokens of WikiText-2 "
        "valid: statistics through the model, then GPTQ (int4, group 128) of every linear layer. Target (issue 3): "
        f"under 10 minutes. Perplexity: WikiText-2 test, first {test_ids.numel() // 512 * 512} tokens.\n"
    ), markdown(["calibration", "seconds", "minutes", "under 10 min", "perplexity"], [row])]
    write_section("gptq_time", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
