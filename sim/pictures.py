"""Pictures of the twin for the docs: one camera frame per task at the expert's moment of success, and
the tactile images of both jaws while the pick expert holds its cube.

    python -m twinloop.sim.pictures docs/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from twinloop.sim.experts import get_expert, run_episode
from twinloop.sim.tasks import task_names
from twinloop.sim.twin import Twin, TwinConfig


def task_frame(task: str, seed: int) -> tuple[np.ndarray, bool, Twin]:
    """The front camera at the end of one expert episode (stops at success)."""
    twin = Twin(TwinConfig(task=task))
    result = run_episode(twin, get_expert(task, twin.robot, np.random.default_rng(seed)), seed)
    return twin.render("front"), result.success, twin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="output folder for the PNG files")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    for task in task_names():
        frame, success, twin = task_frame(task, args.seed)
        path = args.out / f"twin_{task}.png"
        plt.imsave(path, frame)
        print(f"{path}: {twin.task.instruction} (expert {'succeeded' if success else 'failed'})")
        if twin.tactile_names and task == "pick_lift_cube":
            fig, axes = plt.subplots(1, len(twin.tactile_names), figsize=(2.2 * len(twin.tactile_names), 3))
            for ax, name in zip(axes, twin.tactile_names, strict=True):
                image = twin.tactile(name) * 1e3
                shown = ax.imshow(image, cmap="viridis", vmin=0.0, vmax=max(1e-3, float(image.max())))
                ax.set_title(f"{name}\n(mm)", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                fig.colorbar(shown, ax=ax, fraction=0.05)
            fig.suptitle("tactile while holding the cube", fontsize=10)
            fig.tight_layout()
            path = args.out / "twin_tactile_pick.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            print(f"{path}: max taxel {max(twin.tactile(n).max() for n in twin.tactile_names) * 1e3:.2f} mm")
        twin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
