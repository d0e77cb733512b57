"""Your own digits, measured (README, "Your own digits"): scikit-learn's 1,797 handwritten
digits, which are not MNIST's writers, read by the service before and after fine-tuning.

    python -m benchmarks.own_digits [--out runs/own-digits]

1. ``load_digits`` (8x8, 16 grey levels) is split in half, stratified, with a fixed seed;
   each digit is written as a user's scan would be: dark ink on white, scaled to 32x32
   (bilinear), a PNG in ``<out>/tune/<digit>/`` or ``<out>/held_out/<digit>/``.
2. The service runs as a real process on a free port, serving a copy of the bundled models.
3. ``digits eval <out>/held_out --model default``: before.
4. ``python -m training finetune --from default --data <out>/tune --name sklearn``, into the
   served folder; ``digits reload``.
5. ``digits eval <out>/held_out --model sklearn``: after. The MNIST test accuracies before and
   after come from the new package's card (measured on its file).

Every step is the documented command (docs/usage.md), run as a subprocess; the figures are
read back from the reports and the card. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from benchmarks.servers import ServerSpec, python_module, running
from service.packages.card import ModelCard

logger = logging.getLogger("benchmarks.own_digits")

REPO = Path(__file__).resolve().parent.parent
SPLIT_SEED = 0
SIDE = 32
NAME = "sklearn"


def write_halves(out: Path) -> dict[str, int]:
    """scikit-learn's digits as PNG files in ``out/tune/D/`` and ``out/held_out/D/``."""
    digits = load_digits()
    images, labels = digits.images, digits.target  # (1797, 8, 8) in 0..16, (1797,)
    index = np.arange(len(labels))
    tune, held_out = train_test_split(
        index, test_size=0.5, stratify=labels, random_state=SPLIT_SEED
    )
    for half, members in (("tune", tune), ("held_out", held_out)):
        shutil.rmtree(out / half, ignore_errors=True)
        for i in members:
            folder = out / half / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            paper = 255 - np.rint(images[i] * (255 / 16)).astype(np.uint8)  # dark on white
            scan = cv2.resize(paper, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(folder / f"sklearn-{i:04d}.png"), scan)
    return {"tune": len(tune), "held_out": len(held_out)}


def run(argv: list[str]) -> float:
    """Run a command, its output shown; returns its wall time in seconds."""
    logger.info("$ %s", " ".join(argv))
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    return time.perf_counter() - started


def digits_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "digits_client.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "own-digits")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out: Path = args.out.resolve()
    sizes = write_halves(out)
    model_dir = out / "models"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(REPO / "models" / "default", model_dir / "default")
    spec = ServerSpec(
        name="service",
        argv=python_module("service"),
        env={
            "DIGITS_HOST": "127.0.0.1",
            "DIGITS_PORT": "{port}",
            "DIGITS_MODEL_DIR": str(model_dir),
        },
        ready_path="/readyz",
    )
    with running(spec, cpus=None, log_path=out / "service.log") as server:
        url = server.base_url
        held_out = str(out / "held_out")
        before = ["--model", "default", "--report", str(out / "before")]
        eval_s = run(digits_command("eval", held_out, "--url", url, *before))
        finetune = ["finetune", "--from", "default", "--data", str(out / "tune"), "--name", NAME]
        tune_s = run([sys.executable, "-m", "training", *finetune, "--out", str(model_dir)])
        run(digits_command("reload", "--url", url))
        after = ["--model", NAME, "--report", str(out / "after")]
        run(digits_command("eval", held_out, "--url", url, *after))
    newest = max((p for p in (model_dir / NAME).iterdir() if p.is_dir()), key=lambda p: int(p.name))
    card = ModelCard.read(newest)
    assert card.fine_tuning is not None
    tuning = card.fine_tuning
    before = json.loads((out / "before.json").read_text())
    after = json.loads((out / "after.json").read_text())
    rows = [
        ("default/1 (MNIST only)", before, tuning.before.mnist_test),
        (f"{NAME}/{card.version} (fine-tuned)", after, tuning.after.mnist_test),
    ]
    lines = [
        f"scikit-learn digits: {sizes['tune']} to fine-tune on, {sizes['held_out']} held out "
        f"(stratified halves, seed {SPLIT_SEED}), {SIDE}x{SIDE} PNG scans",
        "",
        "| model | held-out accuracy (digits eval) | ECE | MNIST test accuracy |",
        "|---|---|---|---|",
    ]
    for label, report, mnist in rows:
        model = report["models"][0]
        lines.append(
            f"| {label} | {model['accuracy']:.2%} ({model['correct']}/{model['images']}) | "
            f"{model['ece']:.4f} | {mnist:.2%} |"
        )
    lines += [
        "",
        f"fine-tuning: {card.training.duration_s:.0f} s of training, {tune_s:.0f} s for the "
        f"whole command ({card.training.device}); eval of {sizes['held_out']} images: "
        f"{eval_s:.1f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
